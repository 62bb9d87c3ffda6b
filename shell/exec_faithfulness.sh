#!/usr/bin/env bash
# Stable and faithful, side by side (docs/method.md §10): train, FGSM-attack, explain with the three LRP rules and
# analyse (the pipeline), then the faithfulness checks of every model and method next to the LRP robustness.
#   bash shell/exec_faithfulness.sh                    # the MNIST and Fashion-MNIST conv presets, S = 100 (hours)
#   QUICK=1 bash shell/exec_faithfulness.sh            # the quick conv preset, S = 20, RISE with 500 masks and
#                                                      # 20 insertion/deletion steps (not timed on an idle machine;
#                                                      # an estimate from the forward-pass count: 10-20 minutes)
# Environment: OUT (default results), QUICK_PRESET (with QUICK=1; default quick, tests use tiny), DRAWS (S; default
# 20 with QUICK=1, else 100), RULES (LRP rules explained by the pipeline; default "epsilon gamma alpha1beta0"),
# DATA_ROOT (default ../shared/datasets). Extra arguments go to the faithfulness command (e.g. --n-inputs 50; they
# override the driver's --rise-masks, --steps and --randomisation-inputs: the randomisation check runs on the first
# 20 (50) images only, as it costs a whole explanation per layer and draw).
# Stages already done are skipped by the pipeline.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
out="${OUT:-results}"
if [ "${QUICK:-0}" = 1 ]; then
  presets="${QUICK_PRESET:-quick}"; draws="${DRAWS:-20}"; data=()
  faith=(--rise-masks 500 --steps 20 --randomisation-inputs 20)
else
  presets="mnist_conv fashion_mnist_conv"; draws="${DRAWS:-100}"
  data=(--data-root "${DATA_ROOT:-../shared/datasets}")
  faith=(--randomisation-inputs 50)
fi
rule_args=(); for rule in ${RULES:-epsilon gamma alpha1beta0}; do rule_args+=(--rule "$rule"); done
for preset in $presets; do
  .venv/bin/python -m bayesrobust.pipeline --preset "$preset" --attack fgsm "${rule_args[@]}" --draws "$draws" \
    "${data[@]}" --out "$out"
  .venv/bin/python -m bayesrobust.faithfulness --preset "$preset" --n-draws "$draws" "${data[@]}" --out "$out" \
    "${faith[@]}" "$@"
done
