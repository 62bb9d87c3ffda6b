"""Gradient attributions from Captum behind the LRP interface (docs/method.md §5.5).

Each method explains, like LRP, the argmax unit of a layer's explained output (the logits for the last
layer; :mod:`bayesrobust.explain.layers`) and returns input-shaped maps, per posterior draw through
:func:`bayesrobust.explain.bayesian.explain_posterior`. Methods (Kokhlikyan et al. 2020, "Captum: a unified
and generic model interpretability library for PyTorch", arXiv 2009.07896):

``ig``
    Integrated Gradients (Sundararajan et al. 2017): ``(x − x₀)·∫₀¹ ∂f(x₀ + α(x − x₀))/∂x dα`` with the
    trapezoidal rule, ``n_steps = 50``, black baseline ``x₀ = 0``. Completeness: the map sums to
    ``f(x) − f(x₀)`` up to the quadrature error. Captum 0.9's ``riemann_trapezoid`` evaluates at
    ``α = linspace(0, 1, n)`` but weighs the points by ``1/n`` (ends ``1/(2n)``) instead of ``1/(n−1)``, so
    its weights sum to ``(n−1)/n`` and every map is shrunk by that factor; we rescale by ``n/(n−1)``,
    which gives the trapezoidal rule exactly. Other Captum methods (``method='gausslegendre'``, ...) are
    passed through unchanged.
``gradshap``
    GradientSHAP / Expected Gradients (Lundberg and Lee 2017; Erion et al. 2021): ``n_samples = 20``
    random baselines × random points on the segment, ``stdevs = 0``. The baseline distribution is
    ``baselines`` if given (e.g. training images), else 16 uniform-noise images in [0, 1] drawn once
    from ``baseline_seed`` (the same for every draw).
``saliency``
    ``|∂f/∂x|`` (Simonyan et al. 2014; ``abs = True``, Captum's default).
``smoothgrad``
    SmoothGrad (Smilkov et al. 2017): the mean of ``∂f/∂x`` over ``nt_samples = 10`` copies of ``x``
    with Gaussian noise of ``stdevs = 0.15`` (15% of the pixel range), signed (``abs = False``).
``gradcam``
    Grad-CAM (Selvaraju et al. 2017) at the post-activation output of the last convolutional layer at
    or below the explained layer: the channel-mean gradients weight the feature maps (signed,
    ``relu = False``, Captum's default), bilinearly upsampled to the input's height and width and
    repeated over the input channels. Convolutional networks only.

The random methods draw from torch's and NumPy's global generators, which the per-draw loop seeds per
draw; their maps depend on ``batch_size`` as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from captum.attr import GradientShap, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from torch import nn
from zennit.types import Convolution

from ..checks import check_images
from ..models.architectures import Network, explained_layers
from .layers import capture_outputs

#: Method name → default parameters.
METHODS: dict[str, dict[str, Any]] = {
    "ig": {"n_steps": 50, "method": "riemann_trapezoid", "internal_batch_size": None},
    "gradshap": {"n_samples": 20, "stdevs": 0.0, "baselines": None, "n_baselines": 16, "baseline_seed": 0},
    "saliency": {"abs": True},
    "smoothgrad": {"nt_samples": 10, "stdevs": 0.15, "abs": False},
    "gradcam": {"relu": False, "interpolate_mode": "bilinear"},
}


def check_method(name: str) -> str:
    """``name`` if it is one of :data:`METHODS`; ``ValueError`` listing them otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; expected one of lrp, {', '.join(METHODS)}")
    return name


def gradcam_module(net: Network, layer: int) -> nn.Module:
    """The output module of the last convolutional layer at or below ``layer`` (Grad-CAM's feature map).

    Raises
    ------
    ValueError
        No convolutional layer at or below ``layer`` (e.g. any layer of ``fc2``).
    """
    convs = [out for i, (_, module, out) in enumerate(explained_layers(net))
             if i <= layer and isinstance(module, Convolution)]
    if not convs:
        raise ValueError(f"gradcam needs a convolutional layer at or below layer {layer}; this "
                         f"{net.arch.name} network has none there (use ig, gradshap, saliency or smoothgrad)")
    return convs[-1]


class CaptumMethod:
    """A Captum attribution method explaining each layer's argmax unit.

    Parameters
    ----------
    method
        One of :data:`METHODS`: ``'ig'``, ``'gradshap'``, ``'saliency'``, ``'smoothgrad'``, ``'gradcam'``.
    **params
        Overrides of the method's defaults in :data:`METHODS`.

    Raises
    ------
    ValueError
        Unknown method or parameter.
    """

    def __init__(self, method: str, **params: Any):
        self.method = check_method(method)
        unknown = set(params) - set(METHODS[method])
        if unknown:
            raise ValueError(f"method {method!r} takes no parameter(s) {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(sorted(METHODS[method]))}")
        self.params = {**METHODS[method], **params}
        self._baselines: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return self.method

    def config(self) -> dict[str, Any]:
        out = {k: v for k, v in self.params.items() if not isinstance(v, torch.Tensor)}
        return {"method": self.method, **out}

    @contextmanager
    def attached(self, net: Network) -> Iterator[Network]:
        """Check that the method applies to ``net`` (Grad-CAM: a conv layer exists); nothing to register."""
        if self.method == "gradcam":
            gradcam_module(net, len(net.layers) - 1)
        yield net

    @contextmanager
    def draw(self, net: Network) -> Iterator[Network]:
        yield net

    def __call__(self, net: Network, x: torch.Tensor, layers: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Attributions of every layer in ``layers`` at the input pixels.

        Returns
        -------
        maps : torch.Tensor
            (len(layers), N, C, H, W), detached.
        units : torch.Tensor
            (len(layers), N) int64: the argmax unit each map explains.

        Raises
        ------
        ValueError
            ``x`` holds a NaN or ±inf pixel or values outside [0, 1].
        """
        check_images(x)
        maps = x.new_empty((len(layers), *x.shape))
        units = torch.empty((len(layers), x.shape[0]), dtype=torch.int64, device=x.device)
        with capture_outputs(net, layers) as outputs:
            with torch.no_grad():
                net(x)
            for k, layer in enumerate(layers):
                units[k] = outputs[layer].reshape(x.shape[0], -1).argmax(dim=1)

            def forward(inputs: torch.Tensor, layer: int = 0) -> torch.Tensor:
                net(inputs)
                return outputs[layer].reshape(inputs.shape[0], -1)

            for k, layer in enumerate(layers):
                def func(inputs: torch.Tensor, layer: int = layer) -> torch.Tensor:
                    return forward(inputs, layer)
                maps[k] = self._attribute(net, func, x, units[k], layer).detach()
        return maps, units

    def _attribute(self, net: Network, func: Callable, x: torch.Tensor, target: torch.Tensor,
                   layer: int) -> torch.Tensor:
        p = self.params
        x = x.detach().requires_grad_(True)
        if self.method == "ig":
            ig = IntegratedGradients(func).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                     n_steps=p["n_steps"], method=p["method"],
                                                     internal_batch_size=p["internal_batch_size"])
            if p["method"] == "riemann_trapezoid":  # Captum's weights sum to (n−1)/n; see the module notes
                ig = ig * (p["n_steps"] / (p["n_steps"] - 1))
            return ig
        if self.method == "gradshap":
            return GradientShap(func).attribute(x, baselines=self._baseline_set(x), target=target,
                                                n_samples=p["n_samples"], stdevs=p["stdevs"])
        if self.method == "saliency":
            return Saliency(func).attribute(x, target=target, abs=p["abs"])
        if self.method == "smoothgrad":
            return NoiseTunnel(Saliency(func)).attribute(x, nt_type="smoothgrad", nt_samples=p["nt_samples"],
                                                         stdevs=p["stdevs"], target=target, abs=p["abs"])
        cam = LayerGradCam(func, gradcam_module(net, layer)).attribute(x, target=target,
                                                                       relu_attributions=p["relu"])
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode=p["interpolate_mode"])
        return cam.expand(-1, x.shape[1], *([-1] * (x.dim() - 2)))

    def _baseline_set(self, x: torch.Tensor) -> torch.Tensor:
        """GradientSHAP's baseline distribution (given, or seeded uniform noise), cast to ``x``."""
        given = self.params["baselines"]
        if given is not None:
            return torch.as_tensor(given).to(x)
        if self._baselines is None or self._baselines.shape[1:] != x.shape[1:]:
            g = torch.Generator().manual_seed(int(self.params["baseline_seed"]))
            self._baselines = torch.rand((int(self.params["n_baselines"]), *x.shape[1:]), generator=g,
                                         dtype=torch.float64)
        return self._baselines.to(x)
