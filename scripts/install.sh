#!/usr/bin/env bash
# Creates .venv and installs seppo with every dependency pinned (requirements/constraints.txt).
# torch goes first, as a CPU wheel, so nothing later pulls a multi-GB CUDA build.
# Usage: bash scripts/install.sh            (CPU, development + tests)
#        SEPPO_VENV=/opt/venv bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SEPPO_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
TORCH=$(grep -E '^torch==' requirements/constraints.txt | cut -d= -f3)
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH' else 1)" 2>/dev/null; then
  echo "[install] torch $TORCH (CPU wheel)"
  if ls /opt/wheels/torch-"$TORCH"+cpu-*.whl >/dev/null 2>&1; then
    SOURCE=(--find-links /opt/wheels)          # the machine's local CPU wheel
  else
    SOURCE=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  $PIP install -q --disable-pip-version-check "torch==$TORCH" "${SOURCE[@]}"
fi
echo "[install] seppo + pinned dependencies"
# uv resolves and installs the same pinned set as pip in seconds instead of minutes (pip: ~5 min
# on 2 cores); pip stays the fallback when uv cannot be installed or fails.
UV=$(grep -E '^uv==' requirements/constraints.txt | cut -d= -f3)
if [ -z "${SEPPO_NO_UV:-}" ] && $PIP install -q --disable-pip-version-check "uv==$UV" \
    && "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -c requirements/constraints.txt -e ".[test]"; then
  :
else
  echo "[install] uv unavailable or failed: installing with pip"
  $PIP install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[test]"
fi
echo "[install] done: $("$VENV/bin/seppo" --version)"
