#!/usr/bin/env bash
# Run the test suite (creates or reuses .venv). Extra arguments go to pytest.
source "$(dirname "$0")/venv.sh"
"$PY" -m ruff check .
"$PY" -m pytest -q "$@"
