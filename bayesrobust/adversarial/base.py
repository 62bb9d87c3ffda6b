"""The attack base class: validation, projection, clipping and the loss gradient, written once (docs/method.md §4.1).

An attack is configured at construction (keyword-only hyperparameters) and called with a model and a batch::

    x_adv = PGD(norm="linf", epsilon=0.2, steps=40, step_size=0.01)(model, x, y)

``model`` is a plain ``torch.nn.Module`` returning logits, used in whatever train/eval mode the caller set.
Every attack is untargeted: it increases a loss of the logits and the true label ``y`` (the
cross-entropy, ``loss='ce'``, by default; the logit margin with ``loss='margin'``, see :func:`per_image_objective`)
and returns images clipped to [0, 1] inside the ε-ball around ``x`` in the attack's norm. Each subclass only
writes its steps (:meth:`Attack.perturb`), against a *loss gradient*: a function ``(x_adv, y) -> ∇ₓ Σᵢ Lᵢ``.
For a plain module that is :func:`module_gradient`; the posterior-average wrapper
(:mod:`bayesrobust.adversarial.posterior`) passes a gradient averaged over posterior draws instead, so the same
FGSM/PGD code attacks deterministic and Bayesian models.

The loss is the *sum* over images of the per-image loss, so each image's gradient does not depend
on the batch size (nor on chunking); only its sign (Linf) or direction (L2) is used.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import MAX_LINF_EPSILON, check_images
from ..choices import AttackLoss, Norm
from ..models.draws import chunks

#: ``(x_adv, y) -> ∇ₓ Σᵢ L(f(x_adv)ᵢ, yᵢ)``, shaped like ``x_adv``; must not write any parameter's ``.grad``.
LossGradient = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StepDirection:
    """A loss gradient that already returns the step direction: ``(x_adv, y) -> d`` with ``d`` used as is
    (not passed through :meth:`Attack.ascent_direction` again), e.g. the mean over draws of the draws' sign
    steps (:func:`bayesrobust.adversarial.posterior.mean_sign_direction`). Wraps a function of the
    :data:`LossGradient` signature."""

    def __init__(self, direction: LossGradient):
        self.direction = direction

    def __call__(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.direction(x_adv, y)

NORMS = Norm.values()
LOSSES = AttackLoss.values()

#: Added to per-image L2 norms before dividing (as torchattacks' ``eps_for_division``).
L2_TINY = 1e-10


def check_norm(norm: str) -> str:
    """``norm`` if it is one of :data:`NORMS`; ``ValueError`` listing them otherwise."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    return norm


def check_inputs(x: torch.Tensor, y: torch.Tensor, name: str = "x") -> None:
    """Check a batch: ``x`` (N, ...) floating point, every pixel finite and in [0, 1], ``y`` (N,) integer labels.

    Raises
    ------
    ValueError
        Wrong dtype or shape, mismatched batch sizes, a NaN or ±inf pixel, or pixels outside [0, 1] (the
        message gives the range).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() >= 2 and (y.dim() != 1 or y.shape[0] != x.shape[0]):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match {name} of shape {tuple(x.shape)}; "
                         f"got {tuple(y.shape)}")
    if torch.is_floating_point(y) or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    check_images(x, name)


def check_epsilon(epsilon: float, norm: str) -> float:
    """An attack radius: a finite number ``>= 0``, at most 1 in Linf (pixels are in [0, 1]: a larger Linf ball
    holds every image); ``ValueError`` naming the value otherwise."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon must be a number, got {epsilon!r}") from None
    if not value >= 0 or not math.isfinite(value):  # also catches NaN
        raise ValueError(f"epsilon must be >= 0 and finite, got {value}")
    if norm == "linf" and value > MAX_LINF_EPSILON:
        raise ValueError(f"epsilon must be <= {MAX_LINF_EPSILON:g} in the linf norm (pixels are in [0, 1]), "
                         f"got {value:g}")
    return value


def check_loss(loss: str) -> str:
    """``loss`` if it is one of :data:`LOSSES`; ``ValueError`` listing them otherwise."""
    return AttackLoss.parse(loss, "attack loss").value


def per_image_objective(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """The loss an attack increases, per image: (N, classes) logits and (N,) labels → (N,).

    ``'ce'``: the cross-entropy −log softmax(z)_y. ``'margin'``: max_{j≠y} z_j − z_y, the untargeted
    Carlini–Wagner margin (Carlini & Wagner 2017, arXiv:1608.04644) without its clamp; positive exactly when
    the image is misclassified. Its gradient, ∇z_j* − ∇z_y, does not vanish when the softmax saturates, where
    the cross-entropy's is exactly zero in float32 (docs/method.md §4.4).
    """
    if loss == AttackLoss.CE:
        return F.cross_entropy(logits, y, reduction="none")
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - true


def _per_image_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    """‖tᵢ‖ per image, shaped (N, 1, ..., 1) for broadcasting."""
    flat = t.reshape(t.shape[0], -1)
    value = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)
    return value.reshape(-1, *([1] * (t.dim() - 1)))


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """‖x̃ᵢ − xᵢ‖ in ``norm`` ('linf' or 'l2') for every image, shape (N,)."""
    return _per_image_norm(x_adv - x, check_norm(norm)).reshape(-1)


def per_image_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk_size: int | None = None,
                   loss: str = "ce") -> torch.Tensor:
    """:func:`per_image_objective` of ``net``'s logits with ``y`` per image, (N,), without gradients."""
    with torch.no_grad():
        return torch.cat([per_image_objective(net(x[sl]), y[sl], loss) for sl in chunks(x.shape[0], chunk_size)])


def accumulate_gradient(out: torch.Tensor, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        weight: torch.Tensor | float = 1.0, chunk_size: int | None = None, loss: str = "ce"
                        ) -> torch.Tensor:
    """``out += ∇ₓ Σᵢ wᵢ L(net(x)ᵢ, yᵢ)``, image chunk by image chunk, L the ``loss`` of
    :func:`per_image_objective` (default the cross-entropy); returns ``out``.

    ``weight`` is a scalar or per-image (N,). Only the input gradient is computed
    (``torch.autograd.grad``), so no parameter's ``.grad`` changes.
    """
    with torch.enable_grad():
        for sl in chunks(x.shape[0], chunk_size):
            xc = x[sl].detach().requires_grad_(True)
            value = per_image_objective(net(xc), y[sl], loss)
            w = weight[sl] if isinstance(weight, torch.Tensor) else weight
            out[sl] += torch.autograd.grad((value * w).sum(), xc)[0]
    return out


def module_gradient(model: nn.Module, chunk_size: int | None = None, loss: str = "ce") -> LossGradient:
    """The loss gradient of a plain module, ∇ₓ Σᵢ L(model(x)ᵢ, yᵢ) (``loss``: :func:`per_image_objective`); the module
    is read at every call, so a module whose weights are swapped in place (a :class:`~bayesrobust.models.draws.DrawSet`)
    gives the gradient of its current draw."""
    def gradient(x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return accumulate_gradient(torch.zeros_like(x_adv), model, x_adv, y, chunk_size=chunk_size, loss=loss)
    return gradient


class Attack(abc.ABC):
    """Base class of the untargeted, norm-bounded attacks.

    Parameters
    ----------
    epsilon
        Radius of the perturbation ball, finite and ``>= 0`` (at most 1 in Linf), in the attack's norm
        (:attr:`norm`).
    loss
        What the attack increases: ``'ce'`` (the cross-entropy, default) or ``'margin'`` (the logit margin,
        which a saturated softmax does not mask; :func:`per_image_objective`).

    Notes
    -----
    Subclasses set :attr:`norm` and implement :meth:`perturb`; they use :meth:`project` after each step,
    which keeps x̃ in the ε-ball around x and in [0, 1].
    """

    #: 'linf' or 'l2'; set by the subclass (or its constructor).
    norm: str = "linf"

    def __init__(self, *, epsilon: float, loss: str = "ce"):
        self.epsilon = check_epsilon(epsilon, self.norm)
        self.loss = check_loss(loss)

    # -- public --------------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Attack ``model`` on the batch ``(x, y)``.

        Parameters
        ----------
        model
            A plain module mapping ``x`` to logits (N, classes). Its mode (train/eval) is left as set.
        x
            Clean images (N, C, H, W), pixels in [0, 1], on the model's device.
        y
            True labels (N,), int64.
        generator
            CPU generator for the random start (PGD), for reproducibility; ``None`` uses torch's global RNG.

        Returns
        -------
        torch.Tensor
            Adversarial images x̃ (N, C, H, W), detached, with ‖x̃ − x‖ ≤ ε and x̃ ∈ [0, 1].
        """
        return self.run(module_gradient(model, loss=self.loss), x, y, generator=generator)

    def run(self, gradient: LossGradient, x: torch.Tensor, y: torch.Tensor, *,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Attack with an arbitrary loss gradient (what the posterior-average wrapper calls)."""
        check_inputs(x, y)
        x = x.detach()
        with torch.no_grad():
            x_adv = self.perturb(gradient, x, y, generator)
        return x_adv.detach()

    @abc.abstractmethod
    def perturb(self, gradient: LossGradient, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        """The attack's own steps, from validated inputs; returns x̃ (via :meth:`project`)."""

    def params(self) -> dict[str, object]:
        """The hyperparameters as a flat dict (for result attributes and configs)."""
        return {"attack": self.name, "norm": self.norm, "epsilon": self.epsilon, "loss": self.loss}

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if k != "attack")
        return f"{type(self).__name__}({args})"

    # -- helpers for subclasses ----------------------------------------------------------------------------
    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project x̃ onto the ε-ball around x in :attr:`norm`, then clip to [0, 1].

        Linf: δ ← clamp(δ, −ε, ε). L2: δ ← δ · min(1, ε / ‖δ‖₂) per image. Then x̃ = clamp(x + δ, 0, 1);
        clipping a point of the ball towards the box never leaves the ball (both are convex and contain x).
        """
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.epsilon, self.epsilon)
        else:
            length = _per_image_norm(delta, "l2")
            delta = delta * torch.where(length > self.epsilon, self.epsilon / length.clamp_min(L2_TINY),
                                        torch.ones_like(length))
        return (x + delta).clamp(0, 1)

    def step_direction(self, gradient: LossGradient | StepDirection, x_adv: torch.Tensor, y: torch.Tensor
                       ) -> torch.Tensor:
        """The unit step at ``x_adv``: :meth:`ascent_direction` of the loss gradient, or the direction itself
        when ``gradient`` is a :class:`StepDirection`."""
        if isinstance(gradient, StepDirection):
            return gradient(x_adv, y)
        return self.ascent_direction(gradient(x_adv, y))

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent unit step of :attr:`norm`: sign(g) (Linf) or g / (‖g‖₂ + 1e-10) (L2)."""
        if self.norm == "linf":
            return grad.sign()
        return grad / (_per_image_norm(grad, "l2") + L2_TINY)

    def random_start_point(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A random point of the ε-ball around x, clipped to [0, 1].

        Linf: δ ~ U(−ε, ε) per pixel (Madry et al. 2018). L2: a uniformly random direction with a radius
        uniform in [0, ε] (as torchattacks' PGDL2). Noise is drawn on the CPU from ``generator`` and moved to
        x's device, so a seed gives the same start on every device.
        """
        shape = x.shape
        if self.norm == "linf":
            noise = torch.rand(shape, generator=generator, dtype=x.dtype) * (2 * self.epsilon) - self.epsilon
        else:
            direction = torch.randn(shape, generator=generator, dtype=x.dtype)
            radius = torch.rand((shape[0],) + (1,) * (len(shape) - 1), generator=generator, dtype=x.dtype)
            noise = direction / _per_image_norm(direction, "l2").clamp_min(L2_TINY) * radius * self.epsilon
        return (x + noise.to(x.device)).clamp(0, 1)
