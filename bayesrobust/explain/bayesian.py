"""Explanations of a posterior: one map per draw, reduced over draws (docs/method.md §5.4).

Draw ``j`` explains its own argmax unit of each layer (the reference's ``avg_heatmap``); the Bayesian map
is the mean over draws. Beyond the reference, the per-pixel posterior standard deviation and the sign
agreement across draws are kept, as the uncertainty of the explanation. All three are accumulated in one
pass over the draws (Welford's algorithm, sign counts), so the draws never have to sit in memory together;
a callback receives each draw's maps, e.g. to stream them to disk.

The loop follows docs/method.md §8: the draws are those of a :class:`~bayesrobust.models.draws.DrawSet` — one module,
draw ``j``'s weights copied in place (so draw ``j`` is the network the attack used with the same
posterior) —, the explainer's hooks registered once around the loop, images batched (in chunks of
``batch_size``) — no Python loop over single images. The DrawSet holds the speed policy (convolutional
networks in ``channels_last``, images in chunks of :data:`~bayesrobust.models.draws.CONV_CHUNK`), the
same for attacks and explanations.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..checks import check_images, count
from ..models.architectures import Network
from ..models.draws import DrawSet, chunks
from ..models.posterior import Posterior
from .layers import LayerSelection, resolve_layers

log = logging.getLogger(__name__)


class Explainer(Protocol):
    """What the per-draw loop needs from an explanation method (LRP or a Captum method)."""

    @property
    def name(self) -> str: ...

    def config(self) -> dict: ...

    def attached(self, net: Network) -> ContextManager[Network]:
        """Set ``net`` up once for the whole loop (e.g. register hooks); undo everything on exit."""

    def draw(self, net: Network) -> ContextManager[Network]:
        """Set up ``net`` for the weights it currently holds (e.g. canonizers); undo on exit."""

    def __call__(self, net: Network, x: torch.Tensor,
                 layers: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(maps (L, N, *x.shape[1:]), units (L, N))`` for the layers ``layers``; an explainer with a
        ``lead_shape`` attribute (e.g. :class:`~bayesrobust.explain.fused.FusedLRP`, one map per rule) returns
        maps of shape ``(*lead_shape, L, N, ...)``."""


#: ``(draw index, maps (L, N, C, H, W), units (L, N))`` → None, called once per draw.
DrawCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


class DrawReducer:
    """Running mean, standard deviation (ddof = 0) and sign agreement of per-draw maps.

    ``sign_agreement`` is the fraction of draws whose relevance has the sign of the mean map (−, 0 or +)
    at that pixel: 1 when all draws agree, about 0.5 when they split evenly.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: torch.Tensor | None = None

    def add(self, maps: torch.Tensor) -> None:
        """Fold one draw's maps in (any shape, the same every time). In-place updates on buffers allocated
        once: fresh multi-megabyte temporaries per draw cost more (page faults) than the arithmetic."""
        if self._mean is None:
            self._mean, self._m2 = torch.zeros_like(maps), torch.zeros_like(maps)
            self._delta, self._after = torch.empty_like(maps), torch.empty_like(maps)
            self._pos = torch.zeros(maps.shape, dtype=torch.int32, device=maps.device)
            self._neg = torch.zeros_like(self._pos)
            self._mask = torch.empty(maps.shape, dtype=torch.bool, device=maps.device)
        self.count += 1
        torch.sub(maps, self._mean, out=self._delta)
        self._mean.add_(self._delta, alpha=1.0 / self.count)
        torch.sub(maps, self._mean, out=self._after)
        self._m2.addcmul_(self._delta, self._after)
        self._pos.add_(torch.gt(maps, 0, out=self._mask))
        self._neg.add_(torch.lt(maps, 0, out=self._mask))

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean, std, sign_agreement)``, each of the maps' shape.

        Raises
        ------
        ValueError
            No draw was added.
        """
        if self._mean is None:
            raise ValueError("no draw was added")
        std = (self._m2 / self.count).clamp_min(0).sqrt()
        sign = torch.sign(self._mean)
        zero = self.count - self._pos - self._neg
        agree = torch.where(sign > 0, self._pos, torch.where(sign < 0, self._neg, zero))
        return self._mean, std, agree.to(self._mean.dtype) / self.count

    def part(self, index: int) -> DrawReducer:
        """The moments of ``maps[index]`` alone (maps with a leading axis, e.g. one map per rule)."""
        part = DrawReducer()
        if self._mean is not None:
            part.count = self.count
            part._mean, part._m2 = self._mean[index].clone(), self._m2[index].clone()
            part._pos, part._neg = self._pos[index].clone(), self._neg[index].clone()
            part.__setstate__({})  # the scratch buffers
        return part

    def merge(self, other: DrawReducer) -> DrawReducer:
        """Fold in the draws another reducer saw (a disjoint chunk of the same maps' draws): the parallel
        update of Chan, Golub & LeVeque (1979) for mean and M2, sums for the sign counts. The merged
        result equals the one-pass result to floating-point rounding (docs/method.md §12)."""
        if other._mean is None:
            return self
        if self._mean is None:
            self.count, self._mean, self._m2 = other.count, other._mean.clone(), other._m2.clone()
            self._pos, self._neg = other._pos.clone(), other._neg.clone()
            return self
        n = self.count + other.count
        delta = other._mean - self._mean
        self._mean.add_(delta, alpha=other.count / n)
        self._m2.add_(other._m2).add_(delta.square_(), alpha=self.count * other.count / n)
        self._pos.add_(other._pos)
        self._neg.add_(other._neg)
        self.count = n
        return self

    def __getstate__(self) -> dict:
        """Only the moments travel (to another process): the scratch buffers are made again on the next add."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_delta", "_after", "_mask")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._mean is not None:
            self._delta, self._after = torch.empty_like(self._mean), torch.empty_like(self._mean)
            self._mask = torch.empty(self._mean.shape, dtype=torch.bool, device=self._mean.device)


@dataclass
class PosteriorExplanation:
    """Per-pixel summaries over the draws and the units each draw explained.

    ``mean``, ``std``, ``sign_agreement``: (L, N, C, H, W), with the explainer's ``lead_shape`` in front if it
    has one; ``units``: (S, L, N) int64;
    ``layers``: the layer indices, ``n_draws`` = S.
    """

    mean: torch.Tensor
    std: torch.Tensor
    sign_agreement: torch.Tensor
    units: torch.Tensor
    layers: list[int]
    n_draws: int


def draw_seed(seed: int, draw: int) -> int:
    """The RNG seed of draw ``draw`` for stochastic methods (SmoothGrad, GradientSHAP)."""
    return int(np.random.SeedSequence([int(seed), int(draw)]).generate_state(1)[0])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's and NumPy's global generators (Captum draws from both) for the context, and restore
    their previous states afterwards."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


def posterior_draws(posterior: Posterior, n_draws: int | None = None, *, net: Network | None = None,
                    device: str | torch.device = "cpu") -> DrawSet:
    """The DrawSet an explanation runs on: draws ``0..n_draws-1`` in the posterior's floating-point type
    (float64 posteriors are explained in float64), in ``net`` if given (else a new network on ``device``)."""
    dtype = next(iter(posterior.params.values())).dtype
    return DrawSet(posterior, n_draws, device=device, dtype=dtype, net=net)


def explain_posterior(posterior: Posterior | DrawSet, x: torch.Tensor, explainer: Explainer, *,
                      layers: LayerSelection = None, n_draws: int | None = None,
                      batch_size: int | None = None, seed: int = 0, net: Network | None = None,
                      device: str | torch.device = "cpu", on_draw: DrawCallback | None = None,
                      progress: Callable[[int], object] | None = None,
                      reducer: DrawReducer | None = None) -> PosteriorExplanation:
    """Explain ``x`` with every draw of ``posterior`` and reduce over the draws.

    Parameters
    ----------
    posterior
        The model (a deterministic model is a posterior with one draw), or the :class:`DrawSet` to explain
        (reuse one for several explainers: the draws are generated once; ``n_draws`` and ``net`` are then
        not used).
    x
        Images (N, C, H, W), every pixel finite and in [0, 1]; cast to the posterior's dtype.
    explainer
        :class:`~bayesrobust.explain.lrp.LRP` or :class:`~bayesrobust.explain.captum_methods.CaptumMethod`.
    layers
        Layers to explain (:func:`~bayesrobust.explain.layers.resolve_layers`): all by default.
    n_draws
        Draws ``0..n_draws-1`` (:meth:`Posterior.resolve_n_draws`: all HMC samples or 100 for SVI by
        default, 1 for a deterministic model). Use the attack's ``n_draws`` to explain the networks it
        attacked.
    batch_size
        Images per pass (by default the DrawSet's ``chunk_size``: all images for a fully connected net, 50
        for a convolutional one); results do not depend on it except for the random methods.
    seed
        Seeds the random methods per draw (:func:`draw_seed`), so a draw always gives the same map.
    net
        The module to load the draws into (default: a new network on ``device``, see
        :func:`posterior_draws`); it holds the last draw afterwards, with no hook left on it (and, if it
        has convolutions, its weights in ``channels_last`` memory format). ``x`` is moved to its device.
    device
        Where a new network lives (ignored when ``net`` is given).
    on_draw
        Called with ``(j, maps (L, N, C, H, W), units (L, N))`` after each draw (e.g. to stream the maps
        to disk). The tensors are reused for the next draw: copy what you keep.
    progress
        Called with 1 after each draw (e.g. ``tqdm.update``).
    reducer
        The :class:`DrawReducer` to fold the draws into (default: a new one); pass one to keep the moments,
        e.g. to merge chunks of draws explained elsewhere (:meth:`DrawReducer.merge`).

    Returns
    -------
    PosteriorExplanation
        Mean, std and sign agreement over the draws, (L, N, C, H, W), and the units (S, L, N).

    Raises
    ------
    ValueError
        Invalid ``layers``, ``n_draws`` or ``batch_size`` (0 is not "the default": that is ``None``), or
        images with a NaN or ±inf pixel or outside [0, 1] — before any draw is made.
    """
    count("batch_size", batch_size)
    count("n_draws", n_draws)
    check_images(x)
    draws = posterior if isinstance(posterior, DrawSet) else posterior_draws(posterior, n_draws, net=net,
                                                                             device=device)
    net = draws.net
    first = next(net.parameters())
    x = x.detach().to(device=first.device, dtype=first.dtype)
    idx = resolve_layers(net, layers)
    n = len(draws)
    parts = chunks(x.shape[0], draws.chunk_size if batch_size is None else batch_size)
    reducer = DrawReducer() if reducer is None else reducer
    units = torch.empty((n, len(idx), x.shape[0]), dtype=torch.int64)
    maps = x.new_empty((*getattr(explainer, "lead_shape", ()), len(idx), *x.shape))
    log.debug("explaining %d images with %s, %d draws, layers %s", x.shape[0], explainer.name, n, idx)
    with explainer.attached(net):
        for position in draws:
            j = draws.indices[position]
            with explainer.draw(net), seeded(draw_seed(seed, j)):
                for part in parts:
                    maps[..., part, :, :, :], units[position, :, part] = explainer(net, x[part], idx)
            reducer.add(maps)
            if on_draw is not None:
                on_draw(j, maps, units[position])
            if progress is not None:
                progress(1)
    mean, std, agreement = reducer.result()
    return PosteriorExplanation(mean, std, agreement, units, idx, n)
