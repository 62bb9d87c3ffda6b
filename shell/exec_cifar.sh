#!/usr/bin/env bash
# Paper, CIFAR-10 (docs/method.md §6.5): ResNet-20 deterministic, adversarially trained and Bayesian (SVI), FGSM, the
# three LRP rules at every layer, S = 100.
#   bash shell/exec_cifar.sh                  # paper settings: needs DATA_ROOT/cifar-10-batches-py, a GPU helps
#   QUICK=1 bash shell/exec_cifar.sh          # smoke run on the 300 CIFAR-10 test images in ../shared/datasets
# Environment: OUT (default results), DATA_ROOT (default ../shared/datasets). Extra arguments go to the
# pipeline (e.g. --force, --device cuda).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh"
cd "$root"
if [ "${QUICK:-0}" = 1 ]; then preset=quick_resnet20; draws=5; else preset=cifar_resnet20; draws=100; fi
.venv/bin/python -m bayesrobust.pipeline --preset "$preset" --attack fgsm \
  --rule epsilon --rule gamma --rule alpha1beta0 --draws "$draws" \
  --data-root "${DATA_ROOT:-../shared/datasets}" --out "${OUT:-results}" "$@"
