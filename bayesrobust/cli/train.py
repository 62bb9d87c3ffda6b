"""``python -m bayesrobust.train``: train baseNN, advNN or fullBNN (SVI or NUTS) with a named preset.

Example::

    python -m bayesrobust.train --model fullBNN --preset quick --out results
"""

from __future__ import annotations

import click

from . import options
from ..data import DATASETS
from ..models.posterior import Posterior
from ..models.draws import predictive_accuracy
from ..paths import model_dir, model_tag
from ..presets import get_preset, override_training


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@options.model_option
@options.preset_option
@options.inference_option
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=None, help="Override the preset's dataset.")
@options.data_root_option
@click.option("--epochs", type=int, default=None, help="Override the epochs (baseNN/advNN optimiser, or SVI).")
@click.option("--lr", type=float, default=None, help="Override the learning rate.")
@click.option("--batch-size", type=int, default=None, help="Override the batch size.")
@click.option("--hidden", type=int, default=None, help="Override the hidden size h of fc2/conv.")
@click.option("--warmup", type=int, default=None, help="NUTS warmup iterations per chain.")
@click.option("--samples", type=int, default=None, help="NUTS samples per chain.")
@click.option("--chains", type=int, default=None, help="NUTS chains (>= 2 for R-hat).")
@click.option("--n-train", type=int, default=None, help="NUTS: use only the first N training images.")
@click.option("--prior-scale", type=float, default=None, help="Std of the N(0, s) prior (paper: 1).")
@click.option("--adv-attack", type=click.Choice(["fgsm", "pgd"]), default=None, help="advNN training attack.")
@click.option("--adv-norm", type=click.Choice(["linf", "l2"]), default=None, help="advNN attack norm.")
@click.option("--adv-epsilon", type=float, default=None, help="advNN attack radius (paper: 0.2).")
@click.option("--adv-ratio", type=float, default=None, help="Share of adversarial images per batch (paper: 1).")
@click.option("--likelihood-scaling", type=click.Choice(["full", "reference"]), default=None,
              help="SVI: scale the minibatch likelihood by N/B (full, correct; default) or not (reference: "
                   "the paper code's setting, KL N/B times too strong).")
@click.option("--eval-draws", type=int, default=None, help="Draws for the test accuracy of a fullBNN.")
@options.seed_option
@options.device_option
@options.out_option
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
@options.force_option
@options.verbose_option
@options.friendly_errors
def main(model, preset, inference, dataset, data_root, epochs, lr, batch_size, hidden, warmup, samples, chains,
         n_train, prior_scale, adv_attack, adv_norm, adv_epsilon, adv_ratio, likelihood_scaling, eval_draws, seed, device, out,
         progress, force, verbose):
    """Train one model and write it under OUT/models/PRESET/MODEL/."""
    options.setup_logging(verbose)
    from .. import data as datasets
    from ..inference import resolve_inference, train_model
    device = options.resolve_device(device)
    p = override_training(get_preset(preset), model, inference, dataset=dataset, epochs=epochs, lr=lr,
                          hidden=hidden, batch_size=batch_size, warmup=warmup, samples=samples, chains=chains,
                          n_train=n_train, prior_scale=prior_scale, adv_attack=adv_attack, adv_norm=adv_norm,
                          adv_epsilon=adv_epsilon, adv_ratio=adv_ratio,
                          likelihood_scaling=likelihood_scaling)
    inference = resolve_inference(p, model, inference)
    target = model_dir(out, p.name, model, inference)
    if (target / "config.json").is_file():
        stored = Posterior.load(target).config
        if options.up_to_date(stored, {"preset": p.to_dict(), "model": model, "inference": inference, "seed": seed}, force):
            click.echo(f"{model_tag(model, inference)} for preset {p.name!r} is up to date in {target} "
                       f"(test accuracy {stored.get('test_accuracy', float('nan')):.4f}); --force retrains")
            return
    test = datasets.load(p.dataset, "test", data_root)  # fail on missing data before training
    posterior = train_model(p, model, inference, seed, device, data_root, progress)
    n_draws = posterior.resolve_n_draws(eval_draws or p.eval_draws)
    acc = predictive_accuracy(posterior, test.x, test.y, n_draws, device=device)
    posterior.config.update(test_accuracy=acc, test_accuracy_draws=n_draws)
    posterior.save(target)
    what = "posterior predictive, " + f"{n_draws} draws" if posterior.kind != "deterministic" else "deterministic"
    click.echo(f"{model_tag(model, inference)} on {p.dataset}: test accuracy {acc:.4f} ({what}, "
               f"{len(test)} images); trained in {posterior.config['train_seconds']:.1f} s")
    if posterior.kind == "mcmc":
        d = posterior.config["diagnostics"]
        click.echo(f"NUTS diagnostics: max R-hat {d['rhat_max']:.3f}, min bulk ESS {d['ess_bulk_min']:.1f}, "
                   f"min tail ESS {d['ess_tail_min']:.1f}, divergences {d['divergences']}")
    click.echo(f"model written to {target}")


if __name__ == "__main__":
    main()
