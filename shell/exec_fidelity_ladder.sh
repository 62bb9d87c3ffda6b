#!/usr/bin/env bash
# The fidelity ladder (docs/method.md §9.7-9.8) — the sweep experiments/sweeps/fidelity_ladder.toml on dask: the
# reference code's settings all on, then each switch turned to the correct setting one at a time, then all
# correct; each step in its own results folder OUT/PRESET/STEP, reported together in OUT/report.html. FGSM with
# S = 100 at every step; PGD-40 and S in {1, 5, 10, 50, 100} at the two ends (reference, correct); the cross and
# random controls in every step; two control steps after the ladder: 5_ensemble (a deep ensemble of K = S
# networks in the fullBNN's place) and 6_prior_scale (prior std 0.1). A model another step trained with the same
# settings is copied, not retrained (baseNN and advNN once; fullBNN once per likelihood scaling / HMC scheme).
#   bash shell/exec_fidelity_ladder.sh                    # mnist_conv, 500 images (hours; needs data)
#   QUICK=1 bash shell/exec_fidelity_ladder.sh            # the same ladder on the quick preset
#   PRESETS="mnist_fc2" bash shell/exec_fidelity_ladder.sh --set inference=hmc   # NUTS: the HMC-scheme switch
#     (a size this CPU samples: SUBSET_SIZE=500 ... --set warmup=20 --set samples=7 --set n_train=1000, and per
#     step --set 4_correct.samples=50; docs/results/README.md has the commands that ran)
# Environment: OUT (default results/ladder), PRESETS (default mnist_conv), QUICK_PRESET (with QUICK=1; default
# quick, tests use tiny), DATA_ROOT (default ../shared/datasets), STEPS (only these steps and their PGD ends, e.g.
# "0_reference 4_correct"; default all), ENDS=0 (skip the PGD-40 / several-S runs at the two ends),
# ENSEMBLE_MEMBERS (K = S of 5_ensemble; default 100, 10 if 100 members are out of reach), PRIOR_SCALE (of
# 6_prior_scale; default 0.1), SUBSET_SIZE and CHAINS (the reference NUTS scheme; default 4000 and 15),
# CONTROLS (default cross,random; "" skips them), RESULTS_DIR (also publish the report there, e.g. docs/results:
# report.md, figures/, numbers.csv). Extra arguments go to `bayesrobust sweep` (e.g. --force, --workers 8,
# --scheduler tcp://host:8786, --set n_inputs=10). Resumable: units already done are skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
out="${OUT:-results/ladder}"
file=experiments/sweeps/fidelity_ladder.toml
args=(--out "$out")
if [ "${QUICK:-0}" = 1 ]; then
  args+=(--quick --set "preset=${QUICK_PRESET:-quick}")
else
  presets="${PRESETS:-mnist_conv}"
  args+=(--set "preset=${presets// /,}" --set "data_root=${DATA_ROOT:-../shared/datasets}")
fi
for step in ${STEPS:-}; do
  args+=(--step "$step")
  case "$step" in  # the two ends' PGD runs go with their step
    0_reference|4_correct) [ "${ENDS:-1}" = 1 ] && args+=(--step "${step}_ends") ;;
  esac
done
[ "${ENDS:-1}" = 1 ] || args+=(--skip-step '*_ends')
if [ -n "${ENSEMBLE_MEMBERS:-}" ]; then
  args+=(--set "5_ensemble.members=$ENSEMBLE_MEMBERS" --set "5_ensemble.draws=$ENSEMBLE_MEMBERS")
fi
[ -n "${PRIOR_SCALE:-}" ] && args+=(--set "6_prior_scale.prior_scale=$PRIOR_SCALE")
for step in 0_reference 2_attack_mean_grad 3_gamma_textbook 0_reference_ends; do
  [ -n "${SUBSET_SIZE:-}" ] && args+=(--set "$step.subset_size=$SUBSET_SIZE")
  [ -n "${CHAINS:-}" ] && args+=(--set "$step.chains=$CHAINS")
done
args+=(--set "controls=[$(echo "${CONTROLS-cross,random}" | sed -E 's/([a-z]+)/"\1"/g')]")
.venv/bin/python -m bayesrobust.sweep "$file" "${args[@]}" "$@"
if [ -n "${RESULTS_DIR:-}" ]; then  # publish: report.md, figures/, numbers.csv (e.g. docs/results)
  .venv/bin/python -m bayesrobust.report --out "$out" --title "Fidelity ladder" --to "$RESULTS_DIR" \
    --command "PRESETS=\"${PRESETS:-mnist_conv}\" STEPS=\"${STEPS:-}\" ENDS=${ENDS:-1} bash shell/exec_fidelity_ladder.sh $*"
else
  .venv/bin/python -m bayesrobust.report --out "$out" --title "Fidelity ladder"
fi
