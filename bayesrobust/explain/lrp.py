"""Layer-wise relevance propagation of every learnable layer's output to the input pixels (docs/method.md §5.1).

For layer ``l`` the relevance is initialised at the argmax unit of the layer's post-activation output (the
logits for the last layer; :mod:`bayesrobust.explain.layers`) and propagated to the input pixels with the
rules of a Zennit composite (:mod:`bayesrobust.explain.rules`), so every map has the input's shape. One
forward pass serves all layers; each layer then takes one backward pass with the composite's hooks active.

Used on a posterior, the composite is registered **once** on one module whose weights are swapped draw by
draw (registering per draw is several times slower, docs/method.md §8)::

    lrp = LRP("epsilon")
    draws = DrawSet(posterior, n)        # bayesrobust.models.draws
    with lrp.attached(draws.net):
        for _ in draws:
            with lrp.draw(draws.net):    # canonizers (BatchNorm merge) for this draw's weights
                relevance, units = lrp(draws.net, x, layers)

References
----------
Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions by layer-wise relevance
propagation", PLoS ONE. Montavon et al. 2019, "Layer-wise relevance propagation: an overview".
Carbone, Sanguinetti, Bortolussi 2021, "Resilience of Bayesian layer-wise explanations under adversarial
attacks", arXiv 2102.11010.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from zennit.core import Composite, Hook

from ..checks import check_images
from ..models.architectures import Network
from .layers import argmax_seed, capture_outputs, check_initial
from .rules import (
    canonizers_for,
    check_composite,
    check_composite_params,
    check_rule,
    named_composite,
    uniform_composite,
)


class LRP:
    """LRP with one rule on every Linear/Conv layer, or with a named Zennit composite.

    Parameters
    ----------
    rule
        ``'epsilon'`` (ε = 0.1), ``'gamma'`` (γ = 0.1) or ``'alpha1beta0'``, or a Zennit rule instance
        (named after its class); ignored when ``composite`` is given.
    composite
        A Zennit composite name (``'epsilon_plus'``, ``'epsilon_gamma_box'``, ...) instead of a rule.
    initial
        Initial relevance at the argmax unit: ``'one_hot'`` (1, the reference) or ``'value'`` (the
        output's value there, so that conserving rules sum to it).
    **params
        Rule or composite parameters, e.g. ``epsilon=0.25``.

    Raises
    ------
    ValueError
        Unknown rule, composite, parameter or initial relevance (at construction).
    """

    def __init__(self, rule: str | Hook = "epsilon", *, composite: str | None = None, initial: str = "one_hot",
                 **params: Any):
        self.composite_name = check_composite(composite) if composite is not None else None
        if composite is not None:
            self.rule = None
        else:
            self.rule = rule if isinstance(rule, Hook) else check_rule(rule)
        self.initial = check_initial(initial)
        self.params = dict(params)
        if self.rule is not None:
            uniform_composite(self.rule, **self.params)  # validates the parameters now
        else:
            check_composite_params(composite, self.params)  # type: ignore[arg-type]
        self._composite: Composite | None = None

    @property
    def name(self) -> str:
        """The rule or composite name (the ``rule`` coordinate of an explanation Dataset)."""
        if isinstance(self.rule, Hook):
            return type(self.rule).__name__.lower()
        return self.composite_name or self.rule  # type: ignore[return-value]

    def config(self) -> dict[str, Any]:
        """The settings as a flat dict (for result attributes)."""
        return {"method": "lrp", "rule": self.name if self.rule is not None else "",
                "composite": self.composite_name or "",
                "initial": self.initial, **self.params}

    def make_composite(self, net: Network) -> Composite:
        """A fresh composite (rule hooks only, no canonizers) for ``net``."""
        if self.composite_name is not None:
            return named_composite(self.composite_name, net, **self.params)
        return uniform_composite(self.rule, **self.params)  # type: ignore[arg-type]

    @contextmanager
    def attached(self, net: Network) -> Iterator[Network]:
        """Register the rule hooks on ``net`` for the duration of the context; every hook is removed on
        exit, also after an exception. The hooks survive weight swaps (they read the weights when used)."""
        composite = self.make_composite(net)
        try:
            composite.register(net)
            self._composite = composite
            yield net
        finally:
            composite.remove()
            self._composite = None

    @contextmanager
    def draw(self, net: Network) -> Iterator[Network]:
        """Apply the canonizers (BatchNorm merge) to ``net``'s current weights; revert them on exit."""
        with ExitStack() as stack:
            for canonizer in canonizers_for(net):
                for instance in canonizer.apply(net):
                    stack.callback(instance.remove)
            yield net

    def __call__(self, net: Network, x: torch.Tensor, layers: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevance of every layer in ``layers`` at the input pixels.

        Parameters
        ----------
        net
            The network, inside :meth:`attached` (and :meth:`draw` if it has BatchNorm), in eval mode.
        x
            Input images (N, C, H, W) with ``net``'s dtype and device.
        layers
            Layer indices (see :func:`bayesrobust.explain.layers.resolve_layers`).

        Returns
        -------
        relevance : torch.Tensor
            (len(layers), N, C, H, W), detached.
        units : torch.Tensor
            (len(layers), N) int64: the argmax unit each map explains.

        Raises
        ------
        RuntimeError
            Called outside :meth:`attached`.
        ValueError
            ``x`` holds a NaN or ±inf pixel or values outside [0, 1].
        """
        if self._composite is None:
            raise RuntimeError("LRP must be called inside `with lrp.attached(net):`")
        return layer_relevance(net, x, layers, initial=self.initial)


def layer_relevance(net: Network, x: torch.Tensor, layers: Sequence[int], *,
                    initial: str = "one_hot") -> tuple[torch.Tensor, torch.Tensor]:
    """The (modified) gradient of each layer's seeded output at the input: LRP relevance when a composite
    is registered on ``net``, the plain gradient otherwise.

    One forward pass; one backward pass per layer, shallow layers first, the graph freed after the last.

    Returns
    -------
    relevance : torch.Tensor
        (len(layers), N, *x.shape[1:]).
    units : torch.Tensor
        (len(layers), N) int64 argmax units.

    Raises
    ------
    ValueError
        ``x`` is not a batch of finite pixels in [0, 1] (a NaN or ±inf pixel would poison every map).
    """
    check_images(x)
    x = x.detach().requires_grad_(True)
    order = sorted(range(len(layers)), key=lambda k: layers[k])
    relevance = x.new_empty((len(layers), *x.shape))
    units = torch.empty((len(layers), x.shape[0]), dtype=torch.int64, device=x.device)
    with capture_outputs(net, layers) as outputs, torch.enable_grad():
        net(x)
        for rank, k in enumerate(order):
            output = outputs[layers[k]]
            seed, units[k] = argmax_seed(output, initial)
            grad, = torch.autograd.grad(output, x, seed, retain_graph=rank < len(order) - 1)
            relevance[k] = grad
    return relevance, units
