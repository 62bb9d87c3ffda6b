"""Test helpers shared by several test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import torch

from bayesrobust.models.architectures import build
from bayesrobust.models.posterior import Posterior, deterministic
from bayesrobust.paths import model_dir
from bayesrobust.presets import get_preset


def save_untrained_quick_models(root: Path, svi_scale: float) -> Path:
    """Write an (untrained) quick baseNN and an SVI fullBNN around the same weights under ``root``."""
    torch.manual_seed(0)
    net = build(get_preset("quick").arch)
    deterministic(net, {"dataset": "mnist5k"}).save(model_dir(root, "quick", "baseNN"))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    Posterior(net.arch, "svi", params, {k: torch.full_like(v, svi_scale) for k, v in params.items()},
              config={"dataset": "mnist5k"}).save(model_dir(root, "quick", "fullBNN", "svi"))
    return root
