"""``python -m bayesrobust.plot``: draw the paper's figures from stored results, as PNG and PDF.

Reads the analyses under ``OUT/analysis/`` (written by ``python -m bayesrobust.analyze``), the attack and
explanation results each analysis records, and the robust-accuracy tables under ``OUT``; writes
``OUT/figures/ANALYSIS_FIG.png`` and ``.pdf`` (``robustness_table_FOLDER`` for the tables). Without
``--figure`` it draws every figure the stored results allow and says which it skipped and why; a figure
named with ``--figure`` that cannot be drawn is an error.

Example::

    python -m bayesrobust.plot --out results --figure fig4 --figure fig5
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from . import options

FIGURE_NAMES = ("fig1", "fig3", "fig4", "fig5", "fig6", "robustness_table")
FORMATS = ("png", "pdf")


def save_figure(fig: Any, stem: Path, formats: Sequence[str] = FORMATS, dpi: int = 200) -> list[Path]:
    """Write ``fig`` to ``STEM.FORMAT`` for each format, each through a temporary file and a rename."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(name, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=0.04)
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        written.append(path)
    return written


def _analysis_figures(out: Path, ds: Any, names: Sequence[str], options: dict) -> dict[str, Callable[[], Any]]:
    """Builders (name → no-argument function) of the figures of one analysis."""
    from .. import figures, results
    topk = options["topk"] if options["topk"] is not None else float(ds.attrs.get("topk", 20))
    det = str(ds.attrs.get("det", "baseNN"))
    common = {"rule": options["rule"]}

    @functools.cache
    def runs():
        return results.load_runs(out, ds)

    def fig1():
        loaded = runs()
        bay = [m for m in ds.model.values.tolist() if str(ds.role.sel(model=m).item()) == "Bay"]
        if not bay:
            raise ValueError("fig1 needs a Bayesian model in the analysis")
        best = max(bay, key=lambda m: int(ds.n_draws.sel(model=m)))
        return figures.fig1(loaded[det], loaded[best], layer=options["layer"], topk=topk, **common)

    def fig3():
        loaded = runs()
        model = options["model"] or det
        if model not in loaded:
            raise ValueError(f"no model {model!r} in this analysis; expected one of {', '.join(loaded)}")
        return figures.fig3(loaded[model], topk=topk, **common)

    layers = None if options["layer"] is None else [options["layer"]]
    builders = {
        "fig1": fig1, "fig3": fig3,
        "fig4": lambda: figures.fig4(ds, subset=options["subset"], layers=layers, **common),
        "fig5": lambda: figures.fig5(ds, subset=options["subset"], layer=options["layer"]),
        "fig6": lambda: figures.fig6(ds, subset=options["subset"], layers=layers, **common),
    }
    return {n: builders[n] for n in names if n in builders}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@options.out_option
@click.option("--figure", "figures", multiple=True, type=click.Choice(FIGURE_NAMES),
              help="Figure to draw (repeatable; default: all the stored results allow).")
@click.option("--analysis", "analyses", multiple=True,
              help="Analysis name under OUT/analysis (repeatable; default: all).")
@click.option("--preset", default=None, help="Only the analyses and tables of this preset.")
@click.option("--rule", default=None, help="LRP rule of fig1, 3, 4, 6 (default epsilon).")
@click.option("--layer", default=None, help="Layer of fig1 and fig5 (default the last); restricts fig4, fig6.")
@click.option("--subset", type=click.Choice(["all", "successful", "failed"]), default="all", show_default=True,
              help="Images of fig4-6: all, or the successful / failed attacks.")
@click.option("--model", default=None, help="Model of fig3 (default the deterministic one).")
@click.option("--topk", type=float, default=None, help="k of the heatmaps' top-k% (default the analysis's).")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS), default=FORMATS,
              show_default=True, help="File formats (repeatable).")
@click.option("--dpi", type=click.IntRange(min=20), default=200, show_default=True, help="Resolution of PNGs.")
@options.verbose_option
@options.friendly_errors
def main(out, figures, analyses, preset, rule, layer, subset, model, topk, formats, dpi, verbose):
    """Draw the figures of the stored results under OUT into OUT/figures/."""
    options.setup_logging(verbose)
    from .. import figures, paths, results, store
    explicit = bool(figures)
    wanted = list(dict.fromkeys(figures or FIGURE_NAMES))
    options = {"rule": rule, "layer": layer, "subset": subset, "model": model, "topk": topk}
    jobs: list[tuple[str, Callable[[], Any]]] = []

    if set(wanted) - {"robustness_table"}:
        stored = results.find_analyses(out)
        if analyses:
            unknown = [a for a in analyses if a not in stored]
            if unknown:
                raise ValueError(f"no analysis {', '.join(unknown)} under {out / 'analysis'}; stored: "
                                 f"{', '.join(stored) or 'none'}")
            stored = {a: stored[a] for a in analyses}
        opened = {name: store.open_result(path, "analysis") for name, path in stored.items()}
        if preset is not None:
            opened = {n: ds for n, ds in opened.items() if ds.attrs.get("preset") == preset}
        if not opened and (explicit or "robustness_table" not in wanted or not results.find_tables(out, preset)):
            raise FileNotFoundError(f"no analysis{f' of preset {preset}' if preset else ''} under "
                                    f"{out / 'analysis'}; run `python -m bayesrobust.analyze --out {out}` first")
        for name, ds in opened.items():
            jobs += [(f"{name}_{fig}", build) for fig, build in _analysis_figures(out, ds, wanted, options).items()]

    if "robustness_table" in wanted:
        groups: dict[str, dict] = {}
        for path, ds in results.find_tables(out, preset).items():
            groups.setdefault(path.parent.name, {})[figures.table_name(ds, path.stem)] = ds
        if not groups and explicit:
            raise FileNotFoundError(f"no robust-accuracy table (a result of kind robustness_table) under {out}; "
                                    "compute one with the attack command's table option first")
        for group, tables in groups.items():
            jobs.append((f"robustness_table_{group}", lambda tables=tables: figures.robustness_table(tables)))

    written, skipped = [], []
    for stem, build in jobs:
        try:
            fig = build()
        except (ValueError, FileNotFoundError) as err:
            if explicit:
                raise ValueError(f"{stem}: {err}") from err
            skipped.append(f"{stem} ({err})")
            continue
        written += save_figure(fig, paths.figures_dir(out) / stem, formats, dpi)
    for path in written:
        click.echo(f"wrote {path}")
    for note in skipped:
        click.echo(f"skipped {note}")
    if not written:
        raise ValueError("no figure could be drawn from the stored results")


if __name__ == "__main__":
    main()
