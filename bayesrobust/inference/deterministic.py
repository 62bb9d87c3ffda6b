"""baseNN and advNN: deterministic training, plainly or on adversarial examples (docs/method.md §3.1, §3.2).

advNN replaces a fraction ``adv_ratio`` of every batch by adversarial examples of the current network
(reference: 100% FGSM, ε = 0.2, Linf; we also support PGD in Linf and L2). Examples are made with the
network in eval mode (BatchNorm statistics frozen), then the step is taken in train mode.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import Data, batches
from ..models.architectures import ArchConfig, Network, build
from ..presets import AdvConfig, ARTConfig, OptimConfig

log = logging.getLogger(__name__)


@dataclass
class History:
    """Per-epoch training record: mean loss, wall time (s) and, for advNN, the adversarial batch share."""

    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return {"loss": torch.tensor(self.loss), "epoch_seconds": torch.tensor(self.seconds)}


def make_attack(cfg: AdvConfig):
    """The attack that makes advNN's training examples (built by :func:`bayesrobust.adversarial.make_attack`).

    Raises
    ------
    ValueError
        A ratio outside [0, 1], FGSM with a norm other than Linf, or an unknown attack.
    """
    from .. import adversarial
    if not 0.0 <= cfg.adv_ratio <= 1.0:
        raise ValueError(f"adv_ratio must be in [0, 1], got {cfg.adv_ratio}")
    if cfg.attack == "fgsm":
        if cfg.norm != "linf":
            raise ValueError(f"FGSM is an Linf attack; got norm {cfg.norm!r} (use --adv-attack pgd for l2)")
        return adversarial.make_attack("fgsm", epsilon=cfg.epsilon)
    return adversarial.make_attack(cfg.attack, norm=cfg.norm, epsilon=cfg.epsilon, steps=cfg.steps,
                               step_size=cfg.step_size, random_start=True)


def _optimizer(net: nn.Module, cfg: OptimConfig, steps_per_epoch: int):
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adam or sgd")
    milestones = [max(1, int(round(m * cfg.epochs))) * steps_per_epoch for m in cfg.milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1) if milestones else None
    return opt, sched


def train_network(arch: ArchConfig, data: Data, cfg: OptimConfig, adv: AdvConfig | None = None,
                  seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
                  callback: Callable[[int, float], None] | None = None, *,
                  art: ARTConfig | None = None) -> tuple[Network, History]:
    """Train a deterministic network of architecture ``arch`` on ``data`` with cross-entropy.

    Parameters
    ----------
    cfg
        Optimiser settings (Adam for fc2/conv in the paper, SGD with momentum for ResNet-20).
    adv
        ``None`` for baseNN; for advNN the attack and the adversarial share of each batch.
    callback
        Called as ``callback(epoch, mean_loss)`` after every epoch.
    art
        ``None``, or the settings of attributional robustness training (artNN): each batch's loss is then
        :func:`bayesrobust.inference.art.art_objective` (docs/method.md §11.5).

    Returns
    -------
    The trained network (eval mode, on ``device``) and its :class:`History`.
    """
    if cfg.epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {cfg.epochs}")
    if cfg.batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {cfg.batch_size}")
    if not 0 < cfg.lr < float("inf"):  # NaN fails too
        raise ValueError(f"lr must be positive and finite, got {cfg.lr}")
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):  # seeded here, the caller's global RNG left as it was
        torch.manual_seed(seed)
        return _fit(arch, data, cfg, adv, seed, device, progress, callback, art)


def _fit(arch: ArchConfig, data: Data, cfg: OptimConfig, adv: AdvConfig | None, seed: int,
         device: str | torch.device, progress: bool,
         callback: Callable[[int, float], None] | None,
         art: ARTConfig | None = None) -> tuple[Network, History]:
    """The training loop of :func:`train_network`, run with the global RNG seeded by it."""
    net = build(arch).to(device)
    attack = make_attack(adv) if adv is not None else None
    if art is not None:
        from .art import art_objective
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    opt, sched = _optimizer(net, cfg, steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    history = History()
    for epoch in range(cfg.epochs):
        start, total, count = time.perf_counter(), 0.0, 0
        bar = tqdm(batches(data, cfg.batch_size, shuffle=True, generator=gen), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for xb, yb in bar:
            xb, yb = xb.to(device), yb.to(device)
            if attack is not None and adv is not None and adv.adv_ratio > 0:
                n_adv = int(round(adv.adv_ratio * len(xb)))
                net.eval()
                x_adv = attack(net, xb[:n_adv], yb[:n_adv]).detach()
                xb = torch.cat([x_adv, xb[n_adv:]])
            net.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb) if art is None else art_objective(net, xb, yb, art)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(xb)
            count += len(xb)
            bar.set_postfix(loss=f"{total / count:.4f}")
        history.loss.append(total / max(count, 1))
        history.seconds.append(time.perf_counter() - start)
        log.info("epoch %d/%d  loss %.4f  (%.1f s)", epoch + 1, cfg.epochs, history.loss[-1], history.seconds[-1])
        if callback is not None:
            callback(epoch, history.loss[-1])
    return net.eval(), history
