"""Posteriors as numbered draws of a plain network (SPEC 1.3).

Every trained model is a :class:`Posterior`: a deterministic network is a posterior with one draw, an SVI
posterior is a mean-field Normal over the parameters, an MCMC posterior is a set of samples. Later stages
(attacks, explanations) never ask which: they ask for ``n`` draws and get the same networks every time.

Draw ``j`` is fixed by the posterior alone, never by how many draws are requested: for SVI the noise of draw
``j`` comes from a generator seeded with ``(seed, j)``; for MCMC draw ``j`` is sample ``order[j]`` of a
permutation seeded with ``seed`` (so the first ``n`` draws are a random subset without replacement).

The fast way to use many draws on one machine (SPEC 6) is one module whose weights are swapped in place::

    net = posterior.network()
    for j in posterior.iter_draws(net, n):
        ...  # net now holds draw j
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .architectures import ArchConfig, Network, build

KINDS = ("deterministic", "svi", "mcmc")
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
DIAGNOSTICS_FILE = "diagnostics.json"


def _draw_generator(seed: int, j: int) -> torch.Generator:
    """The generator of draw ``j``: independent streams per ``(seed, j)``."""
    state = np.random.SeedSequence([int(seed), int(j)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass
class Posterior:
    """Draws of the network ``arch``.

    Parameters
    ----------
    arch
        The architecture; draws are :class:`~bayesrobust.models.architectures.Network` instances of it.
    kind
        ``'deterministic'`` (``params`` are the weights), ``'svi'`` (``params`` are the means, ``scales`` the
        standard deviations of a mean-field Normal) or ``'mcmc'`` (``params`` are samples with leading
        dims ``(chain, sample)``).
    buffers
        Non-learnable state shared by every draw (BatchNorm running statistics).
    config
        The full training config (JSON-serialisable), kept with the checkpoint.
    extra
        Other tensors saved with the checkpoint (ELBO history, MCMC diagnostics arrays).
    seed
        Fixes which network draw ``j`` is.
    """

    arch: ArchConfig
    kind: str
    params: dict[str, torch.Tensor]
    scales: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown posterior kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind == "svi" and set(self.scales) != set(self.params):
            raise ValueError("an SVI posterior needs a scale for every parameter")
        self._order: torch.Tensor | None = None

    # -- size ------------------------------------------------------------------------------------------
    @property
    def max_draws(self) -> int | None:
        """How many distinct draws exist: 1, the number of MCMC samples, or ``None`` (unbounded, SVI)."""
        if self.kind == "deterministic":
            return 1
        if self.kind == "mcmc":
            first = next(iter(self.params.values()))
            return int(first.shape[0] * first.shape[1])
        return None

    def resolve_n_draws(self, n: int | None) -> int:
        """The number of draws to use when ``n`` are asked for: always 1 for a deterministic model;
        ``None`` means all MCMC samples (or 100 for SVI).

        Raises
        ------
        ValueError
            ``n`` is not positive, or more than the MCMC samples that exist.
        """
        if self.kind == "deterministic":
            return 1
        if n is None:
            return self.max_draws or 100
        if n <= 0:
            raise ValueError(f"n_draws must be positive, got {n}")
        if self.max_draws is not None and n > self.max_draws:
            raise ValueError(f"n_draws={n} but this MCMC posterior has only {self.max_draws} samples")
        return n

    # -- draws -----------------------------------------------------------------------------------------
    def draw_params(self, j: int) -> dict[str, torch.Tensor]:
        """The learnable parameters of draw ``j`` (state-dict names of the plain network)."""
        if self.kind == "deterministic":
            if j != 0:
                raise IndexError(f"a deterministic model has only draw 0, asked for draw {j}")
            return self.params
        if self.kind == "svi":
            g = _draw_generator(self.seed, j)
            return {k: self.params[k] + self.scales[k] * torch.randn(self.params[k].shape, generator=g,
                                                                     dtype=self.params[k].dtype)
                    for k in sorted(self.params)}
        n = self.max_draws
        assert n is not None
        if not 0 <= j < n:
            raise IndexError(f"draw {j} out of range: this MCMC posterior has {n} samples")
        if self._order is None:
            self._order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        flat = int(self._order[j])
        return {k: v.reshape(n, *v.shape[2:])[flat] for k, v in self.params.items()}

    def network(self, j: int = 0, device: str | torch.device = "cpu") -> Network:
        """A new plain network holding draw ``j``, in eval mode."""
        net = build(self.arch)
        net.load_state_dict({**self.draw_params(j), **self.buffers}, strict=True)
        return net.to(device).eval()

    def stacked_params(self, n: int) -> dict[str, torch.Tensor]:
        """Draws ``0..n-1`` stacked: every parameter gets a leading dimension of size ``n``."""
        draws = [self.draw_params(j) for j in range(n)]
        return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}

    def iter_draws(self, net: Network, n: int | None = None) -> Iterator[int]:
        """Copy draws ``0..n-1`` into ``net`` in place, one at a time, yielding the draw index.

        Works with hooks registered on ``net`` (the module objects never change). The weights of the
        last draw stay in ``net`` afterwards.
        """
        n = self.resolve_n_draws(n)
        targets = dict(net.named_parameters())
        buffers = dict(net.named_buffers())
        with torch.no_grad():
            for k, v in self.buffers.items():
                buffers[k].copy_(v)
        for j in range(n):
            with torch.no_grad():
                for k, v in self.draw_params(j).items():
                    targets[k].copy_(v)
            yield j

    # -- checkpoints -----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``weights.pt`` (tensors only), ``config.json`` (and, for MCMC, ``diagnostics.json``) into
        ``directory``, atomically: all go
        into a temporary sibling folder that replaces ``directory`` only when complete."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            tensors = {"params": self.params, "scales": self.scales, "buffers": self.buffers,
                       "extra": self.extra}
            torch.save(tensors, tmp / WEIGHTS_FILE)
            meta = {"kind": self.kind, "arch": self.arch.to_dict(), "seed": self.seed, "config": self.config}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            if "diagnostics" in self.config:
                (tmp / DIAGNOSTICS_FILE).write_text(json.dumps(self.config["diagnostics"], indent=2))
            old = None
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(directory, old)
            os.replace(tmp, directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | Path, arch: ArchConfig | None = None) -> "Posterior":
        """Read a checkpoint written by :meth:`save` (``torch.load(weights_only=True)``: no unpickling).

        Raises
        ------
        FileNotFoundError
            No checkpoint in ``directory``.
        ValueError
            ``arch`` is given and differs from the checkpoint's architecture.
        """
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"no model checkpoint in {directory} (expected {CONFIG_FILE} and "
                                    f"{WEIGHTS_FILE})")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        saved = ArchConfig.from_dict(meta["arch"])
        if arch is not None and saved != arch:
            raise ValueError(f"checkpoint {directory} holds architecture {saved} but {arch} was requested")
        tensors = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        return cls(saved, meta["kind"], tensors["params"], tensors["scales"], tensors["buffers"],
                   meta["config"], tensors["extra"], int(meta["seed"]))


def deterministic(net: Network, config: dict | None = None) -> Posterior:
    """The one-draw posterior of a trained deterministic network."""
    params = {k: v.detach().cpu().clone() for k, v in net.named_parameters()}
    buffers = {k: v.detach().cpu().clone() for k, v in net.named_buffers()}
    return Posterior(net.arch, "deterministic", params, buffers=buffers, config=config or {})
