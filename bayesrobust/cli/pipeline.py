"""``python -m bayesrobust.pipeline``: the whole experiment of the paper for one preset, end to end.

train baseNN, advNN, fullBNN → attack each (FGSM by default; the fullBNN with every S in ``--draws``) →
explain clean and adversarial inputs with the LRP rules at all layers → analyse → draw the figures, then
print where everything is and the headline numbers (median Bay−Det and Adv−Det LRP robustness).

Every stage is the same command a user would type (``bayesrobust.train``, ``.attack``, ``.explain``,
``.analyze``, ``.plot``), run in this process. Stages whose result already exists with the same settings are
skipped, so an interrupted run resumes; ``--force`` redoes them.

Example (the README's main command; a few minutes on 2 CPU cores)::

    python -m bayesrobust.pipeline --preset quick --out results
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from . import options
from ..paths import analysis_path, attack_path, attack_run_name, model_dir

log = logging.getLogger(__name__)
RULES = ("epsilon", "gamma", "alpha1beta0")


def _run(stage: str, args: list[str]) -> None:
    """Run ``python -m bayesrobust.STAGE ARGS`` in this process; a failure stops the pipeline."""
    import importlib
    module = importlib.import_module(f".{stage}", __package__)
    click.secho(f"$ python -m bayesrobust.{stage} {' '.join(args)}", fg="cyan", err=True)
    module.main.main(args=args, prog_name=f"python -m bayesrobust.{stage}", standalone_mode=False)


def headline(ds) -> str:
    """The headline numbers of an analysis Dataset: per rule, the median paired Bay−Det and Adv−Det LRP
    robustness at the last layer, and Spearman ρ(LRP robustness, softmax robustness) per model there."""
    last = ds.layer.values[-1]
    diff = ds.lrp_robustness_diff.sel(layer=last).median("image")
    lines = [f"Headline (last layer, top {ds.attrs.get('topk', '?')}%, {ds.sizes['image']} images): "
             f"median paired LRP robustness difference"]
    for comparison in ds.comparison.values:
        values = ", ".join(f"{rule} {float(diff.sel(comparison=comparison, rule=rule)):+.3f}"
                           for rule in ds.rule.values)
        lines.append(f"  {comparison:>22}: {values}")
    rho = ds.spearman_rho.sel(layer=last, subset="all")
    lines.append("Spearman rho(LRP robustness, softmax robustness), last layer")
    for model in ds.model.values:
        values = ", ".join(f"{rule} {float(rho.sel(model=model, rule=rule)):+.2f}" for rule in ds.rule.values)
        lines.append(f"  {model:>22}: {values}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", default="quick", show_default=True, help="Named experiment settings.")
@click.option("--inference", type=click.Choice(["svi", "hmc"]), default=None,
              help="fullBNN inference (default: the preset's).")
@click.option("--attack", "attack_name", type=click.Choice(["fgsm", "pgd"]), default="fgsm", show_default=True)
@click.option("--draws", "draws", type=int, multiple=True,
              help="Posterior draws S of the fullBNN attacks/explanations; repeat for several "
                   "(default: the preset's eval draws).")
@click.option("--n-inputs", type=int, default=None, help="Test images (default: the preset's).")
@click.option("--rule", "rules", multiple=True, default=RULES, show_default=True, help="LRP rules.")
@click.option("--topk", type=float, default=20, show_default=True, help="k of the top-k% selection.")
@click.option("--likelihood-scaling", type=click.Choice(["full", "reference"]), default=None,
              help="fullBNN SVI: N/B-scaled likelihood (full, default) or the reference code's unscaled one; "
                   "use another --out to keep both.")
@options.seed_option
@options.data_root_option
@options.device_option
@options.out_option
@click.option("--force", is_flag=True, help="Redo stages whose results exist.")
@options.verbose_option
@options.friendly_errors
def main(preset, inference, attack_name, draws, n_inputs, rules, topk, likelihood_scaling, seed, data_root, device, out, force,
         verbose):
    """Train, attack, explain, analyse and plot one preset under OUT."""
    from ..presets import get_preset
    from ..inference import resolve_inference
    options.setup_logging(verbose)
    start = time.perf_counter()
    p = get_preset(preset)
    inference = resolve_inference(p, "fullBNN", inference)
    draws = tuple(draws) or (p.eval_draws,)
    common = ["--preset", preset, "--seed", str(seed), "--device", device, "--out", str(out)]
    if data_root is not None:
        common += ["--data-root", str(data_root)]
    force_flag = ["--force"] if force else []
    for model in ("baseNN", "advNN", "fullBNN"):
        inf = ["--inference", inference] if model == "fullBNN" else []
        if model == "fullBNN" and likelihood_scaling:
            inf += ["--likelihood-scaling", likelihood_scaling]
        _run("train", ["--model", model, *inf, *common, "--no-progress", *force_flag])
    runs = []
    for model, s in [("baseNN", 1), ("advNN", 1)] + [("fullBNN", s) for s in draws]:
        inf = ["--inference", inference] if model == "fullBNN" else []
        n = ["--n-inputs", str(n_inputs)] if n_inputs else []
        _run("attack", ["--model", model, *inf, "--attack", attack_name, "--n-draws", str(s), *n, *common,
                      *force_flag])
        runs.append((model, s))
    for model, s in runs:
        inf = ["--inference", inference] if model == "fullBNN" else []
        rule_args = [a for r in rules for a in ("--rule", r)]
        run = attack_run_name(model, inference if model == "fullBNN" else None, attack_name, "linf",
                              p.attack_epsilon, s, "mean_grad", p.attack_steps)
        _run("explain", ["--model", model, *inf, "--attack-run", run, *rule_args, "--layers", "all",
                       "--n-draws", str(s), *common, *force_flag])
    name = f"{preset}_{attack_name}_top{topk:g}"
    _run("analyze", ["--out", str(out), "--preset", preset, "--attack", attack_name, "--topk", str(topk),
                     "--name", name])
    _run("plot", ["--out", str(out), "--preset", preset, "--analysis", name])
    import xarray as xr
    with xr.open_dataset(analysis_path(out, name)) as ds:
        click.echo("\n" + headline(ds))
    click.echo(f"\nDone in {time.perf_counter() - start:.0f} s. Models: {model_dir(out, preset, 'x').parent}, "
               f"attacks: {attack_path(out, preset, 'x').parent}, analysis: {Path(out) / 'analysis'}, "
               f"figures: {Path(out) / 'figures'}")


if __name__ == "__main__":
    main()
