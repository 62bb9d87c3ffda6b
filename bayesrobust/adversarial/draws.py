"""S posterior draws, materialised once and swapped into one module in place (SPEC 1.3, 6).

Attacks and their evaluation visit the same draws many times (PGD: once per step). A :class:`DrawSet`
computes each draw's parameters once (for SVI that is one Gaussian sample per parameter, several ms per
draw) and then copies them into a single network, so every visit costs one memory copy; images stay
batched. Draw ``j`` is :meth:`Posterior.draw_params(j) <bayesrobust.models.posterior.Posterior.draw_params>`,
so a DrawSet holds exactly the networks that ``posterior.iter_draws`` and ``posterior.network(j)`` give.
A plain module is the one-draw case (:meth:`DrawSet.from_module`).

Speed on CPU (measured by ``experiments/benchmarks/bench_attacks.py``): a network with convolutions is kept
in ``channels_last`` memory format, which makes PyTorch's CPU max-pooling about 15x faster than in NCHW
(for the paper's ``conv`` net it dominated the gradient), and its images are passed in chunks of
:data:`CONV_CHUNK` (activations stay in cache); fully connected networks take the whole batch at once.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from ..models.posterior import Posterior

#: Images per forward/backward pass for networks with convolutions (fastest on the 2-core CPU measured).
CONV_CHUNK = 50


def has_conv(net: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in net.modules())


def default_chunk_size(net: nn.Module) -> int | None:
    """:data:`CONV_CHUNK` for a network with convolutions, ``None`` (the whole batch) otherwise."""
    return CONV_CHUNK if has_conv(net) else None


class DrawSet:
    """Draws ``0..S-1`` of a posterior, loaded one at a time into :attr:`net`.

    Parameters
    ----------
    posterior
        The trained model; a deterministic one always gives S = 1.
    n_draws
        S; ``None`` means the posterior's default (all MCMC samples, 100 for SVI), see
        :meth:`Posterior.resolve_n_draws`.
    device
        Where the network and the cached draws live.
    dtype
        Floating-point type of the network (default: the posterior's, float32); float64 for exact tests.

    Attributes
    ----------
    net : torch.nn.Module
        The one module (eval mode, parameters with ``requires_grad=False``) that holds the current draw.
    indices : tuple[int, ...]
        The posterior draw indices, recorded as the ``draw`` coordinate of results.
    chunk_size : int or None
        Images per pass that callers use unless told otherwise (:func:`default_chunk_size`).

    Raises
    ------
    ValueError
        ``n_draws`` not positive, or more than an MCMC posterior's samples.

    Examples
    --------
    >>> draws = DrawSet(posterior, 100)                   # doctest: +SKIP
    >>> for j in draws:                                   # draws.net now holds draw j
    ...     logits = draws.net(x)
    """

    def __init__(self, posterior: Posterior, n_draws: int | None = None, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
        n = posterior.resolve_n_draws(n_draws)
        self.indices: tuple[int, ...] = tuple(range(n))
        self.net: nn.Module = posterior.network(0, device).to(dtype=dtype).requires_grad_(False)
        fmt = torch.channels_last if has_conv(self.net) else torch.contiguous_format
        self.net.to(memory_format=fmt)
        self.chunk_size = default_chunk_size(self.net)
        self._targets = dict(self.net.named_parameters())
        self._params = [{k: v.to(device, dtype).contiguous(memory_format=fmt if v.dim() == 4 else
                                                            torch.contiguous_format)
                         for k, v in posterior.draw_params(j).items()} for j in self.indices]
        self._loaded: int | None = 0

    @classmethod
    def from_module(cls, module: nn.Module) -> "DrawSet":
        """A plain module as a one-draw set (the module is used as is: not copied, mode unchanged)."""
        self = cls.__new__(cls)
        self.indices = (0,)
        self.net = module
        self.chunk_size = default_chunk_size(module)
        self._targets = {}
        self._params = [{}]
        self._loaded = 0
        return self

    @classmethod
    def of(cls, model: "Posterior | nn.Module | DrawSet", n_draws: int | None = None, *,
           device: str | torch.device = "cpu") -> "DrawSet":
        """``model`` as a DrawSet: a DrawSet is returned as is, a module is one draw."""
        if isinstance(model, DrawSet):
            return model
        if isinstance(model, nn.Module):
            return cls.from_module(model)
        if isinstance(model, Posterior):
            return cls(model, n_draws, device=device)
        raise TypeError(f"expected a Posterior, a DrawSet or a torch.nn.Module, got {type(model).__name__}")

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, position: int) -> None:
        """Copy draw ``indices[position]`` into :attr:`net` (nothing to do if it is already there)."""
        if self._loaded == position:
            return
        with torch.no_grad():
            for k, v in self._params[position].items():
                self._targets[k].copy_(v)
        self._loaded = position

    def __iter__(self) -> Iterator[int]:
        """Load each draw in turn, yielding its position ``0..S-1``."""
        for position in range(len(self.indices)):
            self.load(position)
            yield position

    def device(self) -> torch.device:
        first = next(iter(self.net.parameters()), None)
        return first.device if first is not None else torch.device("cpu")
