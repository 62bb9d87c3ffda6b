"""LRP rules and composites by name, and the canonizers our architectures need (docs/method.md §5.2, §5.3).

Two ways to choose the rules, both implemented by Zennit (Anders et al. 2021, "Software for dataset-wide XAI:
from local explanations to global insights with Zennit, CoRelAy, and ViRelAy", arXiv 2106.13200):

1. **One rule on every Linear/Conv layer** (the paper's setting, Carbone et al. 2021, arXiv 2102.11010),
   by name from :data:`RULES`:

   ``epsilon`` (ε = 0.1)
       LRP-ε (Bach et al. 2015): ``R_i = Σ_j a_i w_ij / (z_j + ε·sign(z_j)) · R_j`` with
       ``z_j = Σ_i a_i w_ij + b_j`` and ``sign(0) = +1``: :class:`zennit.rules.Epsilon`, computed as
       gradient × input by :class:`GradientEpsilon` (same numbers, a third of the matrix products).
   ``gamma`` (γ = 0.1)
       Zennit's generalised LRP-γ (Montavon et al. 2019; Andéol et al. 2021,
       :class:`zennit.rules.Gamma`): the weights become ``w + γ·w⁺`` for the positive contributions
       (``a⁺`` with ``w + γw⁺``, ``a⁻`` with ``w + γw⁻``, bias ``b + γb⁺``) of an output with
       ``z_j > 0`` and the mirrored choice for ``z_j < 0``; outputs with ``z_j = 0`` get no relevance. The
       reference code instead uses ``ρ(w) = w + γ·w·max(0, w)``, quadratic in ``w``: a different rule, kept
       apart as ``gamma_quadratic`` (the textbook and Zennit rule is linear in ``w``). Computed by
       :class:`GradientGamma` (same numbers as Zennit's hook, tested; per layer two weight products in the forward
       pass and two in each backward pass, where Zennit's hook runs one and eleven).
   ``gamma_quadratic`` (γ = 0.1; the reference code's rule, docs/method.md §9.4)
       ``R_i = Σ_j a_i ρ(w_ij) / (z_j + stab) · R_j`` with ``ρ(w) = w + γ·w·max(0, w)`` applied to the weights
       and the bias (``z_j = Σ_i a_i ρ(w_ij) + ρ(b_j)``), one term for every input whatever its sign:
       :class:`QuadraticGamma`. Only for reproducing the paper's numbers on purpose.
   ``alpha1beta0``
       LRP-α₁β₀ = z⁺ (Bach et al. 2015; Montavon et al. 2017), :class:`zennit.rules.ZPlus`:
       ``R_i = Σ_j (a_i⁺ w_ij⁺ + a_i⁻ w_ij⁻) / (Σ_i (a_i⁺ w_ij⁺ + a_i⁻ w_ij⁻) + b_j⁺) · R_j``
       (identical to ``AlphaBeta(alpha=1, beta=0)``, at half the cost). Zennit's own hook: the sign-split
       identity that makes ``gamma`` cheap loses every digit to cancellation in float32 where an output's
       positive part is near 0 and its denominator is the stabiliser (tested).

   ``gamma`` and ``alpha1beta0`` stabilise their denominators with ``1e-6·sign`` (Zennit's default).
   Asked for together on the fc2/conv networks, the three rules run in one pass instead
   (:mod:`bayesrobust.explain.fused`, the same maps).
   The first layer gets the same rule as all others (no ``z^B``/flat rule), as in the paper.

2. **A Zennit composite** by name from :data:`COMPOSITES` (``epsilon_plus``, ``epsilon_gamma_box``, ...),
   which picks rules by layer type; ``epsilon_gamma_box`` gets the pixel box [0, 1] as its bounds.

Every other module is handled as in Zennit's own composites: activations (LeakyReLU, ReLU) pass the
relevance through unchanged (``Pass``: the reference code instead multiplies by LeakyReLU's gradient, 0.01
for negative pre-activations, which breaks conservation); residual :class:`zennit.layer.Sum` and average
pooling redistribute in proportion to their inputs (``Norm``); BatchNorm is merged into the preceding conv
(:func:`canonizers_for`) and then passes; max pooling has no rule, so its gradient routes all relevance of a
window to the window's maximum; the model's :class:`~bayesrobust.models.architectures.Normalize` module
passes relevance through, so a pixel gets the relevance of its standardised value.

Residual blocks need no further canonizer: our blocks already add with a ``zennit.layer.Sum`` module
(what Zennit's ``ResNetCanonizer`` inserts into torchvision's blocks).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.composites import COMPOSITES as _ZENNIT_COMPOSITES
from zennit.composites import LayerMapComposite, layer_map_base
from zennit.core import BasicHook, Composite, Hook, ParamMod, stabilize
from zennit.rules import Pass, ZPlus
from zennit.types import BatchNorm, Linear

from ..models.architectures import Normalize

#: Stabiliser of the denominators of every rule but ``epsilon`` (and of Sum/AvgPool redistribution).
STABILIZER = 1e-6


class RescaledGradientHook(Hook):
    """A Zennit hook whose rule is the layer's own backward applied to a rescaled relevance: a pre-hook on the
    output's gradient node replaces the incoming relevance ``R`` by :meth:`rescale` ``(R)`` before autograd runs
    the module's ordinary backward (``Wᵀ`` of it); :meth:`backward` then finishes the rule at the input."""

    def rescale(self, relevance: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def post_forward(self, module: nn.Module, input: tuple, output: Any) -> Any:
        output = super().post_forward(module, input, output)
        node = output.grad_fn if isinstance(output, torch.Tensor) else None
        if node is not None:
            hook_ref = weakref.ref(self)

            def rescale(grad_outputs: tuple) -> tuple | None:
                hook = hook_ref()
                if hook is None or not hook.active:
                    return None
                return (hook.rescale(grad_outputs[0]), *grad_outputs[1:])
            self.tensor_handles.append(node.register_prehook(rescale))
        return output


class GradientEpsilon(RescaledGradientHook):
    """Zennit's LRP-ε rule (:class:`zennit.rules.Epsilon`) computed as *gradient × input*.

    ``R_i = a_i · Σ_j w_ij · R_j / (z_j + ε·sign(z_j))`` (``sign(0) = +1``) is the input times the
    module's own gradient applied to ``R / stab(z)``. So this hook divides the incoming relevance by the
    stabilised output ``z`` of the forward pass (a pre-hook on the output's gradient node), lets autograd
    run the module's ordinary backward, and multiplies the result by the input (Zennit's input hook).
    Same rule, same numbers as ``zennit.rules.Epsilon`` (tested), but one ``Wᵀ`` product per layer
    instead of Zennit's three (the engine's plain gradient, the forward recomputed by
    :class:`zennit.core.BasicHook` and the modified gradient).

    Parameters
    ----------
    epsilon
        ε, added to the denominators with their sign (``sign(0) = +1``); ``0`` gives LRP-0.
    """

    def __init__(self, epsilon: float = 1e-6):
        super().__init__()
        self.epsilon = float(epsilon)

    def copy(self) -> GradientEpsilon:
        return GradientEpsilon(self.epsilon)

    def forward(self, module: nn.Module, input: tuple, output: torch.Tensor) -> None:
        self.stored_tensors["input"] = input[0].detach()
        self.stored_tensors["denominator"] = stabilize(output.detach(), self.epsilon)

    def rescale(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance / self.stored_tensors["denominator"]

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        return (self.stored_tensors["input"] * grad_input[0], *grad_input[1:])


def _linear_map(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``module``'s linear map (no bias) with ``weight`` instead of its own: Linear or (non-transposed) Conv."""
    if isinstance(module, nn.Linear):
        return nn.functional.linear(x, weight)
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        return module._conv_forward(x, weight, None)
    raise TypeError(f"the {type(module).__name__} layer has no sign-split LRP rule; expected Linear or Conv")


def _bias_like(module: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """The module's bias broadcast against its ``output`` (zeros without a bias)."""
    bias = getattr(module, "bias", None)
    if bias is None:
        return torch.zeros((), dtype=output.dtype, device=output.device)
    shape = (1, -1) + (1,) * (output.dim() - 2) if not isinstance(module, nn.Linear) else (-1,)
    return bias.detach().reshape(shape)


class SignSplitHook(RescaledGradientHook):
    """Base of LRP rules that weight positive and negative contributions apart (LRP-γ), computed with
    two weight products per pass instead of Zennit's four or five (docs/method.md §5.2). The identity below
    is exact in real numbers but cancels in floating point where ``P`` is far smaller than ``|a|·|w|``; LRP-γ's
    denominators contain ``z`` and stay accurate (tested in float32), LRP-z⁺'s are ``P`` itself and would not.

    Both rules need, per output ``j``, the positive part ``P_j = Σ_i a_i⁺ w_ij⁺ + a_i⁻ w_ij⁻`` of the
    pre-activation and, per input ``i``, sums over ``w⁺`` and ``w⁻`` of the rescaled relevance. With
    ``2 a⁺w⁺ + 2 a⁻w⁻ = a·w + |a|·|w|`` both come from the layer's own products plus one product with
    ``|w|``: ``P = (z − b + |a|·|w|) / 2`` in the forward pass, and in the backward pass the engine's own
    ``wᵀs`` (the incoming relevance divided by the denominators in a pre-hook, as :class:`GradientEpsilon`
    does) plus one ``|w|ᵀv``. Subclasses give the denominators, ``s``, ``v`` and the two coefficients.
    """

    def forward(self, module: nn.Module, input: tuple, output: torch.Tensor) -> None:
        a = input[0].detach()
        z = output.detach()
        abs_input = a.abs().requires_grad_(True)
        with torch.enable_grad():
            abs_output = _linear_map(module, abs_input, module.weight.detach().abs())
        bias = _bias_like(module, z)
        positive = (z - bias + abs_output.detach()) / 2
        self.stored_tensors.update(input=a, abs_input=abs_input, abs_output=abs_output)
        self.stored_tensors.update(self.denominators(z, bias, positive))

    def denominators(self, z: torch.Tensor, bias: torch.Tensor, positive: torch.Tensor) -> dict:
        raise NotImplementedError

    def split(self, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, v)``: the relevance the engine multiplies by ``wᵀ`` and the one multiplied by ``|w|ᵀ``."""
        raise NotImplementedError

    coefficients: tuple[float, float] = (1.0, 1.0)

    def rescale(self, relevance: torch.Tensor) -> torch.Tensor:
        s, self.stored_tensors["v"] = self.split(relevance)
        return s

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        stored = self.stored_tensors
        abs_grad, = torch.autograd.grad(stored["abs_output"], stored["abs_input"], stored["v"], retain_graph=True)
        plain, extra = self.coefficients
        relevance = plain * stored["input"] * grad_input[0] + extra * stored["abs_input"].detach() * abs_grad
        return (relevance, *grad_input[1:])


class GradientGamma(SignSplitHook):
    """Zennit's generalised LRP-γ (:class:`zennit.rules.Gamma`) with two weight products per pass (tested equal).

    For an output with ``z_j > 0`` the denominator is ``z_j + γ(P_j + b_j⁺)`` and the inputs' weights are
    ``w + γw⁺`` (positive inputs) and ``w + γw⁻`` (negative inputs); for ``z_j < 0`` the mirrored choice with
    ``z_j + γ(N_j + b_j⁻)``, ``N = z − b − P``; ``z_j = 0`` passes no relevance. With ``s⁺``/``s⁻`` the relevance
    divided by the denominators on the two sides, ``R_i = (1 + γ/2) a_i (wᵀs)_i + γ/2 |a_i| (|w|ᵀ(s⁺ − s⁻))_i``,
    ``s = s⁺ + s⁻``.
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6):
        super().__init__()
        self.gamma, self.stabilizer = float(gamma), float(stabilizer)
        self.coefficients = (1 + self.gamma / 2, self.gamma / 2)

    def copy(self) -> GradientGamma:
        return GradientGamma(self.gamma, self.stabilizer)

    def denominators(self, z: torch.Tensor, bias: torch.Tensor, positive: torch.Tensor) -> dict:
        negative = z - bias - positive
        return {"up": z > 0, "down": z < 0,
                "d_up": stabilize(z + self.gamma * (positive + bias.clamp(min=0)), self.stabilizer),
                "d_down": stabilize(z + self.gamma * (negative + bias.clamp(max=0)), self.stabilizer)}

    def split(self, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stored = self.stored_tensors
        zero = relevance.new_zeros(())
        up = torch.where(stored["up"], relevance / stored["d_up"], zero)
        down = torch.where(stored["down"], relevance / stored["d_down"], zero)
        return up + down, up - down


class QuadraticGamma(BasicHook):
    """The reference code's γ rule, ``ρ(p) = p + γ·p·max(0, p)`` on the weight and the bias (quadratic in p).

    ``R_i = a_i Σ_j ρ(w_ij) R_j / stab(z_j)``, ``z_j = Σ_i a_i ρ(w_ij) + ρ(b_j)``, ``stab(z) = z + stabilizer·sign z``
    (``sign 0 = +1``): the generic "modified weights" LRP step of Montavon et al. (2019, "Layer-wise relevance
    propagation: an overview") with this ρ. Not the textbook γ rule (``w + γ·w⁺``, :class:`zennit.rules.Gamma`),
    which is what ``gamma`` computes.
    """

    def __init__(self, gamma: float = 0.1, stabilizer: float = 1e-6):
        gamma, stabilizer = float(gamma), float(stabilizer)
        self.gamma, self.stabilizer = gamma, stabilizer
        super().__init__(
            param_modifiers=[ParamMod(lambda p, _: p + gamma * p * p.clamp(min=0), param_keys=["weight", "bias"],
                                      require_params=False)],
            gradient_mapper=lambda out_grad, outputs: [out_grad / stabilize(outputs[0], stabilizer)],
        )

    def copy(self) -> QuadraticGamma:
        return QuadraticGamma(self.gamma, self.stabilizer)


@dataclass(frozen=True)
class RuleSpec:
    """A named LRP rule: the Zennit hook class and its default parameters."""

    hook: Callable[..., Hook]
    defaults: dict[str, float] = field(default_factory=dict)

    def make(self, name: str, **params: float) -> Hook:
        """The hook with ``params`` overriding the defaults.

        Raises
        ------
        ValueError
            A parameter this rule does not take (the message lists the ones it does).
        """
        unknown = set(params) - set(self.defaults)
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"rule {name!r} takes no parameter(s) {', '.join(sorted(unknown))}; "
                             f"valid: {valid}")
        return self.hook(**{**self.defaults, **params})


#: The paper's three rules with its parameters (ε = 0.1, γ = 0.1) as defaults, and the reference code's γ rule.
RULES: dict[str, RuleSpec] = {
    "epsilon": RuleSpec(GradientEpsilon, {"epsilon": 0.1}),
    "gamma": RuleSpec(GradientGamma, {"gamma": 0.1, "stabilizer": STABILIZER}),
    "alpha1beta0": RuleSpec(ZPlus, {"stabilizer": STABILIZER}),
    "gamma_quadratic": RuleSpec(QuadraticGamma, {"gamma": 0.1, "stabilizer": STABILIZER}),
}

#: Zennit's registered composites, by name.
COMPOSITES: tuple[str, ...] = tuple(sorted(_ZENNIT_COMPOSITES))


def check_rule(name: str) -> str:
    """``name`` if it is a rule of :data:`RULES`; ``ValueError`` listing them otherwise."""
    if name not in RULES:
        raise ValueError(f"unknown LRP rule {name!r}; expected one of {', '.join(RULES)} "
                         f"(or a Zennit composite: {', '.join(COMPOSITES)})")
    return name


def check_composite(name: str) -> str:
    """``name`` if it is one of Zennit's composites; ``ValueError`` listing them otherwise."""
    if name not in _ZENNIT_COMPOSITES:
        raise ValueError(f"unknown Zennit composite {name!r}; expected one of {', '.join(COMPOSITES)}")
    return name


def check_composite_params(name: str, params: Mapping[str, Any]) -> set[str]:
    """The parameters Zennit's composite ``name`` accepts, after checking ``params`` against them.

    Raises
    ------
    ValueError
        Unknown composite, or a parameter it does not take (the message lists those it does).
    """
    cls = _ZENNIT_COMPOSITES[check_composite(name)]
    accepted = set(inspect.signature(cls).parameters) - {"layer_map", "canonizers", "first_map"}
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(f"composite {name!r} takes no parameter(s) {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(sorted(accepted)) or 'none'}")
    return accepted


def _base_layer_map() -> list[tuple[Any, Hook]]:
    """Rules of the non-learnable modules (see the module docstring)."""
    return [((Normalize,), Pass()), *layer_map_base(STABILIZER)]


def uniform_composite(rule: str | Hook, **params: float) -> Composite:
    """A composite applying the rule ``rule`` to every Linear and Conv layer (no canonizers: see
    :func:`canonizers_for`).

    Parameters
    ----------
    rule
        A name of :data:`RULES`, or any Zennit rule instance (e.g. ``zennit.rules.Epsilon(0.1)``).
    **params
        Rule parameters overriding the defaults (``epsilon`` for ``epsilon``; ``gamma``, ``stabilizer``
        for ``gamma``; ``stabilizer`` for ``alpha1beta0``).

    Raises
    ------
    ValueError
        Unknown rule or parameter.
    """
    if isinstance(rule, Hook):
        if params:
            raise ValueError(f"parameters {sorted(params)} given with a rule instance; set them on the rule")
        hook = rule
    else:
        hook = RULES[check_rule(rule)].make(rule, **params)
    return LayerMapComposite(layer_map=[*_base_layer_map(), ((Linear,), hook)])


def input_bounds(net: nn.Module, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                 low: float = 0.0, high: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel box ``[low, high]`` as seen by the first learnable layer, each (1, *shape).

    Runs the modules in front of the first Linear/Conv module of a sequential ``net`` (e.g. the
    :class:`~bayesrobust.models.architectures.Normalize` of ResNet-20) on the all-``low`` and all-``high``
    images, for the ``z^B`` (ZBox) rule of ``epsilon_gamma_box``.
    """
    lo = torch.full((1, *shape), float(low), dtype=dtype)
    hi = torch.full((1, *shape), float(high), dtype=dtype)
    with torch.no_grad():
        for module in net.children():
            if isinstance(module, Linear):
                break
            lo, hi = module(lo), module(hi)
    return lo, hi


def named_composite(name: str, net: nn.Module, **params: Any) -> Composite:
    """Zennit's composite ``name`` for ``net`` (no canonizers: see :func:`canonizers_for`).

    Parameters
    ----------
    name
        One of :data:`COMPOSITES`.
    net
        The network (an ``arch`` attribute with ``in_shape`` gives the shape of the ZBox bounds of
        ``epsilon_gamma_box``, which default to the pixel box [0, 1] as seen by the first layer).
    **params
        Keyword arguments of the composite's constructor (e.g. ``epsilon``, ``gamma``, ``stabilizer``).

    Raises
    ------
    ValueError
        Unknown composite, or a parameter it does not take (the message lists those it does).
    """
    cls = _ZENNIT_COMPOSITES[check_composite(name)]
    if {"low", "high"} <= check_composite_params(name, params):
        first = next(net.parameters())
        low, high = input_bounds(net, tuple(net.arch.in_shape), first.dtype)
        params = {"low": low, "high": high, **params}
    return cls(layer_map=[((Normalize,), Pass())], **params)


def canonizers_for(net: nn.Module) -> list[Canonizer]:
    """The canonizers ``net`` needs: BatchNorm merged into the Linear/Conv right before it (ResNet-20).

    The merge changes the layer's weights, so it must be applied per posterior draw, *after* the draw's
    weights are in place, and reverted before the next draw is copied in (what
    :meth:`bayesrobust.explain.lrp.LRP.draw` does).
    """
    if any(isinstance(m, BatchNorm) for m in net.modules()):
        return [SequentialMergeBatchNorm()]
    return []
