#!/usr/bin/env bash
# Idempotent set-up of a local virtual environment (.venv) with every extra the tests use.
# Never pulls CUDA wheels: torch is pinned to the CPU build through constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${NEURORATE_VENV:-.venv}
STAMP="$VENV/.neurorate-setup"
want="$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import neurorate" 2>/dev/null; then
    echo "setup: $VENV is up to date"
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
$PIP install -q -c constraints.txt torch==2.13.0
$PIP install -q -c constraints.txt -e ".[lava,spiking,nir,cluster,dev]"
# lava-nc declares Python<3.11 and numpy<2 but runs here (see docs/install.md); norse's torchvision
# dependency is unusable with CPU torch. --ignore-requires-python stays confined to this one call.
$PIP install -q --no-deps --ignore-requires-python lava-nc==0.10.0 norse==1.1.0
echo "$want" > "$STAMP"
echo "setup: done ($($VENV/bin/python -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
