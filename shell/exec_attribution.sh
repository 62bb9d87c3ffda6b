#!/usr/bin/env bash
# Seed 002's attributional-robustness table (docs/method.md §11.6): train baseNN, advNN, artNN, fullBNN and
# artBNN, attack each one's explanation with IFIA (top-k, saliency maps), then print and write the table
# (natural accuracy, PGD accuracy, top-k intersection, Kendall tau) and the figure of one image per model.
#   bash shell/exec_attribution.sh                    # mnist_conv, S = 20, 500 images, 100 steps (hours)
#   QUICK=1 bash shell/exec_attribution.sh            # the same sequence on the quick preset, 20 images, 20 steps
# Environment: OUT (default results), QUICK_PRESET (with QUICK=1; default quick, tests use tiny), DATA_ROOT
# (default ../shared/datasets), MODELS (default all five), METHOD (default saliency), ATTACK (ifia or
# manipulate; default ifia), EPOCHS (overrides the preset's training epochs), N_INPUTS and STEPS (QUICK
# sizes, default 20 and 20). Extra arguments (e.g. --force)
# go to every attack call. Finished stages are skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
out="${OUT:-results}"
models="${MODELS:-baseNN advNN artNN fullBNN artBNN}"
if [ "${QUICK:-0}" = 1 ]; then
  preset="${QUICK_PRESET:-quick}"; draws=5; data=(); sizes=(--n-inputs "${N_INPUTS:-20}" --steps "${STEPS:-20}")
else
  preset=mnist_conv; draws=20; data=(--data-root "${DATA_ROOT:-../shared/datasets}"); sizes=(--n-inputs 500)
fi
train=(); [ -n "${EPOCHS:-}" ] && train=(--epochs "$EPOCHS")
for model in $models; do
  .venv/bin/python -m bayesrobust.train --model "$model" --preset "$preset" "${train[@]}" "${data[@]}" --out "$out"
  .venv/bin/python -m bayesrobust.attack --model "$model" --preset "$preset" --attack "${ATTACK:-ifia}" \
    --method "${METHOD:-saliency}" --n-draws "$draws" "${sizes[@]}" "${data[@]}" --out "$out" "$@"
done
.venv/bin/python -m bayesrobust.robustness_table --kind attribution --preset "$preset" --out "$out"
