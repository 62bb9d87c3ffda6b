"""Evaluation of an attack on a posterior (docs/method.md §4.4): predictive, predictions, success, softmax robustness.

For S draws f_1..f_S (S = 1 for a deterministic model):

- posterior predictive p(x) = (1/S) Σₛ softmax f_s(x), and its argmax, the prediction;
- per-draw predictions argmax f_s(x);
- **successful** attack: correct on x and wrong on x̃; **failed**: correct on both; an image misclassified
  when clean is in neither set;
- **softmax robustness** = 1 − ‖p(x) − p(x̃)‖∞ (Carbone et al. 2021, arXiv:2102.11010).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..checks import count
from ..models.draws import DrawSet, draw_probabilities
from ..models.posterior import Posterior
from .base import check_inputs


@dataclass(frozen=True)
class Evaluation:
    """Per-image outcome of an attack; tensors on the inputs' device.

    Attributes
    ----------
    label : (N,) true labels
    probs, probs_adv : (N, classes) posterior predictive on x and x̃
    draw_pred, draw_pred_adv : (S, N) per-draw predictions on x and x̃
    """

    label: torch.Tensor
    probs: torch.Tensor
    probs_adv: torch.Tensor
    draw_pred: torch.Tensor
    draw_pred_adv: torch.Tensor

    @property
    def pred(self) -> torch.Tensor:
        """(N,) argmax of the predictive on x."""
        return self.probs.argmax(dim=-1)

    @property
    def pred_adv(self) -> torch.Tensor:
        """(N,) argmax of the predictive on x̃."""
        return self.probs_adv.argmax(dim=-1)

    @property
    def success(self) -> torch.Tensor:
        """(N,) bool: correct on x and wrong on x̃."""
        return (self.pred == self.label) & (self.pred_adv != self.label)

    @property
    def failed(self) -> torch.Tensor:
        """(N,) bool: correct on x and on x̃."""
        return (self.pred == self.label) & (self.pred_adv == self.label)

    @property
    def softmax_robustness(self) -> torch.Tensor:
        """(N,) 1 − ‖p(x) − p(x̃)‖∞."""
        return 1 - (self.probs - self.probs_adv).abs().amax(dim=-1)

    @property
    def accuracy(self) -> float:
        """Clean accuracy of the predictive, ``correct / N`` (equals
        :func:`~bayesrobust.models.draws.predictive_accuracy` on the same images and draws)."""
        return int((self.pred == self.label).sum()) / len(self.label)

    @property
    def adversarial_accuracy(self) -> float:
        """Accuracy of the predictive under attack."""
        return int((self.pred_adv == self.label).sum()) / len(self.label)

    @property
    def success_rate(self) -> float:
        """Successful attacks among the correctly classified clean images (NaN if there are none)."""
        correct = int((self.pred == self.label).sum())
        return float(self.success.sum()) / correct if correct else float("nan")


def evaluate(model: Posterior | DrawSet | nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, *,
             n_draws: int | None = None, chunk_size: int | None = None) -> Evaluation:
    """Evaluate clean and adversarial images on the same S draws.

    Parameters
    ----------
    model
        A :class:`Posterior` (``n_draws`` draws), a :class:`DrawSet` (its draws) or a plain module (S = 1).
    x, x_adv
        Clean and adversarial images (N, C, H, W) in [0, 1].
    y
        True labels (N,).

    Raises
    ------
    ValueError
        ``x_adv`` and ``x`` differ in shape, or invalid inputs (NaN, ±inf or pixels outside [0, 1] in
        either), or ``n_draws``/``chunk_size`` not a positive integer.
    """
    check_inputs(x, y)
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        shape = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise ValueError(f"x_adv has shape {shape} but x has shape {tuple(x.shape)}")
    check_inputs(x_adv, y, "x_adv")
    count("n_draws", n_draws)
    count("chunk_size", chunk_size)
    clean, adv = draw_probabilities(model, x, x_adv, n_draws=n_draws, chunk_size=chunk_size)
    return Evaluation(y, clean.mean(0), adv.mean(0), clean.argmax(-1), adv.argmax(-1))
