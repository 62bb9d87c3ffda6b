"""``bayesrobust faithfulness`` (also ``python -m bayesrobust.faithfulness``): are the explanations faithful as
well as stable? Insertion/deletion, localisation and randomisation checks of every trained model of a preset,
per posterior draw and for the mean map, next to the stored LRP robustness under FGSM.

Example::

    python -m bayesrobust.pipeline --preset quick --rule epsilon      # models, attacks, the analysis
    python -m bayesrobust.faithfulness --preset quick --n-inputs 100

Writes ``OUT/faithfulness/PRESET/MODEL_TAG.nc`` per model, ``side_by_side.nc`` and the figures
(:mod:`bayesrobust.faithfulness_report`), and prints the side-by-side table.
"""

from __future__ import annotations

import click

from .. import stages
from ..choices import Model
from ..faithfulness_metrics import BASELINES
from ..faithfulness_report import ALL_METHODS
from . import options


@click.command(name="faithfulness", cls=options.Command, context_settings=options.CONTEXT)
@options.preset_option
@click.option("--model", "models", type=click.Choice(Model.values()), multiple=True,
              help="Models to evaluate; repeat for several (default: every trained model of the preset).")
@click.option("--method", "methods", type=click.Choice(list(ALL_METHODS)), multiple=True,
              help="Explanation methods; repeat for several (default: all nine; gradcam on conv nets only).")
@click.option("--n-inputs", type=int, default=None,
              help="Test images (default: the preset's, the same class-balanced subset as the attacks).")
@click.option("--inputs-seed", type=options.SEED_RANGE, default=0, show_default=True,
              help="Seed of the image subset.")
@click.option("--n-draws", type=int, default=None, help="Posterior draws S (default: the preset's eval_draws).")
@click.option("--steps", type=int, default=50, show_default=True,
              help="Insertion/deletion steps (each moves 1/steps of the pixels).")
@click.option("--deletion-baseline", type=click.Choice(BASELINES), default="zero", show_default=True,
              help="What deleted pixels become.")
@click.option("--insertion-baseline", type=click.Choice(BASELINES), default="blur", show_default=True,
              help="The image insertion starts from.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Foreground threshold of the localisation metrics (pixel value).")
@click.option("--rise-masks", type=int, default=2000, show_default=True, help="RISE masks N.")
@click.option("--randomisation/--no-randomisation", default=True, show_default=True,
              help="Run the cascading model-parameter randomisation check.")
@click.option("--randomisation-inputs", type=int, default=None,
              help="Run the randomisation check on the first this many images only (default: all).")
@options.force_option
@options.seed_option
@options.data_root_option
@options.device_option
@options.out_option
@options.verbose_option
@options.friendly_errors
def main(preset, models, methods, n_inputs, inputs_seed, n_draws, steps, deletion_baseline, insertion_baseline,
         threshold, rise_masks, randomisation, randomisation_inputs, force, seed, data_root, device, out,
         verbose):
    """Faithfulness and sanity checks next to LRP robustness; write OUT/faithfulness/PRESET/."""
    options.setup_logging(verbose)
    done = stages.faithfulness(preset, out=out, models=models, methods=methods, n_inputs=n_inputs,
                               inputs_seed=inputs_seed, n_draws=n_draws, steps=steps,
                               deletion_baseline=deletion_baseline, insertion_baseline=insertion_baseline,
                               threshold=threshold, rise_masks=rise_masks, randomisation=randomisation,
                               randomisation_inputs=randomisation_inputs, seed=seed,
                               data_root=data_root, device=device, force=force)
    click.echo(done.summary)
