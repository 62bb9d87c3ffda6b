"""``python -m bayesrobust.explain``: explain the clean and adversarial images of an attack run, per draw.

Example::

    python -m bayesrobust.attack  --model fullBNN --preset quick --attack fgsm --n-draws 20 --out results
    python -m bayesrobust.explain --model fullBNN --preset quick \\
        --attack-run fullBNN_svi_fgsm_linf_eps0.2_S20_mean_grad \\
        --rule epsilon --rule gamma --rule alpha1beta0 --layers all --out results

Reads the model from ``OUT/models/PRESET/MODEL/`` and the attack run from ``OUT/attacks/PRESET/RUN.nc`` (or a
path), writes ``OUT/explanations/PRESET/RUN_METHOD.nc`` (an ``explanation`` Dataset, see
:func:`bayesrobust.explain.explain_attack`) and, with ``--keep-draws``, every draw's maps to
``RUN_METHOD_draws.zarr`` next to it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import click

from . import options
from ..explain.captum_methods import METHODS
from ..explain.rules import COMPOSITES, RULES


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
        raise ValueError(f"--layers takes 'all' or layer indices (e.g. 0,2 or -1), got {' '.join(values)!r}")


def resolve_attack_run(out: Path, preset: str, run: str) -> Path:
    """The attack file of ``run``: a path to a ``.nc`` file, or a run name under ``OUT/attacks/PRESET``.

    Raises
    ------
    FileNotFoundError
        No such file; the message lists the runs that exist.
    """
    from ..paths import attack_path
    given = Path(run)
    path = given if given.suffix == ".nc" or len(given.parts) > 1 else attack_path(out, preset, run)
    if not path.is_file():
        folder = attack_path(out, preset, "x").parent
        found = sorted(p.stem for p in folder.glob("*.nc")) if folder.is_dir() else []
        listing = ", ".join(found) if found else f"none under {folder}"
        raise FileNotFoundError(f"no attack run {run!r} (looked for {path}); available runs: {listing}. "
                                f"Run python -m bayesrobust.attack first")
    return path


#: Config entries that must match for an existing explanation to be reused.
SETTINGS = ("preset", "model", "inference", "attack_run", "method", "rules", "composite", "layers", "initial",
            "n_draws", "seed")


def up_to_date(target: Path, draws_path: Path | None, config: dict, attack_created: str) -> bool:
    """Whether ``target`` holds an explanation made with the same :data:`SETTINGS` of the same attack run
    (its ``created`` time: a redone attack makes the explanation stale), and the draws store exists if one
    is asked for."""
    import json

    import xarray as xr

    from .. import store
    if not target.is_file() or (draws_path is not None and not draws_path.is_dir()):
        return False
    with xr.open_dataset(target, engine="h5netcdf") as ds:
        stored, stored_attack = store.config_of(ds), str(ds.attrs.get("attack_created", ""))
    same = json.loads(json.dumps({k: config.get(k) for k in SETTINGS}, default=str))
    return stored_attack == str(attack_created) and all(stored.get(k) == v for k, v in same.items())


@click.command(name="explain", context_settings={"help_option_names": ["-h", "--help"]})
@options.model_option
@options.preset_option
@options.inference_option
@click.option("--attack-run", required=True,
              help="The attack run to explain: its name (a file stem under OUT/attacks/PRESET) or a path.")
@click.option("--method", type=click.Choice(["lrp", *METHODS]), default="lrp", show_default=True,
              help="LRP (Zennit) or a Captum attribution.")
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
@click.option("--force", is_flag=True, help="Recompute even if the explanation file exists.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar over draws.")
@options.seed_option
@options.data_root_option
@options.device_option
@options.out_option
@options.verbose_option
@options.friendly_errors
def main(model, preset, inference, attack_run, method, rules, composite, layers, initial, n_draws, keep_draws,
         batch_size, force, progress, seed, data_root, device, out, verbose):
    """Explain an attack run's clean and adversarial images; write OUT/explanations/PRESET/RUN_METHOD.nc."""
    options.setup_logging(verbose)
    import xarray as xr
    from tqdm.auto import tqdm

    from .. import store
    from ..paths import attack_path, explanation_draws_path, explanation_path
    from ..presets import get_preset
    from ..inference import load_model, resolve_inference
    from ..explain.explanation import explain_attack, make_explainers
    from ..explain.layers import resolve_layers

    device = options.resolve_device(device)
    p = get_preset(preset)
    if method != "lrp" and (rules or composite):
        raise click.UsageError(f"--rule/--composite choose LRP rules; they do not apply to --method {method}")
    if method == "lrp" and not rules and composite is None:
        rules = ("epsilon",)
    layer_sel = parse_layers(layers)
    path = resolve_attack_run(Path(out), p.name, attack_run)
    run = path.stem
    target = explanation_path(out, p.name, run, method)
    draws_path = explanation_draws_path(out, p.name, run, method) if keep_draws else None
    inference = resolve_inference(p, model, inference)
    posterior = load_model(out, p, model, inference)
    resolve_layers(posterior.network(), layer_sel)  # fail on a bad layer before any work
    explainers = make_explainers(method, rules, composite, initial)
    attack = xr.load_dataset(path, engine="h5netcdf")
    attack_preset = store.config_of(attack).get("preset")
    if attack_preset not in (None, p.name):
        raise ValueError(f"attack run {run} was made with preset {attack_preset!r}, not {p.name!r}")
    expected = {"model": model, "inference": posterior.kind, "arch": posterior.arch.name,
                "hidden": posterior.arch.hidden}
    s = posterior.resolve_n_draws(n_draws if n_draws is not None else int(attack.attrs.get("n_draws", 1)))
    if posterior.kind != "deterministic" and s != int(attack.attrs.get("n_draws", s)):
        click.echo(f"note: explaining with S={s} draws; the attack used S={attack.attrs['n_draws']} "
                   f"(draw j is the same network in both)", err=True)
    link = run if path.resolve() == attack_path(out, p.name, run).resolve() else str(path)
    config = {"preset": p.name, "model": model, "inference": inference, "attack_run": str(path),
              "method": method, "rules": list(rules), "composite": composite, "layers": layer_sel,
              "initial": initial, "n_draws": s, "batch_size": batch_size, "seed": seed, "keep_draws": keep_draws,
              "device": device, "model_config": posterior.config}
    if not force and up_to_date(target, draws_path, config, attack.attrs.get("created", "")):
        click.echo(f"{target} is up to date (same settings and attack run); --force redoes it")
        return
    with tqdm(total=s * len(explainers), desc=f"{method} draws", unit="draw", disable=not progress) as bar:
        ds = explain_attack(posterior, attack, explainers, layers=layer_sel, n_draws=s, batch_size=batch_size,
                            seed=seed, draws_path=draws_path, config=config, attack_run=link, expected=expected,
                            progress=bar.update, device=device)
    written = store.write_netcdf(ds, target, "explanation")
    stale = explanation_draws_path(out, p.name, run, method)
    if draws_path is None and stale.is_dir():
        shutil.rmtree(stale)
        click.echo(f"removed {stale}: its draws belonged to the previous explanation", err=True)
    names = ", ".join(str(r) for r in ds["rule"].values)
    click.echo(f"explained {ds.sizes['image']} clean + {ds.sizes['image']} adversarial images of {run} with "
               f"S={s} draw(s), {method} ({names}), layers "
               + ", ".join(f"{i} ({n})" for i, n in zip(ds["layer"].values, ds["layer_name"].values)))
    click.echo(f"explanation written to {written}" + (f" (every draw: {draws_path})" if draws_path else ""))


if __name__ == "__main__":
    main()
