"""``python -m bayesrobust.attack``: attack a trained model on a balanced test subset and store the result.

Example::

    python -m bayesrobust.train  --model fullBNN --preset quick --out results
    python -m bayesrobust.attack --model fullBNN --preset quick --attack fgsm --n-draws 20 --out results

Reads the model from ``OUT/models/PRESET/MODEL/``, writes ``OUT/attacks/PRESET/RUN.nc`` (an ``attack``
Dataset, see :func:`bayesrobust.adversarial.run_attack`) and prints the clean and adversarial accuracy and the
success rate. ``python -m bayesrobust.robustness_table`` shares the options below ``--random-start``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from . import options
from ..adversarial import MODES, NORMS


@dataclass
class Target:
    """What both attack commands work on: the preset, the loaded model, its evaluation images and S."""

    preset: Any
    model: str
    inference: str | None
    posterior: Any
    data: Any
    n_draws: int
    device: str

    @classmethod
    def load(cls, model, preset, inference, n_inputs, inputs_seed, n_draws, data_root, device,
             out) -> "Target":
        """Load the trained model (a missing one names its train command) and the class-balanced subset of
        the test split it was trained for (SPEC 1.1)."""
        from ..data import balanced_subset, load
        from ..presets import get_preset
        from ..inference import load_model, resolve_inference
        device = options.resolve_device(device)
        p = get_preset(preset)
        inference = resolve_inference(p, model, inference)
        posterior = load_model(out, p, model, inference)
        dataset = posterior.config.get("dataset", p.dataset)
        data = balanced_subset(load(dataset, "test", data_root), n_inputs or p.n_inputs, seed=inputs_seed)
        return cls(p, model, inference, posterior, data, posterior.resolve_n_draws(n_draws or p.eval_draws),
                   device)

    def config(self, **settings: Any) -> dict[str, Any]:
        """The config stored with a result: the settings plus the model's own training config."""
        return {"preset": self.preset.name, "model": self.model, "inference": self.inference, **settings,
                "n_draws": self.n_draws, "n_inputs": len(self.data), "dataset": self.data.name,
                "device": self.device, "model_config": self.posterior.config}


#: Options shared by ``attack`` and ``robustness_table`` (after their own), in the order ``main`` takes them.
COMMON_OPTIONS = [
    click.option("--n-inputs", type=int, default=None,
                 help="Number of class-balanced test images (default: the preset's, paper 500)."),
    click.option("--inputs-seed", type=int, default=0, show_default=True,
                 help="Seed of the test subset; keep it fixed across the models of one experiment."),
    click.option("--n-draws", type=int, default=None,
                 help="Posterior draws S of a fullBNN (default: the preset's); always 1 for baseNN/advNN."),
    click.option("--posterior-mode", type=click.Choice(MODES), default="mean_grad", show_default=True,
                 help="How the attack averages over draws (SPEC 1.4)."),
    click.option("--chunk-size", type=int, default=None, help="Images per forward pass (default: all)."),
    options.seed_option, options.data_root_option, options.device_option, options.out_option, options.verbose_option,
]


def common_options(func):
    """Add :data:`COMMON_OPTIONS` and turn library input errors into one-line messages."""
    func = options.friendly_errors(func)
    for option in reversed(COMMON_OPTIONS):
        func = option(func)
    return func


def resolve_step_size(preset, epsilon: float, steps: int, step_size: float | None) -> float | None:
    """``--step-size`` if given; the preset's when ε and steps are the preset's; else ``None``, which means
    the default 2.5·ε/steps."""
    if step_size is not None:
        return step_size
    if epsilon == preset.attack_epsilon and steps == preset.attack_steps:
        return preset.attack_step_size
    return None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@options.model_option
@options.preset_option
@options.inference_option
@click.option("--attack", "attack_name", required=True, type=click.Choice(["fgsm", "pgd"]),
              help="FGSM (Linf) or PGD (Linf or L2).")
@click.option("--norm", type=click.Choice(NORMS), default="linf", show_default=True, help="PGD norm.")
@click.option("--epsilon", type=float, default=None, help="Radius (default: the preset's, paper 0.2).")
@click.option("--steps", type=int, default=None, help="PGD steps (default: the preset's, paper 40).")
@click.option("--step-size", type=float, default=None,
              help="PGD step size (default: the preset's for its ε and steps, otherwise 2.5·ε/steps).")
@click.option("--random-start/--no-random-start", default=True, show_default=True, help="PGD random start.")
@options.force_option
@common_options
def main(model, preset, inference, attack_name, norm, epsilon, steps, step_size, random_start, force, n_inputs,
         inputs_seed, n_draws, posterior_mode, chunk_size, seed, data_root, device, out, verbose):
    """Attack one trained model and write OUT/attacks/PRESET/RUN.nc."""
    options.setup_logging(verbose)
    from .. import store
    from ..adversarial import make_attack, run_attack
    from ..paths import attack_path, attack_run_name, model_tag
    if attack_name == "fgsm" and norm != "linf":
        raise click.UsageError("FGSM is an Linf attack; use --attack pgd for --norm l2")
    t = Target.load(model, preset, inference, n_inputs, inputs_seed, n_draws, data_root, device, out)
    epsilon = t.preset.attack_epsilon if epsilon is None else epsilon
    if attack_name == "fgsm":
        attack = make_attack("fgsm", epsilon=epsilon)
    else:
        steps = t.preset.attack_steps if steps is None else steps
        attack = make_attack("pgd", norm=norm, epsilon=epsilon, steps=steps, random_start=random_start,
                             step_size=resolve_step_size(t.preset, epsilon, steps, step_size))
    config = t.config(**attack.params(), posterior_mode=posterior_mode, inputs_seed=inputs_seed, seed=seed,
                      chunk_size=chunk_size)
    run = attack_run_name(model, t.inference, attack_name, norm, epsilon, t.n_draws, posterior_mode,
                          steps if attack_name == "pgd" else None)
    target = attack_path(out, t.preset.name, run)
    if target.is_file():
        with store.open_result(target) as old:
            if options.up_to_date(store.config_of(old), config, force):
                click.echo(f"{target} is up to date (same settings and model); --force redoes it")
                return
    ds = run_attack(t.posterior, t.data, attack, mode=posterior_mode, n_draws=t.n_draws, seed=seed,
                    model_name=model, config=config, chunk_size=chunk_size, device=t.device)
    path = store.write_netcdf(ds, target, "attack")
    a = ds.attrs
    click.echo(f"{attack!r} on {model_tag(model, t.inference)} ({len(t.data)} {t.data.name} test images, "
               f"S={t.n_draws}{', ' + posterior_mode if t.n_draws > 1 else ''}): clean accuracy "
               f"{a['accuracy']:.4f}, adversarial accuracy {a['adversarial_accuracy']:.4f}, "
               f"success rate {a['success_rate']:.4f}")
    click.echo(f"attack written to {path}")


if __name__ == "__main__":
    main()
