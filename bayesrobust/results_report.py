"""The report of a results folder: every analysis with its confidence intervals, every figure and the
provenance of every result, as one self-contained ``report.html`` and a ``report.md`` (docs/method.md §7.8).

:func:`write_report` searches ``OUT`` recursively, following symlinked folders, so a study that keeps each of
its steps in its own results folder under ``OUT`` (the fidelity ladder, docs/method.md §9.7), or a folder of
links to the step folders of several runs, is reported as a whole:

- every analysis Dataset (``**/analysis/*.nc``): the median paired difference of each comparison with its
  paired bootstrap 95% CI per rule and layer, the adjusted Wilcoxon p, and Spearman ρ; with several S, a
  figure of Bay − Det (with CI) against S;
- the *differences figure*: the last layer's median differences with their CIs, one point per analysis
  (in the order of their paths, which is the ladder's order when its steps are named so), a panel per rule;
- with ``against=KEY`` (``bayesrobust report --against KEY``), instead, the same against a setting that differs
  between the analyses, such as a step size or a seed (:mod:`bayesrobust.against`), with a table of its numbers;
- every PNG figure under ``**/figures/``;
- the provenance of every result (models' ``config.json``, netCDF and zarr attributes): kind, creation time,
  git revision, library versions and the full config (a listed model's config printed once, in its row).

``report.html`` embeds its figures (base64 PNG), so it can be mailed or archived alone; ``report.md``
references them by relative path. Both are written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import store

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
#: Folder (under OUT) of the figures the report draws itself.
REPORT_FILES = "report_files"


@dataclass
class Table:
    caption: str
    frame: pd.DataFrame


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def results_under(out: Path) -> list[Path]:
    """Every file and zarr store under ``out``, sorted by path, skipping hidden ones (the atomic writers'
    temporary and replaced results) and dangling links. Symlinked folders are followed, so a folder of links
    to the step folders of several runs is reported as one study; a real folder reached twice is taken at its
    first path in sorted order, so a link cycle ends."""
    found: list[Path] = []
    seen: set[Path] = set()

    def visit(folder: Path) -> None:
        real = folder.resolve()
        if real in seen:
            return
        seen.add(real)
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and entry.suffix != ".zarr":
                visit(entry)
            elif entry.exists():  # a file, a zarr store; not a dangling link
                found.append(entry)

    visit(out)
    return sorted(found)


def find_analyses(out: Path, files: Sequence[Path] | None = None) -> list[Path]:
    """Every stored analysis (``**/analysis/*.nc``) under ``out``, sorted by path; ``files``: what
    :func:`results_under` returned for ``out``, if the caller has it already."""
    files = results_under(out) if files is None else files
    return [p for p in files if p.suffix == ".nc" and p.parent.name == "analysis"]


def _ci_cells(ds: xr.Dataset, comparison: str, layer: Any, rules: Sequence[Any]) -> list[str]:
    from .stages import format_ci
    at = ds.sel(subset="all", comparison=comparison, layer=layer)
    return [format_ci(float(at.diff_median.sel(rule=r)), float(at.diff_ci_low.sel(rule=r)),
                      float(at.diff_ci_high.sel(rule=r))) for r in rules]


def analysis_tables(ds: xr.Dataset) -> list[Table]:
    """The tables of one analysis: median differences [95% CI], adjusted Wilcoxon p, Spearman ρ (all images)."""
    from .figures import layer_label, ordered_rules, rule_label
    rules = ordered_rules(ds.rule.values.tolist())
    columns = [rule_label(r) for r in rules]
    tables = []
    if ds.sizes.get("comparison", 0) and "diff_median" in ds:
        rows, index, prows = [], [], []
        for comparison in ds.comparison.values.tolist():
            for layer in ds.layer.values.tolist():
                index.append((comparison, layer_label(ds, layer)))
                rows.append(_ci_cells(ds, comparison, layer, rules))
                p = ds.wilcoxon_p_adjusted.sel(subset="all", comparison=comparison, layer=layer)
                prows.append([f"{float(p.sel(rule=r)):.2g}" for r in rules])
        names = ["comparison", "layer"]
        tables.append(Table("Median paired difference of LRP robustness (model − Det) [paired bootstrap 95% CI]",
                            pd.DataFrame(rows, pd.MultiIndex.from_tuples(index, names=names), columns)))
        tables.append(Table("Wilcoxon signed-rank p (two-sided, Benjamini–Hochberg adjusted)",
                            pd.DataFrame(prows, pd.MultiIndex.from_tuples(index, names=names), columns)))
    tables += control_tables(ds)
    rows, index = [], []
    for model in ds.model.values.tolist():
        for layer in ds.layer.values.tolist():
            index.append((model, layer_label(ds, layer)))
            rho = ds.spearman_rho.sel(subset="all", model=model, layer=layer)
            rows.append([f"{float(rho.sel(rule=r)):+.2f}" for r in rules])
    tables.append(Table("Spearman ρ (LRP robustness, softmax robustness)",
                        pd.DataFrame(rows, pd.MultiIndex.from_tuples(index, names=["model", "layer"]), columns)))
    return tables


def control_tables(ds: xr.Dataset) -> list[Table]:
    """The controls of an analysis (docs/method.md §9.8), if it has any: median paired difference (model − Det)
    [95% CI] at the last layer under the own attack, the cross attack and the random-sign perturbation, and the
    median ‖x̃ − x‖₂ of each model's own attack with the share of images it left unperturbed (above 1%: a masked
    attack, docs/method.md §4.4)."""
    from .control_figures import control_rows
    from .figures import layer_label, ordered_rules, rule_label
    from .stages import format_ci
    tables = []
    if ds.sizes.get("comparison", 0) and ("cross_diff_median" in ds or "random_diff_median" in ds):
        rules = ordered_rules(ds.rule.values.tolist())
        rows = control_rows(ds)
        index = pd.MultiIndex.from_tuples([(c, label) for c, label, _ in rows], names=["comparison", "condition"])
        cells = [[format_ci(*values[r]) for r in rules] for _, _, values in rows]
        tables.append(Table(f"Controls, {layer_label(ds, ds.layer.values[-1])}: median paired difference of LRP "
                            "robustness (model − Det) [paired bootstrap 95% CI] under the own attack, the cross "
                            "attack and a random-sign perturbation of the same L2 norm",
                            pd.DataFrame(cells, index, [rule_label(r) for r in rules])))
    if "perturbation_l2" in ds:
        models = ds.model.values.tolist()
        columns = {"median ‖x̃ − x‖₂ (own attack)": [float(ds.perturbation_l2.sel(model=m).median()) for m in models],
                   "unperturbed share": [float((ds.perturbation_l2.sel(model=m) == 0).mean()) for m in models]}
        if "random_l2" in ds:
            columns["median achieved ‖δ‖₂ (random sign)"] = [float(ds.random_l2.sel(model=m).median())
                                                            for m in models]
        tables.append(Table("Perturbation size (an unperturbed share above 1%: the attack is masked, its own-attack "
                            "numbers measure unperturbed images; method.md §4.4)",
                            pd.DataFrame(columns, pd.Index(models, name="model")).round(4)))
    return tables


#: Rules drawn in the panel of another rule (the reference's γ beside the textbook γ), with their marker.
PANEL_OF = {"gamma_quadratic": "gamma"}


def analysis_label(relative: str) -> str:
    """An analysis' name in the report: its path under OUT without the ``analysis`` folder
    (``mnist_conv/0_reference/analysis/mnist_conv_fgsm_top20`` → ``mnist_conv/0_reference/mnist_conv_fgsm_top20``),
    as numbers.csv's ``analysis`` column holds it."""
    return relative.replace("/analysis/", "/").removeprefix("analysis/")


def short_labels(names: Sequence[str]) -> list[str]:
    """Tick labels for analysis names like ``PRESET/STEP/ANALYSIS``: the path parts every name shares are left out,
    and of the parts left, the ``_``-separated words they all begin or end with (``mnist_conv_fgsm_top20`` and
    ``mnist_conv_pgd_top20`` become ``fgsm`` and ``pgd``); a single name's last part. The names as they are when
    that would not leave them distinct (or the names have different depths)."""
    split = [name.split("/") for name in names]
    if len(names) == 1:
        return [split[0][-1]]
    if len({len(parts) for parts in split}) != 1:
        return list(names)
    columns = []
    for column in zip(*split):
        if len(set(column)) == 1:
            continue
        words = [part.split("_") for part in column]
        head = 0
        while all(len(w) > head + 1 for w in words) and len({w[head] for w in words}) == 1:
            head += 1
        tail = 0
        while all(len(w) > head + tail + 1 for w in words) and len({w[-1 - tail] for w in words}) == 1:
            tail += 1
        columns.append(["_".join(w[head:len(w) - tail]) for w in words])
    labels = [" · ".join(parts) for parts in zip(*columns)] if columns else list(names)
    return labels if len(set(labels)) == len(labels) else list(names)


def differences_figure(analyses: dict[str, xr.Dataset]) -> Any:
    """Median paired difference at the last layer with its 95% CI, one x position per analysis, a panel per
    rule and a colour per comparison (the fidelity ladder's figure when the analyses are its steps). The
    reference's quadratic γ shares the γ panel, drawn with hollow squares."""
    import matplotlib.pyplot as plt

    from .figures import ordered_rules, rule_label
    rules = sorted({r for ds in analyses.values() for r in ds.rule.values.tolist()}, key=str)
    panels = ordered_rules(sorted({PANEL_OF.get(r, r) for r in rules}, key=str))
    comparisons = sorted({c for ds in analyses.values() for c in ds.comparison.values.tolist()})
    colours = {c: f"C{i}" for i, c in enumerate(comparisons)}
    names = list(analyses)
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    width = max(4.0, 0.45 * len(names) + 1.5)
    labels = short_labels(names)
    slanted = max(map(len, labels)) > 6
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.6 * nrows), sharey=True, squeeze=False,
                             layout="constrained")
    offsets = np.linspace(-0.25, 0.25, len(comparisons)) if len(comparisons) > 1 else [0.0]
    for ax, panel in zip(axes.flat, panels):
        for rule in [r for r in rules if PANEL_OF.get(r, r) == panel]:
            quadratic = rule != panel
            for offset, comparison in zip(offsets, comparisons):
                xs, med, lo, hi = [], [], [], []
                for i, name in enumerate(names):
                    ds = analyses[name]
                    if comparison not in ds.comparison.values or rule not in ds.rule.values:
                        continue
                    at = ds.sel(subset="all", comparison=comparison, rule=rule, layer=ds.layer.values[-1])
                    xs.append(i + offset)
                    med.append(float(at.diff_median))
                    lo.append(float(at.diff_ci_low))
                    hi.append(float(at.diff_ci_high))
                if not xs:
                    continue
                med_a, lo_a, hi_a = np.array(med), np.array(lo), np.array(hi)
                ax.errorbar(xs, med_a, yerr=[med_a - lo_a, hi_a - med_a], fmt="s" if quadratic else "o",
                            mfc="none" if quadratic else colours[comparison], color=colours[comparison],
                            capsize=3, label=comparison + (f" ({rule})" if quadratic else ""))
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(rule_label(panel))
        ax.set_xticks(range(len(names)), labels, rotation=45 if slanted else 0, ha="right" if slanted else "center",
                      fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("median paired difference\n(last layer, 95% CI)")
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=min(4, len(legend)),
               fontsize=7, frameon=False)
    return fig


def draws_figure(ds: xr.Dataset) -> Any | None:
    """Bay − Det at the last layer with its 95% CI against the number of posterior draws S, a panel per rule
    (``None`` when the analysis has fewer than two Bayesian comparisons)."""
    import matplotlib.pyplot as plt

    from .figures import ordered_rules, rule_label
    bay = [c for c in ds.comparison.values.tolist()
           if str(ds.role.sel(model=str(ds.compared.sel(comparison=c).values)).values) == "Bay"]
    if len(bay) < 2:
        return None
    s = np.array([int(ds.n_draws.sel(model=str(ds.compared.sel(comparison=c).values))) for c in bay])
    rules = ordered_rules(ds.rule.values.tolist())
    fig, axes = plt.subplots(1, len(rules), figsize=(3.2 * len(rules), 3.2), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, rule in zip(axes[0], rules):
        at = ds.sel(subset="all", rule=rule, layer=ds.layer.values[-1], comparison=bay)
        med, lo, hi = at.diff_median.values, at.diff_ci_low.values, at.diff_ci_high.values
        ax.errorbar(s, med, yerr=[med - lo, hi - med], fmt="o-", capsize=3)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(s, [str(v) for v in s])
        ax.set_xlabel("posterior draws S")
        ax.set_title(rule_label(rule))
    axes[0][0].set_ylabel("Bay − Det, last layer\n(median, 95% CI)")
    return fig


#: How a result's config refers to a model config the report lists in the model's own row.
MODEL_CONFIG_REFERENCE = "as in the provenance of "


def _refer_to_models(config: str, models: dict[str, str]) -> str:
    """``config`` (JSON) with every ``model_config`` equal to a listed model's config replaced by
    ``MODEL_CONFIG_REFERENCE + that model's result path``, so each model config is printed once (an analysis
    records one per run, attack and explanation: most of a sweep's report). ``models``: normalised config JSON
    → result path. Not JSON, or nothing to replace: returned unchanged."""
    replaced = 0

    def walk(value: Any) -> Any:
        nonlocal replaced
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        walked = {}
        for k, v in value.items():
            listed = models.get(json.dumps(v, sort_keys=True, default=str)) \
                if k == "model_config" and isinstance(v, dict) else None
            replaced += listed is not None
            walked[k] = MODEL_CONFIG_REFERENCE + listed if listed is not None else walk(v)
        return walked

    try:
        shortened = walk(json.loads(config))
    except ValueError:
        return config
    return json.dumps(shortened, sort_keys=True, default=str) if replaced else config


def _result_provenance(out: Path, files: Sequence[Path]) -> pd.DataFrame:
    """One row per stored result in ``files`` (under ``out``): path, kind, created, git revision, versions,
    config. A model config listed in its model's row is referred to, not repeated, in other results' configs
    (:func:`_refer_to_models`)."""
    rows = []
    for path in files:
        if path.name != "config.json" or path.parent.parent.parent.name != "models":
            continue
        meta = json.loads(path.read_text())
        cfg, stamp = meta.get("config", {}), meta.get("provenance", {})  # no stamp: saved before it was kept
        rows.append({"result": str(path.parent.relative_to(out)), "kind": f"model ({meta.get('kind')})",
                     **{k: str(stamp.get(k, "")) for k in ("created", "git_revision", "versions")},
                     "config": json.dumps(cfg, sort_keys=True, default=str)})
    for path in (p for p in files if p.suffix == ".nc" or (p.suffix == ".zarr" and p.is_dir())):
        try:
            with xr.open_zarr(path) if path.is_dir() else xr.open_dataset(path, engine="h5netcdf") as ds:
                attrs = dict(ds.attrs)
        except Exception as exc:  # noqa: BLE001 - a report lists a damaged file instead of failing on it
            rows.append({"result": str(path.relative_to(out)), "kind": f"unreadable ({type(exc).__name__})",
                         "created": "", "git_revision": "", "versions": "", "config": ""})
            continue
        rows.append({"result": str(path.relative_to(out)), "kind": str(attrs.get("kind", "?")),
                     "created": str(attrs.get("created", "")), "git_revision": str(attrs.get("git_revision", "")),
                     "versions": str(attrs.get("versions", "")), "config": str(attrs.get("config", ""))})
    models = {row["config"]: row["result"] for row in rows if row["kind"].startswith("model (")}
    for row in rows:
        if not row["kind"].startswith("model ("):
            row["config"] = _refer_to_models(row["config"], models)
    return pd.DataFrame(rows, columns=["result", "kind", "created", "git_revision", "versions", "config"])


def against_section(rows: pd.DataFrame, key: str, out: Path) -> Section:
    """The section of :func:`against.against_figure`: the figure and :func:`against.against_table`."""
    import matplotlib.pyplot as plt

    from .against import against_figure, against_table
    from .figures import ordered_rules, rule_label
    from .stages import save_figure
    fig = against_figure(rows, key)
    paths = save_figure(fig, out / REPORT_FILES / f"against_{key.replace('.', '_')}", formats=("png",), dpi=120)
    plt.close(fig)
    rules = ordered_rules(rows["rule"].unique().tolist())
    return Section(f"Bay − Det against {key}",
                   f"Last layer, all images: each analysis' median paired difference under its own attack with the "
                   f"paired bootstrap 95% CI (filled), and with both models explained on Det's x̃ (hollow), "
                   f"against the compared model's {key}; the line joins the medians over analyses that share a "
                   f"value.", [Table(f"Bay − Det against {key} (own attack; both on Det's x̃: "
                                     f"{' / '.join(rule_label(r) for r in rules)})", against_table(rows, key))],
                   paths)


def collect(out: Path, against: Sequence[str] = ()) -> tuple[list[Section], pd.DataFrame]:
    """The report's sections (the differences figure, or with ``against`` one figure per setting in it
    (:mod:`bayesrobust.against`) instead; one per analysis; figures) and its provenance table.

    Raises
    ------
    ValueError
        A setting in ``against`` that no analysis records (before anything is drawn).
    """
    from .against import against_rows
    from .stages import save_figure
    sections = []
    analyses = {}
    files = results_under(out)
    for path in find_analyses(out, files):
        ds = store.open_result(path, "analysis").load()
        name = analysis_label(str(path.relative_to(out).with_suffix("")))
        analyses[name] = ds
    swept = {key: against_rows(analyses, key) for key in against}
    with_ci = {k: v for k, v in analyses.items() if "diff_median" in v and v.sizes.get("comparison", 0)}
    if with_ci and not swept:  # with `against`, the figure against the setting replaces one point per analysis
        import matplotlib.pyplot as plt
        fig = differences_figure(with_ci)
        paths = save_figure(fig, out / REPORT_FILES / "differences", formats=("png",), dpi=120)
        plt.close(fig)
        sections.append(Section("Median paired differences across analyses",
                                "Last layer, all images; each point is one analysis, the bar its paired "
                                "bootstrap 95% confidence interval over images.", figures=paths))
    sections += [against_section(rows, key, out) for key, rows in swept.items()]
    for name, ds in analyses.items():
        figures = []
        if "diff_median" in ds and ds.sizes.get("comparison", 0):
            import matplotlib.pyplot as plt
            fig = draws_figure(ds)
            if fig is not None:
                figures = save_figure(fig, out / REPORT_FILES / f"draws_{name.replace('/', '__')}", formats=("png",),
                                      dpi=120)
                plt.close(fig)
        text = (f"{ds.sizes['image']} images, top {float(ds.attrs.get('topk', 20)):g}%, models "
                f"{', '.join(ds.model.values.tolist())}; git revision {ds.attrs.get('git_revision', '?')}")
        if "diff_median" not in ds:
            text += " (written by a version without confidence intervals: re-run analyze to add them)"
        sections.append(Section(f"Analysis {name}", text, analysis_tables(ds), figures))
    figures = [p for p in files if p.suffix == ".png" and "figures" in p.relative_to(out).parts]
    if figures:
        sections.append(Section("Figures", figures=figures))
    return sections, _result_provenance(out, files)


# -- rendering ---------------------------------------------------------------------------------------------------
def _md_table(frame: pd.DataFrame) -> str:
    flat = frame.reset_index()
    header = "| " + " | ".join(str(c) for c in flat.columns) + " |"
    rule = "|" + "---|" * len(flat.columns)
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in flat.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render_markdown(sections: Sequence[Section], provenance: pd.DataFrame, out: Path, title: str) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        for table in section.tables:
            lines += [f"**{table.caption}**", "", _md_table(table.frame), ""]
        for fig in section.figures:
            rel = fig.relative_to(out).as_posix()
            lines += [f"![{rel}]({rel})", ""]
    lines += ["## Provenance of every result", ""]
    brief = provenance.drop(columns=["config", "versions"])
    lines += [_md_table(brief.set_index("result")), "", "<details><summary>configs and versions</summary>", ""]
    for row in provenance.itertuples(index=False):
        lines += [f"- `{row.result}`: versions `{row.versions}`", "", f"  ```json\n  {row.config}\n  ```", ""]
    lines += ["</details>", ""]
    return "\n".join(lines)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">' \
           f"<figcaption>{html.escape(path.name)}</figcaption></figure>"


def render_html(sections: Sequence[Section], provenance: pd.DataFrame, title: str) -> str:
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:13px;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "img{max-width:100%}code,pre{font-size:11px;white-space:pre-wrap;word-break:break-all}")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        for table in section.tables:
            parts.append(f"<h3>{html.escape(table.caption)}</h3>" + table.frame.to_html(escape=True))
        parts.extend(_img(fig) for fig in section.figures)
    parts.append("<h2>Provenance of every result</h2>")
    parts.append(provenance.drop(columns=["config"]).to_html(index=False, escape=True))
    parts.append("<details><summary>configs</summary>")
    for row in provenance.itertuples(index=False):
        parts.append(f"<h4><code>{html.escape(row.result)}</code></h4><pre>{html.escape(row.config)}</pre>")
    parts.append("</details></body></html>")
    return "\n".join(parts)


def _check_publish_figures(publish_figures: str) -> None:
    if publish_figures not in ("all", "report"):
        raise ValueError(f"publish_figures={publish_figures!r}: expected 'all' or 'report'")


def write_report(out: str | Path, title: str = "bayesrobust report", publish_to: str | Path | None = None,
                 command: str = "", against: Sequence[str] = (), publish_figures: str = "all") -> tuple[Path, Path]:
    """Write ``OUT/report.html`` (self-contained) and ``OUT/report.md``; returns their paths. With
    ``publish_to``, also :func:`publish` the same sections there (their figures drawn once). ``against``:
    settings to draw Bay − Det against (:mod:`bayesrobust.against`, e.g. ``preset.base.lr``).
    ``publish_figures``: see :func:`publish`.

    Raises
    ------
    FileNotFoundError
        ``out`` is not a folder, or holds no analysis (run ``bayesrobust analyze`` first).
    ValueError
        A setting in ``against`` that no analysis records, or a bad ``publish_figures`` (both before anything
        is written).
    """
    out = Path(out)
    _check_publish_figures(publish_figures)
    if not out.is_dir():
        raise FileNotFoundError(f"no results folder at {out}")
    if not find_analyses(out):
        raise FileNotFoundError(f"no analysis under {out} (expected OUT/analysis/*.nc or */analysis/*.nc); "
                                "run `bayesrobust analyze --out OUT` first")
    sections, provenance = contents = collect(out, against)
    html_path = store.write_text_atomic(out / REPORT_HTML, render_html(sections, provenance, title))
    md_path = store.write_text_atomic(out / REPORT_MD, render_markdown(sections, provenance, out, title))
    log.info("report of %d sections written to %s and %s", len(sections), html_path, md_path)
    if publish_to is not None:
        publish(out, publish_to, title=title, command=command, contents=contents,
                publish_figures=publish_figures)
    return html_path, md_path


# -- publishing ---------------------------------------------------------------------------------------------------
NUMBERS_CSV = "numbers.csv"


def numbers(out: Path) -> pd.DataFrame:
    """Every analysis's median paired differences with their CIs and adjusted p-values, one row per
    (analysis, comparison, subset, rule, layer): the small table a results page keeps beside its figures."""
    frames = []
    for path in find_analyses(out):
        with store.open_result(path, "analysis") as ds:
            if "diff_median" not in ds or not ds.sizes.get("comparison", 0):
                continue
            names = ["diff_median", "diff_ci_low", "diff_ci_high", "wilcoxon_p_adjusted", "mannwhitney_p_adjusted"]
            frame = ds[names].to_dataframe().reset_index()
        frame.insert(0, "analysis", str(path.relative_to(out).with_suffix("")))
        frame.insert(1, "n_images", int(ds.sizes["image"]))
        frames.append(frame[["analysis", "n_images", "comparison", "subset", "rule", "layer", *names]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


CONTROLS_CSV = "controls.csv"


def control_numbers(out: Path) -> pd.DataFrame:
    """The controls of every analysis (docs/method.md §9.8): median paired difference (model − Det) with its CI
    under the own attack, the cross attack and the random-sign perturbation, one row per (analysis,
    comparison, condition, rule, layer)."""
    from .control_figures import control_rows
    rows = []
    for path in find_analyses(out):
        with store.open_result(path, "analysis") as ds:
            if not ds.sizes.get("comparison", 0) or not ds.attrs.get("controls"):
                continue
            name = str(path.relative_to(out).with_suffix(""))
            for layer in ds.layer.values.tolist():
                rows += [{"analysis": name, "n_images": int(ds.sizes["image"]), "comparison": comparison,
                          "condition": condition, "rule": rule, "layer": layer, "median": v[0], "ci_low": v[1],
                          "ci_high": v[2]}
                         for comparison, condition, values in control_rows(ds, layer)
                         for rule, v in values.items()]
    return pd.DataFrame(rows)


def compact_png(source: Path, target: Path) -> Path:
    """Write ``source`` (a matplotlib PNG) to ``target`` as a 256-colour palette PNG, flattened on white: the
    same picture to the eye at about a third of the bytes (a published ladder report holds some 35 figures).
    Written atomically (:func:`store.atomic_file`), like every result."""
    from PIL import Image

    with Image.open(source) as image:
        rgba = image.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    with store.atomic_file(target) as tmp:
        flat.quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG", optimize=True)
    return target


def publish(out: str | Path, to: str | Path, title: str = "bayesrobust report", command: str = "",
            contents: tuple[list[Section], pd.DataFrame] | None = None, against: Sequence[str] = (),
            publish_figures: str = "all") -> Path:
    """The report of ``out`` as a folder meant to be committed (e.g. ``docs/results``): ``TO/report.md`` with
    its PNG figures copied under ``TO/figures/`` and ``TO/numbers.csv`` (:func:`numbers`); no arrays. The
    command that produced the results is written at the top, with the git revisions recorded in them.
    ``contents``: what :func:`collect` returned for ``out``, if the caller has it already; else ``against`` is
    passed to it. ``publish_figures``: ``"all"``, or ``"report"`` for only the figures the report draws itself (the
    differences or against figures), leaving each run's own figures in ``OUT/report.html``: a sweep of thirty
    runs has some two hundred of them.

    Raises
    ------
    FileNotFoundError
        ``out`` is not a folder, or holds no analysis.
    """
    import shutil
    _check_publish_figures(publish_figures)
    out, to = Path(out), Path(to)
    if not out.is_dir() or not find_analyses(out):
        raise FileNotFoundError(f"no analysis under {out}; run the study (or `bayesrobust analyze`) first")
    sections, provenance = contents if contents is not None else collect(out, against)
    figures = to / "figures"
    if figures.exists():
        shutil.rmtree(figures)
    figures.mkdir(parents=True)
    copied = []
    for section in sections:
        moved = []
        kept = [f for f in section.figures
                if publish_figures == "all" or f.relative_to(out).parts[0] == REPORT_FILES]
        if section.figures and not kept and not section.tables:
            continue  # the Figures section, when the run figures stay behind
        for fig in kept:
            target = figures / "__".join(fig.relative_to(out).parts)
            compact_png(fig, target)
            moved.append(target)
        copied.append(Section(section.title, section.text, section.tables, moved))
    revisions = sorted({r for r in provenance["git_revision"] if r})
    head = [f"Produced by `{command}`" if command else "Produced by `bayesrobust report`",
            f"from the results in `{out}` (git revision{'s' if len(revisions) > 1 else ''} "
            f"{', '.join(revisions) or 'unknown'}); the numbers of every table are in `{NUMBERS_CSV}`."]
    text = render_markdown(copied, provenance, to, title).replace(f"# {title}\n", f"# {title}\n\n{' '.join(head)}\n",
                                                                   1)
    store.write_text_atomic(to / NUMBERS_CSV, numbers(out).to_csv(index=False, float_format="%.6g"))
    controls = control_numbers(out)
    if not controls.empty:  # the controls tables (docs/method.md §9.8)
        store.write_text_atomic(to / CONTROLS_CSV, controls.to_csv(index=False, float_format="%.6g"))
        text = text.replace(f"are in `{NUMBERS_CSV}`.",
                            f"are in `{NUMBERS_CSV}` (the controls' in `{CONTROLS_CSV}`).", 1)
    return store.write_text_atomic(to / REPORT_MD, text)
