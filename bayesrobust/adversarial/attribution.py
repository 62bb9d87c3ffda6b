"""Differentiable gradient maps of a posterior, for attacks on explanations and for ART (docs/method.md §11.1).

An attack on an explanation needs the gradient of a function *of the map* with respect to the input, i.e. a
second derivative of the network. :class:`MapModel` computes the Bayesian map — the mean over S posterior
draws of each draw's map — with ``create_graph=True``, so it can be differentiated again:

- the S draws are stacked along a leading axis and run in one vectorised call (``torch.func.vmap`` over
  ``torch.func.functional_call``), so a step has no Python loop over draws or images; each draw sees its
  own copy of the input (an ``expand``), which gives every draw's gradient separately, shape (S, N, C, H, W);
- ReLU and leaky-ReLU have a zero second derivative almost everywhere, so the outer gradient of a
  ReLU net's map carries no information. :func:`softplus_activations` swaps every (leaky) ReLU for its
  β-softplus surrogate ``a·z + (1 − a)·softplus(βz)/β`` (Dombrowski et al. 2019, "Explanations can be
  manipulated and geometry is to blame", arXiv:1906.07983), which tends to the ReLU as β → ∞.

Maps (per draw ``s``, class ``c``, then averaged over draws and summed over channels to (N, H, W)):

=========================  ===================================================================================
``saliency``               |∂f_s,c/∂x| (Simonyan et al. 2014)
``grad_input``             x ⊙ ∂f_s,c/∂x (Shrikumar et al. 2016)
``integrated_gradients``   x ⊙ (1/m) Σⱼ ∂f_s,c/∂x at (j − ½)/m · x: midpoint rule, zero baseline
                           (Sundararajan et al. 2017)
``lrp_epsilon``            x ⊙ ∂f_s,c/∂x: LRP-ε in its gradient × input form. The two are equal for a ReLU
                           net without biases as ε → 0 (Ancona et al. 2018, arXiv:1711.06104, Prop. 1); with
                           biases or ε > 0, LRP-ε's relevance differs by the share absorbed by the biases
                           and stabiliser, which this form does not model.
=========================  ===================================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..checks import count
from ..choices import AttributionMethod
from ..models.draws import DrawSet, chunks
from ..models.posterior import Posterior

METHODS = AttributionMethod.values()
#: Image-draw pairs per vectorised pass of a conv net's differentiable maps (S draws x chunk images): the
#: second-order graph is fastest when it stays near this size. Measured with bench_attribution_attack (quick
#: conv net, 500 images, 2 threads): S = 20 took 6.4-7.0 s a step with 25 images per pass, 8.1-9.5 s with 50;
#: S = 5 was fastest with 100; one draw with 250-500 (0.33-0.36 s, 0.38-0.41 s with 50).
MAP_PASS = 500


def smooth_leaky_relu(z: torch.Tensor, beta: float, slope: float = 0.0) -> torch.Tensor:
    """The β-softplus surrogate of a leaky ReLU: ``slope·z + (1 − slope)·softplus(βz)/β``."""
    return slope * z + (1 - slope) * F.softplus(z, beta=beta)


@contextmanager
def softplus_activations(net: nn.Module, beta: float | None) -> Iterator[nn.Module]:
    """Inside the block every ``nn.ReLU`` / ``nn.LeakyReLU`` of ``net`` computes its β-softplus surrogate
    (its parameters untouched); ``beta=None`` leaves the net as it is. Restored on exit, even after an error.
    """
    if beta is None:
        yield net
        return
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (or None for the exact activations), got {beta!r}")
    swapped = []
    try:
        for m in net.modules():
            if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
                slope = float(getattr(m, "negative_slope", 0.0))
                m.forward = functools.partial(smooth_leaky_relu, beta=float(beta), slope=slope)
                swapped.append(m)
        yield net
    finally:
        for m in swapped:
            del m.forward


def check_method(method: str) -> str:
    return AttributionMethod.parse(method, "attribution method").value


class MapModel:
    """S posterior draws of one network, run together; their predictive and their mean gradient map.

    Parameters
    ----------
    model
        A :class:`Posterior` (``n_draws`` draws), a :class:`DrawSet` (its draws) or a plain module (S = 1).
    method
        One of :data:`METHODS`.
    beta
        β of the softplus surrogate used by :meth:`maps` when ``smooth=True``; ``None``: exact activations.
    ig_steps
        m, the integrated-gradients points.
    chunk_size
        Images per vectorised pass (all S draws at once); default :data:`MAP_PASS` // S for a conv net, the
        whole batch for a dense one.

    Shapes
    ------
    ``x`` (N, C, H, W) → :meth:`logits` (S, N, classes); :meth:`maps` (N, H, W).
    """

    def __init__(self, model: Posterior | DrawSet | nn.Module, *, method: str = "saliency",
                 beta: float | None = None, ig_steps: int = 16, n_draws: int | None = None,
                 chunk_size: int | None = None, device: str | torch.device = "cpu"):
        self.method = check_method(method)
        self.beta = None if beta is None else float(beta)
        if self.beta is not None and not self.beta > 0:
            raise ValueError(f"beta must be > 0 (or None for the exact activations), got {beta!r}")
        self.ig_steps = count("ig_steps", ig_steps, allow_none=False)
        self.draws = DrawSet.of(model, n_draws, device=device)
        self.net = self.draws.net
        self.params = self.draws.stacked_params()
        if chunk_size is not None:
            self.chunk_size = count("chunk_size", chunk_size)
        else:  # conv nets: about MAP_PASS image-draw pairs a pass; dense nets: the whole batch (the DrawSet's)
            self.chunk_size = None if self.draws.chunk_size is None else max(1, MAP_PASS // len(self.draws))
        self._run = vmap(lambda p, x: functional_call(self.net, p, (x,)), in_dims=(0, 0))

    def __len__(self) -> int:
        return len(self.draws)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(S, N, classes): every draw on every image, in one vectorised call (differentiable in x)."""
        return self._run(self.params, x.unsqueeze(0).expand(len(self), *x.shape))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) argmax of the posterior predictive (1/S) Σₛ softmax f_s(x), without gradients."""
        with torch.no_grad():
            return torch.cat([self.logits(x[sl]).softmax(-1).mean(0).argmax(-1)
                              for sl in chunks(x.shape[0], self.chunk_size)])

    def _gradient_map(self, x: torch.Tensor, c: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """(S, N, C, H, W) per-draw map for one chunk."""
        s = len(self)
        if self.method == "integrated_gradients":
            m = self.ig_steps
            alphas = (torch.arange(m, dtype=x.dtype, device=x.device) + 0.5) / m
            points = (alphas.view(m, 1, 1, 1, 1) * x).reshape(m * x.shape[0], *x.shape[1:])
            cls = c.repeat(m)
        else:
            points, cls = x, c
        xs = points.unsqueeze(0).expand(s, *points.shape)
        out = self._run(self.params, xs)
        picked = out.gather(2, cls.view(1, -1, 1).expand(s, -1, 1)).sum()
        grad, = torch.autograd.grad(picked, xs, create_graph=create_graph)
        if self.method == "saliency":
            return grad.abs()
        if self.method == "integrated_gradients":
            grad = grad.reshape(s, m, *x.shape).mean(1)
        return x.unsqueeze(0) * grad

    def maps(self, x: torch.Tensor, c: torch.Tensor, *, create_graph: bool = False,
             smooth: bool = False) -> torch.Tensor:
        """(N, H, W): the Bayesian map of class ``c`` (N,) at ``x`` — mean over draws, summed over channels.

        ``create_graph`` keeps it differentiable in ``x`` (for an attack or ART); ``smooth`` uses the
        β-softplus surrogate (``beta`` must be set).
        """
        if smooth and self.beta is None:
            raise ValueError("smooth maps need beta (the softplus surrogate)")
        out = []
        with torch.enable_grad(), softplus_activations(self.net, self.beta if smooth else None):
            for sl in chunks(x.shape[0], self.chunk_size):
                xc = x[sl] if x.requires_grad else x[sl].detach().requires_grad_(True)
                per_draw = self._gradient_map(xc, c[sl], create_graph)
                out.append(per_draw.mean(0).sum(1))
        result = torch.cat(out)
        return result if create_graph else result.detach()
