"""Stable and faithful, side by side: the faithfulness stage of a preset's trained models (docs/method.md §10).

For every trained model of a preset under ``OUT`` (baseNN, advNN, fullBNN, any kind present) and every
explanation method (the nine on one interface: LRP ``epsilon``, ``gamma``, ``alpha1beta0``; Captum ``ig``,
``gradshap``, ``saliency``, ``smoothgrad``, ``gradcam`` (convolutional nets only); ``rise``), the metrics of
:func:`bayesrobust.faithfulness_metrics.evaluate` on the preset's class-balanced test subset (the attack runs'
images by default) are written to ``OUT/faithfulness/PRESET/MODEL_TAG.nc``. Then one table,
``OUT/faithfulness/PRESET/side_by_side.nc`` (model × method), puts the LRP robustness under FGSM of the stored
analysis (median over images, last layer; NaN where no analysis covers the method) next to the mean map's
deletion AUC and its randomisation score (median rank correlation once every layer is random), with a
figure of both (``side_by_side.png``) and one of the curves per model (``curves_MODEL_TAG.png``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import checks, paths, store
from .choices import Inference, Model

log = logging.getLogger(__name__)

#: The nine methods, in the order of the tables.
ALL_METHODS = ("epsilon", "gamma", "alpha1beta0", "ig", "gradshap", "saliency", "smoothgrad", "gradcam", "rise")
#: Per-model variables a faithfulness result must hold (store schema).
SCHEMA = {"deletion_auc": ("rule", "map", "draw", "image"), "insertion_auc": ("rule", "map", "draw", "image"),
          "confidence": ("draw", "image"), "randomisation_rho": ("rule", "map", "draw", "randomised", "image")}
store.register_schema("faithfulness", SCHEMA)
store.register_schema("faithfulness_side_by_side", {"deletion_auc": ("model", "rule"),
                                                    "randomisation_rho": ("model", "rule"),
                                                    "lrp_robustness": ("model", "rule")})


def faithfulness_dir(out: str | Path, preset: str) -> Path:
    return paths.under(out, "faithfulness", preset)


def check_methods(methods: Sequence[str] | None) -> list[str]:
    """The methods to evaluate (all nine by default), each one of :data:`ALL_METHODS`."""
    if not methods:
        return list(ALL_METHODS)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; expected some of "
                         f"{', '.join(ALL_METHODS)}")
    return list(dict.fromkeys(methods))


def make_explainer(method: str, rise_masks: int) -> Any:
    """The explainer of one of :data:`ALL_METHODS`."""
    from .explain.captum_methods import CaptumMethod
    from .explain.lrp import LRP
    from .explain.rise import RISE
    from .explain.rules import RULES
    if method in RULES:
        return LRP(method)
    if method == "rise":
        return RISE(n_masks=rise_masks)
    return CaptumMethod(method)


def trained_models(out: Path, preset: str) -> list[tuple[str, str | None]]:
    """``(model, inference)`` of every model trained for ``preset`` under ``out``, in :class:`Model` order."""
    found = []
    for model in Model.values():
        for inference in ([None] if model != Model.BAYES else Inference.values()):
            if (paths.model_dir(out, preset, model, inference) / "weights.pt").is_file():
                found.append((model, inference))
    return found


def lrp_robustness_of(out: Path, preset: str, model: str, n_draws: int, methods: Sequence[str]) -> np.ndarray:
    """Median LRP robustness (last layer, all images) of ``model`` per method, from the stored FGSM analyses of
    ``preset`` (NaN where none covers the method). A Bayesian model is matched by its S, else the largest S."""
    found = np.full(len(methods), np.nan)
    folder = out / "analysis"
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.nc")):
        try:
            with store.open_result(path, "analysis") as ds:
                if ds.attrs.get("preset") != preset or ds.attrs.get("attack") not in ("fgsm", ""):
                    continue
                names = [str(m) for m in ds.model.values]
                mine = [m for m in names if m == model or m.startswith(f"{model}_S")]
                if not mine:
                    continue
                exact = f"{model}_S{n_draws}" if n_draws > 1 else model
                pick = exact if exact in mine else max(mine, key=lambda m: int(m.rsplit("_S", 1)[-1])
                                                       if "_S" in m else 1)
                rob = ds.lrp_robustness.sel(model=pick).isel(layer=-1).median("image")
                rules = [str(r) for r in ds.rule.values]
                for k, method in enumerate(methods):
                    if method in rules and np.isnan(found[k]):
                        found[k] = float(rob.sel(rule=method))
        except (ValueError, store.CorruptResultError) as err:
            log.warning("skipping analysis %s: %s", path, err)
    return found


def side_by_side(results: dict[str, xr.Dataset], robustness: dict[str, np.ndarray], methods: Sequence[str],
                 preset: str) -> xr.Dataset:
    """The (model, method) table: LRP robustness next to the mean map's faithfulness (NaN where a method does
    not apply to a model)."""
    tags = list(results)
    shape = (len(tags), len(methods))
    cols = {name: np.full(shape, np.nan) for name in (
        "lrp_robustness", "deletion_auc", "insertion_auc", "deletion_auc_normalised", "insertion_auc_normalised",
        "randomisation_rho", "relevance_share", "pointing_game", "mean_vs_draw_p_deletion",
        "deletion_confidence_rho", "deletion_auc_draw_std", "randomisation_rho_draw_std")}
    for i, tag in enumerate(tags):
        ds = results[tag]
        cols["lrp_robustness"][i] = robustness[tag]
        for k, method in enumerate(methods):
            if method not in ds.rule.values:
                continue
            d = ds.sel(rule=method, map="mean")
            for name in ("deletion_auc", "insertion_auc", "deletion_auc_normalised", "insertion_auc_normalised"):
                cols[name][i, k] = float(d[name].mean())
            cols["randomisation_rho"][i, k] = float(d.randomisation_rho.isel(draw=0, randomised=-1).median())
            cols["relevance_share"][i, k] = float(d.relevance_share.isel(draw=0).mean())
            cols["pointing_game"][i, k] = float(d.pointing_hit.isel(draw=0).mean())
            cols["mean_vs_draw_p_deletion"][i, k] = float(ds.mean_vs_draw_p.sel(rule=method, curve="deletion"))
            cols["deletion_confidence_rho"][i, k] = float(ds.auc_confidence_rho.sel(rule=method, map="mean",
                                                                                     curve="deletion"))
            per_draw = ds.sel(rule=method, map="draw")
            cols["deletion_auc_draw_std"][i, k] = float(per_draw.deletion_auc.std("draw").mean())
            cols["randomisation_rho_draw_std"][i, k] = float(
                per_draw.randomisation_rho.isel(randomised=-1).median("image").std("draw"))
    out = xr.Dataset({k: (("model", "rule"), v) for k, v in cols.items()},
                     coords={"model": np.array(tags, dtype=object), "rule": np.array(methods, dtype=object)})
    out["lrp_robustness"].attrs["long_name"] = "median LRP robustness under FGSM, last layer (stored analysis)"
    out["randomisation_rho"].attrs["long_name"] = "median Spearman rho, mean map vs all layers randomised"
    out["deletion_confidence_rho"].attrs["long_name"] = "Spearman rho of the mean map's deletion AUC and the clean "\
        "confidence over images and draws"
    out["deletion_auc_draw_std"].attrs["long_name"] = "std over draws of the draw maps' deletion AUC, mean over images"
    out["randomisation_rho_draw_std"].attrs["long_name"] = "std over draws of the per-draw randomisation rho"
    out.attrs = store.provenance("faithfulness_side_by_side", {"preset": preset, "models": tags,
                                                               "methods": list(methods)}, preset=preset)
    return out


def format_side_by_side(ds: xr.Dataset) -> str:
    """The side-by-side table as text, one row per (model, method)."""
    names = ["lrp_robustness", "deletion_auc", "insertion_auc", "deletion_auc_normalised", "deletion_confidence_rho",
             "randomisation_rho", "randomisation_rho_draw_std", "relevance_share", "pointing_game",
             "mean_vs_draw_p_deletion"]
    df = ds[names].to_dataframe()[names].dropna(how="all", subset=names[1:])
    df.columns = ["LRP rob.", "del AUC", "ins AUC", "del/conf", "del~conf", "rand rho", "rho sd", "fg share",
                  "pointing", "p mean<draw"]
    return df.to_string(float_format=lambda v: format(v, ".3f"), na_rep="-")


def side_by_side_figure(ds: xr.Dataset):
    """LRP robustness (y) against the deletion AUC and against the randomisation rank correlation (x), and the
    two faithfulness scores against each other (every method, also those without a stored robustness); a
    marker per method, a colour per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), constrained_layout=True)
    markers = "osD^v<>Px*"
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, model in enumerate(ds.model.values):
        for k, method in enumerate(ds.rule.values):
            row = ds.sel(model=model, rule=method)
            rob, dele, rand = (float(row[v]) for v in ("lrp_robustness", "deletion_auc", "randomisation_rho"))
            style = {"marker": markers[k % len(markers)], "color": colours[i % len(colours)]}
            for ax, (x, y) in zip(axes, ((dele, rob), (rand, rob), (rand, dele))):
                if np.isfinite(x) and np.isfinite(y):
                    ax.scatter(x, y, label=f"{model}, {method}" if ax is axes[2] else None, **style)
    rob_label = "LRP robustness under FGSM (median)"
    axes[0].set(xlabel="deletion AUC (lower: more faithful)", ylabel=rob_label)
    axes[1].set(xlabel="rank corr. once all layers random (lower: passes)", ylabel=rob_label)
    axes[2].set(xlabel="rank corr. once all layers random (lower: passes)",
                ylabel="deletion AUC (lower: more faithful)")
    if np.isnan(ds.lrp_robustness.values).all():
        for ax in axes[:2]:
            ax.text(0.5, 0.5, "no stored analysis\n(bayesrobust analyze)", ha="center", va="center",
                    transform=ax.transAxes)
    handles, labels = axes[2].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7, ncols=1 + len(labels) // 24)
    fig.suptitle(f"stable and faithful, side by side ({ds.attrs.get('preset', '')}; mean maps)")
    return fig


def curves_figure(ds: xr.Dataset, tag: str):
    """Mean deletion and insertion curves of the mean map per method (one model)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True, sharey=True)
    for ax, curve in zip(axes, ("deletion", "insertion")):
        for method in ds.rule.values:
            c = ds[f"{curve}_curve"].sel(rule=method, map="mean").mean(("draw", "image"))
            auc = float(ds[f"{curve}_auc"].sel(rule=method, map="mean").mean())
            ax.plot(ds.fraction.values, c.values, label=f"{method} ({auc:.3f})")
        ax.set(title=f"{curve} ({ds.attrs.get(f'{curve}_baseline', '')} baseline)", xlabel="fraction of pixels",
               ylabel="probability of the explained class")
        ax.legend(fontsize=7)
    fig.suptitle(f"{tag}: mean map, mean over draws and images")
    return fig


def _save(fig: Any, stem: Path) -> list[Path]:
    """Write ``fig`` to ``STEM.png`` atomically and close it."""
    import matplotlib.pyplot as plt

    from .stages import save_figure
    try:
        return save_figure(fig, stem, ("png",), 120)
    finally:
        plt.close(fig)


def run(preset: str, *, out: str | Path | None = None, models: Sequence[str] | None = None,
        methods: Sequence[str] | None = None, n_inputs: int | None = None, inputs_seed: int = 0,
        n_draws: int | None = None, steps: int = 50, deletion_baseline: str = "zero",
        insertion_baseline: str = "blur", threshold: float = 0.5, rise_masks: int = 2000,
        randomisation: bool = True, randomisation_inputs: int | None = None, seed: int = 0,
        data_root: str | Path | None = None, device: str = "cpu", force: bool = False,
        progress: Callable[[int], object] | None = None) -> tuple[Path, str, dict[str, Any]]:
    """The faithfulness stage (see the module docstring). Returns ``(folder, summary, details)``; every
    argument is checked, and every model found, before any work. A model's result stored with the same
    settings and the same model (its weights' sha256) is reused unless ``force``; the table and the figures
    are always redrawn."""
    from . import faithfulness_metrics as fm
    from .explain.bayesian import posterior_draws
    from .models.draws import has_convolution
    from .presets import get_preset
    from .stages import Target, _result_up_to_date
    out = paths.resolve_out(out)
    p = get_preset(preset)
    methods = check_methods(methods)
    checks.count("steps", steps, allow_none=False)
    checks.count("rise_masks", rise_masks, allow_none=False)
    checks.count("n_inputs", n_inputs)
    checks.count("n_draws", n_draws)
    checks.count("randomisation_inputs", randomisation_inputs)
    checks.seed("seed", seed)
    checks.seed("inputs_seed", inputs_seed)
    fm.check_baseline(deletion_baseline)
    fm.check_baseline(insertion_baseline)
    if not 0 <= float(threshold) <= 1:  # NaN fails too
        raise ValueError(f"the foreground threshold is a pixel value in [0, 1], got {threshold!r}")
    found = trained_models(out, p.name)
    if models:
        wanted = [Model.parse(m, "model").value for m in models]
        found = [f for f in found if f[0] in wanted]
    if not found:
        raise FileNotFoundError(f"no trained model{' ' + ', '.join(models) if models else ''} of preset "
                                f"{p.name!r} under {out / 'models' / p.name}; run `python -m bayesrobust.train "
                                f"--preset {p.name} --model baseNN --out {out}` first")
    folder = faithfulness_dir(out, p.name)
    paths.prepare_out(out, "faithfulness", p.name)
    results: dict[str, xr.Dataset] = {}
    robustness: dict[str, np.ndarray] = {}
    lines, written = [], []
    for model, inference in found:
        t = Target.load(p, model, inference, n_inputs, inputs_seed, n_draws, data_root, device, out)
        draws = posterior_draws(t.posterior, t.n_draws, device=t.device)
        usable = [m for m in methods if m != "gradcam" or has_convolution(draws.net)]
        if len(usable) < len(methods):
            lines.append(f"{paths.model_tag(model, inference)}: gradcam skipped (no convolution in "
                         f"{t.posterior.arch.name})")
        tag = paths.model_tag(model, t.inference)
        target = folder / f"{tag}.nc"
        config = t.config(methods=usable, steps=steps, deletion_baseline=deletion_baseline,
                          insertion_baseline=insertion_baseline, threshold=threshold, rise_masks=rise_masks,
                          randomisation=randomisation, randomisation_inputs=randomisation_inputs, seed=seed,
                          inputs_seed=inputs_seed)
        store.clean_leftovers(target)
        if not force and _result_up_to_date(target, config):
            with store.open_result(target, "faithfulness") as old:
                ds = old.load()
            lines.append(f"{target} is up to date (same settings and model); --force redoes it")
        else:
            explainers = [make_explainer(m, rise_masks) for m in usable]
            ds = fm.evaluate(draws, t.data.x, explainers, steps=steps, deletion_baseline=deletion_baseline,
                             insertion_baseline=insertion_baseline, threshold=threshold,
                             randomisation=randomisation, randomisation_images=randomisation_inputs, seed=seed,
                             image=t.data.index.numpy(), progress=progress)
            ds = ds.assign_coords(rule=np.array(usable, dtype=object))
            ds["pointing_hit"] = ds.pointing_hit.astype(np.int8)
            ds["label"] = ("image", t.data.y.numpy())
            ds.attrs = {**store.provenance("faithfulness", config, model=model, inference=str(t.inference or ""),
                                           model_sha256=t.model_sha256), **ds.attrs}
            written.append(store.write_netcdf(ds, target, "faithfulness"))
        results[tag] = ds
        robustness[tag] = lrp_robustness_of(out, p.name, model, t.n_draws, methods)
        written += _save(curves_figure(ds, tag), folder / f"curves_{tag}")
    table = side_by_side(results, robustness, methods, p.name)
    written.append(store.write_netcdf(table, folder / "side_by_side.nc", "faithfulness_side_by_side"))
    written += _save(side_by_side_figure(table), folder / "side_by_side")
    lines += ["Stable and faithful, side by side. LRP rob.: median LRP robustness under FGSM (stored analysis); "
              "the mean map's del/ins AUC (deletion: lower is more faithful), del/conf: deletion AUC over the "
              "clean confidence, del~conf: their Spearman rho; rand rho: rank correlation once every layer is "
              "random (lower passes), rho sd: its spread over draws; fg share / pointing: localisation; "
              "p mean<draw: Wilcoxon p that the mean map deletes better than a single draw's",
              format_side_by_side(table)]
    lines += [f"wrote {w}" for w in written]
    return folder, "\n".join(lines), {"table": table, "results": results, "written": written}
