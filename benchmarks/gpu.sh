#!/usr/bin/env bash
# The GPU table in one command: ./benchmarks/gpu.sh [--out DIR] [--models ...] [--budget-s 450]
# (options: python benchmarks/gpu.py --help). Runs under a Python whose torch already sees a GPU
# ($FCN_PORT_PYTHON, else python3; the project runs from this checkout, nothing is installed), else
# under the project's .venv, which scripts/venv.sh creates or reuses (its pinned torch is the CUDA
# build where pip's index serves that, as PyPI does on Linux). Without CUDA: one line, exit 2.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CANDIDATE="${FCN_PORT_PYTHON:-python3}"
if "$CANDIDATE" -c 'import numpy, PIL, tqdm, torch; raise SystemExit(not torch.cuda.is_available())' \
    >/dev/null 2>&1; then
  exec "$CANDIDATE" "$HERE/gpu.py" "$@"
fi
CALLER="$PWD"
source "$HERE/../scripts/venv.sh"  # (it moves to the checkout: back, so that --out DIR is where you are)
cd "$CALLER"
exec "$PY" "$HERE/gpu.py" "$@"
