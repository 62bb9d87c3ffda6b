"""The stability analysis of Carbone et al. (2021): one labelled Dataset from several models (docs/method.md §6.4).

Input, per model: its ``attack`` Dataset (``label``, ``pred``, ``pred_adv``, ``success``, ``failed``,
``softmax_robustness`` on ``image``, the test-set indices) and its explanation Dataset (``relevance`` with
dims ``(input, rule, layer, image, channel, height, width)``, ``input`` = ``clean`` / ``adversarial``; for a
Bayesian model the relevance is the posterior mean map). :func:`analyse` computes

- LRP robustness (:func:`bayesrobust.metrics.lrp_robustness`) per (model, rule, layer, image);
- the paired differences of each model minus the deterministic one (Adv − Det, Bay − Det for every S) per
  image, never pairing different images (the images are matched by test-set index);
- Mann–Whitney U tests, one-sided: H1 "the deterministic net's LRP robustness is stochastically *less* than
  the other model's", per comparison, rule, layer and image subset;
- Spearman ρ between LRP robustness and softmax robustness per model, rule, layer and subset;
- the median of each paired difference with a paired bootstrap 95% confidence interval over images and the
  two-sided Wilcoxon signed-rank test, per comparison, rule, layer and subset, and Benjamini–Hochberg adjusted
  p-values of both tests (the family: every comparison, rule and layer of one subset).

Subsets (docs/method.md §6.4): ``all`` images, ``successful`` (correct on x,
wrong on x̃) and ``failed`` (correct on both) — by each model's own attack outcome, so the two samples of a
Mann–Whitney test may differ in size (the test is unpaired). The paired differences are stored for every
image; select a subset with the ``success`` / ``failed`` flags of the models involved.

Open a stored analysis with ``xr.open_dataset(path)``; e.g. the median Bay − Det difference per rule and layer
is ``ds.lrp_robustness_diff.median("image")``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from . import metrics, paths, store
from .choices import Subset

log = logging.getLogger(__name__)

SUBSETS = Subset.values()
ROLES = ("Det", "Adv", "Bay")


class Run(NamedTuple):
    """The results of one model: its label (``'baseNN'``, ``'advNN'``, ``'fullBNN'``), the number of posterior
    draws S it was attacked and explained with, and its attack and explanation Datasets."""

    model: str
    n_draws: int
    attack: xr.Dataset
    explanation: xr.Dataset


def model_name(model: str, n_draws: int) -> str:
    """The ``model`` coordinate of a run: the label, with ``_S{n_draws}`` when S > 1 (``'fullBNN_S10'``)."""
    return f"{model}_S{n_draws}" if n_draws > 1 else model


def _check_run(run: Run, name: str) -> None:
    for ds, what, needed in ((run.attack, "attack", ("label", "pred", "pred_adv", "success", "failed",
                                                      "softmax_robustness")),
                             (run.explanation, "explanation", ("relevance",))):
        missing = [v for v in needed if v not in ds.variables]
        if missing:
            raise ValueError(f"{what} Dataset of {name!r} lacks variable(s) {', '.join(missing)}")
    inputs = run.explanation["relevance"].coords.get("input")
    if inputs is None or not {"clean", "adversarial"} <= set(inputs.values.tolist()):
        raise ValueError(f"explanation of {name!r} needs relevance with input = 'clean' and 'adversarial'")
    extra = np.setdiff1d(run.explanation.image.values, run.attack.image.values)
    if extra.size:
        raise ValueError(f"explanation of {name!r} has images not in its attack: {extra[:5].tolist()}")


def _per_model(run: Run, name: str, images: np.ndarray, topk: float) -> xr.Dataset:
    """LRP robustness and the attack outcome of one model on ``images`` (in that order)."""
    rel = run.explanation["relevance"].sel(image=images)
    lrp = metrics.lrp_robustness(rel.sel(input="clean", drop=True), rel.sel(input="adversarial", drop=True),
                                 topk)
    attack = run.attack.sel(image=images)
    out = xr.Dataset({"lrp_robustness": lrp.transpose("rule", "layer", "image"),
                      **{v: attack[v].reset_coords(drop=True) for v in
                         ("softmax_robustness", "success", "failed", "pred", "pred_adv")}})
    return out.drop_vars([c for c in out.coords if c not in ("rule", "layer", "image")])


def _subset_masks(ds: xr.Dataset) -> xr.DataArray:
    """(model, subset, image) booleans: all images, the successful and the failed attacks of each model."""
    every = xr.ones_like(ds["success"], dtype=bool)
    return xr.concat([every, ds["success"].astype(bool), ds["failed"].astype(bool)],
                     dim="subset").transpose("model", "subset", "image")


def _tests(ds: xr.Dataset, comparisons: Sequence[tuple[str, str]]) -> xr.Dataset:
    """Mann–Whitney U ('less') per (comparison, subset, rule, layer) and Spearman ρ per (model, ...)."""
    lrp = ds["lrp_robustness"].values  # (model, rule, layer, image)
    soft = ds["softmax_robustness"].values  # (model, image)
    masks = _subset_masks(ds).values  # (model, subset, image)
    index = {m: i for i, m in enumerate(ds.model.values.tolist())}
    n_rule, n_layer = ds.sizes["rule"], ds.sizes["layer"]
    mw = np.full((2, len(comparisons), len(SUBSETS), n_rule, n_layer), np.nan)
    rho = np.full((2, ds.sizes["model"], len(SUBSETS), n_rule, n_layer), np.nan)
    for s in range(len(SUBSETS)):
        for r in range(n_rule):
            for y in range(n_layer):
                for c, (model, ref) in enumerate(comparisons):
                    i, j = index[model], index[ref]
                    mw[:, c, s, r, y] = metrics.mann_whitney_less(lrp[j, r, y, masks[j, s]],
                                                                  lrp[i, r, y, masks[i, s]])
                for i in range(ds.sizes["model"]):
                    keep = masks[i, s]
                    rho[:, i, s, r, y] = metrics.spearman_with(lrp[i, r, y, keep], soft[i, keep])
    paired = _paired_tests(ds, comparisons, masks, index)
    cdims, mdims = ("comparison", "subset", "rule", "layer"), ("model", "subset", "rule", "layer")
    mw_adjusted = np.stack([metrics.fdr_bh(mw[1][:, s]) for s in range(len(SUBSETS))], axis=1)
    return xr.Dataset({
        **paired,
        "mannwhitney_p_adjusted": (cdims, mw_adjusted, {
            "description": "mannwhitney_p, Benjamini-Hochberg adjusted over comparisons x rules x layers "
                           "within each subset"}),
        "mannwhitney_u": (cdims, mw[0], {"description": "U of the reference model's LRP robustness"}),
        "mannwhitney_p": (cdims, mw[1], {"description": "one-sided p, H1: reference's LRP robustness is "
                                                        "stochastically less than the compared model's"}),
        "spearman_rho": (mdims, rho[0], {"description": "Spearman rho(LRP robustness, softmax robustness)"}),
        "spearman_p": (mdims, rho[1], {"description": "two-sided p of spearman_rho"}),
    }, coords={"subset": list(SUBSETS)})


def _paired_tests(ds: xr.Dataset, comparisons: Sequence[tuple[str, str]], masks: np.ndarray,
                  index: dict[str, int]) -> dict[str, tuple]:
    """Median paired difference with its bootstrap 95% CI (:func:`~bayesrobust.metrics.median_ci`) and the
    Wilcoxon signed-rank test per (comparison, subset, rule, layer); a subset of a comparison is the images in
    that subset for *both* models (e.g. attacked successfully on both)."""
    diff = ds["lrp_robustness_diff"].values  # (comparison, rule, layer, image)
    shape = (len(comparisons), len(SUBSETS), ds.sizes["rule"], ds.sizes["layer"])
    ci, wx = np.full((3, *shape), np.nan), np.full((2, *shape), np.nan)
    for c, (model, ref) in enumerate(comparisons):
        for s in range(len(SUBSETS)):
            keep = masks[index[model], s] & masks[index[ref], s]
            for r in range(shape[2]):
                for y in range(shape[3]):
                    ci[:, c, s, r, y] = metrics.median_ci(diff[c, r, y, keep])
                    wx[:, c, s, r, y] = metrics.wilcoxon_signed_rank(diff[c, r, y, keep])
    adjusted = np.stack([metrics.fdr_bh(wx[1][:, s]) for s in range(len(SUBSETS))], axis=1)
    dims = ("comparison", "subset", "rule", "layer")
    return {
        "diff_median": (dims, ci[0], {"description": "median paired difference (compared minus reference)"}),
        "diff_ci_low": (dims, ci[1], {"description": "lower bound of the 95% paired bootstrap CI of diff_median",
                                      "n_resamples": metrics.BOOTSTRAP_RESAMPLES, "method": "percentile"}),
        "diff_ci_high": (dims, ci[2], {"description": "upper bound of the 95% paired bootstrap CI of diff_median",
                                       "n_resamples": metrics.BOOTSTRAP_RESAMPLES, "method": "percentile"}),
        "wilcoxon_stat": (dims, wx[0], {"description": "Wilcoxon signed-rank statistic of the paired differences"}),
        "wilcoxon_p": (dims, wx[1], {"description": "two-sided p of the Wilcoxon signed-rank test"}),
        "wilcoxon_p_adjusted": (dims, adjusted, {
            "description": "wilcoxon_p, Benjamini-Hochberg adjusted over comparisons x rules x layers within "
                           "each subset"}),
    }


def analyse(runs: Sequence[Run | tuple], topk: float = 20, *, det: str = "baseNN", adv: str = "advNN",
            config: Mapping[str, Any] | None = None) -> xr.Dataset:
    """The analysis Dataset of several models' attack and explanation results (docs/method.md §6.4).

    Parameters
    ----------
    runs
        One :class:`Run` (or tuple ``(model, n_draws, attack_ds, explanation_ds)``) per model. Every run must
        hold the same test images (compared by the ``image`` coordinate, in any order); an explanation may
        hold fewer images than its attack. The same label with several S (``fullBNN`` with S = 10, 50,
        100) gives several models.
    topk
        ``k`` of the top-k% selection, in ``(0, 100]`` (reference: 20 or 30).
    det, adv
        Labels of the deterministic reference and the adversarially trained model; every other label is
        Bayesian.
    config
        The config to store as JSON in the attributes (default: ``topk``, ``det``, ``adv`` and the runs).

    Returns
    -------
    xarray.Dataset
        Dims ``model`` (``'baseNN'``, ``'advNN'``, ``'fullBNN_S10'``, ...; coordinates ``role`` = Det / Adv /
        Bay and ``n_draws``), ``rule``, ``layer``, ``image``, ``comparison`` (``'advNN-baseNN'``, ...;
        coordinates ``compared`` and ``reference``), ``subset`` (all / successful / failed). Variables:
        ``lrp_robustness`` (model, rule, layer, image); ``softmax_robustness``, ``success``, ``failed``,
        ``pred``, ``pred_adv`` (model, image); ``label`` (image); ``lrp_robustness_diff`` (comparison, rule,
        layer, image); ``mannwhitney_u``, ``mannwhitney_p``, ``mannwhitney_p_adjusted``, ``diff_median``,
        ``diff_ci_low``, ``diff_ci_high``, ``wilcoxon_stat``, ``wilcoxon_p``, ``wilcoxon_p_adjusted``
        (comparison, subset, rule, layer);
        ``spearman_rho``, ``spearman_p`` (model, subset, rule, layer). A rule or layer missing for a model is
        NaN there.

    Raises
    ------
    ValueError
        No run labelled ``det``; two runs with the same model name; runs on different images or with
        different labels of an image; a Dataset missing a variable; bad ``topk``.
    """
    runs = [Run(*r) for r in runs]
    metrics.topk_count(1_000_000, topk)  # validates topk before any work
    names = [model_name(r.model, int(r.n_draws)) for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"two runs share a model name: {names}")
    if det not in names:
        raise ValueError(f"analyse needs the deterministic reference {det!r} (got {', '.join(names)})")
    for run, name in zip(runs, names):
        _check_run(run, name)
    images = runs[names.index(det)].explanation.image.values
    for run, name in zip(runs, names):
        if set(run.explanation.image.values.tolist()) != set(images.tolist()):
            raise ValueError(f"{name!r} was explained on other images than {det!r}; paired differences "
                             "need the same test images for every model")
    labels = [r.attack["label"].sel(image=images).values for r in runs]
    for lab, name in zip(labels, names):
        if not np.array_equal(lab, labels[0]):
            raise ValueError(f"{name!r} gives other labels for the same image indices than {names[0]!r}")

    log.info("LRP robustness at top-%g%% of %d models on %d images", topk, len(runs), len(images))
    per_model = [_per_model(r, n, images, topk) for r, n in zip(runs, names)]
    roles = [("Det" if r.model == det else "Adv" if r.model == adv else "Bay") for r in runs]
    ds = xr.concat(per_model, dim="model", join="outer").compute()
    ds = ds.assign_coords(model=np.array(names, dtype=str), role=("model", roles),
                          n_draws=("model", [int(r.n_draws) for r in runs]))
    ds["label"] = ("image", labels[0])

    order = sorted((i for i, role in enumerate(roles) if role != "Det"), key=lambda i: ROLES.index(roles[i]))
    comparisons = [(names[i], det) for i in order]  # Adv first, then Bay in the order given
    compared = ds.lrp_robustness.sel(model=[m for m, _ in comparisons]).reset_coords(drop=True)
    diff = metrics.paired_difference(compared, ds.lrp_robustness.sel(model=det).reset_coords(drop=True))
    ds["lrp_robustness_diff"] = diff.rename(model="comparison").assign_coords(
        comparison=np.array([f"{m}-{ref}" for m, ref in comparisons], dtype=str)).transpose(
        "comparison", "rule", "layer", "image")
    ds = ds.assign_coords(compared=("comparison", [m for m, _ in comparisons]),
                          reference=("comparison", [ref for _, ref in comparisons]))
    ds = ds.merge(_tests(ds, comparisons))
    ds["lrp_robustness"].attrs.update(description="|S(h(x)) ∩ S(h(x_adv))| / |S(h(x))|, top-k% selection S",
                                      topk=topk)
    ds["lrp_robustness_diff"].attrs["description"] = "paired per image: compared model minus reference"

    if config is None:
        config = {"topk": topk, "det": det, "adv": adv,
                  "runs": [{"model": name, "label": r.model, "n_draws": int(r.n_draws),
                            "attack": store.config_of(r.attack),
                            "explanation": store.config_of(r.explanation)}
                           for r, name in zip(runs, names)]}
    ds.attrs = store.provenance("analysis", config, topk=topk, models=names, det=det, adv=adv,
                                n_images=len(images))
    return ds


def write(ds: xr.Dataset, out: str | Path, name: str | None = None) -> Path:
    """Write an analysis Dataset to ``OUT/analysis/NAME.nc`` (default name ``analysis_top{topk}``)."""
    name = f"analysis_top{ds.attrs.get('topk', 20):g}" if name is None else name
    return store.write_netcdf(ds, paths.analysis_path(out, name), "analysis")
