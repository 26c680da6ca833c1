#!/usr/bin/env bash
# Create .venv (or reuse it) and install tadkit with its test extras.
#
# torch is installed first, on purpose:
#   * already importable in the venv  -> kept as it is (a user's CUDA build stays);
#   * TADKIT_TORCH="torch==X"         -> that requirement;
#   * an NVIDIA GPU (nvidia-smi)      -> pip's default torch build (CUDA);
#   * otherwise (CPU machine)         -> torch==2.13.0, the CPU wheel.
# Only then is the package installed, so its loose torch>=2.1 requirement is
# already satisfied and pip never pulls a multi-GB CUDA build onto a CPU box.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
PIP_FLAGS=(--quiet --disable-pip-version-check)

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

if "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    if [ -n "${TADKIT_TORCH:-}" ]; then
        spec="$TADKIT_TORCH"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        spec="torch"
    else
        spec="torch==2.13.0"
    fi
    echo "[setup] installing $spec"
    "$PY" -m pip install "${PIP_FLAGS[@]}" "$spec"
fi

stamp="$VENV/.tadkit-installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing tadkit and its dependencies"
    "$PY" -m pip install "${PIP_FLAGS[@]}" -e ".[test]"
    touch "$stamp"
fi
echo "[setup] ready: $("$PY" -m tadkit --version)"
