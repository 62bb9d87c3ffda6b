"""``bayesrobust analyze`` (also ``python -m bayesrobust.analyze``): the stability analysis of a preset's
stored attacks and explanations.

Finds the explained attack runs of a preset under ``OUT`` (by the Datasets' attributes:
:func:`bayesrobust.results.find_runs`), builds the analysis (:func:`bayesrobust.stability.analyse`), writes it
to ``OUT/analysis/NAME.nc`` and prints a short summary: median LRP robustness per model, layer and rule,
the median paired differences, the one-sided Mann–Whitney p-values and Spearman ρ (all images).

Example::

    python -m bayesrobust.analyze --attack fgsm --topk 20
"""

from __future__ import annotations

import click

from .. import stages
from ..choices import AttackLoss, AttackName, Norm, PosteriorMode
from . import options


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@options.out_option
@options.preset_option
@click.option("--topk", type=float, default=20, show_default=True, help="k of the top-k% selection.")
@click.option("--attack", type=click.Choice(AttackName.values()), default=None,
              help="Attack to analyse (needed when the runs were attacked in several ways).")
@click.option("--norm", type=click.Choice(Norm.values()), default=None, help="Attack norm.")
@click.option("--epsilon", type=float, default=None, help="Attack radius.")
@click.option("--mode", type=click.Choice(PosteriorMode.values()), default=None,
              help="Posterior-averaging mode of the Bayesian attacks.")
@click.option("--loss", type=click.Choice(AttackLoss.values()), default=None,
              help="The loss the attacks increased (ce or margin; needed when runs of both are explained).")
@click.option("--method", default=None, help="Explanation method (the explanations' 'method' attribute).")
@click.option("--name", default=None, help="File name of the analysis (default PRESET_ATTACK_NORM_epsE_topK).")
@options.verbose_option
@options.friendly_errors
def main(out, preset, topk, attack, norm, epsilon, mode, loss, method, name, verbose):
    """Analyse the explained attack runs of one preset under OUT and write OUT/analysis/NAME.nc."""
    options.setup_logging(verbose)
    done = stages.analyze(out, preset, topk=topk, attack=attack, norm=norm, epsilon=epsilon, mode=mode,
                          method=method, name=name, loss=loss)
    click.echo(done.summary)
