# Sourced by the other scripts: create or reuse .venv and install what the project needs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FCN_PORT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.fcn-port-installed"
# Reinstall when the project's metadata or its set of top-level packages changes (the editable
# install maps package names when it is made).
WANT="$( (cat "$ROOT/pyproject.toml"; cd "$ROOT" && ls -d -- */__init__.py) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "installing fcn-port and its dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  # Pinned: an unpinned torch pulls gigabytes of CUDA packages; 2.13.0 is the CPU build.
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" >&2
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]" >&2
  echo "$WANT" > "$STAMP"
fi
PY="$VENV/bin/python"
cd "$ROOT"
