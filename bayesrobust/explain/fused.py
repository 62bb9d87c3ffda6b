"""The paper's three LRP rules at once on a sequential network: one forward pass for all rules and layers
(docs/method.md §5.5).

:class:`~bayesrobust.explain.lrp.LRP` runs one rule per pass through Zennit's hooks: for the three rules that
is three forward passes and, per explained layer, three backward passes, each a chain of autograd nodes
and small element-wise kernels. On the ``fc2`` and ``conv`` networks — a chain of Linear/Conv2d,
(Leaky)ReLU, MaxPool2d and Flatten modules — the same relevance has a short closed form, which
:class:`FusedLRP` evaluates directly:

* **one forward pass** gives every layer's input ``a``, output ``z`` and positive part
  ``P = Σᵢ a⁺w⁺ + a⁻w⁻`` (one product of ``[a⁺, a⁻]`` with ``[w⁺; w⁻]``, exact: no cancellation), and from
  them the three rules' denominators;
* **one backward sweep per layer** carries the three rules' relevance stacked along the batch, so each
  layer's transposed products are three batched calls: ``w`` on the ε and γ relevance, ``|w|`` on γ's
  sign-split part (the identity of :class:`~bayesrobust.explain.rules.GradientGamma`), and ``[w⁺ | w⁻]`` on
  z⁺'s relevance (its two sums apart, exactly as Zennit's ``ZPlus``);
* the **first step** from a layer's one-hot seed needs no product: the seed's unit ``u`` only reaches the
  inputs that ``u``'s weights touch, so the step is ``a · w[u] · s_u`` on that window (a row of a Linear,
  a ``k × k`` patch of a Conv);
* a first-layer convolution with few input channels runs as one matrix product plus ``k²`` shifted adds,
  where PyTorch's transposed convolution is slow on CPU.

The maps equal the hook path's (``LRP(rule)``) to float rounding (tests: float64 to 1e-10 on fc2 and conv,
both signs of inputs and outputs, ``initial='value'``). :func:`fusable` says when a list of explainers can
run this way; :func:`~bayesrobust.explain.bayesian.explain_posterior` callers group them with
:func:`fuse`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_images
from ..models.architectures import Network, Normalize
from ..models.draws import DrawSet
from .bayesian import DrawReducer, Explainer, PosteriorExplanation, explain_posterior
from .lrp import LRP
from .rules import RULES

#: The rules :class:`FusedLRP` computes.
FUSED_RULES = ("epsilon", "gamma", "alpha1beta0")
_PASS = (nn.LeakyReLU, nn.ReLU, nn.Identity, nn.Dropout, Normalize)
#: A transposed convolution with at most this many inputs per output (Cin·k·k) runs as matmul + shifted adds.
_SMALL_FAN = 64


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear) or isinstance(module, _PASS) or isinstance(module, nn.Flatten):
        return True
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
    if isinstance(module, nn.MaxPool2d):
        return not module.return_indices
    return False


def sequential_network(net: nn.Module) -> bool:
    """Whether ``net`` is a :class:`Network` of modules :class:`FusedLRP` handles, with only pass-through
    modules between each explained layer's Linear/Conv and the module its output is read at."""
    if not isinstance(net, Network):
        return False
    children = dict(net.named_children())
    if not all(_supported(m) for m in children.values()):
        return False
    names = list(children)
    for layer, output in net.layers:
        if layer not in children or output not in children:
            return False
        between = names[names.index(layer) + 1:names.index(output) + 1]
        if not all(isinstance(children[n], _PASS) for n in between):
            return False
    return True


def fusable(explainer: Explainer) -> bool:
    """Whether ``explainer`` is one of the rules :class:`FusedLRP` computes (a named rule, no composite)."""
    return (isinstance(explainer, LRP) and isinstance(explainer.rule, str) and explainer.rule in FUSED_RULES
            and explainer.composite_name is None)


def fuse(explainers: Sequence[Explainer], net: nn.Module) -> list[tuple[Explainer, list[int]]]:
    """Group ``explainers`` for ``net``: ``[(explainer, positions), ...]`` in which a :class:`FusedLRP`
    stands for two or more fusable LRP rules with the same initial relevance (``positions``: their indices in
    ``explainers``), and every other explainer stands for itself. Nothing is fused unless ``net`` is a
    :func:`sequential_network`."""
    groups: list[tuple[Explainer, list[int]]] = []
    together: dict[str, list[int]] = {}
    if sequential_network(net):
        for position, explainer in enumerate(explainers):
            if fusable(explainer):
                together.setdefault(explainer.initial, []).append(position)  # type: ignore[attr-defined]
    together = {k: v for k, v in together.items() if len(v) > 1}
    fused_positions = {p for positions in together.values() for p in positions}
    for position, explainer in enumerate(explainers):
        if position in fused_positions:
            for positions in together.values():
                if positions[0] == position:
                    groups.append((FusedLRP([explainers[p] for p in positions]), positions))  # type: ignore[misc]
        else:
            groups.append((explainer, [position]))
    return groups


def _inverse_stabilized(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``1 / (z + ε·sign(z))`` with ``sign(0) = +1`` (Zennit's ``stabilize``; ``-0.0 + 0.0`` is ``+0.0``, so
    ``copysign`` gives −0 the + sign too), in arithmetic passes: ``torch.where`` and ``masked_fill`` took 5–7 ms
    on a (50, 512, 8, 8) tensor on the 2-core CPU, an arithmetic pass under 1 ms."""
    return torch.full_like(z, epsilon).copysign_(z + 0.0).add_(z).reciprocal_()


def _forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return F.linear(x, weight)
    return F.conv2d(x, weight, None, module.stride, module.padding, module.dilation)


def _transposed(module: nn.Module, s: torch.Tensor, weight: torch.Tensor, in_size: Sequence[int]) -> torch.Tensor:
    """``weightᵀ s``: the module's input gradient for the output gradient ``s`` (B, out...) → (B, in...);
    ``in_size`` is the input's spatial size (H, W) for a convolution."""
    if isinstance(module, nn.Linear):
        return s @ weight
    cout, cin, kh, kw = weight.shape
    simple = module.stride == (1, 1) and module.padding == (0, 0) and module.dilation == (1, 1)
    if simple and cin * kh * kw <= _SMALL_FAN:
        b, _, ho, wo = s.shape
        cols = (weight.reshape(cout, -1).t() @ s.reshape(b, cout, ho * wo)).view(b, cin, kh, kw, ho, wo)
        out = s.new_zeros((b, cin, ho + kh - 1, wo + kw - 1))
        for i in range(kh):
            for j in range(kw):
                out[:, :, i:i + ho, j:j + wo] += cols[:, :, i, j]
        return out
    pad = [in_size[d] - ((s.shape[2 + d] - 1) * module.stride[d] - 2 * module.padding[d]
                         + module.dilation[d] * (weight.shape[2 + d] - 1) + 1) for d in range(2)]
    return F.conv_transpose2d(s, weight, None, module.stride, module.padding, tuple(pad), 1, module.dilation)


def _bias(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The module's bias broadcast against its output ``z`` (a zero without a bias)."""
    if module.bias is None:
        return z.new_zeros(())
    bias = module.bias.detach()
    return bias.view(1, -1, 1, 1) if isinstance(module, nn.Conv2d) else bias


def _signed(x: torch.Tensor) -> torch.Tensor:
    """``[x⁺, x⁻]`` along the feature/channel axis: with the weight ``[w⁺, w⁻]`` one product gives
    ``Σ x⁺w⁺ + x⁻w⁻``, a sum of non-negative terms (exact 0 when every term is 0)."""
    return torch.cat([x.clamp(min=0), x.clamp(max=0)], dim=1)


class FusedLRP:
    """The LRP maps of several of the rules ``epsilon``, ``gamma`` and ``alpha1beta0`` in one pass.

    Parameters
    ----------
    explainers
        :class:`~bayesrobust.explain.lrp.LRP` instances with a rule of :data:`FUSED_RULES` (each at most once)
        and the same ``initial``; their parameters (``epsilon``, ``gamma``, ``stabilizer``) are used.

    Calling it returns ``(maps (R, L, N, C, H, W), units (L, N))``, R the rules in the given order, for a
    :func:`sequential_network` in eval mode; :attr:`lead_shape` is ``(R,)``.

    Raises
    ------
    ValueError
        An explainer that is not fusable, a rule given twice, or different initial relevances.
    """

    def __init__(self, explainers: Sequence[Explainer]):
        if not explainers or not all(fusable(e) for e in explainers):
            raise ValueError(f"FusedLRP takes LRP rules among {', '.join(FUSED_RULES)}; got "
                             f"{[getattr(e, 'name', type(e).__name__) for e in explainers]}")
        lrps: list[LRP] = list(explainers)  # type: ignore[arg-type]
        rules = [str(e.rule) for e in lrps]
        if len(set(rules)) != len(rules):
            raise ValueError(f"FusedLRP got a rule twice: {rules}")
        initials = {e.initial for e in lrps}
        if len(initials) != 1:
            raise ValueError(f"FusedLRP needs one initial relevance; got {sorted(initials)}")
        self.explainers = lrps
        self.rules = rules
        self.initial = initials.pop()
        self.params = {rule: {**RULES[rule].defaults, **e.params} for rule, e in zip(rules, lrps)}
        self.lead_shape = (len(rules),)
        self._weights: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def name(self) -> str:
        return "+".join(e.name for e in self.explainers)

    def config(self) -> dict[str, Any]:
        return {"method": "lrp", "rules": self.rules, "initial": self.initial, "engine": "fused"}

    @contextmanager
    def attached(self, net: Network) -> Iterator[Network]:
        """Check ``net`` (no hooks are registered)."""
        if not sequential_network(net):
            raise ValueError("FusedLRP needs a sequential Network of Linear/Conv2d, activation, MaxPool2d and "
                             f"Flatten modules; got {type(net).__name__}")
        yield net

    @contextmanager
    def draw(self, net: Network) -> Iterator[Network]:
        """The weight forms of the current draw (``w``, ``|w|``, ``[w⁺, w⁻]``), made once for all its chunks."""
        self._weights = {}
        for name, module in net.named_children():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                w = module.weight.detach().contiguous()
                self._weights[name] = {"w": w, "abs": w.abs(),
                                       "signed": torch.cat([w.clamp(min=0), w.clamp(max=0)], dim=1)}
        try:
            yield net
        finally:
            self._weights = {}

    def __call__(self, net: Network, x: torch.Tensor, layers: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevance of every layer in ``layers`` at the input pixels, for every rule.

        Returns
        -------
        relevance : torch.Tensor
            (R, len(layers), N, C, H, W).
        units : torch.Tensor
            (len(layers), N) int64, each map's argmax unit (the same for every rule).
        """
        if not self._weights:
            raise RuntimeError("FusedLRP must be called inside `with fused.draw(net):`")
        check_images(x)
        with torch.no_grad():
            records = self._forward(net, x.contiguous())
            names = [r["name"] for r in records]
            n = x.shape[0]
            relevance = x.new_empty((len(self.rules), len(layers), *x.shape))
            units = torch.empty((len(layers), n), dtype=torch.int64, device=x.device)
            for k, layer in enumerate(layers):
                layer_name, output_name = net.layers[layer]
                output = records[names.index(output_name)]["output"].reshape(n, -1)
                units[k] = output.argmax(dim=1)
                value = (output.gather(1, units[k][:, None])[:, 0] if self.initial == "value"
                         else output.new_ones(n))
                start = names.index(layer_name)
                current = self._first_step(records[start], units[k], value)
                for record in reversed(records[:start]):
                    current = self._step(record, current)
                relevance[:, k] = current
        return relevance, units

    # -- the forward pass ------------------------------------------------------------------------------
    def _forward(self, net: Network, x: torch.Tensor) -> list[dict[str, Any]]:
        """Every module's input and output; for Linear/Conv also the rules' factors (:meth:`_factors`)."""
        records: list[dict[str, Any]] = []
        h = x
        for name, module in net.named_children():
            record: dict[str, Any] = {"name": name, "module": module, "input": h}
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                w = self._weights[name]
                z = _forward(module, h, w["w"]) + _bias(module, h)
                positive = None
                if "gamma" in self.rules or "alpha1beta0" in self.rules:
                    positive = _forward(module, _signed(h), w["signed"])
                record["factors"] = self._factors(module, z, positive)
                record["z_shape"] = z.shape
                h = z
            elif isinstance(module, nn.MaxPool2d):
                h, indices = F.max_pool2d(h, module.kernel_size, module.stride, module.padding, module.dilation,
                                          module.ceil_mode, return_indices=True)
                record["indices"] = indices.flatten(2)
            else:
                h = module(h)
            record["output"] = h
            records.append(record)
        return records

    def _factors(self, module: nn.Module, z: torch.Tensor, positive: torch.Tensor | None
                 ) -> dict[str, torch.Tensor]:
        """What multiplies the relevance arriving at ``z`` before each product: ``(rule, 'w')`` before
        ``wᵀ``, ``('gamma', 'abs')`` before ``|w|ᵀ`` and ``('alpha1beta0', 'signed')`` before
        ``[w⁺, w⁻]ᵀ`` (docs/method.md §5.2 for γ's two terms)."""
        bias = _bias(module, z)
        out: dict[Any, torch.Tensor] = {}
        for rule in self.rules:
            p = self.params[rule]
            if rule == "epsilon":
                out[rule, "w"] = _inverse_stabilized(z, p["epsilon"])
            elif rule == "gamma":
                # one of the two denominators per output, by the sign of z (z = 0 passes nothing)
                g = p["gamma"]
                assert positive is not None
                sign = z.sign()
                upper = positive + bias.clamp(min=0)                    # z > 0: P + b⁺
                lower = (z - positive).add_(bias.clamp(max=0) - bias)   # z ≤ 0: N + b⁻ (N = z − P − b)
                side = torch.lerp(lower, upper, sign.clamp(min=0))      # exact at the weights 0 and 1
                inverse = _inverse_stabilized(side.mul_(g).add_(z), p["stabilizer"]).mul_(sign.abs())  # 0 at z = 0
                out[rule, "w"] = inverse.mul(1 + g / 2)
                out[rule, "abs"] = inverse.mul_(sign).mul_(g / 2)
            else:
                assert positive is not None    # P + b⁺ ≥ 0: the stabiliser adds with sign +
                out[rule, "signed"] = torch.add(positive, bias.clamp(min=0)).add_(p["stabilizer"]).reciprocal_()
        return out  # type: ignore[return-value]

    # -- the backward sweep ----------------------------------------------------------------------------
    def _combine(self, a: torch.Tensor, products: dict[Any, torch.Tensor]) -> torch.Tensor:
        """Relevance at a layer's input (R, N, ...) from the products of each rule: ε ``a·wᵀs``,
        γ ``a·wᵀs + |a|·|w|ᵀv``, z⁺ ``a⁺·w⁺ᵀs + a⁻·w⁻ᵀs``."""
        out = a.new_empty((len(self.rules), *a.shape))
        c = a.shape[1]
        for r, rule in enumerate(self.rules):
            if rule == "alpha1beta0":
                signed = products[rule, "signed"]
                torch.mul(a.clamp(min=0), signed[:, :c], out=out[r])
                out[r].addcmul_(a.clamp(max=0), signed[:, c:])
            else:
                torch.mul(a, products[rule, "w"], out=out[r])
                if rule == "gamma":
                    out[r].addcmul_(a.abs(), products[rule, "abs"])
        return out

    def _products(self, module: nn.Module, name: str, relevance: torch.Tensor, factors: dict[Any, torch.Tensor],
                  in_size: Sequence[int]) -> dict[Any, torch.Tensor]:
        """Each ``(rule, form)`` product ``formᵀ (R_rule · factor)``, the ``w`` ones batched together."""
        w = self._weights[name]
        out: dict[Any, torch.Tensor] = {}
        plain = [key for key in factors if key[1] == "w"]
        n = relevance.shape[1]
        if plain:
            scaled = relevance.new_empty((len(plain) * n, *relevance.shape[2:]))
            for k, key in enumerate(plain):
                torch.mul(relevance[self.rules.index(key[0])], factors[key], out=scaled[k * n:(k + 1) * n])
            out.update(zip(plain, _transposed(module, scaled, w["w"], in_size).split(n)))
        for key, factor in factors.items():
            if key[1] != "w":
                out[key] = _transposed(module, relevance[self.rules.index(key[0])] * factor, w[key[1]], in_size)
        return out

    def _step(self, record: dict[str, Any], relevance: torch.Tensor) -> torch.Tensor:
        """Relevance (R, N, out...) at a module's output → (R, N, in...) at its input."""
        module, a = record["module"], record["input"]
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            return self._combine(a, self._products(module, record["name"], relevance, record["factors"],
                                                   a.shape[2:]))
        if isinstance(module, nn.MaxPool2d):       # all of a window's relevance to its maximum (the gradient)
            flat = relevance.reshape(len(self.rules), *record["indices"].shape)
            indices = record["indices"].expand_as(flat)
            out = a.new_zeros((len(self.rules), *a.shape[:2], a.shape[2] * a.shape[3]))
            return out.scatter_add_(3, indices, flat).view(len(self.rules), *a.shape)
        if isinstance(module, nn.Flatten):
            return relevance.reshape(len(self.rules), *a.shape)
        return relevance                           # activations, Normalize, Dropout: passed through

    def _first_step(self, record: dict[str, Any], units: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The step through an explained layer's Linear/Conv from its one-hot seed (``value`` at ``units``),
        without a product: only the unit's own weights reach the input."""
        module, a, name = record["module"], record["input"], record["name"]
        n = a.shape[0]
        rows = torch.arange(n, device=a.device)
        z_shape = record["z_shape"]
        at_unit = {key: factor.reshape(n, -1)[rows, units] * value for key, factor in record["factors"].items()}
        w = self._weights[name]
        if isinstance(module, nn.Linear):
            products = {key: at_unit[key][:, None] * w[key[1]][units] for key in at_unit}
            return self._combine(a, products)
        simple = module.stride == (1, 1) and module.padding == (0, 0) and module.dilation == (1, 1)
        if not simple:                             # the seed through the dense step
            seed = a.new_zeros((len(self.rules), n, int(torch.tensor(z_shape[1:]).prod())))
            seed[:, rows, units] = value
            return self._step(record, seed.view(len(self.rules), *z_shape))
        _, _, kh, kw = w["w"].shape
        height, width = z_shape[2], z_shape[3]
        channel, where = units // (height * width), units % (height * width)
        top, left = where // width, where % width
        products = {}
        for key, factor in at_unit.items():
            weight = w[key[1]][channel] * factor.view(n, 1, 1, 1)           # (N, C', kh, kw)
            full = a.new_zeros((n, weight.shape[1], *a.shape[2:]))
            index_rows = (top[:, None] + torch.arange(kh, device=a.device)).view(n, 1, kh, 1)
            index_cols = (left[:, None] + torch.arange(kw, device=a.device)).view(n, 1, 1, kw)
            full[rows.view(n, 1, 1, 1), torch.arange(weight.shape[1], device=a.device).view(1, -1, 1, 1),
                 index_rows, index_cols] = weight
            products[key] = full
        return self._combine(a, products)


#: ``(explainer position, draw index, maps (L, N, C, H, W), units (L, N))`` → None.
EachDrawCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def explain_each(draws: DrawSet, x: torch.Tensor, explainers: Sequence[Explainer], *, layers: Sequence[int],
                 batch_size: int | None = None, seed: int = 0, on_draw: EachDrawCallback | None = None,
                 progress: Callable[[int], object] | None = None
                 ) -> list[tuple[PosteriorExplanation, DrawReducer]]:
    """:func:`~bayesrobust.explain.bayesian.explain_posterior` for every explainer on the same draws, the
    fusable LRP rules in one :class:`FusedLRP` pass (:func:`fuse`).

    Returns, per explainer in the given order, its :class:`PosteriorExplanation` and the
    :class:`DrawReducer` holding its moments (to merge with other chunks of draws). ``on_draw`` gets the
    explainer's position with each draw's maps; ``progress`` is called with 1 per (explainer, draw).
    """
    out: list[Any] = [None] * len(explainers)
    for explainer, positions in fuse(explainers, draws.net):
        def each(j: int, maps: torch.Tensor, units: torch.Tensor, positions: list[int] = positions) -> None:
            if on_draw is not None:
                for i, position in enumerate(positions):
                    on_draw(position, j, maps[i] if len(positions) > 1 else maps, units)

        def advance(k: int, width: int = len(positions)) -> None:
            if progress is not None:
                for _ in range(k * width):
                    progress(1)

        reducer = DrawReducer()
        result = explain_posterior(draws, x, explainer, layers=layers, batch_size=batch_size, seed=seed,
                                   on_draw=each if on_draw is not None else None,
                                   progress=advance if progress is not None else None, reducer=reducer)
        if len(positions) == 1:
            out[positions[0]] = (result, reducer)
            continue
        for i, position in enumerate(positions):
            part = PosteriorExplanation(result.mean[i], result.std[i], result.sign_agreement[i], result.units,
                                        result.layers, result.n_draws)
            out[position] = (part, reducer.part(i))
    return out
