"""``bayesrobust diagnose`` (also ``python -m bayesrobust.diagnose``): function-space convergence of a trained
posterior (docs/method.md §13.4).

Example::

    bayesrobust diagnose --model fullBNN --inference sghmc --preset tiny

Prints R-hat and bulk ESS of the held-out log predictive probabilities and of the logits of a probe batch
across chains, the chain-to-chain disagreement of predictions, and weight-space R-hat/ESS beside them. The
numbers of the default settings are computed at training and stored with the checkpoint; other settings are
computed and written to ``OUT/models/PRESET/MODEL_TAG/function_diagnostics.json``.
"""

from __future__ import annotations

import click

from .. import stages
from ..choices import Model
from . import options


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@click.option("--model", default="fullBNN", show_default=True, type=options.Choice(Model.values()),
              help="The model to diagnose (a fullBNN; baseNN/advNN have one draw).")
@options.preset_option
@options.inference_option
@click.option("--n-images", type=int, default=None,
              help=f"Held-out test images (class-balanced). Default: {stages.DIAGNOSE_IMAGES}.")
@click.option("--n-draws", type=int, default=None,
              help="Draws of a posterior without stored samples (SVI, Laplace), as one chain. Default: the "
                   "posterior's default (100).")
@options.data_root_option
@options.device_option
@options.out_option
@options.force_option
@options.verbose_option
@options.friendly_errors
def main(model, preset, inference, n_images, n_draws, data_root, device, out, force, verbose):
    """Show the function-space convergence diagnostics of a trained model."""
    options.setup_logging(verbose)
    done = stages.diagnose(preset, model, inference=inference, out=out, n_images=n_images, n_draws=n_draws,
                           data_root=data_root, device=device, force=force)
    click.echo(done.summary)
