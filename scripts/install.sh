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
$PIP install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[test]"
echo "[install] done: $("$VENV/bin/seppo" --version)"
