#!/usr/bin/env bash
# Paper, figures 5 and 10-15 (docs/method.md §6.5): FGSM, the three LRP rules (epsilon, gamma, alpha1beta0), fullBNN
# with S = 100, the fc2 presets (and CIFAR-10 via exec_cifar.sh) — the sweep experiments/sweeps/rules_robustness.toml.
#   bash shell/exec_rules_robustness.sh                     # paper settings (hours; needs data)
#   QUICK=1 bash shell/exec_rules_robustness.sh             # the same sequence on the quick preset, minutes
# Environment: OUT (default results), QUICK_PRESET (with QUICK=1; default quick, tests use tiny), DATA_ROOT (default ../shared/datasets). Extra arguments go to
# `bayesrobust sweep` (e.g. --force, --workers N). Stages already done are skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
args=(--out "${OUT:-results}")
if [ "${QUICK:-0}" = 1 ]; then
  args+=(--quick --set "preset=${QUICK_PRESET:-quick}")
else
  args+=(--set "data_root=${DATA_ROOT:-../shared/datasets}")
fi
.venv/bin/python -m bayesrobust.sweep experiments/sweeps/rules_robustness.toml "${args[@]}" "$@"
