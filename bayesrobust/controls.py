"""Controls of the stability comparison (docs/method.md §9.8): is the Bayesian explanation steadier, or was its
attack only weaker?

Two controls explain a model on inputs other than its own adversarial images ``x̃`` and score them with the LRP
robustness of :mod:`bayesrobust.metrics` against the model's *own* clean map (the same rule, layer and draws):

``cross``
    model M explained on the adversarial images of another model's attack run (same test images). For a
    comparison Bay − Det this gives Bay and Det on the *same* perturbed images: once on Det's ``x̃``, once on
    Bay's.
``random``
    model M explained on ``x + δ``, ``δ`` a random-sign pattern (±1 per pixel, fixed by the seed and the same
    for every model) scaled to the L2 norm of M's own adversarial perturbation ``‖x̃ − x‖₂`` per image, then
    clipped to [0, 1]; clipping can shrink the norm, so the achieved norm is stored beside the target.

A control result (kind ``control``, ``OUT/controls/PRESET/NAME.nc``) holds ``relevance`` (rule, layer, image,
channel, height, width): the posterior-mean map of the control inputs ``x_control`` (image, channel, height,
width), explained with the settings of the model's stored explanation; ``perturbation_l2`` (image) =
‖x_control − x‖₂ and ``target_l2`` (image) = ‖x̃ − x‖₂ of the model's own attack. :func:`attach` adds the
controls' variables to an analysis Dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from . import metrics, paths, store
from .choices import Control

log = logging.getLogger(__name__)

CONTROL_DIMS = ("rule", "layer", "image", "channel", "height", "width")
IMAGE_DIMS = ("image", "channel", "height", "width")
#: Stands for the explanation hash of a model whose LRP explanation is not among the analysed ones.
NOT_ANALYSED = "not analysed"


def perturbation_l2(x: torch.Tensor, x_other: torch.Tensor) -> torch.Tensor:
    """Per-image L2 norm ``‖x_other − x‖₂`` of (N, C, H, W) images: (N,), in float64."""
    return (x_other.double() - x.double()).flatten(1).norm(dim=1)


def random_sign_perturbation(x: torch.Tensor, x_adv: torch.Tensor, seed: int = 0
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``clip(x + δ, 0, 1)`` with δ = random signs scaled to the per-image norm ‖x̃ − x‖₂ (docs/method.md §9.8).

    δ_i = s_i · ‖x̃_i − x_i‖₂ / √d, ``s_i`` ∈ {−1, +1}^d drawn once for all images from ``seed`` (the same
    pattern for every model given the same images in the same order), so ‖δ_i‖₂ = ‖x̃_i − x_i‖₂ before the
    clip. Clipping to [0, 1] can only shrink the norm: the achieved norm is returned.

    Parameters
    ----------
    x, x_adv
        Clean and adversarial images (N, C, H, W) in [0, 1].
    seed
        Fixes the signs.

    Returns
    -------
    (x_random (N, C, H, W) in x's dtype, achieved ‖x_random − x‖₂ (N,) float64)
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    generator = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, x.shape, generator=generator, dtype=torch.int8).double() * 2 - 1
    d = x[0].numel()
    scale = perturbation_l2(x, x_adv) / np.sqrt(d)
    x_random = (x.double() + signs * scale.view(-1, *[1] * (x.dim() - 1))).clamp(0, 1).to(x.dtype)
    return x_random, perturbation_l2(x, x_random)


def explain_inputs(posterior: Any, x: torch.Tensor, explainers: Sequence[Any], *, layers: Any = "all",
                   n_draws: int | None = None, batch_size: int | None = None, seed: int = 0,
                   device: str = "cpu") -> np.ndarray:
    """The posterior-mean maps of images ``x`` (N, C, H, W) for every explainer: (rule, layer, N, C, H, W)
    float32, each draw explaining its own argmax unit (docs/method.md §5.4) — the same computation as the
    ``relevance`` of :func:`~bayesrobust.explain.explanation.explain_attack`, on other images."""
    from .explain.bayesian import posterior_draws
    from .explain.fused import explain_each
    from .explain.layers import resolve_layers
    draws = posterior_draws(posterior, n_draws, device=device)  # generated once, for every explainer
    idx = resolve_layers(draws.net, layers)
    maps = [result.mean for result, _ in explain_each(draws, x, explainers, layers=idx, batch_size=batch_size,
                                                      seed=seed)]
    return torch.stack(maps).to(torch.float32).cpu().numpy()


def control_name(run: str, kind: str, other: str | None = None) -> str:
    """The file stem of a control: ``RUN_random`` or ``RUN_cross_on_OTHER``."""
    kind = Control.parse(kind, "control").value
    if (kind == Control.CROSS) != (other is not None):
        raise ValueError("a cross control names the other model's attack run; a random control none")
    return paths.safe_name(f"{run}_cross_on_{other}" if other else f"{run}_random", "control name")


def control_path(out: str | Path, preset: str, name: str) -> Path:
    return paths.under(out, "controls", preset, f"{paths.safe_name(name, 'control name')}.nc")


def _images(ds: xr.Dataset, var: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ds[var].transpose(*IMAGE_DIMS).values))


def control_inputs(kind: str, attack: xr.Dataset, other: xr.Dataset | None = None, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The control images of a model's ``attack`` Dataset (in its image order) and their ‖· − x‖₂.

    ``cross``: the adversarial images of ``other`` (another model's attack run on the same test images; it
    must hold every image of ``attack`` with the same clean pixels). ``random``: :func:`random_sign_perturbation`.
    """
    kind = Control.parse(kind, "control").value
    x = _images(attack, "x")
    if kind == Control.RANDOM:
        return random_sign_perturbation(x, _images(attack, "x_adv"), seed)
    if other is None:
        raise ValueError("the cross control needs the other model's attack run")
    missing = np.setdiff1d(attack.image.values, other.image.values)
    if missing.size:
        raise ValueError(f"the other attack run lacks test images {missing[:5].tolist()} of this model's attack; "
                         "attack both models on the same images (same preset, n_inputs, inputs_seed)")
    other = other.sel(image=attack.image.values)
    if not np.array_equal(_images(other, "x").numpy(), x.numpy()):
        raise ValueError("the two attack runs hold different clean pixels for the same test images")
    x_other = _images(other, "x_adv").to(x.dtype)
    return x_other, perturbation_l2(x, x_other)


def control_dataset(relevance: np.ndarray, x_control: torch.Tensor, achieved: torch.Tensor,
                    attack: xr.Dataset, explanation: xr.Dataset, config: dict, **attrs: Any) -> xr.Dataset:
    """The control result (kind ``control``) on the coordinates of the model's stored ``explanation``."""
    x = _images(attack, "x")
    coords = {"rule": explanation.rule.values, "layer": explanation.layer.values, "image": attack.image.values,
              "channel": np.arange(x.shape[1]), "height": np.arange(x.shape[2]), "width": np.arange(x.shape[3])}
    if "layer_name" in explanation.coords:
        coords["layer_name"] = ("layer", explanation.layer_name.values.astype(str))
    ds = xr.Dataset({"relevance": (CONTROL_DIMS, relevance),
                     "x_control": (IMAGE_DIMS, x_control.numpy()),
                     "perturbation_l2": ("image", achieved.numpy()),
                     "target_l2": ("image", perturbation_l2(x, _images(attack, "x_adv")).numpy())},
                    coords=coords)
    ds["relevance"].attrs["long_name"] = "mean over posterior draws of the relevance of x_control"
    ds["perturbation_l2"].attrs["long_name"] = "||x_control - x||_2 per image (achieved, after clipping)"
    ds["target_l2"].attrs["long_name"] = "||x_adv - x||_2 of the model's own attack per image"
    ds.attrs = store.provenance("control", config, **attrs)
    return ds


# -- the analysis variables --------------------------------------------------------------------------------------
def _load_control(out: Path, preset: str, name: str, hashes: dict[str, str]) -> xr.Dataset | None:
    """The stored control ``name`` if it was computed from the files with these content hashes, else None."""
    path = control_path(out, preset, name)
    if not path.is_file() or hashes.get("explanation_sha256") == NOT_ANALYSED:
        return None
    with store.open_result(path, "control") as opened:
        ds = opened.load()
    stale = [k for k, v in hashes.items() if str(ds.attrs.get(k, "")) != v]
    if stale:
        log.warning("ignoring control %s: computed from other versions of its inputs (%s); rerun the pipeline "
                    "with --controls to redo it", path, ", ".join(stale))
        return None
    return ds


def _robustness(clean: xr.DataArray, control: xr.Dataset | None, template: xr.DataArray, topk: float
                ) -> xr.DataArray:
    """LRP robustness (rule, layer, image) of a control against the model's own clean map; NaN if absent."""
    if control is None:
        return xr.full_like(template, np.nan, dtype=float)
    rel = control["relevance"].reset_coords(drop=True).reindex(rule=template.rule, layer=template.layer)
    lrp = metrics.lrp_robustness(clean, rel.sel(image=template.image), topk)
    return lrp.transpose("rule", "layer", "image").reset_coords(drop=True)


def _ci(diff: xr.DataArray, stem: str, what: str) -> dict[str, xr.DataArray]:
    """Median and paired bootstrap 95% CI over images of ``diff`` (..., image): three variables."""
    lead = [d for d in diff.dims if d != "image"]
    values = diff.transpose(*lead, "image").values
    out = np.full((3, *values.shape[:-1]), np.nan)
    for i in np.ndindex(values.shape[:-1]):
        out[(slice(None), *i)] = metrics.median_ci(values[i])
    coords = {d: diff[d] for d in lead}
    names = ("median", "ci_low", "ci_high")
    texts = (f"median over images of {what}", f"lower bound of the paired bootstrap 95% CI of {stem}_median",
             f"upper bound of the paired bootstrap 95% CI of {stem}_median")
    return {f"{stem}_{n}": xr.DataArray(v, coords=coords, dims=lead, attrs={"description": t})
            for n, v, t in zip(names, out, texts)}


def attach(ds: xr.Dataset, out: str | Path, preset: str, found: Sequence[Any]) -> xr.Dataset:
    """The analysis ``ds`` with the perturbation norms and whatever controls are stored (docs/method.md §9.8).

    ``found`` are the analysed runs (:class:`bayesrobust.results.Found`, one per ``model``). Always added:
    ``perturbation_l2`` (model, image) = ‖x̃ − x‖₂ of each model's own attack. With random controls:
    ``random_lrp_robustness`` (model, rule, layer, image), ``random_l2`` (model, image) (achieved norm),
    ``random_diff`` (comparison, rule, layer, image) and its ``random_diff_median``/``_ci_low``/``_ci_high``.
    With cross controls: ``cross_lrp_robustness`` (comparison, explained, rule, layer, image): the compared
    (resp. reference) model explained on the *other* side's ``x̃``; ``cross_diff`` (comparison, attacked_by,
    rule, layer, image): compared minus reference on the same ``x̃`` — the reference's attack (compared model
    cross-explained vs the reference's own) or the compared model's (its own vs the reference
    cross-explained) — and its median and CI. All images (no subset); a missing control is NaN.
    """
    out = Path(out)
    topk = float(ds.attrs.get("topk", 20))
    by_name = {f.name: f for f in found}
    images = ds.image.values
    template = ds["lrp_robustness"].isel(model=0, drop=True).reset_coords(drop=True)
    clean, l2, random, random_l2, hashes = {}, [], [], [], {}
    for model in ds.model.values.tolist():
        f = by_name[model]
        attack = f.attack.sel(image=images)
        l2.append(perturbation_l2(_images(attack, "x"), _images(attack, "x_adv")).numpy())
        from .results import join_explanations
        expl = join_explanations([e for _, e in f.explanations])
        clean[model] = expl["relevance"].sel(input="clean", drop=True).reset_coords(drop=True).reindex(
            rule=template.rule, layer=template.layer).sel(image=images)
        hashes[model] = {"attack_sha256": f.attack_sha256,
                         "model_sha256": str(f.attack.attrs.get("model_sha256", ""))}
        lrp = paths.explanation_path(out, preset, f.attack_path.stem, "lrp")
        # the controls are scored against this LRP explanation's clean maps: of no use to another method's analysis
        analysed = any(Path(p).resolve() == lrp.resolve() for p, _ in f.explanations)
        hashes[model]["explanation_sha256"] = store.file_hash(lrp) if analysed else NOT_ANALYSED
        control = _load_control(out, preset, control_name(f.attack_path.stem, Control.RANDOM), hashes[model])
        random.append(_robustness(clean[model], control, template, topk))
        random_l2.append(np.full(len(images), np.nan) if control is None
                         else control.perturbation_l2.sel(image=images).values)
    ds = ds.copy()
    ds["perturbation_l2"] = (("model", "image"), np.stack(l2), {"description": "||x_adv - x||_2 of the model's "
                                                                               "own attack"})
    comparisons = list(zip(ds.compared.values.tolist(), ds.reference.values.tolist())) \
        if ds.sizes.get("comparison", 0) else []
    if any(np.isfinite(r.values).any() for r in random):
        ds["random_lrp_robustness"] = xr.concat(random, dim="model").assign_coords(model=ds.model).transpose(
            "model", "rule", "layer", "image")
        ds["random_lrp_robustness"].attrs["description"] = "LRP robustness on clip(x + random-sign delta), " \
                                                           "||delta|| = ||x_adv - x|| of the model's own attack"
        ds["random_l2"] = (("model", "image"), np.stack(random_l2),
                           {"description": "achieved ||x_random - x||_2 (clipping to [0, 1] can shrink it)"})
        if comparisons:
            rnd = ds["random_lrp_robustness"]
            ds["random_diff"] = xr.concat([rnd.sel(model=c, drop=True) - rnd.sel(model=r, drop=True)
                                           for c, r in comparisons], dim="comparison").assign_coords(
                comparison=ds.comparison.values)
            ds = ds.assign(_ci(ds["random_diff"], "random_diff", "random_diff (compared minus reference)"))
    cross, any_cross = [], False
    for compared, reference in comparisons:
        fc, fr = by_name[compared], by_name[reference]
        on_ref = _load_control(out, preset, control_name(fc.attack_path.stem, Control.CROSS, fr.attack_path.stem),
                               {**hashes[compared], "other_attack_sha256": fr.attack_sha256})
        on_cmp = _load_control(out, preset, control_name(fr.attack_path.stem, Control.CROSS, fc.attack_path.stem),
                               {**hashes[reference], "other_attack_sha256": fc.attack_sha256})
        any_cross |= on_ref is not None or on_cmp is not None
        cross.append(xr.concat([_robustness(clean[compared], on_ref, template, topk),
                                _robustness(clean[reference], on_cmp, template, topk)], dim="explained"))
    if any_cross:
        cross_da = xr.concat(cross, dim="comparison").assign_coords(
            comparison=ds.comparison.values, explained=["compared", "reference"]).transpose(
            "comparison", "explained", "rule", "layer", "image")
        ds["cross_lrp_robustness"] = cross_da
        ds["cross_lrp_robustness"].attrs["description"] = "LRP robustness of the 'explained' side's model on " \
                                                          "the other side's adversarial images"
        own = ds["lrp_robustness"].reset_coords(drop=True)
        diff = []
        for i, (compared, reference) in enumerate(comparisons):
            c = cross_da.isel(comparison=i, drop=True)
            diff.append(xr.concat([c.sel(explained="compared", drop=True) - own.sel(model=reference, drop=True),
                                   own.sel(model=compared, drop=True) - c.sel(explained="reference", drop=True)],
                                  dim="attacked_by"))
        ds["cross_diff"] = xr.concat(diff, dim="comparison").assign_coords(
            comparison=ds.comparison.values, attacked_by=["reference", "compared"]).transpose(
            "comparison", "attacked_by", "rule", "layer", "image")
        ds["cross_diff"].attrs["description"] = "compared minus reference model, both explained on the " \
                                                "adversarial images of the 'attacked_by' side"
        ds = ds.assign(_ci(ds["cross_diff"], "cross_diff", "cross_diff"))
    ds.attrs["controls"] = ",".join(k for k, on in (("cross", any_cross), ("random", "random_lrp_robustness" in ds))
                                    if on)
    return ds


# -- the stage ---------------------------------------------------------------------------------------------------
def run(preset: Any, model: str, kind: str, attack_run: str | Path, *, other_run: str | Path | None = None,
        inference: str | None = None, out: str | Path | None = None, seed: int = 0, batch_size: int | None = None,
        device: str = "cpu", force: bool = False) -> Any:
    """Compute and store one control of ``model``'s explained ``attack_run`` (docs/method.md §9.8).

    The control inputs are explained with the rules, layers, draws S and seed of the model's stored LRP
    explanation of ``attack_run`` (``OUT/explanations/PRESET/RUN_lrp.nc``), so its clean maps are the
    reference of the LRP robustness. ``other_run`` (cross only) is another model's attack run on the same
    images. Written to ``OUT/controls/PRESET/RUN_random.nc`` or ``RUN_cross_on_OTHER.nc``; up-to-date results
    (same settings and input files, by content hash) are skipped unless ``force``.
    Returns a :class:`bayesrobust.stages.Done`.
    """
    from . import checks
    from .explain.explanation import make_explainers
    from .inference import load_model, resolve_inference
    from .models.posterior import WEIGHTS_FILE
    from .stages import Done, _preset, _result_up_to_date, resolve_attack_run, resolve_device
    kind = Control.parse(kind, "control").value
    if (kind == Control.CROSS) != (other_run is not None):
        raise ValueError(f"the {kind} control {'needs' if kind == Control.CROSS else 'takes no'} other attack run")
    checks.seed("seed", seed)
    checks.count("batch_size", batch_size)
    out = paths.resolve_out(out)
    p = _preset(preset)
    device = resolve_device(device)
    inference = resolve_inference(p, model, inference)
    own_path = resolve_attack_run(out, p.name, model, inference, attack_run)
    explanation_path = paths.explanation_path(out, p.name, own_path.stem, "lrp")
    if not explanation_path.is_file():
        raise FileNotFoundError(f"no LRP explanation of {own_path.stem} ({explanation_path}); a control is scored "
                                f"against it: run `python -m bayesrobust.explain --out {out} --preset {p.name} "
                                f"--model {model} --attack-run {own_path.stem}` first")
    other_path = None
    if other_run is not None:
        other_path = Path(other_run) if Path(other_run).suffix == ".nc" else paths.attack_path(out, p.name,
                                                                                               str(other_run))
        if not other_path.is_file():
            raise FileNotFoundError(f"no attack run {str(other_run)!r} (looked for {other_path})")
    name = control_name(own_path.stem, kind, other_path.stem if other_path is not None else None)
    target = control_path(out, p.name, name)
    with store.open_result(explanation_path, "explanation") as opened:
        explanation = opened.drop_vars([v for v in opened.data_vars if v != "relevance"]).load()
    settings = store.config_of(explanation)
    model_sha = store.file_hash(paths.model_dir(out, p.name, model, inference) / WEIGHTS_FILE)
    config = {"control": kind, "preset": p.name, "model": model, "inference": inference,
              "attack_run": own_path.stem, "other_run": other_path.stem if other_path is not None else None,
              "seed": seed, "attack_sha256": store.file_hash(own_path), "model_sha256": model_sha,
              "explanation_sha256": store.file_hash(explanation_path),
              "other_attack_sha256": store.file_hash(other_path) if other_path is not None else None,
              "explanation": {k: settings.get(k) for k in ("rules", "composite", "layers", "initial", "n_draws",
                                                             "seed")}}
    store.clean_leftovers(target)
    if not force and _result_up_to_date(target, config):
        return Done(target, True, f"{target} is up to date (same settings and inputs); --force redoes it")
    if settings.get("method", "lrp") != "lrp":
        raise ValueError(f"{explanation_path} is not an LRP explanation (method {settings.get('method')!r})")
    with store.open_result(own_path, "attack") as opened:
        attack = opened.load()
    other = None
    if other_path is not None:
        with store.open_result(other_path, "attack") as opened:
            other = opened.load()
    attack = attack.sel(image=explanation.image.values)
    x_control, achieved = control_inputs(kind, attack, other, seed)  # checks the images before any work
    paths.prepare_out(out, "controls", p.name)
    posterior = load_model(out, p, model, inference)
    explainers = make_explainers("lrp", tuple(settings.get("rules") or ()), settings.get("composite"),
                                 settings.get("initial", "one_hot"))
    relevance = explain_inputs(posterior, x_control, explainers, layers=explanation.layer.values.tolist(),
                               n_draws=int(explanation.attrs.get("n_draws", settings.get("n_draws") or 1)),
                               batch_size=batch_size, seed=int(settings.get("seed") or 0), device=device)
    ds = control_dataset(relevance, x_control, achieved, attack, explanation, config,
                         **{k: v for k, v in config.items() if k.endswith("sha256") and v is not None},
                         control=kind, model=model, attack_run=own_path.stem,
                         other_run=config["other_run"] or "", n_draws=int(explanation.attrs.get("n_draws", 1)))
    path = store.write_netcdf(ds, target, "control")
    what = f"on the x_adv of {other_path.stem}" if other_path is not None else "on a random-sign perturbation"
    return Done(path, False, f"{kind} control: {own_path.stem} explained {what} ({ds.sizes['image']} images, "
                             f"median ||delta||_2 {float(np.median(achieved.numpy())):.3f}); written to {path}")
