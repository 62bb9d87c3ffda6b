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
import xarray as xr

from .. import stages
from ..choices import AttackName, Norm, PosteriorMode
from . import options


def _frame(da: xr.DataArray, row: str, fmt: str = ".3f") -> str:
    """``da`` (row, rule, layer) as a text table: a line per (row, layer), a column per rule."""
    import pandas as pd

    from ..figures import layer_label, ordered_rules, rule_label
    da = da.transpose(row, "layer", "rule").sel(rule=ordered_rules(da.rule.values.tolist()))
    index = pd.MultiIndex.from_tuples([(str(r), layer_label(da, v)) for r in da[row].values
                                       for v in da.layer.values], names=[row, "layer"])
    df = pd.DataFrame(da.values.reshape(-1, da.sizes["rule"]), index=index,
                      columns=[rule_label(r) for r in da.rule.values])
    return df.to_string(float_format=lambda v: format(v, fmt), na_rep="nan")


def summary(ds: xr.Dataset) -> str:
    """The printed summary of an analysis Dataset (subset: all images)."""
    outcome = [f"{m}: {int(ds.success.sel(model=m).sum())} successful, {int(ds.failed.sel(model=m).sum())} failed"
               for m in ds.model.values.tolist()]
    parts = [f"{ds.sizes['image']} images, top {float(ds.attrs.get('topk', 20)):g}%; attacks: " + "; ".join(outcome),
             "\nMedian LRP robustness", _frame(ds.lrp_robustness.median("image"), "model")]
    if ds.sizes["comparison"]:
        parts += ["\nMedian paired difference (model - Det)",
                  _frame(ds.lrp_robustness_diff.median("image"), "comparison"),
                  "\nMann-Whitney p (one-sided, H1: Det less robust)",
                  _frame(ds.mannwhitney_p.sel(subset="all", drop=True), "comparison", ".2g")]
    parts += ["\nSpearman rho (LRP robustness, softmax robustness)",
              _frame(ds.spearman_rho.sel(subset="all", drop=True), "model")]
    return "\n".join(parts)


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
@click.option("--method", default=None, help="Explanation method (the explanations' 'method' attribute).")
@click.option("--name", default=None, help="File name of the analysis (default PRESET_ATTACK_NORM_epsE_topK).")
@options.verbose_option
@options.friendly_errors
def main(out, preset, topk, attack, norm, epsilon, mode, method, name, verbose):
    """Analyse the explained attack runs of one preset under OUT and write OUT/analysis/NAME.nc."""
    options.setup_logging(verbose)
    done = stages.analyze(out, preset, topk=topk, attack=attack, norm=norm, epsilon=epsilon, mode=mode,
                          method=method, name=name)
    click.echo(summary(done.details["dataset"]))
    click.echo(f"\n{done.summary}")
