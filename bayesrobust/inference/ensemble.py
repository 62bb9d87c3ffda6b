"""Deep ensemble (Lakshminarayanan et al. 2017): K deterministic networks trained from different seeds, kept as a
posterior of K draws (docs/method.md §13.3).

Each member is a baseNN (the preset's ``base`` optimiser settings) trained with seed ``seed + 1000 k`` (its
initialisation and minibatch order differ). The members are stored as K chains of one sample each
(parameters (K, 1, *shape)): every member is an independent run, so chain-to-chain disagreement in
:mod:`bayesrobust.diagnose` is the ensemble's diversity (R-hat needs ≥ 2 samples per chain and is NaN).
It is the non-Bayesian control beside the Bayesian posteriors.
"""

from __future__ import annotations

import time

import torch

from ..data import Data
from ..models.architectures import ArchConfig, build
from ..models.posterior import Posterior
from ..presets import EnsembleConfig, OptimConfig
from .deterministic import train_network


def train_ensemble(arch: ArchConfig, data: Data, optim: OptimConfig, cfg: EnsembleConfig, seed: int = 0,
                   device: str | torch.device = "cpu", progress: bool = False) -> Posterior:
    """Train ``cfg.members`` networks and return them as a Posterior of kind ``'ensemble'``, parameters
    (members, 1, *shape); ``extra`` holds each member's final training loss and wall time."""
    if cfg.members <= 0:
        raise ValueError(f"members must be positive, got {cfg.members}")
    if any(True for _ in build(arch).buffers()):  # before any training
        raise ValueError(f"the ensemble keeps one set of buffers for all members; architecture {arch.name!r} "
                         f"has running statistics (BatchNorm) that differ per member")
    params: dict[str, list[torch.Tensor]] = {}
    buffers: dict[str, list[torch.Tensor]] = {}
    losses, seconds = [], []
    for k in range(cfg.members):
        start = time.perf_counter()
        net, hist = train_network(arch, data, optim, None, seed + 1000 * k, device, progress)
        seconds.append(time.perf_counter() - start)
        losses.append(hist.loss[-1] if hist.loss else float("nan"))
        for name, v in net.named_parameters():
            params.setdefault(name, []).append(v.detach().cpu().clone()[None])
        for name, v in net.named_buffers():
            buffers.setdefault(name, []).append(v.detach().cpu().clone())
    return Posterior(arch, "ensemble", {k: torch.stack(v) for k, v in params.items()},
                     buffers={k: v[0] for k, v in buffers.items()}, seed=seed,
                     config={"ensemble": {"members": cfg.members}},
                     extra={"member_loss": torch.tensor(losses), "chain_seconds": torch.tensor(seconds)})
