"""``bayesrobust report`` (also ``python -m bayesrobust.report``): one self-contained HTML page and a Markdown
file with every analysis (median differences with confidence intervals), every figure and the provenance of
every result under OUT (:mod:`bayesrobust.results_report`).

Example::

    bayesrobust report --out results          # results/report.html and results/report.md
    bayesrobust report --out results/ladder --to docs/results --command "bash shell/exec_fidelity_ladder.sh"

Results kept in several folders are reported together from a folder of links to them (symlinked folders are
followed)::

    mkdir both && ln -s "$PWD/run1/4_correct" both/run1 && ln -s "$PWD/run2/4_correct" both/run2
    bayesrobust report --out both

A sweep (one run per step size, seed, ...) reported against the setting it varies::

    bayesrobust report --out sweep --against preset.base.lr
"""

from __future__ import annotations

from pathlib import Path

import click

from . import options


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@options.out_option
@click.option("--title", default="bayesrobust report", show_default=True, help="Title of the report.")
@click.option("--to", "to", type=click.Path(file_okay=False), default=None,
              help="Also publish the report to this folder (report.md, figures/, numbers.csv; e.g. docs/results).")
@click.option("--command", default=None, help="With --to: the command that produced the results, stated on top.")
@click.option("--against", "against", multiple=True, metavar="KEY",
              help="Draw Bay − Det against this setting of the compared models, read from each analysis "
                   "(dotted, e.g. preset.base.lr, seed, preset.prior_scale, epsilon; training.lr: the step size of "
                   "whichever optimiser or sampler trained it), instead of one point per "
                   "analysis; repeatable.")
@click.option("--publish-figures", type=click.Choice(["all", "report"]), default="all", show_default=True,
              help="With --to: publish every figure, or only those the report draws (the differences or --against "
                   "figures), leaving each run's figures in OUT/report.html.")
@options.verbose_option
@options.friendly_errors
def main(out, title, to, command, against, publish_figures, verbose):
    """Write OUT/report.html (figures embedded) and OUT/report.md from every result under OUT."""
    from ..paths import resolve_out
    from ..results_report import REPORT_MD, write_report
    options.setup_logging(verbose)
    if command is not None and to is None:
        raise click.UsageError("--command is written into a published report: give --to as well")
    if publish_figures != "all" and to is None:
        raise click.UsageError("--publish-figures chooses what --to publishes: give --to as well")
    html_path, md_path = write_report(resolve_out(out), title=title, publish_to=to, command=command or "",
                                   against=against, publish_figures=publish_figures)
    click.echo(f"report written to {html_path} and {md_path}")
    if to is not None:
        click.echo(f"published to {Path(to) / REPORT_MD}")
