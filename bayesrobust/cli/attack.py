"""``bayesrobust attack`` (also ``python -m bayesrobust.attack``): attack a trained model on a class-balanced
test subset and store the result.

Example::

    python -m bayesrobust.train  --model fullBNN
    python -m bayesrobust.attack --model fullBNN --attack fgsm --n-draws 20

Reads the model from ``OUT/models/PRESET/MODEL/``, writes ``OUT/attacks/PRESET/RUN.nc`` (an ``attack``
Dataset, see :func:`bayesrobust.adversarial.run_attack`) and prints the clean and adversarial accuracy and the
success rate. ``bayesrobust table`` shares the options after ``--random-start``.
"""

from __future__ import annotations

import click

from .. import stages
from ..choices import AttributionMethod, IFIAVariant
from . import options

#: Options shared by ``attack`` and ``table`` (after their own), in the order their functions take them.
COMMON_OPTIONS = [
    click.option("--n-inputs", type=int, default=None,
                 help="Number of class-balanced test images (default: the preset's, paper 500)."),
    click.option("--inputs-seed", type=options.SEED_RANGE, default=0, show_default=True,
                 help="Seed of the test subset; keep it fixed across the models of one experiment."),
    click.option("--n-draws", type=int, default=None,
                 help="Posterior draws S of a fullBNN (default: the preset's); always 1 for baseNN/advNN."),
    options.mode_option,
    click.option("--chunk-size", type=int, default=None, help="Images per forward pass (default: chosen per net)."),
    options.seed_option, options.data_root_option, options.device_option, options.out_option, options.force_option,
    options.verbose_option,
]


def common_options(func):
    """Add :data:`COMMON_OPTIONS` and turn library input errors into one-line messages."""
    func = options.friendly_errors(func)
    for option in reversed(COMMON_OPTIONS):
        func = option(func)
    return func


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@options.model_option
@options.preset_option
@options.inference_option
@options.attack_option
@options.norm_option
@click.option("--epsilon", type=float, default=None,
              help="Radius (default: the preset's, paper 0.2; ifia/manipulate: 0.3 for MNIST, 8/255 for colour).")
@click.option("--steps", type=int, default=None,
              help="PGD steps (default: the preset's, paper 40; ifia/manipulate: 100).")
@click.option("--step-size", type=float, default=None,
              help="PGD step size (default: the preset's for its ε and steps, otherwise 2.5·ε/steps).")
@click.option("--random-start/--no-random-start", default=True, show_default=True, help="PGD random start.")
@options.loss_option
@click.option("--method", type=click.Choice(AttributionMethod.values()), default=None,
              help="ifia/manipulate: the map attacked (default saliency).")
@click.option("--variant", type=click.Choice(IFIAVariant.values()), default=None,
              help="ifia: topk (default), mass_center or targeted (another image's top-k region).")
@click.option("--k", "k", type=int, default=None, help="ifia: top-k pixels (default 200 for MNIST, 1000 colour).")
@click.option("--beta", type=float, default=None, help="ifia/manipulate: softplus beta of the surrogate (default 10).")
@click.option("--ig-steps", type=int, default=None, help="ifia/manipulate: integrated-gradients points (default 16).")
@click.option("--gamma", type=float, default=None, help="manipulate: weight of keeping the output (default 1).")
@common_options
def main(model, preset, inference, attack_name, norm, epsilon, steps, step_size, random_start, loss, method, variant,
         k, beta, ig_steps, gamma, n_inputs, inputs_seed, n_draws, posterior_mode, chunk_size, seed, data_root,
         device, out, force, verbose):
    """Attack one trained model and write OUT/attacks/PRESET/RUN.nc (ifia, manipulate: OUT/attributions/)."""
    options.setup_logging(verbose)
    # FGSM and PGD ignore the attribution settings (as FGSM ignores --steps)
    attribution = {"method": method, "variant": variant, "k": k, "beta": beta, "ig_steps": ig_steps,
                   "gamma": gamma}
    done = stages.attack(preset, model, inference=inference, out=out, attack=attack_name, norm=norm,
                         epsilon=epsilon, steps=steps, step_size=step_size, random_start=random_start,
                         n_inputs=n_inputs, inputs_seed=inputs_seed, n_draws=n_draws, mode=posterior_mode,
                         chunk_size=chunk_size, seed=seed, data_root=data_root, device=device, force=force,
                         attribution=attribution, loss=loss)
    click.echo(done.summary)
