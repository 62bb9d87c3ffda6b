"""Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy 2015, "Explaining and harnessing adversarial
examples", arXiv:1412.6572)."""

from __future__ import annotations

import torch

from .base import Attack, LossGradient


class FGSM(Attack):
    r"""FGSM, Linf: one step of size ε along the sign of the loss gradient.

    .. math:: \tilde x = \mathrm{clip}_{[0,1]}\big(x + \varepsilon\,\mathrm{sign}(\nabla_x L(f(x), y))\big)

    with L the cross-entropy of the logits with the true label (untargeted), or their margin with
    ``loss='margin'`` (:func:`~bayesrobust.adversarial.base.per_image_objective`). The paper's setting
    (Carbone et al. 2021; docs/method.md §4.2) is ``FGSM(epsilon=0.2)``.

    Parameters
    ----------
    epsilon
        Linf radius in [0, 1].
    loss
        ``'ce'`` (default) or ``'margin'``.

    Shapes
    ------
    ``x`` (N, C, H, W) in [0, 1], ``y`` (N,) int64 → x̃ (N, C, H, W).

    Raises
    ------
    ValueError
        ``epsilon`` outside [0, 1] or NaN; at call time, invalid inputs (see
        :func:`~bayesrobust.adversarial.base.check_inputs`).

    Examples
    --------
    >>> x_adv = FGSM(epsilon=0.2)(model, x, y)            # doctest: +SKIP
    """

    norm = "linf"

    def perturb(self, gradient: LossGradient, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        return self.project(x + self.epsilon * self.step_direction(gradient, x, y), x)
