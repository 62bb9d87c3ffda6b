#!/usr/bin/env bash
# The fidelity ladder (docs/method.md §9.7): the reference code's settings all on, then each switch turned to
# the correct setting one at a time, then all correct; each step in its own results folder OUT/PRESET/STEP,
# reported together in OUT/report.html. FGSM with S = 100 at every step; PGD-40 and S in {1, 5, 10, 50, 100} at the
# two ends (reference, correct). baseNN and advNN do not depend on the switches: trained once, copied; fullBNN
# is trained once per (likelihood scaling, HMC scheme) and copied to the steps that share them.
#   bash shell/exec_fidelity_ladder.sh                    # mnist_conv, 500 images (hours; needs data)
#   QUICK=1 bash shell/exec_fidelity_ladder.sh            # the same ladder on the quick preset
#   PRESETS="mnist_fc2" bash shell/exec_fidelity_ladder.sh   # an HMC preset: the HMC-scheme switch too
# Environment: OUT (default results/ladder), PRESETS (default mnist_conv), QUICK_PRESET (with QUICK=1; default
# quick, tests use tiny), DATA_ROOT (default ../shared/datasets), SUBSET_SIZE and CHAINS (the reference HMC
# scheme; default 4000 and 15), STEPS (only these steps, e.g. "0_reference 4_correct"; default all), ENDS=0
# (skip the PGD-40 / several-S runs at the two ends), RESULTS_DIR (also publish the report there, e.g.
# docs/results: report.md, figures/, numbers.csv). Extra
# arguments go to every pipeline call (e.g. --force, --n-inputs 10). Resumable: stages already done are
# skipped, so a killed ladder continues where it stopped.
# Controls (docs/method.md §9.8): every pipeline call gets --controls "$CONTROLS" (default cross,random: each
# model explained on the other model's x̃ and on a random-sign perturbation of its own attack's L2 norm; set
# CONTROLS="" to skip them), and two control steps follow the ladder, all-correct settings otherwise:
# 5_ensemble (the fullBNN replaced by a deep ensemble of K = S networks, attacked and explained like it; at
# paper scale K = S = 100, or ENSEMBLE_MEMBERS=10 (then S = 10 in that step) if 100 members are out of reach) and
# 6_prior_scale (prior std PRIOR_SCALE, default 0.1: a narrower posterior).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
out="${OUT:-results/ladder}"
if [ "${QUICK:-0}" = 1 ]; then
  presets="${QUICK_PRESET:-quick}"; s_main=10; s_ends=(1 2 5 10); data=()
else
  presets="${PRESETS:-mnist_conv}"; s_main=100; s_ends=(1 5 10 50 100)
  data=(--data-root "${DATA_ROOT:-../shared/datasets}")
fi
py=.venv/bin/python

inference_of() {  # the preset's fullBNN inference
  $py -c "from bayesrobust.presets import get_preset; print(get_preset('$1').inference)"
}

# run_step PRESET STEP SCALING MODE GAMMA_RULE HMC_SCHEME [pipeline args]: one setting of the switches
wanted() {  # is step $1 among STEPS (all when STEPS is unset)?
  [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $1 "* ]]
}

declare -A twin_of  # "preset/scaling/scheme" -> the first step that trains fullBNN with these settings

copy_models() {  # copy_models FROM_DIR TO_DIR PRESET PATTERN...: model folders TO_DIR lacks
  local from=$1 to=$2 preset=$3; shift 3
  [ "$from" != "$to" ] && [ -d "$from/models/$preset" ] || return 0
  for pattern in "$@"; do
    for model in "$from/models/$preset/"$pattern; do
      [ -d "$model" ] && [ ! -e "$to/models/$preset/$(basename "$model")" ] || continue
      mkdir -p "$to/models/$preset"; cp -r "$model" "$to/models/$preset/"
    done
  done
}

run_step() {
  local preset=$1 step=$2 scaling=$3 mode=$4 gamma=$5 scheme=$6; shift 6
  local key="$preset/$scaling/$scheme"
  [ -n "${twin_of[$key]:-}" ] || twin_of[$key]=$step
  wanted "$step" || return 0
  local dir="$out/$preset/$step"
  # baseNN and advNN do not depend on the switches; fullBNN depends only on the likelihood scaling and the HMC
  # scheme, so a step whose training settings an earlier step had reuses that step's fullBNN (the train stage
  # checks the stored config and retrains anything that differs)
  copy_models "$out/$preset/0_reference" "$dir" "$preset" baseNN advNN
  copy_models "$out/$preset/${twin_of[$key]}" "$dir" "$preset" "fullBNN*"
  local hmc=()
  if [ "$(inference_of "$preset")" = hmc ]; then
    hmc=(--hmc-scheme "$scheme")
    [ "$scheme" = subsets ] && hmc+=(--subset-size "${SUBSET_SIZE:-4000}" --chains "${CHAINS:-15}")
  fi
  echo "== $preset / $step: likelihood $scaling, posterior mode $mode, rule $gamma, HMC ${scheme}"
  $py -m bayesrobust.pipeline --preset "$preset" --attack fgsm --draws "$s_main" \
    --likelihood-scaling "$scaling" --posterior-mode "$mode" "${hmc[@]}" \
    --rule epsilon --rule "$gamma" --rule alpha1beta0 "${data[@]}" --out "$dir" "$@"
}

ends() {  # PGD-40 and S in {1, 5, 10, 50, 100} at one end of the ladder (Bay − Det against S)
  local preset=$1 step=$2 scaling=$3 mode=$4 gamma=$5 scheme=$6; shift 6
  wanted "$step" && [ "${ENDS:-1}" = 1 ] || return 0
  local dir="$out/$preset/$step" hmc=() draws=()
  for s in "${s_ends[@]}"; do draws+=(--draws "$s"); done
  if [ "$(inference_of "$preset")" = hmc ]; then
    hmc=(--hmc-scheme "$scheme")
    [ "$scheme" = subsets ] && hmc+=(--subset-size "${SUBSET_SIZE:-4000}" --chains "${CHAINS:-15}")
  fi
  echo "== $preset / $step: PGD-40, S in ${s_ends[*]}"
  $py -m bayesrobust.pipeline --preset "$preset" --attack pgd --steps 40 "${draws[@]}" \
    --likelihood-scaling "$scaling" --posterior-mode "$mode" "${hmc[@]}" \
    --rule epsilon --rule "$gamma" --rule alpha1beta0 "${data[@]}" --out "$dir" "$@"
}

CONTROLS="${CONTROLS-cross,random}"
pass=("$@")  # the extra arguments, for the control steps
[ -n "$CONTROLS" ] && set -- --controls "$CONTROLS" "$@"
for preset in $presets; do
  if [ "$(inference_of "$preset")" = hmc ]; then ref_scheme=subsets; else ref_scheme=full; fi
  run_step "$preset" 0_reference reference mean_sign gamma_quadratic "$ref_scheme" "$@"
  if [ "$ref_scheme" = subsets ]; then  # NUTS presets: the HMC scheme is their switch (SVI scaling is moot)
    run_step "$preset" 1_hmc_full_data reference mean_sign gamma_quadratic full "$@"
  else
    run_step "$preset" 1_likelihood_scaled full mean_sign gamma_quadratic full "$@"
  fi
  run_step "$preset" 2_attack_mean_grad reference mean_grad gamma_quadratic "$ref_scheme" "$@"
  run_step "$preset" 3_gamma_textbook reference mean_sign gamma "$ref_scheme" "$@"
  run_step "$preset" 4_correct full mean_grad gamma full "$@"
  ends "$preset" 0_reference reference mean_sign gamma_quadratic "$ref_scheme" "$@"
  ends "$preset" 4_correct full mean_grad gamma full "$@"
done
# -- the control steps (docs/method.md §9.8), after the ladder --------------------------------------------------
control_step() {  # control_step PRESET STEP S [pipeline args]: all-correct settings plus the step's own options
  local preset=$1 step=$2 draws=$3; shift 3
  wanted "$step" || return 0
  local dir="$out/$preset/$step"
  copy_models "$out/$preset/0_reference" "$dir" "$preset" baseNN advNN  # they do not depend on the step
  echo "== $preset / $step: all correct, $*"
  $py -m bayesrobust.pipeline --preset "$preset" --attack fgsm --draws "$draws" \
    --likelihood-scaling full --posterior-mode mean_grad --rule epsilon --rule gamma --rule alpha1beta0 \
    ${CONTROLS:+--controls "$CONTROLS"} "${data[@]}" --out "$dir" "$@"
}

for preset in $presets; do
  members="${ENSEMBLE_MEMBERS:-$s_main}"  # K = S
  control_step "$preset" 5_ensemble "$members" --inference ensemble --members "$members" "${pass[@]}"
  scheme=()
  [ "$(inference_of "$preset")" = hmc ] && scheme=(--hmc-scheme full)
  control_step "$preset" 6_prior_scale "$s_main" --prior-scale "${PRIOR_SCALE:-0.1}" "${scheme[@]}" "${pass[@]}"
done
if [ -n "${RESULTS_DIR:-}" ]; then  # publish: report.md, figures/, numbers.csv (e.g. docs/results)
  $py -m bayesrobust.report --out "$out" --title "Fidelity ladder" --to "$RESULTS_DIR" \
    --command "PRESETS=\"$presets\" STEPS=\"${STEPS:-}\" ENDS=${ENDS:-1} bash shell/exec_fidelity_ladder.sh ${pass[*]}"
else
  $py -m bayesrobust.report --out "$out" --title "Fidelity ladder"
fi
