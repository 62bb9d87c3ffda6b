"""The posterior-average wrapper: any attack on a Bayesian model over S posterior draws (docs/method.md §4.3).

Randomness is a wrapper, not a variant: :class:`PosteriorAverage` turns FGSM or PGD into an
attack on the posterior predictive, in one of four named modes.

``mean_grad`` (default)
    Steps along the gradient of the expected loss, ∇ₓ (1/S) Σₛ L(f_s(x), y) — expectation over
    transformation (Athalye et al. 2018, arXiv:1707.07397), the attack of Carbone et al. 2020, "Robustness of
    Bayesian neural networks to gradient-based attacks" (arXiv:2002.04359).
``predictive``
    Steps along ∇ₓ L(mean_s softmax f_s(x), y), the cross-entropy of the posterior predictive. Computed
    stably as Σₛ wₛ ∇ₓ L(f_s(x), y) with wₛ = p_s(y|x) / Σₛ' p_s'(y|x) (a softmax over draws of −Lₛ), in
    two passes over the draws (one forward-only), so no S computation graphs are kept.
``mean_image`` (the reference code's)
    Attacks every draw separately and averages the S adversarial images (Carbone et al. 2021,
    arXiv:2102.11010). The average stays in the ε-ball and in [0, 1] (both convex).
``mean_sign`` (what the reference code's attack loop computes, docs/method.md §9.3)
    Every step moves by the mean over draws of each draw's own unit step: (1/S) Σₛ sign ∇ₓ L(f_s(x), y) in
    Linf (in L2, the mean of the draws' unit-length gradients), a fractional step that shrinks where the
    draws disagree. For FGSM it equals ``mean_image`` wherever no draw's step is clipped to [0, 1].

Each mode increases the attack's loss (``attack.loss``): the cross-entropy, or in every mode but
``predictive`` (which is the cross-entropy of the predictive by definition) the logit margin.

A deterministic model is the S = 1 case of the same code: all four modes then equal the plain attack.
The draws are those of a :class:`~bayesrobust.models.draws.DrawSet` (its ``indices`` record which).
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import count
from ..choices import AttackLoss, PosteriorMode
from ..models.draws import DrawSet
from ..models.posterior import Posterior
from .base import (
    Attack,
    LossGradient,
    StepDirection,
    accumulate_gradient,
    check_inputs,
    module_gradient,
    per_image_loss,
)

MODES = PosteriorMode.values()


def check_mode(mode: str, loss: str = "ce") -> str:
    """``mode`` if it is one of :data:`MODES` and can attack ``loss``; ``ValueError`` listing the modes otherwise,
    or saying that ``predictive`` (the cross-entropy of the predictive) takes no other loss."""
    mode = PosteriorMode.parse(mode, "posterior mode").value
    if mode == PosteriorMode.PREDICTIVE and loss != AttackLoss.CE:
        raise ValueError(f"posterior mode 'predictive' attacks the cross-entropy of the posterior predictive; "
                         f"the attack's loss is {loss!r}: use loss 'ce', or mode "
                         f"{', '.join(m for m in MODES if m != PosteriorMode.PREDICTIVE)} for the margin")
    return mode


def mean_grad_gradient(draws: DrawSet, chunk_size: int | None = None, loss: str = "ce") -> LossGradient:
    """The loss gradient of mode ``mean_grad``: (1/S) Σₛ ∇ₓ Σᵢ L(f_s(x)ᵢ, yᵢ), L the cross-entropy or the
    margin (``loss``, :func:`~bayesrobust.adversarial.base.per_image_objective`).

    ``chunk_size`` images per pass (default ``draws.chunk_size``); draws outer, chunks inner, so each draw
    is copied into the network once per gradient.
    """
    chunk_size = draws.chunk_size if chunk_size is None else count("chunk_size", chunk_size)

    def gradient(x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = torch.zeros_like(x_adv)
        for _ in draws:
            accumulate_gradient(g, draws.net, x_adv, y, chunk_size=chunk_size, loss=loss)
        return g / len(draws)
    return gradient


def predictive_gradient(draws: DrawSet, chunk_size: int | None = None) -> LossGradient:
    """The loss gradient of mode ``predictive``: ∇ₓ Σᵢ −log (1/S) Σₛ softmax(f_s(x)ᵢ)_{yᵢ}."""
    chunk_size = draws.chunk_size if chunk_size is None else count("chunk_size", chunk_size)

    def gradient(x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = torch.stack([per_image_loss(draws.net, x_adv, y, chunk_size) for _ in draws])
        weights = torch.softmax(-losses, dim=0)  # (S, N): p_s(y|x) / sum over draws
        g = torch.zeros_like(x_adv)
        for position in reversed(range(len(draws))):  # starts with the draw still loaded
            draws.load(position)
            accumulate_gradient(g, draws.net, x_adv, y, weights[position], chunk_size)
        return g
    return gradient


def mean_sign_direction(draws: DrawSet, attack: Attack, chunk_size: int | None = None) -> StepDirection:
    """The step of mode ``mean_sign``: (1/S) Σₛ ``attack.ascent_direction``(∇ₓ Σᵢ L(f_s(x)ᵢ, yᵢ)), L the
    attack's loss.

    In Linf that is the mean of the draws' gradient signs, each pixel in [−1, 1]; in L2 the mean of their
    unit-length gradients (length ≤ 1).
    """
    chunk_size = draws.chunk_size if chunk_size is None else count("chunk_size", chunk_size)

    def direction(x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = torch.zeros_like(x_adv)
        for _ in draws:
            g = accumulate_gradient(torch.zeros_like(x_adv), draws.net, x_adv, y, chunk_size=chunk_size,
                                    loss=attack.loss)
            d += attack.ascent_direction(g)
        return d / len(draws)
    return StepDirection(direction)


class PosteriorAverage:
    """Attack the posterior predictive of a Bayesian model over S draws.

    Parameters
    ----------
    attack
        Any :class:`~bayesrobust.adversarial.base.Attack` (FGSM, PGD), used unchanged.
    mode
        ``'mean_grad'`` (default), ``'predictive'``, ``'mean_image'`` or ``'mean_sign'`` (see the module
        docstring).
    n_draws
        S when called with a :class:`Posterior`; ``None`` is the posterior's default. Ignored for a
        :class:`DrawSet` (its draws are used) and a plain module (S = 1).
    chunk_size
        Images per forward/backward pass; ``None`` chooses: 50 for networks with convolutions, the whole
        batch otherwise (fastest on the measured 2-core CPU, see ``experiments/benchmarks/bench_attacks.py``).
        Results do not depend on it.

    Shapes
    ------
    ``x`` (N, C, H, W) in [0, 1], ``y`` (N,) int64 → x̃ (N, C, H, W).

    Raises
    ------
    ValueError
        Unknown mode, mode ``predictive`` with an attack whose loss is not the cross-entropy, ``n_draws`` or
        ``chunk_size`` not a positive integer (0 is not "the default": that is ``None``); at call time, invalid images
        (NaN, ±inf or outside [0, 1]).

    Examples
    --------
    >>> attack = PosteriorAverage(FGSM(epsilon=0.2), mode="mean_grad", n_draws=100)  # doctest: +SKIP
    >>> x_adv = attack(posterior, x, y)
    """

    def __init__(self, attack: Attack, *, mode: str = "mean_grad", n_draws: int | None = None,
                 chunk_size: int | None = None):
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an Attack (FGSM, PGD), got {type(attack).__name__}")
        self.attack = attack
        self.mode = check_mode(mode, attack.loss)
        self.n_draws = count("n_draws", n_draws)
        self.chunk_size = count("chunk_size", chunk_size)

    def draws(self, model: Posterior | DrawSet | nn.Module, device: str | torch.device = "cpu") -> DrawSet:
        """The draws this wrapper attacks for ``model`` (reuse them to evaluate on the same networks)."""
        return DrawSet.of(model, self.n_draws, device=device)

    def __call__(self, model: Posterior | DrawSet | nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Adversarial images for ``(x, y)`` against ``model`` (x̃ detached, same shape and device as x)."""
        check_inputs(x, y)
        draws = self.draws(model, x.device)
        if self.mode == "mean_image":
            total = torch.zeros_like(x)
            for _ in draws:
                chunk = draws.chunk_size if self.chunk_size is None else self.chunk_size
                gradient = module_gradient(draws.net, chunk, self.attack.loss)  # the loaded draw
                total += self.attack.run(gradient, x, y, generator=generator)
            return self.attack.project(total / len(draws), x)
        if self.mode == "mean_sign":
            step = mean_sign_direction(draws, self.attack, self.chunk_size)
            return self.attack.run(step, x, y, generator=generator)
        if self.mode == PosteriorMode.MEAN_GRAD:
            return self.attack.run(mean_grad_gradient(draws, self.chunk_size, self.attack.loss), x, y,
                                   generator=generator)
        return self.attack.run(predictive_gradient(draws, self.chunk_size), x, y, generator=generator)

    def params(self) -> dict[str, object]:
        """The attack's hyperparameters plus ``posterior_mode`` and ``n_draws`` (as requested)."""
        return {**self.attack.params(), "posterior_mode": self.mode, "n_draws": self.n_draws}

    def __repr__(self) -> str:
        return f"PosteriorAverage({self.attack!r}, mode={self.mode!r}, n_draws={self.n_draws!r})"

