"""``python -m bayesrobust.robustness_table``: the seed-000 robust-accuracy table of a trained model.

Accuracy under PGD Linf (ε ∈ {8/255, 16/255}) and L2 (ε ∈ {0.25, 0.5, 1, 2}) with 20 and 100 steps,
step size 2.5·ε/steps (SPEC 2). Example::

    python -m bayesrobust.robustness_table --model baseNN --preset quick --out results
    python -m bayesrobust.robustness_table --model fullBNN --preset quick --n-draws 10 --steps 20 \\
        --linf-eps 0.1,0.2 --l2-eps "" --out results

Writes ``OUT/attacks/PRESET/MODEL_robustness_table_S{S}[_MODE].nc`` (a ``robustness_table`` Dataset with
dims ``norm``, ``epsilon``, ``steps``) and prints the table.
"""

from __future__ import annotations

from fractions import Fraction

import click

from . import options
from .attack import Target, common_options


def parse_epsilons(text: str) -> tuple[float, ...]:
    """``'8/255,16/255'`` → (0.0314, 0.0627); an empty string is no ε (the norm is skipped).

    Raises
    ------
    ValueError
        A value that is not a number or a fraction.
    """
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            values.append(float(Fraction(part)))
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(f"cannot read epsilon {part!r} in {text!r}: expected numbers such as 0.5 or "
                             f"8/255, separated by commas") from err
    return tuple(values)


def format_table(ds) -> str:
    """The table as text: one block per norm, a row per ε, a column per step count."""
    lines = [f"clean accuracy {float(ds.clean_accuracy):.4f} ({ds.attrs['n_images']} images, "
             f"S={ds.attrs['n_draws']})"]
    for norm in ds.norm.values:
        acc = ds.accuracy.sel(norm=norm).dropna("epsilon", how="all")
        header = "".join(f"{f'{int(s)} steps':>12}" for s in ds.steps.values)
        lines.append(f"{'PGD ' + str(norm):<16}{header}")
        for eps in acc.epsilon.values:
            row = "".join(f"{float(v):>12.4f}" for v in acc.sel(epsilon=eps).values)
            lines.append(f"  eps {eps:<10.4g}{row}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@options.model_option
@options.preset_option
@options.inference_option
@click.option("--linf-eps", default="8/255,16/255", show_default=True,
              help="Linf radii, comma-separated (fractions allowed); empty to skip Linf.")
@click.option("--l2-eps", default="0.25,0.5,1,2", show_default=True,
              help="L2 radii, comma-separated; empty to skip L2.")
@click.option("--steps", "steps", type=int, multiple=True, default=(20, 100), show_default=True,
              help="PGD step counts (repeat the option for several).")
@click.option("--random-start/--no-random-start", default=True, show_default=True, help="PGD random start.")
@common_options
def main(model, preset, inference, linf_eps, l2_eps, steps, random_start, n_inputs, inputs_seed, n_draws,
         posterior_mode, chunk_size, seed, data_root, device, out, verbose):
    """Write and print the robust-accuracy table of one trained model."""
    options.setup_logging(verbose)
    from .. import store
    from ..adversarial import robustness_table
    from ..paths import attack_path, model_tag
    epsilons = {k: v for k, v in (("linf", parse_epsilons(linf_eps)), ("l2", parse_epsilons(l2_eps))) if v}
    t = Target.load(model, preset, inference, n_inputs, inputs_seed, n_draws, data_root, device, out)
    config = t.config(epsilons=epsilons, steps=list(steps), random_start=random_start, seed=seed,
                      posterior_mode=posterior_mode, inputs_seed=inputs_seed, chunk_size=chunk_size)
    ds = robustness_table(t.posterior, t.data, epsilons=epsilons, steps=steps, random_start=random_start,
                          mode=posterior_mode, n_draws=t.n_draws, seed=seed, model_name=model, config=config,
                          chunk_size=chunk_size, device=t.device)
    inference, n_draws, p = t.inference, t.n_draws, t.preset
    run = f"{model_tag(model, inference)}_robustness_table_S{n_draws}"
    run = run if n_draws == 1 else f"{run}_{posterior_mode}"
    path = store.write_netcdf(ds, attack_path(out, p.name, run), "robustness_table")
    click.echo(f"robust accuracy of {model_tag(model, inference)} ({p.name}), PGD step size 2.5*eps/steps")
    click.echo(format_table(ds))
    click.echo(f"table written to {path}")


if __name__ == "__main__":
    main()
