#!/usr/bin/env bash
# Paper, figures 4 and 7-9 (docs/method.md §6.5): FGSM, LRP epsilon rule at every layer, the four MNIST/Fashion-MNIST
# presets, fullBNN with S in {10, 50, 100}.
#   bash shell/exec_layers_robustness.sh                    # paper settings (hours; needs --data-root data)
#   QUICK=1 bash shell/exec_layers_robustness.sh            # the same sequence on the quick preset, minutes
# Environment: OUT (default results), QUICK_PRESET (with QUICK=1; default quick, tests use tiny), DATA_ROOT (default ../shared/datasets), ATTACK (default fgsm).
# Extra arguments (e.g. --force) go to every pipeline call. Stages already done are skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
out="${OUT:-results}"
attack="${ATTACK:-fgsm}"
if [ "${QUICK:-0}" = 1 ]; then
  presets="${QUICK_PRESET:-quick}"; draws=(5 10 20); data=()
else
  presets="mnist_conv fashion_mnist_conv mnist_fc2 fashion_mnist_fc2"; draws=(10 50 100)
  data=(--data-root "${DATA_ROOT:-../shared/datasets}")
fi
draw_args=(); for s in "${draws[@]}"; do draw_args+=(--draws "$s"); done
for preset in $presets; do
  .venv/bin/python -m bayesrobust.pipeline --preset "$preset" --attack "$attack" --rule epsilon \
    "${draw_args[@]}" "${data[@]}" --out "$out" "$@"
done
