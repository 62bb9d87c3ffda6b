"""Uncertainty evaluation of trained models side by side (docs/method.md §13.5): the ``evaluation`` Dataset, its
table and the reliability diagram.

For each model (baseNN, advNN and every fullBNN inference) the posterior predictive over S draws (one for a
deterministic network) on held-out in-distribution images gives accuracy, NLL, Brier score, ECE, predictive
entropy and mutual information (:mod:`bayesrobust.uncertainty`); the same predictive on images of another
dataset (MNIST ↔ Fashion-MNIST) gives the out-of-distribution AUROC of two scores, predictive entropy and
mutual information (the latter is 0.5 — chance — for a single network, which has no epistemic part).

The Dataset (kind ``evaluation``) has dims ``model`` (tags such as ``baseNN``, ``fullBNN_sghmc``) and ``bin``
(confidence bins of the reliability diagram).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from . import store, uncertainty
from .models.draws import DrawSet, draw_probabilities
from .models.posterior import Posterior

#: The scalar metrics per model, in table order.
METRICS = ("accuracy", "nll", "brier", "ece", "entropy", "mutual_information", "ood_auroc_entropy",
           "ood_auroc_mi")
#: Where OOD images come from by default: the other grey-scale 28×28 dataset.
OOD_OF = {"mnist": "fashion_mnist", "mnist5k": "fashion_mnist", "fashion_mnist": "mnist"}

store.register_schema("evaluation", {**{m: ("model",) for m in METRICS}, "n_draws": ("model",),
                                     "bin_confidence": ("model", "bin"), "bin_accuracy": ("model", "bin"),
                                     "bin_count": ("model", "bin")})


def evaluate_posterior(posterior: Posterior, x: torch.Tensor, y: torch.Tensor, x_ood: torch.Tensor | None,
                       n_draws: int | None = None, device: str | torch.device = "cpu",
                       n_bins: int = uncertainty.N_BINS) -> dict[str, Any]:
    """The metrics of one model: :func:`uncertainty.summary` on ``(x, y)``, the OOD AUROCs against ``x_ood``
    (NaN without it), the reliability bins, and the number of draws used."""
    draws = DrawSet(posterior, n_draws, device=device)
    inputs = [x.to(device)] + ([x_ood.to(device)] if x_ood is not None else [])
    found = [p.double().cpu() for p in draw_probabilities(draws, *inputs)]
    labels = y.cpu().long()
    result: dict[str, Any] = uncertainty.summary(found[0], labels, n_bins)
    if x_ood is not None:
        result["ood_auroc_entropy"] = uncertainty.auroc(uncertainty.predictive_entropy(found[0]),
                                                        uncertainty.predictive_entropy(found[1]))
        result["ood_auroc_mi"] = uncertainty.auroc(uncertainty.mutual_information(found[0]),
                                                   uncertainty.mutual_information(found[1]))
    else:
        result["ood_auroc_entropy"] = result["ood_auroc_mi"] = float("nan")
    conf, acc, count = uncertainty.reliability(found[0], labels, n_bins)
    result.update(bin_confidence=conf.numpy(), bin_accuracy=acc.numpy(), bin_count=count.numpy(),
                  n_draws=len(draws))
    return result


def to_dataset(results: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any], n_bins: int) -> xr.Dataset:
    """The ``evaluation`` Dataset of ``results`` (model tag → :func:`evaluate_posterior` output)."""
    tags = list(results)
    data = {m: ("model", np.array([results[t][m] for t in tags], dtype=np.float64)) for m in METRICS}
    data["n_draws"] = ("model", np.array([results[t]["n_draws"] for t in tags], dtype=np.int64))
    for name in ("bin_confidence", "bin_accuracy", "bin_count"):
        data[name] = (("model", "bin"), np.stack([results[t][name] for t in tags]))
    edges = np.linspace(0, 1, n_bins + 1)
    ds = xr.Dataset(data, coords={"model": tags, "bin": np.arange(n_bins),
                                  "bin_low": ("bin", edges[:-1]), "bin_high": ("bin", edges[1:])})
    ds.attrs.update(store.provenance("evaluation", config, n_bins=n_bins))
    return ds


def format_table(ds: xr.Dataset) -> str:
    """The metrics as a text table, one row per model."""
    head = ["model", "S", "acc", "NLL", "Brier", "ECE", "entropy", "MI", "AUROC(H)", "AUROC(MI)"]
    rows = [head]
    for tag in ds["model"].values:
        row = ds.sel(model=tag)
        rows.append([str(tag), str(int(row["n_draws"]))] +
                    [f"{float(row[m]):.4f}" for m in METRICS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                     for r in rows)


def reliability_figure(ds: xr.Dataset):
    """Reliability diagram: accuracy against confidence per bin, one line per model, with the diagonal of
    perfect calibration; the ECE of each model in the legend."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    palette = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442"]
    for i, tag in enumerate(ds["model"].values):
        row = ds.sel(model=tag)
        keep = np.asarray(row["bin_count"]) > 0
        ax.plot(np.asarray(row["bin_confidence"])[keep], np.asarray(row["bin_accuracy"])[keep], marker="o", ms=3,
                color=palette[i % len(palette)], label=f"{tag} (ECE {float(row['ece']):.3f})")
    ax.set(xlabel="confidence (max predictive probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title="reliability")
    ax.legend(fontsize=7, loc="lower right")
    return fig
