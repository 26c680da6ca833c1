#!/usr/bin/env bash
# Run the whole test suite (sets up .venv first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest -q "$@"
code=$?
set -e
# pytest exits 5 when it collected no tests: not a failure of the suite
if [ "$code" -eq 5 ]; then
    echo "no tests were collected"
    exit 0
fi
exit "$code"
