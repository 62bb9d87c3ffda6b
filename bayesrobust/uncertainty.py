"""Uncertainty metrics of a posterior predictive (docs/method.md §13.5).

Inputs are per-draw class probabilities ``probs`` (S, N, classes) (one draw for a deterministic network) and
labels (N,). The predictive is p̄ = mean_s probs.

- accuracy of argmax p̄; NLL = −mean_i log p̄(y_i | x_i); Brier = mean_i Σ_k (p̄_ik − 1[y_i = k])²
  (the multiclass sum, range [0, 2]; torchmetrics has no classification Brier score, so it is one line here);
- expected calibration error (top-label, ``n_bins`` equal-width confidence bins, L1):
  ``torchmetrics.functional.classification.multiclass_calibration_error``; the reliability diagram's
  per-bin confidence, accuracy and count from the same bins (:func:`reliability`);
- predictive entropy H[p̄] (total uncertainty) and the mutual information H[p̄] − mean_s H[p_s] (epistemic
  part, the disagreement of the draws; 0 for one draw), per image;
- out-of-distribution AUROC: how well a score (predictive entropy) separates out-of-distribution images
  (positives) from in-distribution ones, ``torchmetrics.functional.classification.binary_auroc``.
"""

from __future__ import annotations

import torch

#: Confidence bins of the ECE and the reliability diagram.
N_BINS = 15
_TINY = 1e-12


def predictive(probs: torch.Tensor) -> torch.Tensor:
    """p̄ (N, classes): the mean over draws of ``probs`` (S, N, classes)."""
    return probs.mean(0)


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """−mean_i log p̄(y_i | x_i)."""
    mean = predictive(probs)
    return float(-(mean.gather(-1, labels.long()[:, None]).clamp_min(_TINY).log()).mean())


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """mean_i Σ_k (p̄_ik − 1[y_i = k])²."""
    mean = predictive(probs)
    onehot = torch.nn.functional.one_hot(labels.long(), mean.shape[-1]).to(mean.dtype)
    return float(((mean - onehot) ** 2).sum(-1).mean())


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictive(probs).argmax(-1) == labels).double().mean())


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error of p̄ (torchmetrics, L1 norm, equal-width bins)."""
    from torchmetrics.functional.classification import multiclass_calibration_error
    mean = predictive(probs).float()
    return float(multiclass_calibration_error(mean, labels.long(), num_classes=mean.shape[-1], n_bins=n_bins,
                                              norm="l1"))


def reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per confidence bin (n_bins,): mean confidence, accuracy and image count (NaN for empty bins), with the
    binning of :func:`ece` (bin b holds confidences in [b/n, (b+1)/n); confidence 1 joins the last bin)."""
    mean = predictive(probs).double()
    conf, pred = mean.max(-1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    index = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, conf)
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correct)
    return conf_sum / count, acc_sum / count, count


def entropy(p: torch.Tensor) -> torch.Tensor:
    """−Σ_k p_k log p_k over the last dim."""
    return -(p * p.clamp_min(_TINY).log()).sum(-1)


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """H[p̄] per image (N,)."""
    return entropy(predictive(probs))


def mutual_information(probs: torch.Tensor) -> torch.Tensor:
    """H[p̄] − mean_s H[p_s] per image (N,), ≥ 0 (clamped at 0 against rounding)."""
    return (predictive_entropy(probs) - entropy(probs).mean(0)).clamp_min(0)


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """AUROC of telling ``out_scores`` (positives) from ``in_scores`` (negatives), higher score = more likely
    out of distribution (torchmetrics ``binary_auroc``)."""
    from torchmetrics.functional.classification import binary_auroc
    scores = torch.cat([in_scores, out_scores]).double()
    target = torch.cat([torch.zeros(len(in_scores)), torch.ones(len(out_scores))]).long()
    return float(binary_auroc(scores, target))


def summary(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, float]:
    """accuracy, nll, brier, ece, mean predictive entropy and mean mutual information."""
    return {"accuracy": accuracy(probs, labels), "nll": nll(probs, labels), "brier": brier(probs, labels),
            "ece": ece(probs, labels, n_bins), "entropy": float(predictive_entropy(probs).mean()),
            "mutual_information": float(mutual_information(probs).mean())}
