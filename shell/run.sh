#!/usr/bin/env bash
# The main job: the whole pipeline (train, attack, explain, analyse, plot) on the embedded mnist5k data.
#   bash shell/run.sh                  # results in ./results
#   OUT=/tmp/r bash shell/run.sh --force
# Extra arguments go to `python -m bayesrobust.pipeline`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
exec .venv/bin/python -m bayesrobust.pipeline --preset quick --out "${OUT:-results}" "$@"
