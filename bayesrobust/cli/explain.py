"""``bayesrobust explain`` (also ``python -m bayesrobust.explain``): explain the clean and adversarial images
of an attack run, per posterior draw.

Example::

    python -m bayesrobust.attack  --model fullBNN --attack fgsm --n-draws 20
    python -m bayesrobust.explain --model fullBNN --rule epsilon --rule gamma --rule alpha1beta0 --layers all

Reads the model from ``OUT/models/PRESET/MODEL/`` and the attack run (``--attack-run``: a name under
``OUT/attacks/PRESET``, a path, or by default the model's only run there), writes
``OUT/explanations/PRESET/RUN_METHOD.nc`` (an ``explanation`` Dataset, see
:func:`bayesrobust.explain.explain_attack`) and, with ``--keep-draws``, every draw's maps to
``RUN_METHOD_draws.zarr`` next to it.
"""

from __future__ import annotations

import re

import click

from .. import stages
from ..explain.captum_methods import METHODS
from ..explain.rules import COMPOSITES, RULES
from . import options


def parse_layers(values: tuple[str, ...]) -> str | list[int]:
    """``('all',)`` → ``'all'``; ``('0,2',)``, ``('0 2',)`` or ``('0', '2')`` → ``[0, 2]``.

    Raises
    ------
    ValueError
        A value that is neither ``all`` nor an integer.
    """
    items = [v for value in values for v in re.split(r"[,\s]+", value.strip()) if v]
    if not items or items == ["all"]:
        return "all"
    try:
        return [int(v) for v in items]
    except ValueError:
        raise ValueError(f"--layers takes 'all' or layer indices (e.g. 0,2 or -1), got {' '.join(values)!r}") from None


@click.command(name="explain", cls=options.Command, context_settings=options.CONTEXT)
@options.model_option
@options.preset_option
@options.inference_option
@click.option("--attack-run", default=None,
              help="The attack run to explain: its name (a file stem under OUT/attacks/PRESET) or a path "
                   "(default: the model's only attack run).")
@click.option("--method", type=click.Choice(["lrp", *METHODS, "rise"]), default="lrp", show_default=True,
              help="LRP (Zennit), a Captum attribution or RISE (random masks).")
@click.option("--rule", "rules", type=click.Choice(list(RULES)), multiple=True,
              help="LRP rule on every Linear/Conv layer; repeat for several (default: epsilon unless "
                   "--composite is given).")
@click.option("--composite", type=click.Choice(list(COMPOSITES)), default=None,
              help="A Zennit composite instead of (or besides) the uniform rules.")
@click.option("--layers", multiple=True, default=("all",), show_default=True,
              help="'all' or layer indices, e.g. --layers 0,2 or --layers -1 (the logits).")
@click.option("--initial", type=click.Choice(["one_hot", "value"]), default="one_hot", show_default=True,
              help="LRP initial relevance at the argmax unit (the reference: one_hot).")
@click.option("--n-draws", type=int, default=None,
              help="Posterior draws S (default: the attack run's, so each image is explained by the networks "
                   "that attacked it); always 1 for baseNN/advNN.")
@click.option("--keep-draws", is_flag=True, help="Also stream every draw's maps to RUN_METHOD_draws.zarr.")
@click.option("--batch-size", type=int, default=None,
              help="Images per pass (default: all for fc2, 50 for convolutional nets).")
@options.force_option
@options.progress_option
@options.seed_option
@options.device_option
@options.out_option
@options.verbose_option
@options.friendly_errors
def main(model, preset, inference, attack_run, method, rules, composite, layers, initial, n_draws, keep_draws,
         batch_size, force, progress, seed, device, out, verbose):
    """Explain an attack run's clean and adversarial images; write OUT/explanations/PRESET/RUN_METHOD.nc."""
    options.setup_logging(verbose)
    from tqdm.auto import tqdm
    bars = []  # the bar starts once the stage has checked its input, so an error is one line

    def start(total: int) -> None:
        bars.append(tqdm(total=total, desc=f"{method} draws", unit="draw", disable=not progress))
    try:
        done = stages.explain(preset, model, attack_run, inference=inference, out=out, method=method, rules=rules,
                              composite=composite, layers=parse_layers(layers), initial=initial, n_draws=n_draws,
                              keep_draws=keep_draws, batch_size=batch_size, seed=seed, device=device,
                              force=force, progress=lambda n: bars[-1].update(n), on_start=start)
    finally:
        for bar in bars:
            bar.close()
    click.echo(done.summary)
