"""The one path to posterior draws: S draws swapped into one module in place, and the predictive
(docs/method.md §3.6, §4.4, §8).

Attacks, their evaluation, explanations and the test accuracy at training time all visit draws through a
:class:`DrawSet`, so draw ``j`` is the same network everywhere: :meth:`Posterior.draw_params(j)
<bayesrobust.models.posterior.Posterior.draw_params>`, i.e. what ``posterior.network(j)`` holds. A DrawSet
computes each draw's parameters once (for SVI one Gaussian sample per parameter, several ms per draw) and
copies them into a single network, so every visit (PGD: one per step) costs one memory copy; images stay
batched. A plain module is the one-draw case (:meth:`DrawSet.from_module`). Each draw keeps its identity:
its ``(chain, sample)`` in the posterior (:meth:`Posterior.draw_coords`), recorded as coordinates of every
stored result with a ``draw`` dimension (:meth:`DrawSet.coords`).

Speed on CPU (measured by ``experiments/benchmarks/bench_attacks.py``): this module holds the whole
policy. A network with convolutions is kept in ``channels_last`` memory format, which makes PyTorch's CPU
max-pooling about 15x faster than in NCHW (for the paper's ``conv`` net it dominated the gradient), and its
images are passed in chunks of :data:`CONV_CHUNK` (activations stay in cache; larger chunks are not faster,
only bigger); fully connected networks take the whole batch at once. Forward-only passes of many perturbed
images (RISE, the insertion/deletion curves) go through :func:`output_pass`, :data:`FORWARD_PASS` images at a
time (``experiments/benchmarks/bench_faithfulness.py``).

The predictive is :func:`draw_probabilities` (softmax of every draw) and :func:`predictive_accuracy` (the
accuracy of the mean softmax's argmax), the same computation as the clean accuracy of an attack run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .posterior import Posterior

#: Images per forward/backward pass for networks with convolutions (fastest on the 2-core CPU measured).
CONV_CHUNK = 50
#: Images per forward-only pass of many perturbed copies (RISE's masked images, the insertion/deletion steps).
#: 250, not 1000: a 1000-image pass of the ``conv`` net makes 37 MB activations, above glibc's 32 MB ceiling
#: for reusing freed heap memory, so every pass page-faults fresh memory; 250-image passes ran 1.4-1.6x faster
#: (docs/method.md §10.7).
FORWARD_PASS = 250
#: Largest total size (bytes) of the draws a :class:`DrawSet` materialises up front; above it, each draw's
#: parameters are generated again whenever the draw is loaded (identical values, more time per load).
DRAW_BUDGET_BYTES = 2**30


def has_convolution(net: nn.Module) -> bool:
    """Whether ``net`` has a convolution (then it runs in ``channels_last`` with chunked images)."""
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in net.modules())


def default_chunk_size(net: nn.Module) -> int | None:
    """:data:`CONV_CHUNK` for a network with convolutions, ``None`` (the whole batch) otherwise."""
    return CONV_CHUNK if has_convolution(net) else None


#: Activations that commute with max-pooling: ``maxpool(act(z)) == act(maxpool(z))`` exactly (in floating point
#: too), because they are monotone non-decreasing.
MONOTONE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)


class SeparableMaxPool(nn.Module):
    """A plain ``MaxPool2d(kernel, stride)`` (no padding, dilation 1, floor mode) computed as the maximum of
    strided row views, then of strided column views: the same values, on this net's maps 5x (channels-last) to
    13x (NCHW) faster than PyTorch's CPU ``max_pool2d`` (docs/method.md §10.7). For forward-only passes: on
    ties its gradient would split between the tied inputs, where ``max_pool2d`` picks one."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        self.kernel = _pair(pool.kernel_size)
        self.stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)

    @staticmethod
    def fits(pool: nn.Module) -> bool:
        """Whether ``pool`` is a MaxPool2d this class computes exactly."""
        return (isinstance(pool, nn.MaxPool2d) and _pair(pool.padding) == (0, 0) and _pair(pool.dilation) == (1, 1)
                and not pool.ceil_mode and not pool.return_indices)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel, self.stride
        oh, ow = (z.shape[-2] - kh) // sh + 1, (z.shape[-1] - kw) // sw + 1
        rows = z[..., 0:sh * (oh - 1) + 1:sh, :]
        for i in range(1, kh):
            rows = torch.maximum(rows, z[..., i:i + sh * (oh - 1) + 1:sh, :])
        out = rows[..., 0:sw * (ow - 1) + 1:sw]
        for j in range(1, kw):
            out = torch.maximum(out, rows[..., j:j + sw * (ow - 1) + 1:sw])
        return out


def output_pass(net: nn.Module, keep: Collection[nn.Module] = ()) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net``'s function for forward-only passes of many images (RISE's masked images, the insertion/deletion
    steps), arranged to run fast on a CPU (docs/method.md §10.7): the same output, bit for bit.

    - The images are passed in the memory format of the first convolution's weight (``channels_last`` in a
      :class:`DrawSet`'s net), so it does not convert its input.
    - Each monotone activation directly followed by a max-pool (``conv``: LeakyReLU → MaxPool2d, twice) runs
      after the pool instead, on a map 4x smaller: max and a monotone function commute.
    - Each plain max-pool is a :class:`SeparableMaxPool`.

    Modules in ``keep`` (whose output a hook reads, e.g. the activation of a hidden layer RISE explains) keep
    their place and are called as they are. Every other module is ``net``'s own, so the draw loaded into
    ``net`` is the one evaluated. A network that is not an ``nn.Sequential`` is called as it is.
    """
    fmt = _weight_format(net)
    run: Callable[[torch.Tensor], torch.Tensor] = net
    if isinstance(net, nn.Sequential):
        kept, order = {id(m) for m in keep}, []
        for m in net:
            if SeparableMaxPool.fits(m) and id(m) not in kept:
                m = SeparableMaxPool(m)
                if order and isinstance(order[-1], MONOTONE_ACTIVATIONS) and id(order[-1]) not in kept:
                    order.insert(len(order) - 1, m)     # the pool before the activation
                    continue
            order.append(m)
        run = nn.Sequential(*order)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return run(x.contiguous(memory_format=fmt) if x.dim() == 4 else x)
    return forward


def _weight_format(net: nn.Module) -> torch.memory_format:
    """``channels_last`` if ``net``'s first 2-d convolution holds its weight so (by strides: a one-channel
    weight is contiguous in both formats), else ``contiguous_format``."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return torch.contiguous_format
    w = conv.weight
    return torch.channels_last if w.stride() == w.contiguous(memory_format=torch.channels_last).stride() \
        else torch.contiguous_format


def chunks(n: int, chunk_size: int | None) -> list[slice]:
    """Slices covering ``range(n)`` in pieces of ``chunk_size`` (``None``: one piece; 0 is an error, not
    "one piece")."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) != chunk_size
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer (or None for one piece), got {chunk_size!r}")
    size = max(n if chunk_size is None else int(chunk_size), 1)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


class DrawSet:
    """Draws ``0..S-1`` of a posterior, loaded one at a time into :attr:`net`.

    Parameters
    ----------
    posterior
        The trained model; a deterministic one always gives S = 1.
    n_draws
        S; ``None`` means the posterior's default (all HMC samples, 100 for SVI), see
        :meth:`Posterior.resolve_n_draws`.
    device
        Where the network and the cached draws live.
    dtype
        Floating-point type of the network (default: that of ``net`` if given, else float32, the type
        :func:`~bayesrobust.models.architectures.build` makes); float64 for exact tests.
    net
        The module to load the draws into (default: a new network of the posterior's architecture, with
        ``requires_grad=False`` parameters). A given module is put in eval mode, cast to ``dtype`` and, if
        it has convolutions, to ``channels_last``; it receives the posterior's buffers and then each draw.
    max_bytes
        Memory budget of the materialised draws (default :data:`DRAW_BUDGET_BYTES`). When S draws'
        parameters would take more, they are not kept: each :meth:`load` generates the draw's parameters
        again with :meth:`Posterior.draw_params` (results are identical either way; loading is slower,
        e.g. for the ``conv`` h=512 net with S=100 SVI draws).
    start
        First draw: the set holds draws ``start..S-1`` (a chunk of the draws, e.g. explained on another
        worker; draw ``j`` is the same network whatever the chunk).

    Attributes
    ----------
    net : torch.nn.Module
        The one module (eval mode) that holds the current draw.
    indices : tuple[int, ...]
        The posterior draw indices, recorded as the ``draw`` coordinate of results.
    chains, samples : tuple[int, ...]
        Each draw's chain and sample in the posterior (chain −1 and sample ``j`` for SVI and deterministic
        draws), recorded as the ``chain`` and ``sample`` coordinates along ``draw``.
    chunk_size : int or None
        Images per pass that callers use unless told otherwise (:func:`default_chunk_size`).
    lazy : bool
        Whether draws are generated on load instead of kept (see ``max_bytes``).

    Raises
    ------
    ValueError
        ``n_draws`` not positive, or more than an HMC posterior's samples.

    Examples
    --------
    >>> draws = DrawSet(posterior, 100)                   # doctest: +SKIP
    >>> for position in draws:                            # draws.net now holds draw draws.indices[position]
    ...     logits = draws.net(x)
    """

    def __init__(self, posterior: Posterior, n_draws: int | None = None, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 net: nn.Module | None = None, max_bytes: int = DRAW_BUDGET_BYTES,
                 start: int = 0):
        n = posterior.resolve_n_draws(n_draws)
        if not 0 <= start < n:
            raise ValueError(f"start must be a draw index in [0, {n}), got {start}")
        self.indices: tuple[int, ...] = tuple(range(start, n))
        n = len(self.indices)
        chain, sample = posterior.draw_coords(self.indices)
        self.chains: tuple[int, ...] = tuple(int(c) for c in chain)
        self.samples: tuple[int, ...] = tuple(int(s) for s in sample)
        if net is None:
            net = posterior.network(0, device).to(dtype=dtype).requires_grad_(False)
        else:
            net = net.to(dtype=dtype).eval()
        self._format = torch.channels_last if has_convolution(net) else torch.contiguous_format
        self.net: nn.Module = net.to(memory_format=self._format)
        self.chunk_size = default_chunk_size(self.net)
        self._targets = dict(self.net.named_parameters())
        first = next(iter(self._targets.values()))
        self._device, self._dtype = first.device, first.dtype
        buffers = dict(self.net.named_buffers())
        with torch.no_grad():  # after the cast: a float64 buffer must not pass through float32
            for k, v in posterior.buffers.items():
                buffers[k].copy_(v)
        self._posterior = posterior
        per_draw = sum(v.numel() for v in self._targets.values()) * first.element_size()
        self.lazy = n * per_draw > max_bytes
        self._params = None if self.lazy else [self._prepare(posterior.draw_params(j)) for j in self.indices]
        self._loaded: int | None = None

    def _prepare(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A draw's parameters on the network's device and dtype, in its memory format."""
        return {k: v.to(self._device, self._dtype).contiguous(
            memory_format=self._format if v.dim() == 4 else torch.contiguous_format) for k, v in params.items()}

    @classmethod
    def from_module(cls, module: nn.Module) -> DrawSet:
        """A plain module as a one-draw set (the module is used as is: not copied, mode unchanged)."""
        self = cls.__new__(cls)
        self.indices, self.chains, self.samples = (0,), (-1,), (0,)
        self.net = module
        self.chunk_size = default_chunk_size(module)
        self.lazy = False
        self._targets = {}
        self._params = [{}]
        self._loaded = 0
        return self

    @classmethod
    def of(cls, model: Posterior | nn.Module | DrawSet, n_draws: int | None = None, *,
           device: str | torch.device = "cpu") -> DrawSet:
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
        self._loaded = None  # until the copy is complete
        params = (self._prepare(self._posterior.draw_params(self.indices[position])) if self.lazy
                  else self._params[position])
        with torch.no_grad():
            for k, v in params.items():
                self._targets[k].copy_(v)
        self._loaded = position

    def __iter__(self) -> Iterator[int]:
        """Load each draw in turn, yielding its position ``0..S-1``."""
        for position in range(len(self.indices)):
            self.load(position)
            yield position

    def stacked_params(self) -> dict[str, torch.Tensor]:
        """Every draw's parameters stacked along a new leading axis: name → (S, ...) tensor, on the net's
        device and dtype (for a vectorised call over draws, ``torch.func.vmap``; docs/method.md §11.1).
        A plain module (:meth:`from_module`) gives its own parameters with S = 1."""
        if not self._targets:
            return {k: v.detach().unsqueeze(0) for k, v in self.net.named_parameters()}
        per_draw = [self._prepare(self._posterior.draw_params(j)) if self.lazy else self._params[p]
                    for p, j in enumerate(self.indices)]
        return {k: torch.stack([d[k].contiguous() for d in per_draw]) for k in self._targets}

    def varying_output_layer(self) -> nn.Linear | None:
        """The network's last Linear layer when it is the only part that differs between draws (a last-layer
        Laplace posterior), else ``None``."""
        posterior = getattr(self, "_posterior", None)
        if posterior is None or posterior.kind != "laplace" or \
                posterior.config.get("laplace", {}).get("subset") != "last_layer":
            return None
        return [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]

    def device(self) -> torch.device:
        first = next(iter(self.net.parameters()), None)
        return first.device if first is not None else torch.device("cpu")

    def coords(self) -> dict[str, Any]:
        """The ``draw`` coordinate with ``chain`` and ``sample`` along it, for an xarray Dataset."""
        return {"draw": np.asarray(self.indices, dtype=np.int64),
                "chain": ("draw", np.asarray(self.chains, dtype=np.int64)),
                "sample": ("draw", np.asarray(self.samples, dtype=np.int64))}


def draw_probabilities(model: Posterior | DrawSet | nn.Module, *inputs: torch.Tensor,
                       n_draws: int | None = None, chunk_size: int | None = None,
                       log: bool = False) -> list[torch.Tensor]:
    """softmax f_s(x) for every draw s and every input batch: one (S, N, classes) tensor per input, in one
    pass over the draws.

    ``model``: a :class:`Posterior` (its ``n_draws`` draws, on the inputs' device), a :class:`DrawSet` (its
    draws) or a plain module (one draw). ``chunk_size`` images per pass (default the DrawSet's);
    ``log=True`` gives log-softmax instead.
    """
    device = inputs[0].device if inputs else "cpu"
    draws = DrawSet.of(model, n_draws, device=device)
    chunk_size = draws.chunk_size if chunk_size is None else chunk_size
    normalise = torch.log_softmax if log else torch.softmax
    layer = draws.varying_output_layer()
    if layer is not None and len(draws) > 1:
        found = _output_layer_probabilities(draws, layer, inputs, chunk_size, normalise)
        if found is not None:
            return found
    out: list[list[torch.Tensor]] = [[] for _ in inputs]
    run = output_pass(draws.net)  # the net's outputs bit for bit, faster (§10.7); each loaded draw runs through it
    with torch.no_grad():
        for _ in draws:
            for found, x in zip(out, inputs):
                found.append(torch.cat([normalise(run(x[sl]), dim=-1)
                                        for sl in chunks(x.shape[0], chunk_size)]))
    return [torch.stack(found) for found in out]


def _output_layer_probabilities(draws: DrawSet, layer: nn.Linear, inputs: tuple[torch.Tensor, ...],
                                chunk_size: int | None, normalise) -> list[torch.Tensor] | None:
    """:func:`draw_probabilities` when only the output ``layer`` differs between draws: each chunk of images
    runs the network once, and every draw's own output layer (stacked, (S, C, d)) is applied to the features
    it reads. ``None`` (use the ordinary path) if ``layer``'s output is not the network's output or its input
    is not (N, d)."""
    with torch.no_grad():
        weights, biases = [], []
        for _ in draws:
            weights.append(layer.weight.detach().clone())
            biases.append(layer.bias.detach().clone() if layer.bias is not None else None)
        weight = torch.stack(weights)  # (S, C, d)
        bias = torch.stack(biases)[:, None] if layer.bias is not None else 0  # (S, 1, C)
    seen: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, args, out: seen.update(features=args[0], out=out))
    out: list[list[torch.Tensor]] = [[] for _ in inputs]
    try:
        with torch.no_grad():
            for found, x in zip(out, inputs):
                for sl in chunks(x.shape[0], chunk_size):
                    seen.clear()
                    if draws.net(x[sl]) is not seen.get("out") or seen["features"].dim() != 2:
                        return None
                    logits = torch.einsum("nd,scd->snc", seen["features"], weight) + bias
                    found.append(normalise(logits, dim=-1))
    finally:
        handle.remove()
    return [torch.cat(found, dim=1) for found in out]


def predictive_accuracy(model: Posterior | DrawSet | nn.Module, x: torch.Tensor, y: torch.Tensor,
                        n_draws: int | None = None, device: str | torch.device = "cpu") -> float:
    """Accuracy on ``(x, y)`` of the posterior predictive's argmax, ``correct / N`` (a Python float).

    The same computation as the clean ``accuracy`` of :func:`~bayesrobust.adversarial.run.run_attack` on the
    same images and draws. ``x`` (N, C, H, W) in [0, 1] and ``y`` (N,) are moved to ``device`` (for a
    DrawSet: its device).
    """
    if isinstance(model, DrawSet):
        device = model.device()
    x, y = x.to(device), y.to(device)
    probs = draw_probabilities(DrawSet.of(model, n_draws, device=device), x)[0]
    return int((probs.mean(0).argmax(dim=-1) == y).sum()) / len(y)
