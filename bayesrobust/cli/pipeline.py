"""``bayesrobust pipeline`` (also ``python -m bayesrobust.pipeline``): one preset's whole experiment.

train baseNN, advNN, fullBNN → attack each (FGSM by default; the fullBNN with every S in ``--draws``) →
explain clean and adversarial inputs with the LRP rules at all layers → analyse → draw the figures, then
print where everything is and the headline numbers (median Bay−Det and Adv−Det LRP robustness).

It runs :meth:`bayesrobust.Experiment.run`. Stages whose result exists with the same settings are skipped,
so an interrupted run resumes; ``--force`` redoes them. Every option of every stage is checked before
anything is trained.

Example (the README's main command; a few minutes on 2 CPU cores)::

    python -m bayesrobust.pipeline
"""

from __future__ import annotations

import time

import click

from ..choices import HMCScheme, LikelihoodScaling
from ..experiment import PAPER_RULES, Experiment, headline
from ..explain.rules import RULES
from . import options


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@options.preset_option
@options.inference_option
@options.attack_option
@options.norm_option
@click.option("--epsilon", type=float, default=None, help="Attack radius (default: the preset's).")
@click.option("--steps", type=int, default=None, help="PGD steps (default: the preset's).")
@options.mode_option
@options.loss_option
@click.option("--draws", "draws", type=int, multiple=True,
              help="Posterior draws S of the fullBNN attacks/explanations; repeat for several "
                   "(default: the preset's eval draws).")
@click.option("--n-inputs", type=int, default=None, help="Test images (default: the preset's).")
@click.option("--rule", "rules", type=click.Choice(list(RULES)), multiple=True, default=PAPER_RULES,
              show_default=True, help="LRP rules.")
@click.option("--topk", type=float, default=20, show_default=True, help="k of the top-k% selection.")
@click.option("--likelihood-scaling", type=click.Choice(LikelihoodScaling.values()), default=None,
              help="fullBNN SVI: N/B-scaled likelihood (full, default) or the reference code's unscaled one; "
                   "use another --out to keep both.")
@click.option("--hmc-scheme", type=click.Choice(HMCScheme.values()), default=None,
              help="fullBNN NUTS: every chain on the whole training set (full, default) or each on its own block "
                   "of --subset-size images (subsets: the reference code's); use another --out to keep both.")
@click.option("--subset-size", type=int, default=None, help="NUTS subsets scheme: images per chain (paper: 4000).")
@click.option("--chains", type=int, default=None, help="NUTS chains (default: the preset's; paper's subsets: 15).")
@click.option("--warmup", type=int, default=None, help="NUTS warmup iterations per chain (paper: 100).")
@click.option("--samples", type=int, default=None, help="NUTS (SGHMC, SGLD) samples kept per chain (paper: 100).")
@click.option("--n-train", type=int, default=None, help="NUTS: a class-balanced subset of N training images.")
@click.option("--epochs", type=int, default=None,
              help="fullBNN training epochs: SVI, SGHMC/SGLD, an ensemble's or Laplace's baseNNs.")
@click.option("--burnin", type=int, default=None, help="fullBNN SGHMC/SGLD: burn-in epochs per chain.")
@click.option("--prior-scale", type=float, default=None, help="fullBNN: std of the N(0, s) prior (paper: 1).")
@click.option("--members", type=int, default=None, help="fullBNN --inference ensemble: number of networks.")
@click.option("--controls", "controls", default="", show_default=False,
              help="Comma-separated controls after the explanations: cross (each model explained on the "
                   "other model's adversarial images), random (on a random-sign perturbation of the same L2 "
                   "norm); e.g. cross,random. Default none.")
@options.seed_option
@options.data_root_option
@options.device_option
@options.out_option
@options.force_option
@options.verbose_option
@options.friendly_errors
def main(preset, inference, attack_name, norm, epsilon, steps, posterior_mode, loss, draws, n_inputs, rules, topk,
         likelihood_scaling, hmc_scheme, subset_size, chains, warmup, samples, n_train, epochs, burnin, prior_scale,
         members, controls, seed, data_root, device, out, force, verbose):
    """Train, attack, explain, analyse and plot one preset under OUT."""
    options.setup_logging(verbose)
    start = time.perf_counter()
    experiment = Experiment(preset, out, inference=inference, attack=attack_name, norm=norm, epsilon=epsilon,
                            steps=steps, mode=posterior_mode, loss=loss, draws=draws, n_inputs=n_inputs, rules=rules,
                            topk=topk, likelihood_scaling=likelihood_scaling, hmc_scheme=hmc_scheme,
                            subset_size=subset_size, chains=chains, warmup=warmup, samples=samples,
                            n_train=n_train, epochs=epochs, burnin=burnin, prior_scale=prior_scale, members=members,
                            controls=[c.strip() for c in controls.split(",") if c.strip()],
                            seed=seed, data_root=data_root,
                            device=device, force=force, report=click.echo)
    analysis = experiment.run()
    click.echo("\n" + headline(analysis))
    out = experiment.out
    click.echo(f"\nDone in {time.perf_counter() - start:.0f} s. Models: {out / 'models' / experiment.preset.name}, "
               f"attacks: {out / 'attacks' / experiment.preset.name}, analysis: {out / 'analysis'}, "
               f"figures: {out / 'figures'}")
