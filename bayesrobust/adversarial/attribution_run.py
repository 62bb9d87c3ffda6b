"""One attribution-attack run end to end, and the attributional-robustness table (docs/method.md §11.6).

:func:`run_attribution_attack` attacks the Bayesian map of a posterior (S draws) on a set of test images and
returns an ``attribution_attack`` Dataset: clean and attacked images, the exact (ReLU) map at both, the
predictions, and per-image similarity and stability metrics; also the accuracy under PGD on the same draws
(the table's adversarial-robustness column). :func:`attribution_table` gathers such runs into seed 002's
table, one row per run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from .. import metrics, store
from ..data import Data
from ..models.draws import DrawSet, chunks
from ..models.posterior import Posterior
from .base import check_inputs
from .evaluate import evaluate
from .manipulation import AttributionAttack
from .pgd import PGD
from .posterior import PosteriorAverage
from .run import model_attrs

log = logging.getLogger(__name__)

#: Per-image metrics of a run (variables along ``image``), in table order.
METRICS = ("topk_intersection", "kendall_tau", "spearman_rho", "centre_of_mass_shift",
           "relative_input_stability", "relative_output_stability", "local_lipschitz_ratio", "max_sensitivity")
#: The columns of seed 002's table.
TABLE_COLUMNS = ("natural_accuracy", "pgd_accuracy", "topk_intersection", "kendall_tau")

store.register_schema("attribution_attack", {
    "x": ("image", "channel", "height", "width"), "x_adv": ("image", "channel", "height", "width"),
    "map": ("image", "height", "width"), "map_adv": ("image", "height", "width"),
    "label": ("image",), "pred": ("image",), "pred_adv": ("image",), **{m: ("image",) for m in METRICS}})
store.register_schema("attribution_table", {c: ("run",) for c in TABLE_COLUMNS})


def topk_percent(k: int, d: int) -> float:
    """The ``k_percent`` with which :func:`bayesrobust.metrics.topk_intersection` selects exactly ``k`` of
    ``d`` pixels (⌊d·p/100⌋ = k for p = 100·(k + ½)/d)."""
    return 100 * (k + 0.5) / d


def _mean_logits(maps, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([maps.logits(x[sl]).mean(0) for sl in chunks(x.shape[0], maps.chunk_size)])


def run_attribution_attack(model: Posterior, data: Data, attack: AttributionAttack, *, n_draws: int | None = None,
                           seed: int = 0, model_name: str = "", config: Mapping[str, Any] | None = None,
                           chunk_size: int | None = None, device: str | torch.device = "cpu",
                           pgd: PGD | None = None, sensitivity_samples: int = 5,
                           sensitivity_radius: float = 0.02) -> xr.Dataset:
    """Attack the Bayesian map of ``model`` on every image of ``data``; evaluate.

    Parameters
    ----------
    attack
        :class:`~.manipulation.IFIA` or :class:`~.manipulation.Manipulate` (its ``k`` sets the top-k
        intersection; 200 for Manipulate).
    n_draws, chunk_size, device
        S posterior draws (1 for a deterministic model), images per vectorised pass.
    pgd
        The PGD whose accuracy fills the ``pgd_accuracy`` attribute (``None``: no PGD, NaN).
    sensitivity_samples, sensitivity_radius
        Noise samples and radius of :func:`bayesrobust.metrics.max_sensitivity` (exact maps).

    Returns
    -------
    xarray.Dataset
        ``x``, ``x_adv`` (image, channel, height, width); ``map``, ``map_adv`` (image, height, width), the
        exact (ReLU) Bayesian maps of the clean prediction; ``label``, ``pred``, ``pred_adv``; the
        :data:`METRICS` (image). Attributes: model, attack settings, n_draws, seed, ``natural_accuracy``,
        ``pgd_accuracy``, the metric means, ``label_kept`` (share of images with an unchanged prediction).
    """
    if not isinstance(attack, AttributionAttack):
        raise TypeError(f"attack must be an attribution attack (IFIA, Manipulate), got {type(attack).__name__}")
    check_inputs(data.x, data.y, "the images of data")
    draws = DrawSet(model, n_draws, device=device)
    maps = attack.map_model(draws, chunk_size=chunk_size)
    x, y = data.x.to(device), data.y.to(device)
    log.info("attribution attack %r on %d images, %d draws", attack, len(data), len(draws))
    x_adv = attack(maps, x, y, generator=torch.Generator().manual_seed(int(seed)))
    pred, pred_adv = maps.predict(x), maps.predict(x_adv)
    e, e_adv = maps.maps(x, pred), maps.maps(x_adv, pred)
    k = getattr(attack, "k", 200)
    d = e[0].numel()
    en, ean = e.cpu().numpy(), e_adv.cpu().numpy()
    values = {
        "topk_intersection": metrics.topk_intersection(np.abs(en), np.abs(ean), topk_percent(min(k, d), d),
                                                       map_dims=2),
        "kendall_tau": metrics.kendall_tau(en, ean, map_dims=2),
        "spearman_rho": metrics.spearman_rho(en, ean, map_dims=2),
        "centre_of_mass_shift": metrics.centre_of_mass_shift(en, ean),
        "relative_input_stability": metrics.relative_input_stability(en, ean, x.cpu().numpy(), x_adv.cpu().numpy()),
        "relative_output_stability": metrics.relative_output_stability(
            en, ean, _mean_logits(maps, x).cpu().numpy(), _mean_logits(maps, x_adv).cpu().numpy()),
        "local_lipschitz_ratio": metrics.local_lipschitz_ratio(en, ean, x.cpu().numpy(), x_adv.cpu().numpy()),
        "max_sensitivity": (metrics.max_sensitivity(
            lambda a: maps.maps(torch.as_tensor(a, device=x.device), pred).cpu().numpy(), x.cpu().numpy(),
            radius=sensitivity_radius, n_samples=sensitivity_samples, seed=int(seed), e=en)
            if sensitivity_samples else np.full(len(data), np.nan)),
    }
    natural = float((pred == y).float().mean())
    pgd_accuracy = float("nan")
    if pgd is not None:
        x_pgd = PosteriorAverage(pgd, chunk_size=chunk_size)(draws, x, y,
                                                             generator=torch.Generator().manual_seed(int(seed)))
        pgd_accuracy = evaluate(draws, x, x_pgd, y, chunk_size=chunk_size).adversarial_accuracy
    p = attack.params()
    setup = {**model_attrs(model, data, model_name), **{k_: v for k_, v in p.items() if v is not None},
             "n_draws": len(draws), "seed": int(seed),
             "pgd_epsilon": float("nan") if pgd is None else pgd.epsilon,
             "pgd_steps": 0 if pgd is None else pgd.steps}
    summary = {"natural_accuracy": natural, "pgd_accuracy": pgd_accuracy,
               "label_kept": float((pred_adv == pred).float().mean()),
               **{f"mean_{m}": float(np.nanmean(v)) for m, v in values.items() if np.isfinite(v).any()}}
    pixel, image = ("image", "channel", "height", "width"), ("image",)
    ds = xr.Dataset(
        {"x": (pixel, x.cpu().numpy()), "x_adv": (pixel, x_adv.cpu().numpy()),
         "map": (("image", "height", "width"), en), "map_adv": (("image", "height", "width"), ean),
         "label": (image, y.cpu().numpy()), "pred": (image, pred.cpu().numpy()),
         "pred_adv": (image, pred_adv.cpu().numpy()), **{m: (image, np.asarray(v, float)) for m, v in values.items()}},
        coords={"image": data.index.numpy(), **draws.coords()},
        attrs=store.provenance("attribution_attack", dict(config) if config is not None else setup,
                               **setup, **summary))
    ds["map"].attrs["description"] = (f"{attack.method} map of the clean prediction, mean over draws, "
                                      "summed over channels")
    ds["topk_intersection"].attrs["description"] = f"share of the clean map's top-{k} pixels (|map|) kept"
    return store.validate(ds, "attribution_attack")


def attribution_table(runs: Sequence[xr.Dataset], names: Sequence[str]) -> xr.Dataset:
    """Seed 002's table, a row per run: natural accuracy, accuracy under PGD, mean top-k intersection and
    mean Kendall τ under the attribution attack (plus the run's model, method and attack as coordinates)."""
    if not runs:
        raise ValueError("no attribution-attack run to tabulate")
    order = {"baseNN": 0, "advNN": 1, "artNN": 2, "fullBNN": 3, "artBNN": 4}
    rows = sorted(zip(names, runs), key=lambda r: (order.get(r[1].attrs.get("model"), 5), r[0]))
    ds = xr.Dataset(
        {"natural_accuracy": ("run", [float(r.attrs["natural_accuracy"]) for _, r in rows]),
         "pgd_accuracy": ("run", [float(r.attrs["pgd_accuracy"]) for _, r in rows]),
         "topk_intersection": ("run", [float(r["topk_intersection"].mean()) for _, r in rows]),
         "kendall_tau": ("run", [float(r["kendall_tau"].mean()) for _, r in rows])},
        coords={"run": [n for n, _ in rows],
                "model": ("run", [str(r.attrs.get("model")) for _, r in rows]),
                "method": ("run", [str(r.attrs.get("method")) for _, r in rows]),
                "attack": ("run", [f"{r.attrs.get('attack')}/{r.attrs.get('variant', 'map')}" for _, r in rows]),
                "n_draws": ("run", [int(r.attrs.get("n_draws", 1)) for _, r in rows])},
        attrs=store.provenance("attribution_table", {"runs": [n for n, _ in rows]}))
    return store.validate(ds, "attribution_table")


def format_table(table: xr.Dataset) -> str:
    """The table as text, one line per run (the seed reports percentages)."""
    import pandas as pd
    df = pd.DataFrame({"model": table["model"].values, "S": table["n_draws"].values,
                       "method": table["method"].values, "attack": table["attack"].values,
                       **{c: 100 * table[c].values for c in TABLE_COLUMNS}})
    return df.to_string(index=False, float_format=lambda v: f"{v:.1f}", na_rep="nan")
