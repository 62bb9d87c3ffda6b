"""``bayesrobust plot`` (also ``python -m bayesrobust.plot``): draw the paper's figures from stored results,
as PNG and PDF.

Reads the analyses under ``OUT/analysis/`` (written by ``bayesrobust analyze``), the attack and explanation
results each analysis records, and the robust-accuracy tables under ``OUT``; writes
``OUT/figures/ANALYSIS_FIG.png`` and ``.pdf`` (``robustness_table_FOLDER`` for the tables). Without
``--figure`` it draws every figure the stored results allow and says which it skipped and why; a figure
named with ``--figure`` that cannot be drawn is an error.

Example::

    python -m bayesrobust.plot --figure fig4 --figure fig5
"""

from __future__ import annotations

import click

from .. import stages
from ..choices import Subset
from . import options


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@options.out_option
@click.option("--figure", "figure_names", multiple=True, type=click.Choice(stages.FIGURE_NAMES),
              help="Figure to draw (repeatable; default: all the stored results allow).")
@click.option("--analysis", "analyses", multiple=True,
              help="Analysis name under OUT/analysis (repeatable; default: all).")
@click.option("--preset", default=None, help="Only the analyses and tables of this preset (default: every preset's).")
@click.option("--rule", default=None, help="LRP rule of fig1, 3, 4, 6 (default epsilon).")
@click.option("--layer", default=None, help="Layer of fig1 and fig5 (default the last); restricts fig4, fig6.")
@click.option("--subset", type=click.Choice(Subset.values()), default="all", show_default=True,
              help="Images of fig4-6: all, or the successful / failed attacks.")
@click.option("--model", default=None, help="Model of fig3 (default the deterministic one).")
@click.option("--topk", type=float, default=None, help="k of the heatmaps' top-k% (default the analysis's).")
@click.option("--format", "formats", multiple=True, type=click.Choice(stages.FORMATS), default=stages.FORMATS,
              show_default=True, help="File formats (repeatable).")
@click.option("--dpi", type=click.IntRange(min=20), default=200, show_default=True, help="Resolution of PNGs.")
@options.verbose_option
@options.friendly_errors
def main(out, figure_names, analyses, preset, rule, layer, subset, model, topk, formats, dpi, verbose):
    """Draw the figures of the stored results under OUT into OUT/figures/."""
    options.setup_logging(verbose)
    done = stages.plot(out, figures=figure_names, analyses=analyses, preset=preset, rule=rule, layer=layer,
                       subset=subset, model=model, topk=topk, formats=formats, dpi=dpi)
    click.echo(done.summary)
