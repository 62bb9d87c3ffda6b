"""``bayesrobust table`` (also ``python -m bayesrobust.robustness_table``): the robust-accuracy table of a
trained model.

Accuracy under PGD Linf (ε ∈ {8/255, 16/255}) and L2 (ε ∈ {0.25, 0.5, 1, 2}) with 20 and 100 steps,
step size 2.5·ε/steps (docs/method.md §4.4). Example::

    bayesrobust table --model baseNN
    bayesrobust table --model fullBNN --n-draws 10 --steps 20 --linf-eps 0.1,0.2 --l2-eps ""

Writes ``OUT/attacks/PRESET/MODEL_robustness_table_S{S}[_MODE].nc`` (a ``robustness_table`` Dataset with
dims ``norm``, ``epsilon``, ``steps``) and prints the table.
"""

from __future__ import annotations

from fractions import Fraction

import click

from .. import stages
from ..choices import AttributionMethod, Model
from . import options
from .attack import common_options


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


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@click.option("--kind", type=click.Choice(("robustness", "attribution")), default="robustness", show_default=True,
              help="robustness: one model's PGD table; attribution: seed 002's table and figure over the "
                   "stored attribution-attack runs of the preset.")
@click.option("--model", type=options.Choice(Model.values()), default=None,
              help="The model of a robustness table (required there).")
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
@click.option("--attack", "attribution_attack", type=click.Choice(("ifia", "manipulate")), default=None,
              help="attribution: only runs of this attack.")
@click.option("--method", type=click.Choice(AttributionMethod.values()), default=None,
              help="attribution: only runs on this map.")
@click.option("--image", type=click.IntRange(0), default=0, show_default=True,
              help="attribution: the image (position in the runs) of the figure.")
def main(kind, model, preset, inference, linf_eps, l2_eps, steps, random_start, n_inputs, inputs_seed, n_draws,
         posterior_mode, chunk_size, seed, data_root, device, out, force, verbose, attribution_attack, method,
         image):
    """Write and print the robust-accuracy table of one trained model (or, --kind attribution, the
    attributional-robustness table of the stored attribution attacks)."""
    options.setup_logging(verbose)
    if kind == "attribution":
        done = stages.attribution_table(preset, out=out, attack=attribution_attack, method=method, image=image)
        click.echo(done.summary)
        return
    if model is None:
        raise click.UsageError("Missing option '--model' (required for --kind robustness).")
    epsilons = {"linf": parse_epsilons(linf_eps), "l2": parse_epsilons(l2_eps)}
    done = stages.table(preset, model, inference=inference, out=out, epsilons=epsilons, steps=steps,
                        random_start=random_start, n_inputs=n_inputs, inputs_seed=inputs_seed, n_draws=n_draws,
                        mode=posterior_mode, chunk_size=chunk_size, seed=seed, data_root=data_root,
                        device=device, force=force)
    click.echo(done.summary)
