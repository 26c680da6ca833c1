#!/usr/bin/env bash
# README command 1: set up .venv, then run the demo pipeline
# (synthetic videos -> extract -> detect train -> infer -> evaluate -> report).
# Extra arguments go to `tadkit demo` (see `tadkit demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tadkit demo "$@"
