#!/usr/bin/env bash
# Paper, figures 4 and 7-9 (docs/method.md §6.5): FGSM, LRP epsilon rule at every layer, the four MNIST/Fashion-MNIST
# presets, fullBNN with S in {10, 50, 100} — the sweep experiments/sweeps/layers_robustness.toml on dask.
#   bash shell/exec_layers_robustness.sh                    # paper settings (hours; needs ../shared/datasets)
#   QUICK=1 bash shell/exec_layers_robustness.sh            # the same sequence on the quick preset, minutes
# Environment: OUT (default results), QUICK_PRESET (with QUICK=1; default quick, tests use tiny), DATA_ROOT (default ../shared/datasets), ATTACK (default fgsm).
# Extra arguments go to `bayesrobust sweep` (e.g. --force, --workers 8, --scheduler tcp://host:8786). Stages
# already done are skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
args=(--out "${OUT:-results}" --set "attack=${ATTACK:-fgsm}")
if [ "${QUICK:-0}" = 1 ]; then
  args+=(--quick --set "preset=${QUICK_PRESET:-quick}")
else
  args+=(--set "data_root=${DATA_ROOT:-../shared/datasets}")
fi
.venv/bin/python -m bayesrobust.sweep experiments/sweeps/layers_robustness.toml "${args[@]}" "$@"
