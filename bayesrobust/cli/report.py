"""``bayesrobust report`` (also ``python -m bayesrobust.report``): one self-contained HTML page and a Markdown
file with every analysis (median differences with confidence intervals), every figure and the provenance of
every result under OUT (:mod:`bayesrobust.results_report`).

Example::

    bayesrobust report --out results          # results/report.html and results/report.md
"""

from __future__ import annotations

import click

from . import options


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@options.out_option
@click.option("--title", default="bayesrobust report", show_default=True, help="Title of the report.")
@options.verbose_option
@options.friendly_errors
def main(out, title, verbose):
    """Write OUT/report.html (figures embedded) and OUT/report.md from every result under OUT."""
    from ..paths import resolve_out
    from ..results_report import write_report
    options.setup_logging(verbose)
    html_path, md_path = write_report(resolve_out(out), title=title)
    click.echo(f"report written to {html_path} and {md_path}")
