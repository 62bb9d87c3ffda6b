"""The figures of Carbone et al. (2021) and the robust-accuracy table, drawn from labelled Datasets
(docs/method.md §6.5).

Every function takes Datasets of the results store, selects from them and draws; none reads or writes a
file (``python -m bayesrobust.plot`` does that). Each returns a :class:`matplotlib.figure.Figure` made
without pyplot, so nothing is left in a global figure registry; save it with ``fig.savefig(path)``.

===========================  =================================================================================
function                     figure
===========================  =================================================================================
:func:`fig1`                 one image where the attacks on Det **and** Bay failed: x̃, R(x), R(x̃) per model
:func:`fig3`                 per-layer heatmaps of one successful attack on one model
:func:`fig4`                 per layer, density of the paired Adv − Det and Bay − Det LRP robustness
:func:`fig5`                 boxplots of Adv − Det and Bay − Det by LRP rule, with Mann–Whitney stars
:func:`fig6`                 LRP robustness against softmax robustness per layer, Spearman ρ in the legend
:func:`robustness_table`     accuracy under PGD against ε, one panel per norm, a line per step count
===========================  =================================================================================

Heatmaps show the top-k% selection of :func:`bayesrobust.metrics.topk_mask` (the pixels that LRP
robustness compares): selected pixels keep their relevance, the others are 0, summed over colour channels,
on the diverging colour map ``RdBu_r`` centred at 0 (red positive, blue negative). Lines and markers use the
Okabe–Ito palette, which stays distinguishable under the common colour-vision deficiencies.

Image selection is deterministic: :func:`select_image` takes the **lowest test-set index** among the
explained images with the required attack outcome, unless an image is given.

Degenerate inputs (an all-NaN map, a constant sample, an empty subset) give an empty or annotated panel, never
an exception; a request that cannot be met at all (no image with the outcome, an unknown rule or layer)
raises ``ValueError``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats

from . import metrics
from .results import layer_names
from .stability import Run, model_name

log = logging.getLogger(__name__)

__all__ = ["FIGURES", "OKABE_ITO", "STYLE", "select_image", "fig1", "fig3", "fig4", "fig5", "fig6",
           "robustness_table", "table_name", "default_layers", "significance_stars", "comparison_label",
           "rule_label", "ordered_rules", "layer_label"]

#: The Okabe–Ito colour-blind-safe palette.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7"}
_DET_COLOUR, _ADV_COLOUR = "#555555", OKABE_ITO["orange"]
#: Bayesian models in increasing S take these colours in turn.
_BAY_COLOURS = (OKABE_ITO["sky_blue"], OKABE_ITO["blue"], OKABE_ITO["green"], OKABE_ITO["purple"],
                OKABE_ITO["vermillion"])
_STEP_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")

#: Matplotlib settings of every figure (applied while it is drawn).
STYLE: dict[str, Any] = {
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "legend.title_fontsize": 8, "figure.titlesize": 10.5, "axes.spines.top": False,
    "axes.spines.right": False, "axes.linewidth": 0.8, "lines.linewidth": 1.5, "image.interpolation": "nearest",
    "pdf.fonttype": 42, "ps.fonttype": 42, "figure.dpi": 100,
}
_CMAP = mpl.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
_RULE_LABELS = {"epsilon": "LRP-ε", "gamma": "LRP-γ", "alpha1beta0": "LRP-α1β0",
                "gamma_quadratic": "LRP-γ (quadratic, reference)"}
_SUBSET_LABELS = {"all": "all images", "successful": "successful attacks", "failed": "failed attacks"}

F = TypeVar("F", bound=Callable[..., Figure])


def _styled(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with mpl.rc_context(STYLE):
            return func(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# Labels and selections shared by the figures.


def rule_label(rule: Any) -> str:
    """``'LRP-ε'`` for ``'epsilon'`` etc.; other names (composites, Captum methods) as they are."""
    return _RULE_LABELS.get(str(rule), str(rule))


def _layer_modules(ds: xr.Dataset | xr.DataArray) -> list[str] | None:
    """The module names of a string coordinate along ``layer`` (``layer_name``), if there is one."""
    names = layer_names(ds)
    return None if names is None else list(names.values())


def ordered_rules(rules: Sequence[Any]) -> list[Any]:
    """``rules`` in the paper's order (ε, γ, α1β0), other names (composites, methods) after them as given."""
    known = [r for r in _RULE_LABELS if r in rules]
    return known + [r for r in rules if r not in _RULE_LABELS]


def layer_label(ds: xr.Dataset | xr.DataArray, layer: Any) -> str:
    """How ``layer`` is titled: ``'layer l'`` for a layer index, with the module name of a string
    coordinate along ``layer`` (e.g. ``layer_name``) when that name says more than a number
    (``'layer 1 (4.conv1)'``, but not ``'layer 1 (3)'`` for a module of a ``Sequential``); a string layer
    coordinate as it is."""
    if isinstance(layer, str):
        return layer
    label = f"layer {layer}"
    modules = _layer_modules(ds)
    if modules is None:
        return label
    module = modules[ds["layer"].values.tolist().index(layer)]
    return f"{label} ({module})" if any(c.isalpha() for c in module) else label


def comparison_label(ds: xr.Dataset, comparison: str) -> str:
    """``'Adv − Det'`` or ``'Bay (S=10) − Det'`` for a comparison of an analysis Dataset."""
    compared = str(ds["compared"].sel(comparison=comparison).item())
    return f"{_model_label(ds, compared)} − Det"


def _model_label(ds: xr.Dataset, model: str) -> str:
    role = str(ds["role"].sel(model=model).item())
    if role == "Bay":
        return f"Bay (S={int(ds['n_draws'].sel(model=model))})"
    return role


def _model_colours(ds: xr.Dataset) -> dict[str, str]:
    """Det grey, Adv orange, the Bayesian models blue-green in increasing S."""
    models = [str(m) for m in ds.model.values]
    roles = dict(zip(models, (str(r) for r in ds["role"].values)))
    bay = sorted((m for m in models if roles[m] == "Bay"), key=lambda m: int(ds["n_draws"].sel(model=m)))
    colours = {m: _BAY_COLOURS[i % len(_BAY_COLOURS)] for i, m in enumerate(bay)}
    colours.update({m: _DET_COLOUR if roles[m] == "Det" else _ADV_COLOUR for m in models if roles[m] != "Bay"})
    return colours


def significance_stars(p: float) -> str:
    """``'***'`` (p < 0.001), ``'**'`` (< 0.01), ``'*'`` (< 0.05), ``'n.s.'``; ``''`` for NaN."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else "n.s."


def _pick(ds: xr.Dataset | xr.DataArray, dim: str, value: Any, default: str = "first") -> Any:
    """``value`` if it is a coordinate of ``dim``; default the first (or last) one; ``ValueError`` if absent."""
    values = ds[dim].values.tolist()
    if value is None:
        if dim == "rule" and "epsilon" in values:
            return "epsilon"
        return values[0] if default == "first" else values[-1]
    if value not in values:
        # layer given as a string on the command line, coordinate numeric (or the reverse)
        matches = [v for v in values if str(v) == str(value)]
        names = {}
        if dim == "layer":  # by label ('layer 1 (4.conv1)') or module name ('4.conv1')
            names = {layer_label(ds, v): v for v in values}
            names.update({str(n): v for v, n in zip(values, _layer_modules(ds) or [])})
        if not matches and str(value) in names:  # a layer given by its name
            matches = [names[str(value)]]
        if not matches:
            listed = ", ".join(map(str, values)) + (f" ({', '.join(names)})" if names else "")
            raise ValueError(f"no {dim} {value!r}; expected one of {listed}")
        value = matches[0]
    return value


def _topk_text(ds: xr.Dataset) -> str:
    topk = ds.attrs.get("topk")
    return "?" if topk is None else f"{float(topk):g}"


def default_layers(ds: xr.Dataset, most: int = 6) -> list[Any]:
    """Every layer of ``ds``, or ``most`` of them evenly spaced (always the first and the last) when there
    are more (e.g. the 20 of a ResNet-20), so that a figure stays readable."""
    values = ds["layer"].values.tolist()
    if len(values) <= most:
        return values
    return [values[i] for i in sorted(set(np.linspace(0, len(values) - 1, most).round().astype(int).tolist()))]


def _check_subset(subset: str) -> str:
    if subset not in _SUBSET_LABELS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {', '.join(_SUBSET_LABELS)}")
    return subset


def select_image(attacks: Sequence[xr.Dataset], outcome: str, images: Sequence[int] | None = None) -> int:
    """The lowest test-set index whose attack had ``outcome`` in **every** attack Dataset.

    Parameters
    ----------
    attacks
        Attack Datasets (``image`` coordinate = test-set index, flags ``success`` and ``failed``).
    outcome
        ``'failed'`` (correct on x and on x̃) or ``'successful'`` (correct on x, wrong on x̃).
    images
        Only these images qualify (e.g. the ones that were explained); default all.

    Returns
    -------
    int
        The test-set index.

    Raises
    ------
    ValueError
        Unknown outcome, or no image with that outcome in every Dataset (among ``images``).
    """
    flags = {"failed": "failed", "successful": "success"}
    if outcome not in flags:
        raise ValueError(f"unknown outcome {outcome!r}; expected 'failed' or 'successful'")
    keep = None if images is None else {int(i) for i in images}
    for ds in attacks:
        hit = {int(i) for i in ds.image.values[np.asarray(ds[flags[outcome]].values, dtype=bool)]}
        keep = hit if keep is None else keep & hit
    if not keep:
        models = ", ".join(str(ds.attrs.get("model", "?")) for ds in attacks)
        raise ValueError(f"no explained image where the attack {'failed' if outcome == 'failed' else 'succeeded'}"
                         f" on every model ({models})")
    return min(keep)


def _masked_map(relevance: xr.DataArray, topk: float) -> np.ndarray:
    """(height, width): the top-k% selected relevance summed over channels, 0 elsewhere; NaN if undefined."""
    values = np.asarray(relevance.transpose("channel", "height", "width").values, dtype=float)
    if not np.isfinite(values).all():
        return np.full(values.shape[1:], np.nan)
    return np.where(metrics.topk_mask(values, topk), values, 0.0).sum(axis=0)


def _symmetric_limit(maps: Sequence[np.ndarray]) -> float:
    finite = [np.abs(m[np.isfinite(m)]) for m in maps]
    top = max((float(f.max()) for f in finite if f.size), default=0.0)
    return top if top > 0 else 1.0


def _show_image(ax: Axes, x: np.ndarray) -> None:
    """A (channel, height, width) image in [0, 1]: grey for one channel, RGB for three."""
    x = np.clip(np.asarray(x, dtype=float), 0, 1)
    if x.shape[0] == 1:
        ax.imshow(x[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.moveaxis(x[:3], 0, -1))
    _bare(ax)


def _show_map(ax: Axes, m: np.ndarray, limit: float):
    im = ax.imshow(np.ma.masked_invalid(m), cmap=_CMAP, vmin=-limit, vmax=limit)
    if not np.isfinite(m).any():
        ax.text(0.5, 0.5, "no map", transform=ax.transAxes, ha="center", va="center", color="0.3")
    _bare(ax, frame=True)
    return im


def _bare(ax: Axes, frame: bool = False) -> None:
    """No ticks; a thin grey frame (heatmaps, whose unselected pixels are white) or none (images)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame)
        spine.set_color("0.6")
        spine.set_linewidth(0.6)


def _lrp_robustness(clean: xr.DataArray, adv: xr.DataArray, topk: float) -> float:
    a, b = (np.asarray(v.transpose("channel", "height", "width").values, float) for v in (clean, adv))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return float(metrics.lrp_robustness(a, b, topk))


def _outcome(attack: xr.Dataset) -> str:
    """What the attack did to one image, in words."""
    if bool(attack["success"]):
        return "attack succeeded"
    return "attack failed" if bool(attack["failed"]) else "misclassified before the attack"


def _explained_images(run: Run) -> np.ndarray:
    return np.intersect1d(run.explanation.image.values, run.attack.image.values)


# ---------------------------------------------------------------------------------------------------------
# Figures 1 and 3: heatmaps.


@_styled
def fig1(det: Run, bay: Run, *, rule: str | None = None, layer: Any = None, topk: float = 20,
         image: int | None = None) -> Figure:
    """Figure 1: an image on which the attacks on the deterministic **and** the Bayesian net both failed.

    Two rows (Det, Bay), three columns: the model's own adversarial image x̃, the top-k% relevance R(x) of
    the clean image and R(x̃) of the adversarial one, all maps on one symmetric colour scale centred at 0.
    Each row states that model's LRP robustness for this image. Selection: the lowest test-set index that
    both models explained and on which both attacks failed (:func:`select_image`), unless ``image`` is given.

    Parameters
    ----------
    det, bay
        The deterministic and the Bayesian runs (:class:`bayesrobust.stability.Run`: label, S, attack and
        explanation Datasets).
    rule
        LRP rule (default ``'epsilon'`` if explained, else the first rule).
    layer
        Explained layer (default the last, i.e. the logits).
    topk
        ``k`` of the top-k% selection (paper: 30 for this figure, 20 elsewhere).
    image
        Test-set index to show instead of the selection rule's.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No image on which both attacks failed, an unknown rule/layer/image, or a bad ``topk``.
    """
    runs = (det, bay)
    if image is None:
        shared = np.intersect1d(_explained_images(det), _explained_images(bay))
        image = select_image([det.attack, bay.attack], "failed", shared)
        log.info("fig1: test image %d, the lowest index where both attacks failed", image)
    rule = _pick(det.explanation, "rule", rule)
    layer = _pick(det.explanation, "layer", layer, default="last")
    rows = []
    for run in runs:
        if int(image) not in run.explanation.image.values:
            raise ValueError(f"image {image} was not explained for {run.model}")
        rel = run.explanation["relevance"].sel(rule=_pick(run.explanation, "rule", rule),
                                               layer=_pick(run.explanation, "layer", layer), image=image)
        clean, adv = rel.sel(input="clean"), rel.sel(input="adversarial")
        rows.append((run, _masked_map(clean, topk), _masked_map(adv, topk), _lrp_robustness(clean, adv, topk)))
    limit = _symmetric_limit([m for _, c, a, _ in rows for m in (c, a)])

    fig = Figure(figsize=(5.6, 4.0), layout="constrained")
    axes = fig.subplots(2, 3)
    for r, (run, clean, adv, rob) in enumerate(rows):
        attack = run.attack.sel(image=image)
        _show_image(axes[r, 0], attack["x_adv"].values)
        _show_map(axes[r, 1], clean, limit)
        im = _show_map(axes[r, 2], adv, limit)
        role = "Det" if run is det else f"Bay (S={int(run.n_draws)})"
        axes[r, 0].set_ylabel(f"{role}\nLRP robustness {rob:.2f}")
        axes[r, 0].set_title(f"x̃: pred. {int(attack['pred_adv'])}", fontsize=8.5)
        if r == 0:
            axes[r, 1].set_title("R(x)")
            axes[r, 2].set_title("R(x̃)")
    fig.colorbar(im, ax=axes[:, 1:], shrink=0.85, label=f"relevance (top {topk:g}%)")
    label = int(det.attack["label"].sel(image=image))
    outcomes = [_outcome(run.attack.sel(image=image)) for run in runs]
    what = ("attack failed on both models" if outcomes == ["attack failed"] * 2
            else f"Det: {outcomes[0]}; Bay: {outcomes[1]}")
    fig.suptitle(f"Test image {image} (label {label}): {what}\n"
                 f"{rule_label(rule)}, {layer_label(det.explanation, layer)}", fontsize=9.5)
    return fig


@_styled
def fig3(run: Run, *, rule: str | None = None, topk: float = 20, image: int | None = None,
         layers: Sequence[Any] | None = None) -> Figure:
    """Figure 3: the relevance of every layer for one successful attack on one model.

    Two rows (clean x, adversarial x̃), one column for the image and one per explained layer, each layer's
    maps top-k% masked on a colour scale shared by its clean and adversarial map (relevance of different
    layers is not comparable in size); each layer's title gives the LRP robustness of this image.
    Selection: the lowest explained test-set index on which the attack succeeded (:func:`select_image`),
    unless ``image`` is given.

    Parameters
    ----------
    run
        One model's :class:`bayesrobust.stability.Run` (paper: baseNN).
    rule
        LRP rule (default ``'epsilon'`` if explained, else the first rule).
    topk
        ``k`` of the top-k% selection.
    image
        Test-set index to show instead of the selection rule's.
    layers
        Layers to show (default :func:`default_layers`).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No successful attack among the explained images, unknown rule/layer/image, or a bad ``topk``.
    """
    expl = run.explanation
    if image is None:
        image = select_image([run.attack], "successful", _explained_images(run))
        log.info("fig3: test image %d, the lowest index where the attack on %s succeeded", image, run.model)
    if int(image) not in expl.image.values:
        raise ValueError(f"image {image} was not explained for {run.model}")
    rule = _pick(expl, "rule", rule)
    layers = default_layers(expl) if layers is None else [_pick(expl, "layer", v) for v in layers]
    rel = expl["relevance"].sel(rule=rule, image=image)
    attack = run.attack.sel(image=image)

    n = len(layers)
    fig = Figure(figsize=(1.25 + 1.45 * n, 3.6), layout="constrained")
    axes = fig.subplots(2, n + 1, squeeze=False)
    for r, (kind, x, pred) in enumerate((("x", "x", "pred"), ("x̃", "x_adv", "pred_adv"))):
        _show_image(axes[r, 0], attack[x].values)
        axes[r, 0].set_ylabel(f"{kind}: pred. {int(attack[pred])}")
    axes[0, 0].set_title("input")
    for j, layer in enumerate(layers, start=1):
        clean, adv = rel.sel(layer=layer, input="clean"), rel.sel(layer=layer, input="adversarial")
        maps = [_masked_map(clean, topk), _masked_map(adv, topk)]
        limit = _symmetric_limit(maps)
        for r, m in enumerate(maps):
            im = _show_map(axes[r, j], m, limit)
        axes[0, j].set_title(f"{layer_label(expl, layer)}\nLRP rob. {_lrp_robustness(clean, adv, topk):.2f}")
        bar = fig.colorbar(im, ax=axes[:, j], location="bottom", shrink=0.9, aspect=12)
        bar.ax.tick_params(labelsize=7)
        bar.ax.locator_params(nbins=3)
    label = int(attack["label"])
    fig.suptitle(f"{run.model}: relevance per layer, test image {image} (label {label}), {_outcome(attack)}\n"
                 f"{rule_label(rule)}, top {topk:g}%", fontsize=9.5)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Figures 4–6: distributions over images, from the analysis Dataset.


def _subset_images(ds: xr.Dataset, models: Sequence[str], subset: str) -> np.ndarray:
    """(image,) booleans: every image for ``'all'``, else the images with that outcome for all ``models``."""
    keep = np.ones(ds.sizes["image"], dtype=bool)
    if subset != "all":
        flag = "success" if subset == "successful" else "failed"
        for m in models:
            keep &= np.asarray(ds[flag].sel(model=m).values, dtype=bool)
    return keep


def _finite(values: Any) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def _density(ax: Axes, values: np.ndarray, colour: str, label: str) -> None:
    """Gaussian KDE on [-1, 1]; a histogram when the sample is too small or constant for a KDE."""
    grid = np.linspace(-1, 1, 401)
    if values.size >= 2 and np.ptp(values) > 0:
        try:
            y = stats.gaussian_kde(values)(grid)
            ax.plot(grid, y, color=colour, label=label)
            ax.fill_between(grid, y, color=colour, alpha=0.1, linewidth=0)
            return
        except (np.linalg.LinAlgError, ValueError):
            pass
    if values.size:
        ax.hist(values, bins=np.linspace(-1, 1, 41), density=True, histtype="stepfilled", alpha=0.35,
                color=colour, edgecolor=colour, label=f"{label} (histogram)")
    else:
        ax.plot([], [], color=colour, label=f"{label} (no data)")


def _comparisons(ds: xr.Dataset) -> list[str]:
    return [str(c) for c in ds.comparison.values]


def _differences(ds: xr.Dataset, comparison: str, rule: Any, layer: Any, subset: str) -> tuple[str, np.ndarray]:
    """The compared model and its finite paired differences on the images of ``subset`` (flag held for
    both models of the comparison)."""
    compared, reference = (str(ds[c].sel(comparison=comparison).item()) for c in ("compared", "reference"))
    keep = _subset_images(ds, [compared, reference], subset)
    diff = ds["lrp_robustness_diff"].sel(comparison=comparison, rule=rule, layer=layer).values
    return compared, _finite(np.asarray(diff)[keep])


@_styled
def fig4(ds: xr.Dataset, *, rule: str | None = None, subset: str = "all",
         layers: Sequence[Any] | None = None) -> Figure:
    """Figure 4 (App. 7–9, 16): per layer, the density of the paired LRP robustness differences.

    One panel per layer (three per row), one curve per comparison in the analysis (Adv − Det and Bay − Det for every S
    available): a Gaussian KDE (:class:`scipy.stats.gaussian_kde`, Scott's bandwidth) of the per-image
    differences, or a histogram when the sample is constant or has fewer than two values. Mass right of 0:
    the model's explanations are more robust than the deterministic net's. The median of each comparison is
    marked on the x axis.

    Parameters
    ----------
    ds
        An analysis Dataset (:func:`bayesrobust.stability.analyse`).
    rule
        LRP rule (default ``'epsilon'`` if analysed, else the first).
    subset
        ``'all'`` images, or only those on which the attack was ``'successful'`` / ``'failed'`` for both
        models of a comparison.
    layers
        Layers to show (default :func:`default_layers`).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No comparison in ``ds`` (only the deterministic model was analysed), unknown rule, layer or subset.
    """
    _check_subset(subset)
    comps = _comparisons(ds)
    if not comps:
        raise ValueError("the analysis has no Adv or Bay model to compare with Det")
    rule = _pick(ds, "rule", rule)
    layers = default_layers(ds) if layers is None else [_pick(ds, "layer", v) for v in layers]
    colours = _model_colours(ds)
    ncols = min(len(layers), 3)
    nrows = -(-len(layers) // ncols)
    fig = Figure(figsize=(2.6 + 2.3 * ncols, 0.7 + 2.2 * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for ax in grid.ravel()[len(layers):]:
        ax.set_visible(False)
    axes = grid.ravel()[: len(layers)]
    counts = set()
    for ax, layer in zip(axes, layers):
        for comp in comps:
            compared, values = _differences(ds, comp, rule, layer, subset)
            counts.add(values.size)
            _density(ax, values, colours[compared], comparison_label(ds, comp))
            if values.size:
                ax.plot(np.median(values), 0.035, marker="v", color=colours[compared], markersize=6,
                        markeredgecolor="white", markeredgewidth=0.5, clip_on=False,
                        transform=ax.get_xaxis_transform(), zorder=5)
        ax.axvline(0, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xlim(-1, 1)
        ax.set_ylim(bottom=0)
        ax.set_title(layer_label(ds, layer))
    for row in grid:
        row[0].set_ylabel("density")
    fig.supxlabel("paired LRP robustness difference (model − Det)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [lab.replace(" (histogram)", "").replace(" (no data)", "") for lab in labels],
               loc="outside right center", frameon=False)
    n = "/".join(str(c) for c in sorted(counts))
    fig.suptitle(f"Paired LRP robustness differences per layer: {rule_label(rule)}, "
                 f"top {_topk_text(ds)}%, {_SUBSET_LABELS[subset]} (n = {n}); ▼ median")
    return fig


@_styled
def fig5(analyses: xr.Dataset | Mapping[str, xr.Dataset], *, layer: Any = None, subset: str = "all",
         rules: Sequence[str] | None = None) -> Figure:
    """Figure 5 (App. 10–15): boxplots of the paired LRP robustness differences by rule, with stars.

    One panel per analysis (e.g. per dataset); in each, a group per LRP rule with a box per comparison
    (Adv − Det, Bay − Det for every S). Boxes: quartiles and median, whiskers to 1.5 IQR, outliers as
    points. The stars above a box come from the analysis's one-sided Mann–Whitney test of that rule, layer
    and subset (``mannwhitney_p``; H1: the deterministic net's LRP robustness is stochastically less than
    the compared model's): ``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001, ``n.s.`` otherwise.

    Parameters
    ----------
    analyses
        An analysis Dataset, or several by panel title (``{'MNIST': ds0, 'Fashion-MNIST': ds1}``).
    layer
        The layer (default the last, as in the paper).
    subset
        ``'all'``, ``'successful'`` or ``'failed'``: the images of the boxes (flag held for both models of
        a comparison) and the subset of the tests.
    rules
        Rules to show (default all analysed, in the order of :func:`ordered_rules`).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        An analysis without comparisons, unknown layer, rule or subset, or no analysis at all.
    """
    _check_subset(subset)
    panels = {"": analyses} if isinstance(analyses, xr.Dataset) else dict(analyses)
    if not panels:
        raise ValueError("fig5 needs at least one analysis Dataset")
    widths = [1.2 + 0.45 * len(_comparisons(ds)) * (len(rules) if rules else ds.sizes["rule"])
              for ds in panels.values()]
    fig = Figure(figsize=(max(4.2, sum(widths) + 1.8), 3.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True, width_ratios=widths)[0]
    legend: dict[str, Patch] = {}
    stars: list[tuple[Axes, float, str]] = []
    extremes = [0.0]
    for ax, (title, ds) in zip(axes, panels.items()):
        comps = _comparisons(ds)
        if not comps:
            raise ValueError(f"analysis {title!r} has no Adv or Bay model to compare with Det")
        lay = _pick(ds, "layer", layer, default="last")
        shown = ordered_rules(ds.rule.values.tolist()) if rules is None else [_pick(ds, "rule", r) for r in rules]
        colours = _model_colours(ds)
        width = 0.8 / len(comps)
        for g, rule in enumerate(shown):
            for c, comp in enumerate(comps):
                compared, values = _differences(ds, comp, rule, lay, subset)
                pos = g + (c - (len(comps) - 1) / 2) * width
                colour = colours[compared]
                if values.size:
                    extremes += [float(values.min()), float(values.max())]
                    ax.boxplot([values], positions=[pos], widths=width * 0.8, patch_artist=True,
                               boxprops=dict(facecolor=mpl.colors.to_rgba(colour, 0.45), edgecolor=colour),
                               medianprops=dict(color="black", linewidth=1.2),
                               whiskerprops=dict(color=colour), capprops=dict(color=colour),
                               flierprops=dict(marker="o", markersize=2.5, markerfacecolor=colour,
                                               markeredgecolor="none", alpha=0.6))
                else:
                    ax.text(pos, 0, "no\ndata", ha="center", va="center", fontsize=7, color="0.4")
                p = float(ds["mannwhitney_p"].sel(comparison=comp, subset=subset, rule=rule, layer=lay))
                stars.append((ax, pos, significance_stars(p)))
                legend.setdefault(comparison_label(ds, comp),
                                  Patch(facecolor=mpl.colors.to_rgba(colour, 0.45), edgecolor=colour))
        ax.axhline(0, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xticks(range(len(shown)), [rule_label(r) for r in shown])
        ax.set_xlim(-0.6, len(shown) - 0.4)
        name = layer_label(ds, lay)
        ax.set_title(f"{title}, {name}" if title else name)
    # one row of stars above the highest box of all panels; the y range follows the data
    top = max(extremes) + 0.06
    for ax, pos, text in stars:
        ax.text(pos, top, text, ha="center", va="bottom", fontsize=8)
    axes[0].set_ylim(max(-1.05, min(min(extremes) - 0.08, -0.25)), top + 0.16)
    axes[0].set_ylabel("paired LRP robustness difference")
    fig.legend(list(legend.values()), list(legend), loc="outside right center", frameon=False,
               title="model − Det")
    topk = dict.fromkeys(_topk_text(ds) for ds in panels.values())
    fig.suptitle(f"Paired LRP robustness differences by rule, top {'/'.join(topk)}%, "
                 f"{_SUBSET_LABELS[subset]}\none-sided Mann–Whitney: * p<0.05, ** p<0.01, *** p<0.001")
    return fig


@_styled
def fig6(ds: xr.Dataset, *, rule: str | None = None, subset: str = "all", models: Sequence[str] | None = None,
         layers: Sequence[Any] | None = None) -> Figure:
    """Figure 6: LRP robustness against softmax robustness, per layer, Spearman ρ in the legend.

    A grid of scatter plots, a row per model and a column per layer, one point per image (x: softmax
    robustness 1 − ‖p(x) − p(x̃)‖∞, y: LRP robustness); each panel's legend gives that model's Spearman ρ
    for that layer from the analysis (``spearman_rho``; ``n/a`` when undefined, e.g. a constant sample). One
    panel per model rather than one cloud per layer: with hundreds of images per model the clouds of
    several models hide each other.

    Parameters
    ----------
    ds
        An analysis Dataset.
    rule
        LRP rule (default ``'epsilon'`` if analysed, else the first).
    subset
        ``'all'``, ``'successful'`` or ``'failed'`` (each model's own attack outcome, as for the ρ).
    models
        Models to show (default all, e.g. ``['baseNN', 'advNN', 'fullBNN_S100']``).
    layers
        Layers to show (default :func:`default_layers`).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        Unknown rule, layer, subset or model.
    """
    _check_subset(subset)
    rule = _pick(ds, "rule", rule)
    layers = default_layers(ds) if layers is None else [_pick(ds, "layer", v) for v in layers]
    models = [str(m) for m in ds.model.values] if models is None else [_pick(ds, "model", m) for m in models]
    colours = _model_colours(ds)
    fig = Figure(figsize=(0.9 + 2.0 * len(layers), 0.9 + 1.75 * len(models)), layout="constrained")
    axes = fig.subplots(len(models), len(layers), squeeze=False, sharex=True, sharey=True)
    for i, m in enumerate(models):
        keep = _subset_images(ds, [m], subset)
        x = np.asarray(ds["softmax_robustness"].sel(model=m).values, float)[keep]
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            y = np.asarray(ds["lrp_robustness"].sel(model=m, rule=rule, layer=layer).values, float)[keep]
            rho = float(ds["spearman_rho"].sel(model=m, subset=subset, rule=rule, layer=layer))
            ax.scatter(x, y, s=10, color=colours[m], alpha=0.6, marker=_MARKERS[i % len(_MARKERS)],
                       linewidths=0, label=f"ρ = {rho:.2f}" if np.isfinite(rho) else "ρ = n/a")
            ax.set_xlim(-0.04, 1.04)
            ax.set_ylim(-0.04, 1.04)
            ax.set_xticks([0, 0.5, 1])
            ax.set_yticks([0, 0.5, 1])
            ax.grid(color="0.92", linewidth=0.6)
            ax.legend(loc="best", handlelength=0.6, handletextpad=0.3, borderpad=0.3, framealpha=0.85,
                      markerscale=1.4, fontsize=7.5)
            if i == 0:
                ax.set_title(layer_label(ds, layer))
        axes[i, 0].set_ylabel(f"{_model_label(ds, m)}\nLRP robustness")
    fig.supxlabel("softmax robustness", fontsize=9)
    fig.suptitle(f"LRP robustness vs softmax robustness: {rule_label(rule)}, top {_topk_text(ds)}%, "
                 f"{_SUBSET_LABELS[subset]} (Spearman ρ)")
    return fig


# ---------------------------------------------------------------------------------------------------------
# The robust-accuracy table (docs/method.md §4.5).


def _epsilon_label(norm: str, eps: float) -> str:
    if eps == 0:
        return "0"
    if norm == "linf" and abs(eps * 255 - round(eps * 255)) < 1e-6:
        return f"{round(eps * 255)}/255"
    return f"{eps:g}"


def table_name(ds: xr.Dataset, default: str) -> str:
    """The model a robust-accuracy table is of (``model`` and ``n_draws`` attributes), else ``default``."""
    if "model" not in ds.attrs:
        return default
    return model_name(str(ds.attrs["model"]), int(ds.attrs.get("n_draws", 1)))


def _table_order(name: str, ds: xr.Dataset) -> tuple[int, int, str]:
    """baseNN first, then advNN, then the Bayesian nets by S (by the ``model`` attribute, else the name)."""
    model = str(ds.attrs.get("model", name))
    return {"baseNN": 0, "advNN": 1}.get(model, 2), int(ds.attrs.get("n_draws", 1)), name


@_styled
def robustness_table(tables: xr.Dataset | Sequence[xr.Dataset] | Mapping[str, xr.Dataset]) -> Figure:
    """The robust-accuracy table as a figure: accuracy under PGD against ε, one panel per norm.

    A line per step count (solid, dashed, ...) and per model (colour: baseNN grey, advNN orange, Bayesian
    nets blue-green by S); each starts at ε = 0 with the clean
    accuracy. ε values not in a norm's grid (NaN in ``accuracy``) are skipped; L∞ radii that are multiples
    of 1/255 are labelled as such.

    Parameters
    ----------
    tables
        ``robustness_table`` Datasets (:func:`bayesrobust.adversarial.table.robustness_table`): one, a sequence
        (named by their ``model``/``n_draws`` attributes) or a mapping name → Dataset.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No table.
    """
    if isinstance(tables, xr.Dataset):
        tables = [tables]
    if not isinstance(tables, Mapping):
        tables = {table_name(ds, f"model {i}"): ds for i, ds in enumerate(tables)}
    if not tables:
        raise ValueError("robustness_table needs at least one robustness-table Dataset")
    tables = dict(sorted(tables.items(), key=lambda item: _table_order(*item)))
    norms = list(dict.fromkeys(str(n) for ds in tables.values() for n in ds.norm.values))
    all_steps = sorted({int(v) for ds in tables.values() for v in ds.steps.values})
    step_index = {v: i for i, v in enumerate(all_steps)}  # one line style per step count across models
    bay = iter(_BAY_COLOURS * len(tables))
    colours = {name: {0: _DET_COLOUR, 1: _ADV_COLOUR}.get(_table_order(name, ds)[0]) or next(bay)
               for name, ds in tables.items()}
    fig = Figure(figsize=(0.8 + 3.0 * len(norms) + 1.4, 3.0), layout="constrained")
    axes = fig.subplots(1, len(norms), squeeze=False, sharey=True)[0]
    for ax, norm in zip(axes, norms):
        ticks: dict[float, str] = {0.0: "0"}
        for name, ds in tables.items():
            if norm not in ds.norm.values:
                continue
            clean = float(ds["clean_accuracy"])
            for steps in ds.steps.values:
                s = step_index[int(steps)]
                acc = ds["accuracy"].sel(norm=norm, steps=steps)
                ok = np.isfinite(acc.values)
                eps = np.concatenate([[0.0], ds.epsilon.values[ok]])
                ticks.update({float(e): _epsilon_label(norm, float(e)) for e in eps})
                label = f"{name}, {int(steps)} steps" if len(tables) > 1 else f"{int(steps)} steps"
                ax.plot(eps, np.concatenate([[clean], acc.values[ok]]), color=colours[name],
                        linestyle=_STEP_STYLES[s % len(_STEP_STYLES)], marker=_MARKERS[s % len(_MARKERS)],
                        markersize=4, label=label)
        ax.set_xticks(list(ticks), list(ticks.values()))
        ax.set_title(f"PGD {'L∞' if norm == 'linf' else norm.upper()}")
        ax.set_xlabel("ε")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", color="0.9", linewidth=0.6)
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right center", frameon=False)
    fig.suptitle("Robust accuracy under PGD (ε = 0: clean accuracy; step size 2.5·ε/steps)")
    return fig


#: The figures by name (as ``python -m bayesrobust.plot --figure NAME`` knows them).
FIGURES: dict[str, Callable[..., Figure]] = {"fig1": fig1, "fig3": fig3, "fig4": fig4, "fig5": fig5,
                                              "fig6": fig6, "robustness_table": robustness_table}


def attribution_figure(runs: Sequence[xr.Dataset], names: Sequence[str], *, image: int = 0) -> Figure:
    """One image under the attribution attack of each run (docs/method.md §11.6): a row per run (``names``
    are the run names, unused in the drawing but kept for the caller's order), columns
    original image, attacked image, original map, attacked map (|map|, each scaled to its own maximum), the
    top-k intersection and Kendall τ of that image in the title."""
    fig = Figure(figsize=(7.2, 0.4 + 1.9 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 4, squeeze=False)
    for row, ds in zip(axes, runs):
        one = ds.isel(image=image)
        for ax, (what, values) in zip(row, (("image", one["x"]), ("attacked", one["x_adv"]),
                                            ("map", np.abs(one["map"])), ("attacked map", np.abs(one["map_adv"])))):
            v = np.asarray(values)
            if v.ndim == 3:
                v = v[0] if v.shape[0] == 1 else np.transpose(v, (1, 2, 0))
            ax.imshow(v, cmap="gray" if what in ("image", "attacked") else "hot",
                      vmin=0, vmax=1 if what in ("image", "attacked") else max(float(v.max()), 1e-12))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(what, fontsize=8)
        row[0].set_ylabel(f"{ds.attrs.get('model')} S={ds.attrs.get('n_draws')}", fontsize=8)
        row[3].set_title(f"top-k {float(one['topk_intersection']):.2f}, τ {float(one['kendall_tau']):.2f}",
                         fontsize=8)
    fig.suptitle(f"{runs[0].attrs.get('attack')} on {runs[0].attrs.get('method')} maps, image "
                 f"{int(runs[0]['image'][image])}", fontsize=9)
    return fig
