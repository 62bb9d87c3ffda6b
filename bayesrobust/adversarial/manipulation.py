"""Attacks on explanations: keep the prediction, move the attribution map (docs/method.md §11.2-§11.3).

Both attacks take projected signed-gradient steps inside the Linf ball of radius ε around x (and [0, 1]),
through the same :meth:`~bayesrobust.adversarial.base.Attack.project` as PGD, on the Bayesian map of a
:class:`~bayesrobust.adversarial.attribution.MapModel` (mean over S draws, all draws in one vectorised call,
images in chunks). A step that changes the predictive label of an image is rejected for that image (it keeps
its previous point), so every returned x̃ has the clean prediction. Each image returns its best point over
the iterations (Ghorbani et al.), judged by the attack objective.

:class:`IFIA`
    Iterative feature-importance attack (Ghorbani, Abid & Zou 2019, "Interpretation of neural networks is
    fragile", arXiv:1710.10547). Objectives on the normalised map ê = |e| / Σ|e|: ``topk`` lowers the mass
    of the clean map's k most important pixels; ``mass_center`` moves the map's centre of mass away from
    the clean one; ``targeted`` raises the mass inside a target region.
:class:`Manipulate`
    Targeted manipulation (Dombrowski et al. 2019, arXiv:1906.07983): minimise
    d·‖ê(x̃) − ê_target‖² + γ‖p(x̃) − p(x)‖² (p the posterior predictive, d the pixels of a map), towards a
    given target map or another image's map.

Defaults (MNIST-sized inputs) follow Chen et al. 2019, "Robust attribution regularization"
(arXiv:1905.09957), who run Ghorbani's attack with ε = 0.3, 100 steps of 0.01 and k = 200 pixels;
:func:`literature_defaults` gives ε = 8/255, step 2/255 and k = 1000 for 32×32 colour images (Singh et al.
2020, ART, seed 002). β = 10 for the softplus surrogate is our choice: its map differs from the ReLU map
(the error falls about as 1/β, see the tests), but its second derivative is large enough to steer the attack;
the maps stored and compared are always the exact ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..checks import count
from ..choices import IFIAVariant
from ..models.draws import DrawSet, chunks
from ..models.posterior import Posterior
from .attribution import MapModel, check_method
from .base import Attack, LossGradient, check_inputs


def literature_defaults(shape: tuple[int, ...]) -> dict[str, float | int]:
    """ε, steps, step size and k for images of ``shape`` (C, H, W): MNIST-sized grey images ε = 0.3, 100
    steps of 0.01, k = 200 (Chen et al. 2019); colour images ε = 8/255, 100 steps of 2/255, k = 1000
    (seed 002's CIFAR-10 setting)."""
    if shape[0] == 1:
        return {"epsilon": 0.3, "steps": 100, "step_size": 0.01, "k": 200}
    return {"epsilon": 8 / 255, "steps": 100, "step_size": 2 / 255, "k": 1000}


def normalised(e: torch.Tensor) -> torch.Tensor:
    """ê = |e| / Σ|e| per map: (N, H, W) → (N, H, W), each summing to 1 (a zero map stays zero)."""
    a = e.abs()
    return a / a.flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (e.dim() - 1)))


def centre_of_mass(e: torch.Tensor) -> torch.Tensor:
    """(N, 2) row and column of the centre of mass of |e| for maps (N, H, W)."""
    w = normalised(e)
    rows = torch.arange(e.shape[-2], dtype=e.dtype, device=e.device)
    cols = torch.arange(e.shape[-1], dtype=e.dtype, device=e.device)
    return torch.stack([(w.sum(-1) * rows).sum(-1), (w.sum(-2) * cols).sum(-1)], dim=-1)


def topk_mask(e: torch.Tensor, k: int) -> torch.Tensor:
    """(N, H, W) bool: the k pixels of largest |e| per map (ties: torch.topk's order)."""
    flat = e.abs().flatten(1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, flat.topk(k, dim=1).indices, True)
    return mask.view_as(e)


def _check_positive(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be > 0 and finite, got {value!r}")
    return v


class AttributionAttack(Attack):
    """Shared part of :class:`IFIA` and :class:`Manipulate`: settings, the loop, rejection, best point.

    Parameters
    ----------
    method
        The map attacked: ``saliency``, ``grad_input``, ``integrated_gradients`` or ``lrp_epsilon``.
    epsilon, steps, step_size
        Linf radius, number of steps, step size (literature defaults for MNIST: 0.3, 100, 0.01).
    beta
        β of the softplus surrogate used for the attack's gradients (``None``: the exact activations, whose
        second derivative vanishes for ReLU nets).
    ig_steps
        Points of integrated gradients.
    """

    norm = "linf"

    def __init__(self, *, method: str = "saliency", epsilon: float = 0.3, steps: int = 100,
                 step_size: float = 0.01, beta: float | None = 10.0, ig_steps: int = 16):
        super().__init__(epsilon=epsilon)
        self.method = check_method(method)
        self.steps = count("steps", steps, allow_none=False)
        self.step_size = _check_positive("step_size", step_size)
        self.beta = None if beta is None else _check_positive("beta", beta)
        self.ig_steps = count("ig_steps", ig_steps, allow_none=False)

    def perturb(self, gradient: LossGradient, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} attacks a map, not a loss: call it with a model")

    def map_model(self, model: Posterior | DrawSet | nn.Module, *, n_draws: int | None = None,
                  chunk_size: int | None = None, device: str | torch.device = "cpu") -> MapModel:
        """The :class:`MapModel` this attack differentiates (reuse it to evaluate on the same draws)."""
        if isinstance(model, MapModel):
            return model
        return MapModel(model, method=self.method, beta=self.beta, ig_steps=self.ig_steps, n_draws=n_draws,
                        chunk_size=chunk_size, device=device)

    def __call__(self, model: Posterior | DrawSet | nn.Module | MapModel, x: torch.Tensor,
                 y: torch.Tensor | None = None, *, generator: torch.Generator | None = None,
                 target: torch.Tensor | None = None, n_draws: int | None = None,
                 chunk_size: int | None = None) -> torch.Tensor:
        """x̃ (N, C, H, W) for images ``x``; the map explained is that of the predictive label at x (``y``
        is only checked, as for PGD). ``target`` per :meth:`objective`."""
        check_inputs(x, torch.zeros(x.shape[0], dtype=torch.long) if y is None else y)
        maps = self.map_model(model, n_draws=n_draws, chunk_size=chunk_size, device=x.device)
        x = x.detach()
        label = maps.predict(x)
        clean = maps.maps(x, label)
        target = self.check_target(target, clean)
        out = torch.empty_like(x)
        for sl in chunks(x.shape[0], maps.chunk_size):
            out[sl] = self._attack_chunk(maps, x[sl], label[sl], clean[sl],
                                         None if target is None else target[sl])
        return out

    def check_target(self, target: torch.Tensor | None, clean: torch.Tensor) -> torch.Tensor | None:
        return target

    def _attack_chunk(self, maps: MapModel, x: torch.Tensor, label: torch.Tensor, clean: torch.Tensor,
                      target: torch.Tensor | None) -> torch.Tensor:
        objective = self.objective(clean, target, maps, x)
        smooth = self.beta is not None
        x_adv, best, best_value = x.clone(), x.clone(), torch.full((x.shape[0],), -math.inf, dtype=x.dtype,
                                                                     device=x.device)
        for _ in range(self.steps + 1):
            xg = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                value = objective(maps.maps(xg, label, create_graph=True, smooth=smooth), xg)
                grad, = torch.autograd.grad(value.sum(), xg)
            value = value.detach()
            better = value > best_value
            best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
            best_value = torch.where(better, value, best_value)
            if _ == self.steps:
                break
            proposal = self.project(x_adv + self.step_size * grad.sign(), x)
            keep = maps.predict(proposal) == label
            x_adv = torch.where(keep.view(-1, 1, 1, 1), proposal, x_adv)
        return best.detach()

    def objective(self, clean: torch.Tensor, target: torch.Tensor | None, maps: MapModel, x: torch.Tensor
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(maps at x̃ (N, H, W), x̃) -> (N,)`` values the attack increases."""
        raise NotImplementedError

    def params(self) -> dict[str, object]:
        return {**super().params(), "method": self.method, "steps": self.steps, "step_size": self.step_size,
                "beta": self.beta, "ig_steps": self.ig_steps}


class IFIA(AttributionAttack):
    """Iterative feature-importance attack (Ghorbani et al. 2019), Linf, label-preserving.

    Parameters
    ----------
    variant
        ``topk`` (default), ``mass_center`` or ``targeted``.
    k
        Pixels of the top-k region (``topk``; also the size of the default ``targeted`` region), default 200.
    (others)
        See :class:`AttributionAttack`.

    ``targeted`` raises the mass of ê inside ``target`` (N, H, W) bool given at call time; without one, the
    region is another image's top-k (the batch rolled by one).

    Shapes
    ------
    ``x`` (N, C, H, W) in [0, 1] → x̃ (N, C, H, W), ‖x̃ − x‖∞ ≤ ε, same predictive label as x.
    """

    def __init__(self, *, variant: str = "topk", k: int = 200, **settings):
        super().__init__(**settings)
        self.variant = IFIAVariant.parse(variant, "IFIA variant").value
        self.k = count("k", k, allow_none=False)

    def check_target(self, target, clean):
        if self.k > clean[0].numel():
            raise ValueError(f"k={self.k} but a map has only {clean[0].numel()} pixels")
        if self.variant != "targeted":
            if target is not None:
                raise ValueError(f"a target region is for the targeted variant, not {self.variant!r}")
            return None
        if target is None:
            return topk_mask(clean.roll(1, dims=0), self.k)
        if target.shape != clean.shape or target.dtype != torch.bool:
            raise ValueError(f"target must be a bool mask of shape {tuple(clean.shape)}, got "
                             f"{target.dtype} {tuple(target.shape)}")
        return target.to(clean.device)

    def objective(self, clean, target, maps, x):
        if self.variant == "topk":
            region = topk_mask(clean, self.k).to(clean.dtype)
            return lambda e, _: -(normalised(e) * region).flatten(1).sum(1)
        if self.variant == "targeted":
            region = target.to(clean.dtype)
            return lambda e, _: (normalised(e) * region).flatten(1).sum(1)
        centre = centre_of_mass(clean)
        return lambda e, _: (centre_of_mass(e) - centre).norm(dim=1)

    def params(self) -> dict[str, object]:
        return {**super().params(), "variant": self.variant, "k": self.k}

    @property
    def name(self) -> str:
        return "ifia"


class Manipulate(AttributionAttack):
    """Targeted manipulation of the map (Dombrowski et al. 2019), Linf, label-preserving.

    Minimises d·‖ê(x̃) − ê_t‖² + γ‖p(x̃) − p(x)‖² by projected signed-gradient steps (the paper uses Adam
    without a ball; the Linf ball makes it comparable with IFIA). ``target`` (N, H, W) is a map given at
    call time (normalised here); without one, another image's map (the batch rolled by one).

    Parameters
    ----------
    gamma
        γ, the weight of keeping the predictive close (default 1).
    (others)
        See :class:`AttributionAttack`.
    """

    def __init__(self, *, gamma: float = 1.0, **settings):
        super().__init__(**settings)
        self.gamma = float(gamma)
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise ValueError(f"gamma must be >= 0 and finite, got {gamma!r}")

    def check_target(self, target, clean):
        if target is None:
            return normalised(clean.roll(1, dims=0))
        if target.shape != clean.shape or not torch.is_floating_point(target) or not target.isfinite().all():
            raise ValueError(f"target must be finite maps of shape {tuple(clean.shape)}, got {target.dtype} "
                             f"{tuple(target.shape)}")
        return normalised(target.to(clean.device, clean.dtype))

    def objective(self, clean, target, maps, x):
        with torch.no_grad():
            p0 = maps.logits(x).softmax(-1).mean(0)
        d = clean[0].numel()

        def value(e: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
            p = maps.logits(x_adv).softmax(-1).mean(0)
            return -(d * (normalised(e) - target).pow(2).flatten(1).sum(1) + self.gamma * (p - p0).pow(2).sum(1))
        return value

    def params(self) -> dict[str, object]:
        return {**super().params(), "gamma": self.gamma}

    @property
    def name(self) -> str:
        return "manipulate"
