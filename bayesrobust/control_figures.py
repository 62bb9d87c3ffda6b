"""The figures of the controls (docs/method.md §9.8), drawn from an analysis Dataset with control variables.

- :func:`controls_figure`: per rule, the median paired difference (model − Det) with its paired bootstrap 95%
  CI under the model's own attack, under the cross attack (both models on Det's x̃, both on the model's x̃)
  and under the random-sign perturbation; one colour per comparison.
- :func:`perturbation_figure`: per rule, LRP robustness against ‖x̃ − x‖₂ per model (filled: the model's own
  attack; hollow: the random-sign perturbation of the same norm).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .figures import _pick, layer_label, ordered_rules, rule_label

#: The conditions of the controls figure: (label, variable stem, selection).
CONDITIONS = (("own attack", "diff", {"subset": "all"}),
              ("cross: on Det's x̃", "cross_diff", {"attacked_by": "reference"}),
              ("cross: on model's x̃", "cross_diff", {"attacked_by": "compared"}),
              ("random sign, same ‖δ‖₂", "random_diff", {}))


def _last(ds: xr.Dataset, layer: Any) -> Any:
    """``layer`` (index, label or module name) as a coordinate value; default the last layer."""
    return _pick(ds, "layer", layer, "last")


def control_rows(ds: xr.Dataset, layer: Any = None) -> list[tuple[str, str, dict[Any, tuple[float, float, float]]]]:
    """``(comparison, condition, {rule: (median, low, high)})`` for every comparison and condition the
    analysis holds, at ``layer`` (default the last)."""
    layer = _last(ds, layer)
    rows = []
    for comparison in ds.comparison.values.tolist():
        for label, stem, sel in CONDITIONS:
            if f"{stem}_median" not in ds:
                continue
            at = {"comparison": comparison, "layer": layer, **sel}
            values = {r: tuple(float(ds[f"{stem}_{p}"].sel(at).sel(rule=r))
                               for p in ("median", "ci_low", "ci_high")) for r in ds.rule.values.tolist()}
            rows.append((comparison, label, values))
    return rows


def controls_figure(ds: xr.Dataset, *, layer: Any = None) -> Figure:
    """Median paired difference of LRP robustness (model − Det) with its 95% CI under the own attack, the cross
    attack and the random-sign perturbation; a panel per rule at ``layer`` (default the last).

    Raises
    ------
    ValueError
        The analysis holds no comparison or no control (run the pipeline with ``--controls``).
    """
    if not ds.sizes.get("comparison", 0):
        raise ValueError("the controls figure needs a comparison (a model besides baseNN)")
    if "cross_diff_median" not in ds and "random_diff_median" not in ds:
        raise ValueError("no controls in this analysis; run the pipeline with --controls cross,random")
    layer = _last(ds, layer)
    rules = ordered_rules(ds.rule.values.tolist())
    rows = control_rows(ds, layer)
    conditions = list(dict.fromkeys(label for _, label, _ in rows))
    comparisons = ds.comparison.values.tolist()
    fig = Figure(figsize=(1.6 + 2.8 * len(rules), 3.4), layout="constrained")
    axes = fig.subplots(1, len(rules), squeeze=False, sharey=True)[0]
    colours = [f"C{i}" for i in range(len(comparisons))]
    width = 0.8 / max(1, len(comparisons))
    for ax, rule in zip(axes, rules):
        for comparison, label, values in rows:
            c = comparisons.index(comparison)
            x = conditions.index(label) - 0.4 + width * (c + 0.5)
            median, low, high = values[rule]
            err = [[median - low], [high - median]] if np.isfinite(low) and np.isfinite(high) else None
            ax.errorbar([x], [median], yerr=err, fmt="o", color=colours[c], capsize=3,
                        label=comparison if (ax is axes[0] and label == conditions[0]) else None)
        ax.axhline(0, color="0.5", lw=0.8, ls="--")
        ax.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{rule_label(rule)}, {layer_label(ds, layer)}", fontsize=9)
    axes[0].set_ylabel("median Δ LRP robustness (model − Det)\n[paired bootstrap 95% CI]", fontsize=8)
    axes[0].legend(fontsize=7, loc="best")
    return fig


def perturbation_figure(ds: xr.Dataset, *, layer: Any = None) -> Figure:
    """LRP robustness against the perturbation norm ‖x̃ − x‖₂ per model (filled), and — when stored — against
    the achieved norm of the random-sign perturbation (hollow); a panel per rule at ``layer``."""
    if "perturbation_l2" not in ds:
        raise ValueError("no perturbation_l2 in this analysis (written by an older version: re-run analyze)")
    layer = _last(ds, layer)
    rules = ordered_rules(ds.rule.values.tolist())
    fig = Figure(figsize=(1.2 + 3.0 * len(rules), 3.2), layout="constrained")
    axes = fig.subplots(1, len(rules), squeeze=False, sharey=True)[0]
    for ax, rule in zip(axes, rules):
        for i, model in enumerate(ds.model.values.tolist()):
            at = {"model": model, "rule": rule, "layer": layer}
            ax.scatter(ds.perturbation_l2.sel(model=model), ds.lrp_robustness.sel(at), s=10, color=f"C{i}",
                       alpha=0.7, label=f"{model}: own attack")
            if "random_lrp_robustness" in ds and np.isfinite(ds.random_lrp_robustness.sel(at)).any():
                ax.scatter(ds.random_l2.sel(model=model), ds.random_lrp_robustness.sel(at), s=12,
                           facecolors="none", edgecolors=f"C{i}", alpha=0.7, label=f"{model}: random sign")
        ax.set_xlabel("‖x̃ − x‖₂", fontsize=8)
        ax.set_title(f"{rule_label(rule)}, {layer_label(ds, layer)}", fontsize=9)
    axes[0].set_ylabel("LRP robustness", fontsize=8)
    axes[0].legend(fontsize=6, loc="best")
    return fig
