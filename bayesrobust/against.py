"""Bay − Det against a setting that differs between analyses: a step size, a seed, a prior scale, ε.

A sweep is a folder of analyses (one run per value, e.g. a folder of links to their step folders, as
``bayesrobust report`` takes them). Each comparison's value of the setting is read from the analysis itself:
the compared model's ``config.json`` as recorded in the analysis (``preset.base.lr``, ``seed``,
``preset.prior_scale``, ``test_accuracy``, ...), else its attack's settings (``epsilon``, ``n_draws``,
``posterior_mode``). A dotted key walks nested settings. ``training.KEY`` reads ``KEY`` from the preset section
the compared model trained with (:data:`~bayesrobust.presets.TRAINING_SECTION`): ``training.lr`` is
``preset.sgmcmc.lr`` for an SGHMC posterior and ``preset.base.lr`` for a deep ensemble's members, so a sampler's
step sizes and a deterministic net's share one axis.

- :func:`against_rows`: one row per (analysis, comparison, rule) with the value, the attack, the median paired
  difference at the last layer with its paired bootstrap 95% CI under the own attack, and under the cross attack
  on Det's x̃ where the analysis has the controls (docs/method.md §9.8).
- :func:`against_figure`: those rows drawn against the value, a panel per rule; a line joins the medians over
  the analyses (seeds) that share a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from .control_figures import control_rows
from .figures import ordered_rules, rule_label
from .presets import TRAINING_SECTION, training_route
from .results import attack_loss

#: The conditions of :func:`against_rows` (labels of :data:`control_figures.CONDITIONS`) and their column stems.
CONDITIONS = {"own attack": "own", "cross: on Det's x̃": "on_det"}
#: The prefix of the settings read from the section of the preset the compared model trained with.
TRAINING = "training."
_MISSING = object()


def _lookup(settings: Mapping[str, Any], key: str) -> Any:
    """``settings[a][b]`` for ``key = "a.b"``; :data:`_MISSING` where a part is absent."""
    value: Any = settings
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _runs(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """The analysed runs recorded in the analysis' ``config`` attribute (:func:`results.describe`), by their
    ``model`` coordinate (``fullBNN_S100``)."""
    config = json.loads(ds.attrs.get("config", "{}"))
    return {run["model"]: run for run in config.get("runs", []) if "model" in run}


def _compared_attack(ds: xr.Dataset, runs: Mapping[str, dict[str, Any]], comparison: str) -> dict[str, Any]:
    """The attack settings (with its ``model_config``) of ``comparison``'s compared model, from :func:`_runs`."""
    return runs.get(str(ds.compared.sel(comparison=comparison).values), {}).get("attack", {})


def _inference(config: Mapping[str, Any]) -> str:
    """How a recorded model config trained: its fullBNN inference, or its route (``base``, ``adv``, ``svi``)."""
    preset = config.get("preset", {})
    return str(training_route(str(config.get("model", "")), config.get("inference") or preset.get("inference"))
               or "")


def _training(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The section of a recorded model config's preset that it trained with (:data:`TRAINING`); {} if unknown."""
    section = TRAINING_SECTION.get(_inference(config))
    return config.get("preset", {}).get(section, {}) if section else {}


def _setting(attack: Mapping[str, Any], key: str) -> Any:
    """``key`` in the model config of an attack's settings (a ``training.`` key in its training section), else
    in the settings themselves, else _MISSING."""
    config = attack.get("model_config", {})
    value = _lookup(config, key)
    if value is _MISSING and key.startswith(TRAINING):
        value = _lookup(_training(config), key.removeprefix(TRAINING))
    return _lookup(attack, key) if value is _MISSING else value


def setting_value(ds: xr.Dataset, comparison: str, key: str) -> Any:
    """The compared model's value of ``key`` in ``comparison`` of the analysis ``ds``: from its model config,
    else its attack's settings; :data:`_MISSING` if neither holds it."""
    return _setting(_compared_attack(ds, _runs(ds), comparison), key)


def attack_label(ds: xr.Dataset) -> str:
    """The analysis' attack as a short label (``fgsm linf 0.2``, the loss when not the cross-entropy, top-k when
    not 20%)."""
    a = ds.attrs
    label = " ".join(f"{float(a[k]):g}" if k == "epsilon" else str(a[k]) for k in ("attack", "norm", "epsilon")
                     if k in a)
    loss = attack_loss(a)
    topk = float(a.get("topk", 20))
    return label + (f" {loss}" if loss != "ce" else "") + (f" top{topk:g}" if topk != 20 else "")


def _keys(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of ``settings`` that leads to a value (not to a nested mapping)."""
    keys = []
    for name, value in settings.items():
        keys += _keys(value, f"{prefix}{name}.") if isinstance(value, Mapping) else [f"{prefix}{name}"]
    return keys


def available_keys(ds: xr.Dataset) -> list[str]:
    """The keys :func:`setting_value` can read from the analysis' compared models, sorted."""
    keys: set[str] = set()
    runs = _runs(ds)
    for comparison in ds.comparison.values.tolist():
        attack = dict(_compared_attack(ds, runs, comparison))
        config = attack.pop("model_config", {})
        keys.update(_keys(config) + _keys(attack) + _keys(_training(config), TRAINING))
    return sorted(keys)


def _describe(ds: xr.Dataset, comparison: str, attack: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """A comparison's columns of :func:`against_rows` besides the numbers; None if it does not record ``key``."""
    value = _setting(attack, key)
    if value is _MISSING:
        return None
    if isinstance(value, Mapping):
        raise ValueError(f"the setting {key!r} is a group ({', '.join(sorted(value))}); "
                         f"name one of them, e.g. {key}.{next(iter(sorted(value)), '')}")
    if isinstance(value, list):  # e.g. milestones: a label, not a number
        value = json.dumps(value)
    compared, reference = (str(ds[c].sel(comparison=comparison).values) for c in ("compared", "reference"))
    accuracy = _setting(attack, "test_accuracy")
    return {"preset": str(ds.attrs.get("preset", "")), "comparison": comparison,
            "inference": _inference(attack.get("model_config", {})), "attack": attack_label(ds), "value": value,
            "test_accuracy": np.nan if accuracy is _MISSING else float(accuracy),
            "success": float(ds.success.sel(model=compared).mean()),
            "success_det": float(ds.success.sel(model=reference).mean())}


def against_rows(analyses: Mapping[str, xr.Dataset], key: str) -> pd.DataFrame:
    """One row per (analysis, comparison, rule) whose compared model records ``key``: columns ``analysis``,
    ``preset``, ``comparison``, ``inference`` (how the compared model trained: ``sghmc``, ``ensemble``, ...; ""
    where not recorded), ``attack`` (:func:`attack_label`), ``value``, ``rule``, ``test_accuracy`` (the
    compared model's, NaN if not recorded), ``success`` and ``success_det`` (the attack's success rate against the
    compared model and against Det: a larger difference under a weaker attack is no steadier explanation),
    ``own_median``, ``own_ci_low``, ``own_ci_high`` and, where the analysis has the cross-attack control,
    ``on_det_median`` / ``on_det_ci_low`` / ``on_det_ci_high`` (the last layer).

    Raises
    ------
    ValueError
        No analysis with a comparison records ``key`` (the message lists the keys that exist), or ``key``
        leads to nested settings rather than a value.
    """
    rows = []
    for name, ds in analyses.items():
        if "diff_median" not in ds or not ds.sizes.get("comparison", 0):
            continue
        runs = _runs(ds)
        described = {}  # comparison -> its value and context, or None where it does not record the setting
        for comparison, condition, values in control_rows(ds):
            if condition not in CONDITIONS:
                continue
            if comparison not in described:
                described[comparison] = _describe(ds, comparison, _compared_attack(ds, runs, comparison), key)
            if described[comparison] is None:
                continue
            stem = CONDITIONS[condition]
            for rule, (median, low, high) in values.items():
                rows.append({"analysis": name, **described[comparison], "rule": rule,
                             f"{stem}_median": median, f"{stem}_ci_low": low, f"{stem}_ci_high": high})
    if not rows:
        known = sorted({k for ds in analyses.values() if ds.sizes.get("comparison", 0) for k in available_keys(ds)})
        raise ValueError(f"no analysis records the setting {key!r} for a compared model; known settings: "
                         f"{', '.join(known) or 'none (no analysis has a comparison with recorded settings)'}")
    frame = pd.DataFrame(rows)
    index = ["analysis", "preset", "comparison", "inference", "attack", "value", "rule", "test_accuracy", "success",
             "success_det"]
    return frame.groupby(index, sort=False, dropna=False).first().reset_index()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _numeric(values: pd.Series) -> bool:
    return all(map(_is_number, values))


def series_names(rows: pd.DataFrame) -> pd.Series:
    """The series each row of :func:`against_rows` belongs to: its comparison, with its preset, the compared
    model's inference and its attack where the rows hold several (a folder of both fc2 presets' runs, of SGHMC
    chains and deterministic nets in the fullBNN's place, a run's FGSM and PGD analyses)."""
    names = rows["comparison"]
    if rows["preset"].nunique() > 1:
        names = rows["preset"] + ", " + names
    if rows["inference"].nunique() > 1:
        names = names + " (" + rows["inference"] + ")"
    return names + ", " + rows["attack"] if rows["attack"].nunique() > 1 else names


def against_figure(rows: pd.DataFrame, key: str) -> Figure:
    """:func:`against_rows` drawn against the setting: a panel per rule, a colour per comparison; filled points
    with their 95% CI under the own attack, hollow ones (no bar) for both models on Det's x̃; a line through the
    median over the analyses that share a value. Analyses of different presets or attacks are separate series
    (:func:`series_names`). A numeric setting spanning a factor of ten or more gets a log axis; other settings are
    spread evenly in sorted order."""
    import matplotlib.pyplot as plt

    numeric = _numeric(rows["value"])
    values = sorted(rows["value"].unique(), key=lambda v: (v if numeric else str(v)))
    logx = numeric and min(values) > 0 and max(values) >= 10 * min(values)
    position = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    span = float(np.ptp(list(position.values()))) or 1.0  # offsets of a linear axis scale with its range
    rules = ordered_rules(rows["rule"].unique().tolist())
    series = series_names(rows)
    names = list(dict.fromkeys(series))
    fig, axes = plt.subplots(1, len(rules), figsize=(3.4 * len(rules), 3.4), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, rule in zip(axes[0], rules):
        for c, name in enumerate(names):
            at = rows[(rows["rule"] == rule) & (series == name)]
            colour = f"C{c}"
            # the analyses sharing a value side by side: a small offset (multiplicative on a log axis)
            rank = at.groupby("value", sort=False).cumcount().to_numpy()
            count = at.groupby("value", sort=False)["analysis"].transform("size").to_numpy()
            shift = (rank - (count - 1) / 2) * 0.04
            x = np.array([position[v] for v in at["value"]])
            x = x * np.exp(shift) if logx else x + shift * span
            med, lo, hi = (at[f"own_{p}"].to_numpy(float) for p in ("median", "ci_low", "ci_high"))
            ax.errorbar(x, med, yerr=[med - lo, hi - med], fmt="o", color=colour, ms=4, capsize=2, lw=0.8,
                        label=f"{name}, own attack")
            typical = at.groupby("value", sort=False)["own_median"].median()
            order = sorted(typical.index, key=lambda v: position[v])
            ax.plot([position[v] for v in order], typical[order].to_numpy(), "-", color=colour, lw=1, gid="median")
            if "on_det_median" in at and at["on_det_median"].notna().any():
                ax.plot(x, at["on_det_median"].to_numpy(float), "o", mfc="none", color=colour, ms=4,
                        label=f"{name}, both on Det's x̃")
        ax.axhline(0, color="0.5", lw=0.8)
        if logx:
            ax.set_xscale("log")
            ax.set_xticks([float(v) for v in values], [f"{v:g}" for v in values])
            ax.minorticks_off()
        elif not numeric:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlabel(key)
        ax.set_title(rule_label(rule))
    axes[0][0].set_ylabel("Bay − Det, last layer\n(median, 95% CI)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    columns = min(4 if max(map(len, labels)) < 40 else 2, len(labels))  # long series names: a narrower legend
    fig.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize=7, frameon=False)
    return fig


def against_table(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """:func:`against_rows` as a table to print: a row per (analysis, series) with the value, the compared
    model's test accuracy, the attack's success (model / Det), a ``median [low, high]`` cell per rule under the
    own attack and, where there, the medians on Det's x̃; sorted by series, then value."""
    from .stages import format_ci
    rules = ordered_rules(rows["rule"].unique().tolist())
    table = []
    for (analysis, series, value), at in rows.assign(series=series_names(rows)).groupby(
            ["analysis", "series", "value"], sort=False):
        at = at.set_index("rule")
        first = at.iloc[0]
        context = {"test acc.": "" if np.isnan(first.test_accuracy) else f"{first.test_accuracy:.2%}",
                   "success (model / Det)": f"{first.success:.2f} / {first.success_det:.2f}"}
        cells = {rule_label(r): format_ci(*(float(at.loc[r, f"own_{p}"]) for p in ("median", "ci_low", "ci_high")))
                 for r in rules if r in at.index}
        if "on_det_median" in at and at["on_det_median"].notna().any():
            cells["both on Det's x̃"] = " / ".join(f"{float(at.loc[r, 'on_det_median']):+.3f}"
                                                  for r in rules if r in at.index)
        table.append({"analysis": analysis, "series": series, key: value, **context, **cells})
    frame = pd.DataFrame(table).sort_values(["series", key], kind="stable", key=lambda column: column.map(
        lambda v: (0, v, "") if _is_number(v) else (1, 0, str(v))))
    return frame.set_index(["analysis", "series"]).fillna("")
