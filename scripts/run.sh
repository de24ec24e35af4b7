#!/usr/bin/env bash
# The main job (creates or reuses .venv first).
#   ./scripts/run.sh                      offline tour: inspect, round-trip and convert the bundled
#                                         Caffe-made model, and compare with Caffe's own outputs
#   ./scripts/run.sh MODULE [ARGS...]     any fcn-port command in the project's environment, e.g.
#                                         ./scripts/run.sh converters.caffe2torch voc-fcn8s
#                                         ./scripts/run.sh eval.voc --model voc-fcn8s --voc-root PATH
source "$(dirname "$0")/venv.sh"
if [ "$#" -eq 0 ]; then
  exec "$PY" -m reproduce.quickstart
fi
exec "$PY" -m "$@"
