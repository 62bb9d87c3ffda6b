"""``bayesrobust train`` (also ``python -m bayesrobust.train``): train baseNN, advNN or fullBNN (SVI, NUTS, SGHMC,
SGLD, Laplace or a deep ensemble).

Example (the quick preset, written under ./results)::

    python -m bayesrobust.train --model fullBNN
"""

from __future__ import annotations

import click

from .. import stages
from ..choices import (
    AttackName,
    HMCScheme,
    LaplaceStructure,
    LaplaceSubset,
    LikelihoodScaling,
    Norm,
    Optimizer,
    Preconditioner,
    StepSchedule,
)
from ..data import DATASETS
from . import options


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@options.model_option
@options.preset_option
@options.inference_option
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=None, help="Override the preset's dataset.")
@options.data_root_option
@click.option("--epochs", type=int, default=None,
              help="Override the epochs (baseNN/advNN optimiser, SVI, SGHMC/SGLD; ensemble/Laplace: their baseNNs).")
@click.option("--lr", type=float, default=None, help="Override the learning rate.")
@click.option("--batch-size", type=int, default=None, help="Override the batch size.")
@click.option("--weight-decay", type=float, default=None,
              help="baseNN/advNN optimiser (ensemble/Laplace: their baseNNs): L2 penalty wd/2 ||w||^2 on the mean "
                   "loss, a MAP under a N(0, 1/(N wd)) prior (paper: 0).")
@click.option("--optimizer", type=click.Choice(Optimizer.values()), default=None,
              help="baseNN/advNN optimiser (ensemble/Laplace: their baseNNs); the preset's by default (Adam for "
                   "fc2/conv, as in the paper).")
@click.option("--momentum", type=float, default=None, help="--optimizer sgd: momentum, in [0, 1).")
@click.option("--hidden", type=int, default=None, help="Override the hidden size h of fc2/conv.")
@click.option("--warmup", type=int, default=None, help="NUTS warmup iterations per chain.")
@click.option("--samples", type=int, default=None, help="NUTS (or SGHMC/SGLD) samples per chain.")
@click.option("--chains", type=int, default=None, help="NUTS (or SGHMC/SGLD) chains (>= 2 for R-hat).")
@click.option("--n-train", type=int, default=None, help="NUTS: use a class-balanced subset of N training images.")
@click.option("--prior-scale", type=float, default=None, help="Std of the N(0, s) prior (paper: 1).")
@click.option("--adv-attack", type=click.Choice(AttackName.values()), default=None, help="advNN training attack.")
@click.option("--adv-norm", type=click.Choice(Norm.values()), default=None, help="advNN attack norm.")
@click.option("--adv-epsilon", type=float, default=None, help="advNN attack radius (paper: 0.2).")
@click.option("--adv-ratio", type=float, default=None, help="Share of adversarial images per batch (paper: 1).")
@click.option("--likelihood-scaling", type=click.Choice(LikelihoodScaling.values()), default=None,
              help="SVI: scale the minibatch likelihood by N/B (full, correct; default) or not (reference: "
                   "the paper code's setting, KL N/B times too strong).")
@click.option("--hmc-scheme", type=click.Choice(HMCScheme.values()), default=None,
              help="NUTS: every chain on the whole training set (full, correct; default) or each chain on its own "
                   "disjoint subset of --subset-size images, started uniformly in [-2, 2] (subsets: the paper "
                   "code's scheme).")
@click.option("--subset-size", type=int, default=None, help="NUTS subsets scheme: images per chain (paper: 4000).")
@click.option("--burnin", type=int, default=None, help="SGHMC/SGLD: burn-in epochs per chain.")
@click.option("--friction", type=float, default=None, help="SGHMC: momentum share lost per step, in (0, 1].")
@click.option("--temperature", type=float, default=None, help="SGHMC/SGLD: posterior temperature (1: Bayes).")
@click.option("--schedule", type=click.Choice(StepSchedule.values()), default=None,
              help="SGHMC/SGLD step size after burn-in.")
@click.option("--precondition", type=click.Choice(Preconditioner.values()), default=None,
              help="SGHMC/SGLD: none, or a diagonal preconditioner adapted to the squared gradients during burn-in "
                   "and then fixed (faster mixing where the likelihood is flat).")
@click.option("--max-precondition", type=float, default=None,
              help="SGHMC/SGLD --precondition adapted: the largest preconditioner entry, i.e. step relative to the "
                   "plain sampler's (default 1000; >= 1).")
@click.option("--members", type=int, default=None, help="Ensemble: number of networks.")
@click.option("--laplace-subset", type=click.Choice(LaplaceSubset.values()), default=None,
              help="Laplace: weights covered (the rest stay at the baseNN's).")
@click.option("--laplace-structure", type=click.Choice(LaplaceStructure.values()), default=None,
              help="Laplace: posterior precision diagonal, Kronecker-factored (KFAC), KFAC with a low-rank "
                   "input factor (kron_lowrank: last layer; the conv presets' default) or full.")
@click.option("--laplace-rank", type=int, default=None,
              help="Laplace kron_lowrank: eigenpairs of the input factor kept (default 1000).")
@click.option("--laplace-refit-steps", type=int, default=None,
              help="Laplace kron_lowrank: at most this many evidence iterations refitting the last layer as the MAP "
                   "under the fitted prior precision (0: keep the baseNN's last layer).")
@click.option("--eval-draws", type=int, default=None, help="Draws for the test accuracy of a fullBNN.")
@options.seed_option
@options.device_option
@options.out_option
@options.progress_option
@options.force_option
@options.verbose_option
@options.friendly_errors
def main(model, preset, inference, dataset, data_root, epochs, lr, batch_size, weight_decay, optimizer, momentum,
         hidden, warmup, samples, chains, n_train, prior_scale, adv_attack, adv_norm, adv_epsilon, adv_ratio,
         likelihood_scaling, hmc_scheme, subset_size, burnin, friction, temperature, schedule, members,
         laplace_subset, laplace_structure, laplace_rank, laplace_refit_steps, precondition, max_precondition,
         eval_draws, seed, device, out, progress, force, verbose):
    """Train one model and write it under OUT/models/PRESET/MODEL/."""
    options.setup_logging(verbose)
    overrides = dict(dataset=dataset, epochs=epochs, lr=lr, hidden=hidden, batch_size=batch_size, warmup=warmup,
                     samples=samples, chains=chains, n_train=n_train, prior_scale=prior_scale,
                     adv_attack=adv_attack, adv_norm=adv_norm, adv_epsilon=adv_epsilon, adv_ratio=adv_ratio,
                     likelihood_scaling=likelihood_scaling, hmc_scheme=hmc_scheme, subset_size=subset_size,
                     burnin=burnin, friction=friction, temperature=temperature, schedule=schedule, members=members,
                     laplace_subset=laplace_subset, laplace_structure=laplace_structure, laplace_rank=laplace_rank,
                     laplace_refit_steps=laplace_refit_steps, weight_decay=weight_decay, precondition=precondition,
                     max_precondition=max_precondition, optimizer=optimizer, momentum=momentum)
    done = stages.train(preset, model, inference=inference, out=out, overrides=overrides, eval_draws=eval_draws,
                        seed=seed, device=device, data_root=data_root, progress=progress, force=force)
    click.echo(done.summary)
