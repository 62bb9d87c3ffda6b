"""``bayesrobust evaluate`` (also ``python -m bayesrobust.evaluate``): uncertainty metrics of trained models side
by side (docs/method.md §13.5).

Example::

    bayesrobust evaluate --preset tiny --data-root ../shared/datasets
    bayesrobust evaluate --preset mnist_fc2 --model baseNN --model fullBNN_sghmc --data-root ../shared/datasets

Accuracy, NLL, Brier score, ECE, predictive entropy, mutual information and the OOD AUROC (MNIST ↔
Fashion-MNIST) of every model trained for the preset (or the ``--model`` tags given), written to
``OUT/evaluation/PRESET/evaluation_*.nc`` with a reliability diagram beside it (``.png``, ``.pdf``); the
table is printed.
"""

from __future__ import annotations

import click

from .. import stages
from ..data import DATASETS
from . import options


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@options.preset_option
@click.option("--model", "models", multiple=True,
              help="Model tag (repeat): baseNN, advNN, fullBNN_svi, fullBNN_sghmc, fullBNN_laplace, ... "
                   "Default: every model trained for the preset under OUT.")
@click.option("--n-images", type=int, default=None, help="Test images (class-balanced) and as many OOD images. "
                                                          "Default: the whole test split.")
@click.option("--n-draws", type=int, default=None,
              help="Posterior draws (default: the preset's eval_draws, capped at a posterior's samples).")
@click.option("--ood", type=click.Choice(["auto", "none", *DATASETS]), default="auto", show_default=True,
              help="Out-of-distribution dataset (auto: MNIST <-> Fashion-MNIST).")
@options.data_root_option
@options.device_option
@options.out_option
@options.force_option
@options.verbose_option
@options.friendly_errors
def main(preset, models, n_images, n_draws, ood, data_root, device, out, force, verbose):
    """Write and print the uncertainty evaluation of trained models."""
    options.setup_logging(verbose)
    done = stages.evaluate(preset, models or None, out=out, n_images=n_images, n_draws=n_draws, ood=ood,
                           data_root=data_root, device=device, force=force)
    click.echo(done.summary)
