"""RISE: relevance from randomly masked inputs, behind the LRP interface (docs/method.md §10.1).

Petsiuk, Das, Saenko 2018, "RISE: randomized input sampling for explanation of black-box models"
(BMVC, arXiv 1806.07421). A pixel's relevance for an output unit ``f`` is the expected score of the
masked input given that the pixel was kept::

    S(x) = 1/(N·p) · Σ_i f(x ⊙ M_i) · M_i        (N masks M_i (H, W), keep-probability p)

Each mask is a ``cells × cells`` grid of Bernoulli(p) values, bilinearly upsampled to
``(cells + 1)·⌈H/cells⌉`` pixels a side and cropped to ``H × W`` at a random shift in ``[0, ⌈H/cells⌉)``
(smooth masks whose cell borders fall anywhere). The masks are drawn once from ``mask_seed`` — every
posterior draw, every model and every call sees the same N masks, so draws differ only by their weights.

The score ``f`` is, like for the other methods, the argmax unit of the explained layer's output on the
clean image; for the last layer it is that class's softmax probability (``score='probability'``, as in
the paper; ``'output'`` uses the logit), for a hidden layer the unit's post-activation value. One batched
forward pass covers at most ``forward_batch`` masked images (a chunk of images × several masks); the scores
are kept, (L, N, masks), and the sum over masks is one matrix product at the end: no Python loop over single
images or masks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from ..checks import check_images, count
from ..models.architectures import Network
from ..models.draws import FORWARD_PASS, output_pass
from .layers import capture_outputs, output_modules

#: Default parameters (the paper uses N = 4000–8000, s = 7, p = 0.5 on ImageNet; 28-pixel digits need fewer);
#: ``forward_batch``: :data:`~bayesrobust.models.draws.FORWARD_PASS` (docs/method.md §10.7).
RISE_DEFAULTS: dict[str, Any] = {"n_masks": 2000, "cells": 7, "p": 0.5, "mask_seed": 0, "score": "probability",
                                 "forward_batch": FORWARD_PASS}
SCORES = ("probability", "output")


def rise_masks(n_masks: int, height: int, width: int, cells: int = 7, p: float = 0.5, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n_masks`` RISE masks (N, H, W) with values in [0, 1], the same for the same arguments.

    Raises
    ------
    ValueError
        ``n_masks`` or ``cells`` not a positive integer, ``cells`` larger than the image, ``p`` not in (0, 1].
    """
    count("n_masks", n_masks, allow_none=False)
    count("cells", cells, allow_none=False)
    if cells > min(height, width):
        raise ValueError(f"cells={cells} is more grid cells than the image has pixels a side ({height}x{width})")
    _check_p(p)
    g = torch.Generator().manual_seed(int(seed))
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    grid = (torch.rand((n_masks, 1, cells, cells), generator=g, dtype=torch.float64) < p).to(torch.float64)
    big = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear",
                        align_corners=False)[:, 0]
    dy = torch.randint(0, cell_h, (n_masks,), generator=g)
    dx = torch.randint(0, cell_w, (n_masks,), generator=g)
    rows = (dy[:, None] + torch.arange(height)[None])[:, :, None]     # (N, H, 1)
    cols = (dx[:, None] + torch.arange(width)[None])[:, None, :]      # (N, 1, W)
    crop = big[torch.arange(n_masks)[:, None, None], rows, cols]      # one gather, no loop over masks
    return crop.to(dtype)


def _check_p(p: Any) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < float(p) <= 1:
        raise ValueError(f"the keep-probability p must be in (0, 1], got {p!r}")


class RISE:
    """RISE relevance of each explained layer's argmax unit (see the module docstring).

    Parameters
    ----------
    **params
        Overrides of :data:`RISE_DEFAULTS`: ``n_masks`` (N), ``cells`` (s), ``p``, ``mask_seed``,
        ``score`` (``'probability'`` or ``'output'``, last layer only), ``forward_batch`` (masked images per
        forward pass; results do not depend on it).

    Raises
    ------
    ValueError
        Unknown parameter or a bad value (at construction).
    """

    def __init__(self, **params: Any):
        unknown = set(params) - set(RISE_DEFAULTS)
        if unknown:
            raise ValueError(f"method 'rise' takes no parameter(s) {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(sorted(RISE_DEFAULTS))}")
        self.params = {**RISE_DEFAULTS, **params}
        if self.params["score"] not in SCORES:
            raise ValueError(f"unknown RISE score {self.params['score']!r}; expected one of {', '.join(SCORES)}")
        for name in ("n_masks", "cells", "forward_batch"):
            count(name, self.params[name], allow_none=False)
        _check_p(self.params["p"])
        self._masks: torch.Tensor | None = None
        #: forward passes (masked images) run so far, for the benchmark
        self.forwards = 0

    @property
    def name(self) -> str:
        return "rise"

    def config(self) -> dict[str, Any]:
        return {"method": "rise", **self.params}

    def masks(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """The N masks (N, H, W) on ``like``'s device and dtype (made once per image size)."""
        m = self._masks
        if m is None or m.shape[1:] != (height, width):
            p = self.params
            m = rise_masks(p["n_masks"], height, width, p["cells"], p["p"], p["mask_seed"], torch.float64)
            self._masks = m
        return m.to(like)

    @contextmanager
    def attached(self, net: Network) -> Iterator[Network]:
        yield net

    @contextmanager
    def draw(self, net: Network) -> Iterator[Network]:
        yield net

    def __call__(self, net: Network, x: torch.Tensor, layers: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """RISE maps of every layer in ``layers``: ``(maps (L, N, C, H, W), units (L, N))``; the map is the
        same for every channel (the masks cover all channels of a pixel)."""
        check_images(x)
        n, c, h, w = x.shape
        masks = self.masks(h, w, x)                                   # (M, H, W)
        n_masks = masks.shape[0]
        last = len(net.layers) - 1
        units = torch.empty((len(layers), n), dtype=torch.int64, device=x.device)
        scores = x.new_empty((len(layers), n, n_masks))                # f(x ⊙ M_i) per layer, image and mask
        fb = self.params["forward_batch"]
        flat_masks = masks.reshape(n_masks, h * w)
        with capture_outputs(net, layers) as outputs, torch.no_grad():
            net(x)
            for k, layer in enumerate(layers):
                units[k] = outputs[layer].reshape(n, -1).argmax(dim=1)
            run = output_pass(net, keep=output_modules(net, layers))     # same outputs, faster (§10.7)
            for first in range(0, n, fb):                                  # images per pass: at most fb
                xi = x[first:first + fb]
                ni, per_pass = xi.shape[0], max(1, fb // xi.shape[0])      # masks per pass for these images
                for start in range(0, n_masks, per_pass):
                    m = masks[start:start + per_pass]
                    batch = (xi[:, None] * m[None, :, None]).reshape(-1, c, h, w)   # (ni·m, C, H, W)
                    run(batch)
                    self.forwards += batch.shape[0]
                    for k, layer in enumerate(layers):
                        out = outputs[layer].reshape(ni, m.shape[0], -1)
                        if layer == last and self.params["score"] == "probability":
                            out = torch.softmax(out, dim=-1)
                        unit = units[k, first:first + fb]
                        scores[k, first:first + fb, start:start + per_pass] = \
                            out.gather(2, unit[:, None, None].expand(-1, m.shape[0], 1))[..., 0]   # (ni, m)
        sal = scores @ flat_masks / (n_masks * float(self.params["p"]))   # (L, N, H·W): one product
        maps = sal.reshape(len(layers), n, 1, h, w).expand(-1, -1, c, -1, -1).contiguous()
        return maps, units
