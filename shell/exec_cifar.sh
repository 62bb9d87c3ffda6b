#!/usr/bin/env bash
# Paper, CIFAR-10 (docs/method.md §6.5): ResNet-20 deterministic, adversarially trained and Bayesian (SVI), FGSM, the
# three LRP rules at every layer, S = 100 — the sweep experiments/sweeps/cifar.toml on dask.
#   bash shell/exec_cifar.sh                  # paper settings: needs DATA_ROOT/cifar-10-batches-py, a GPU helps
#   QUICK=1 bash shell/exec_cifar.sh          # smoke run on the 300 CIFAR-10 test images in ../shared/datasets
# Environment: OUT (default results), DATA_ROOT (default ../shared/datasets). Extra arguments go to
# `bayesrobust sweep` (e.g. --force, --set device=cuda).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
args=(--out "${OUT:-results}" --set "data_root=${DATA_ROOT:-../shared/datasets}")
[ "${QUICK:-0}" = 1 ] && args+=(--quick)
.venv/bin/python -m bayesrobust.sweep experiments/sweeps/cifar.toml "${args[@]}" "$@"
