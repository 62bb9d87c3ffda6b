"""Projected Gradient Descent, Linf and L2 (Madry et al. 2018, "Towards deep learning models resistant to
adversarial attacks", arXiv:1706.06083)."""

from __future__ import annotations

import math
import numbers

import torch

from .base import Attack, LossGradient, check_norm

#: Default step size, relative to ε/steps, where the paper does not fix one (docs/method.md §4.5).
STEP_SIZE_FACTOR = 2.5


class PGD(Attack):
    r"""PGD with an optional random start, in the Linf or L2 norm.

    Starting from x (or a random point of the ε-ball when ``random_start``), repeat ``steps`` times

    .. math:: \tilde x \leftarrow \mathrm{clip}_{[0,1]}\big(\Pi_{B_\varepsilon(x)}(\tilde x + \alpha\, d)\big)

    with d = sign(∇ₓL) for Linf and d = ∇ₓL / ‖∇ₓL‖₂ for L2, L the cross-entropy of the logits with the true
    label (or their margin, ``loss='margin'``), Π the projection on the norm ball. Equal, step by step, to torchattacks'
    ``PGD`` (Linf) and ``PGDL2`` (L2) when the random start is off. The paper preset (docs/method.md §4.2) is
    ``PGD(norm='linf', epsilon=0.2, steps=40, step_size=0.01)``.

    Parameters
    ----------
    norm
        ``'linf'`` (default) or ``'l2'``.
    epsilon
        Radius of the ball, finite and ``>= 0`` (Linf: at most 1).
    steps
        Number of gradient steps, ``>= 1``.
    step_size
        α, finite and ``> 0``; ``None`` means ``2.5 * epsilon / steps`` (seed-000 tables).
    random_start
        Start from a random point of the ball: uniform per pixel (Linf); uniform direction, radius uniform
        in [0, ε] (L2).
    loss
        ``'ce'`` (default) or ``'margin'`` (:func:`~bayesrobust.adversarial.base.per_image_objective`).

    Shapes
    ------
    ``x`` (N, C, H, W) in [0, 1], ``y`` (N,) int64 → x̃ (N, C, H, W).

    Raises
    ------
    ValueError
        Unknown norm, ``epsilon`` negative, infinite or (Linf) above 1, ``steps < 1``, or a ``step_size`` that
        is not positive and finite, each named in the message.
    """

    def __init__(self, *, norm: str = "linf", epsilon: float, steps: int = 40, step_size: float | None = None,
                 random_start: bool = True, loss: str = "ce"):
        self.norm = check_norm(norm)
        super().__init__(epsilon=epsilon, loss=loss)
        if isinstance(steps, bool) or not isinstance(steps, numbers.Real) or not math.isfinite(steps) \
                or int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.steps = int(steps)
        if step_size is None:
            step_size = STEP_SIZE_FACTOR * self.epsilon / self.steps
        else:
            try:
                step_size = float(step_size)
            except (TypeError, ValueError):
                raise ValueError(f"step_size must be a number, got {step_size!r}") from None
            if not (step_size > 0 and math.isfinite(step_size)):  # also catches NaN
                raise ValueError(f"step_size must be > 0 and finite, got {step_size:g}")
        self.step_size = float(step_size)
        self.random_start = bool(random_start)

    def perturb(self, gradient: LossGradient, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        x_adv = self.random_start_point(x, generator) if self.random_start else x.clone()
        for _ in range(self.steps):
            step = self.step_size * self.step_direction(gradient, x_adv, y)
            x_adv = self.project(x_adv + step, x)
        return x_adv

    def params(self) -> dict[str, object]:
        return {**super().params(), "steps": self.steps, "step_size": self.step_size,
                "random_start": self.random_start}
