"""The stages of an experiment as library calls: train, attack, explain, analyze, plot (and the robust-accuracy
table). Each takes settings, writes its result under an output folder ``out`` (layout: :mod:`.paths`) and
returns a :class:`Done` naming the file; a result that exists with the same settings is skipped (``force``
redoes it). The commands (:mod:`bayesrobust.cli`) and :class:`bayesrobust.Experiment` call these and nothing
else, so a stage behaves the same from the shell, a script or a notebook.

All arguments are checked before any work starts; bad values raise ``ValueError`` (or
``FileNotFoundError`` for missing inputs) with a message naming the value and what was expected.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checks, paths
from .choices import AttackLoss, AttackName, Model, Norm, PosteriorMode
from .inference import resolve_inference
from .presets import Preset, get_preset

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """What a stage did: the file or folder it wrote (or found up to date) and a one-line summary."""

    path: Path
    skipped: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


#: Settings that results gained after some were stored, with the value every result stored before had: a stored
#: config without the key was made with that value (an attack before ``loss`` existed attacked the cross-entropy).
SETTINGS_BEFORE = {"loss": "ce"}


def up_to_date(stored: dict | None, wanted: dict) -> bool:
    """Whether ``stored`` settings equal ``wanted`` on every key of ``wanted`` (JSON-normalised, so tuples
    and lists, enums and their values compare equal); a key of :data:`SETTINGS_BEFORE` missing from ``stored``
    has its value there."""
    if stored is None:
        return False

    def normal(v: Any) -> Any:
        return json.loads(json.dumps(v, sort_keys=True, default=str))
    return all(normal(stored.get(k, SETTINGS_BEFORE.get(k))) == normal(v) for k, v in wanted.items())


def resolve_device(device: str) -> str:
    """``'cpu'``, ``'cuda'`` or ``'cuda:N'``; a CUDA request on a machine without CUDA is an error."""
    import torch
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine; use cpu")
        return device
    raise ValueError(f"unknown device {device!r}; expected cpu, cuda or cuda:N")


def _preset(preset: str | Preset) -> Preset:
    return preset if isinstance(preset, Preset) else get_preset(preset)


def _result_up_to_date(target: Path, config: dict) -> bool:
    """Whether the stored result ``target`` exists and was made with ``config`` (which names the model's
    content hash, so a retrained model makes it stale). A damaged result raises
    :class:`~.store.CorruptResultError` (never up to date, never taken for absent)."""
    from . import store
    if not target.is_file():
        return False
    with store.open_result(target) as old:
        return up_to_date(store.config_of(old), config)


def _stored_attrs(target: Path) -> dict:
    """The attributes of the stored result ``target``."""
    from . import store
    with store.open_result(target) as ds:
        return dict(ds.attrs)


def _counts(**values: Any) -> None:
    """Each value ``None`` (the default) or a positive integer; 0 is an error, never read as "the default"."""
    for name, value in values.items():
        checks.count(name, value)


# -- train -------------------------------------------------------------------------------------------------
def train(preset: str | Preset, model: str, *, inference: str | None = None, out: str | Path | None = None,
          overrides: dict[str, Any] | None = None, eval_draws: int | None = None, seed: int = 0,
          device: str = "cpu", data_root: str | Path | None = None, progress: bool = False,
          force: bool = False, reuse_from: Sequence[str | Path] = ()) -> Done:
    """Train ``model`` with ``preset`` (plus ``overrides``: see :func:`bayesrobust.presets.override_training`)
    and write it to ``OUT/models/PRESET/MODEL_TAG/``; its test accuracy (posterior predictive over
    ``eval_draws`` draws, default the preset's) is stored in its config.

    ``reuse_from``: other output folders (a sweep's steps, :mod:`bayesrobust.grid`); the first one holding this
    model trained with the very same settings and seed is copied instead of training (also with ``force``:
    the sweep passes only the folder its own run has just trained in then)."""
    from . import data as datasets
    from . import store
    from .denormals import flush_denormals
    from .inference import train_model
    from .models.draws import predictive_accuracy
    from .models.posterior import Posterior, recover
    from .presets import override_training
    out = paths.resolve_out(out)
    base = _preset(preset)
    Model.parse(model)
    _counts(eval_draws=eval_draws)
    checks.seed("seed", seed)
    device = resolve_device(device)
    p = override_training(base, model, inference, **(overrides or {}))  # checks every training setting
    inference = resolve_inference(p, model, inference)
    sampled = {"hmc": (p.hmc.chains, p.hmc.samples), "sghmc": (p.sgmcmc.chains, p.sgmcmc.samples),
               "sgld": (p.sgmcmc.chains, p.sgmcmc.samples), "ensemble": (p.ensemble.members, 1)}
    if inference in sampled:  # chains x samples draws exist: checked before the sampling, not after
        chains_, samples_ = sampled[inference]
        available = chains_ * samples_
        if eval_draws is not None and eval_draws > available:
            label = {"hmc": "HMC", "sghmc": "SGHMC", "sgld": "SGLD"}.get(inference, inference)
            raise ValueError(f"eval_draws={eval_draws} but the {label} posterior will have only {available} "
                             f"draws ({chains_} chains x {samples_} samples)")
        eval_draws = min(p.eval_draws, available) if eval_draws is None else eval_draws
    target = paths.model_dir(out, p.name, model, inference)
    tag = paths.model_tag(model, inference)
    wanted = training_config(p, model, inference, seed)
    recover(target)  # a save killed between its renames
    store.clean_leftovers(target)
    found = target.exists() and (not target.is_dir() or
                                 any((target / name).exists() for name in ("config.json", "weights.pt")))
    if not force and found:  # a damaged one raises: never taken for absent
        stored = Posterior.load(target).config
        if same_training(stored, wanted):
            acc = float(stored.get("test_accuracy", float("nan")))
            return Done(target, True, f"{tag} for preset {p.name!r} is up to date in {target} "
                                      f"(test accuracy {acc:.4f}); --force retrains",
                        {"test_accuracy": acc})
    for folder in reuse_from:
        source = paths.model_dir(folder, p.name, model, inference)
        if source.resolve() == target.resolve() or not (source / "config.json").is_file():
            continue
        try:
            stored = Posterior.load(source).config
        except (ValueError, OSError):  # damaged: not a model to copy
            continue
        if same_training(stored, wanted):
            from .models.posterior import copy_checkpoint
            paths.prepare_out(out, "models", p.name)
            copy_checkpoint(source, target)
            acc = float(stored.get("test_accuracy", float("nan")))
            return Done(target, True, f"{tag} for preset {p.name!r} copied from {source} (same training settings "
                                      f"and seed; test accuracy {acc:.4f})", {"test_accuracy": acc})
    test = datasets.load(p.dataset, "test", data_root)  # fail on missing data before training
    paths.prepare_out(out, "models", p.name)  # an unusable --out is reported before training, not after
    map_network = _stored_base_network(out, p, seed) if inference == "laplace" else None
    with flush_denormals(device) as denormals:  # the fit only: evaluation below keeps IEEE numbers
        posterior = train_model(p, model, inference, seed, device, data_root, progress, map_network=map_network)
    posterior.config["training_denormals"] = denormals
    n_draws = posterior.resolve_n_draws(p.eval_draws if eval_draws is None else eval_draws)
    acc = predictive_accuracy(posterior, test.x, test.y, n_draws, device=device)
    posterior.config.update(test_accuracy=acc, test_accuracy_draws=n_draws)
    from .models.posterior import SAMPLED
    fdiag = None
    if posterior.kind in SAMPLED:  # function-space convergence, stored with the checkpoint
        fdiag = function_diagnostics(posterior, test, DIAGNOSE_IMAGES, None, device)
        posterior.config["function_diagnostics"] = fdiag
    posterior.save(target)
    what = "deterministic" if posterior.kind == "deterministic" else f"posterior predictive, {n_draws} draws"
    lines = [f"{tag} on {p.dataset}: test accuracy {acc:.4f} ({what}, {len(test)} images); trained in "
             f"{posterior.config['train_seconds']:.1f} s"]
    diag = posterior.config.get("diagnostics")
    if diag and "rhat_max" in diag:
        lines.append(f"NUTS diagnostics: max R-hat {diag['rhat_max']:.3f}, min bulk ESS {diag['ess_bulk_min']:.1f}, "
                     f"min tail ESS {diag['ess_tail_min']:.1f}, divergences {diag['divergences']}")
    if fdiag is not None:
        lines.append(f"function space ({fdiag['n_images']} test images): log-prob R-hat max "
                     f"{fdiag['logprob_rhat_max']:.3f}, probe-logit R-hat max {fdiag['probe_logit_rhat_max']:.3f}, "
                     f"chain disagreement {fdiag['disagreement_mean']:.4f} (bayesrobust diagnose for more)")
    lines.append(f"model written to {target}")
    return Done(target, False, "\n".join(lines), {"test_accuracy": acc})


def training_config(preset: Preset, model: str, inference: str | None, seed: int) -> dict[str, Any]:
    """What a stored model's config must equal for :func:`train` to take it as up to date (or to copy it): the
    preset fields that train this model (:func:`~bayesrobust.inference.training_fields`, with the overrides
    applied), the model, its resolved inference, the seed (and the ART settings)."""
    from .inference import training_fields
    settings = preset.to_dict()
    wanted = {"preset": {k: settings[k] for k in training_fields(model, inference)}, "model": model,
              "inference": inference, "seed": seed}
    if model in (Model.ART, Model.ART_BAYES):  # changed ART settings retrain
        from dataclasses import asdict

        from .presets import art_config
        wanted["art"] = asdict(art_config(preset))
    return wanted


def same_training(stored: dict, wanted: dict) -> bool:
    """Whether a stored model's ``config`` was trained as :func:`training_config` ``wanted`` (its preset
    compared on the wanted fields only)."""
    stored = {**stored, "preset": {k: (stored.get("preset") or {}).get(k) for k in wanted["preset"]}}
    return up_to_date(stored, wanted)


def _stored_base_network(out: Path, preset: Preset, seed: int) -> Any:
    """The baseNN under ``out`` if it was trained with this preset's data, architecture and ``base`` settings
    and ``seed`` (the Laplace route then approximates around it), else ``None`` (it trains its own)."""
    from .models.posterior import Posterior
    target = paths.model_dir(out, preset.name, "baseNN")
    if not (target / "config.json").is_file():
        return None
    try:
        stored = Posterior.load(target)
    except Exception:  # a damaged baseNN is the baseNN stage's business; train a fresh MAP here
        return None
    return stored.network(0) if same_training(stored.config, training_config(preset, "baseNN", None, seed)) else None


# -- attack ------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """What the attack stages work on: the preset, the loaded model, its evaluation images and S."""

    preset: Preset
    model: str
    inference: str | None
    posterior: Any
    data: Any
    n_draws: int
    device: str
    #: sha256 of the model's weights.pt: the identity of the model a result was computed from
    model_sha256: str = ""

    @classmethod
    def load(cls, preset: str | Preset, model: str, inference: str | None, n_inputs: int | None,
             inputs_seed: int, n_draws: int | None, data_root: str | Path | None, device: str,
             out: str | Path) -> Target:
        """Load the trained model (a missing one names its train command) and the class-balanced subset of
        the test split it was trained for (docs/method.md §1)."""
        from . import store
        from .data import balanced_subset, load
        from .inference import load_model
        from .models.posterior import WEIGHTS_FILE
        _counts(n_inputs=n_inputs, n_draws=n_draws)
        checks.seed("inputs_seed", inputs_seed)
        device = resolve_device(device)
        p = _preset(preset)
        inference = resolve_inference(p, model, inference)
        posterior = load_model(out, p, model, inference)
        dataset = posterior.config.get("dataset", p.dataset)
        data = balanced_subset(load(dataset, "test", data_root), p.n_inputs if n_inputs is None else n_inputs,
                               seed=inputs_seed)
        sha = store.file_hash(paths.model_dir(out, p.name, model, inference) / WEIGHTS_FILE)
        default = min(p.eval_draws, posterior.max_draws or p.eval_draws)  # capped at a sampled posterior's draws
        return cls(p, model, inference, posterior, data,
                   posterior.resolve_n_draws(default if n_draws is None else n_draws), device, sha)

    def config(self, **settings: Any) -> dict[str, Any]:
        """The config stored with a result: the settings plus the model's own training config."""
        return {"preset": self.preset.name, "model": self.model, "inference": self.inference, **settings,
                "n_draws": self.n_draws, "n_inputs": len(self.data), "dataset": self.data.name,
                "device": self.device, "model_config": self.posterior.config, "model_sha256": self.model_sha256}


def make_attack_for(preset: Preset, attack: str, norm: str, epsilon: float | None, steps: int | None,
                    step_size: float | None, random_start: bool, loss: str = "ce"):
    """The FGSM or PGD attack of an attack run: ε, steps and step size default to the preset's (the step
    size only when ε and steps are the preset's; otherwise 2.5·ε/steps); ``loss`` is what it increases."""
    from .adversarial import make_attack
    attack, norm = AttackName.parse(attack, "attack").value, Norm.parse(norm, "norm").value
    epsilon = preset.attack_epsilon if epsilon is None else epsilon
    if attack == AttackName.FGSM:
        if norm != Norm.LINF:
            raise ValueError(f"FGSM is an Linf attack, got norm {norm!r}; use attack pgd for l2")
        return make_attack("fgsm", epsilon=epsilon, loss=loss)
    steps = preset.attack_steps if steps is None else steps
    if step_size is None and epsilon == preset.attack_epsilon and steps == preset.attack_steps:
        step_size = preset.attack_step_size
    return make_attack("pgd", norm=norm, epsilon=epsilon, steps=steps, random_start=random_start,
                       step_size=step_size, loss=loss)


def attack(preset: str | Preset, model: str, *, inference: str | None = None, out: str | Path | None = None,
           attack: str = "fgsm", norm: str = "linf", epsilon: float | None = None, steps: int | None = None,
           step_size: float | None = None, random_start: bool = True, n_inputs: int | None = None,
           inputs_seed: int = 0, n_draws: int | None = None, mode: str = "mean_grad",
           chunk_size: int | None = None, seed: int = 0, data_root: str | Path | None = None,
           device: str = "cpu", force: bool = False, attribution: dict[str, Any] | None = None,
           loss: str = "ce") -> Done:
    """Attack a trained model on the preset's class-balanced test subset (a fullBNN through ``n_draws``
    posterior draws averaged by ``mode``), increasing ``loss`` (``ce`` or ``margin``), and write
    ``OUT/attacks/PRESET/RUN.nc`` (an ``attack`` Dataset, :func:`bayesrobust.adversarial.run_attack`). The attribution
    attacks (``ifia``, ``manipulate``) go to :func:`attribution_attack` with the settings in ``attribution`` (``None``
    values: the defaults)."""
    extra = check_attribution_settings(attribution)  # checked even where FGSM/PGD ignore them
    if str(attack) in ATTRIBUTION_ATTACKS:
        if str(loss) != "ce":
            raise ValueError(f"loss {loss!r} is a setting of fgsm and pgd; attack {attack!r} has its own objective")
        return attribution_attack(preset, model, inference=inference, out=out, attack=attack, epsilon=epsilon,
                                  steps=steps, step_size=step_size, n_inputs=n_inputs, inputs_seed=inputs_seed,
                                  n_draws=n_draws, chunk_size=chunk_size, seed=seed, data_root=data_root,
                                  device=device, force=force, **extra)
    from . import store
    from .adversarial import run_attack
    from .adversarial.posterior import check_mode
    out = paths.resolve_out(out)
    p = _preset(preset)
    mode = PosteriorMode.parse(mode, "posterior mode").value
    _counts(chunk_size=chunk_size, n_inputs=n_inputs, n_draws=n_draws)
    checks.seed("seed", seed)
    made = make_attack_for(p, attack, norm, epsilon, steps, step_size, random_start, loss)  # validates ε, steps
    check_mode(mode, made.loss)  # before the model is loaded
    t = Target.load(p, model, inference, n_inputs, inputs_seed, n_draws, data_root, device, out)
    config = t.config(**made.params(), posterior_mode=mode, inputs_seed=inputs_seed, seed=seed,
                      chunk_size=chunk_size)
    params = made.params()
    run = paths.attack_run_name(model, t.inference, params["attack"], params["norm"], params["epsilon"],
                                t.n_draws, mode, params.get("steps"), params["loss"])
    target = paths.attack_path(out, p.name, run)
    store.clean_leftovers(target)
    if not force and _result_up_to_date(target, config):
        a = _stored_attrs(target)
        return Done(target, True, f"{target} is up to date (same settings and model); --force redoes it",
                    {k: a[k] for k in ("accuracy", "adversarial_accuracy", "success_rate") if k in a})
    paths.prepare_out(out, "attacks", p.name)  # an unusable --out is reported before the attack, not after
    ds = run_attack(t.posterior, t.data, made, mode=mode, n_draws=t.n_draws, seed=seed, model_name=model,
                    config=config, chunk_size=chunk_size, device=t.device)
    ds.attrs["model_sha256"] = t.model_sha256
    path = store.write_netcdf(ds, target, "attack")
    a = ds.attrs
    summary = (f"{made!r} on {paths.model_tag(model, t.inference)} ({len(t.data)} {t.data.name} test images, "
               f"S={t.n_draws}{', ' + mode if t.n_draws > 1 else ''}): clean accuracy {a['accuracy']:.4f}, "
               f"adversarial accuracy {a['adversarial_accuracy']:.4f}, success rate {a['success_rate']:.4f}"
               f"\nattack written to {path}")
    return Done(path, False, summary, {k: a[k] for k in ("accuracy", "adversarial_accuracy", "success_rate")})


def table(preset: str | Preset, model: str, *, inference: str | None = None, out: str | Path | None = None,
          epsilons: dict[str, Sequence[float]] | None = None, steps: Sequence[int] = (20, 100),
          random_start: bool = True, n_inputs: int | None = None, inputs_seed: int = 0,
          n_draws: int | None = None, mode: str = "mean_grad", chunk_size: int | None = None, seed: int = 0,
          data_root: str | Path | None = None, device: str = "cpu", force: bool = False) -> Done:
    """The robust-accuracy table of a trained model (PGD over norm × ε × steps, step size 2.5·ε/steps),
    written to ``OUT/attacks/PRESET/MODEL_TAG_robustness_table_S{S}[_MODE].nc``."""
    from . import store
    from .adversarial import SEED000_EPSILONS, robustness_table
    out = paths.resolve_out(out)
    p = _preset(preset)
    mode = PosteriorMode.parse(mode, "posterior mode").value
    epsilons = {Norm.parse(k, "norm").value: tuple(v)
                for k, v in (SEED000_EPSILONS if epsilons is None else epsilons).items() if len(v)}
    if not epsilons or not steps:
        raise ValueError("the table needs at least one norm with an epsilon and one step count")
    for norm, values in epsilons.items():
        for eps in values:
            checks.real(f"{norm} epsilon", eps, low=0, low_open=True,
                        high=checks.MAX_LINF_EPSILON if norm == Norm.LINF else None, allow_none=False)
    epsilons = {norm: tuple(float(e) for e in values) for norm, values in epsilons.items()}
    for n_steps in steps:
        checks.count("steps", n_steps, allow_none=False)
    _counts(chunk_size=chunk_size, n_inputs=n_inputs, n_draws=n_draws)
    checks.seed("seed", seed)
    t = Target.load(p, model, inference, n_inputs, inputs_seed, n_draws, data_root, device, out)
    config = t.config(epsilons=epsilons, steps=[int(s) for s in steps], random_start=random_start, seed=seed,
                      posterior_mode=mode, inputs_seed=inputs_seed, chunk_size=chunk_size)
    run = f"{paths.model_tag(model, t.inference)}_robustness_table_S{t.n_draws}"
    run = run if t.n_draws == 1 else f"{run}_{mode}"
    target = paths.attack_path(out, p.name, run)
    store.clean_leftovers(target)
    if not force and _result_up_to_date(target, config):
        return Done(target, True, f"{target} is up to date (same settings and model); --force redoes it")
    paths.prepare_out(out, "attacks", p.name)  # an unusable --out is reported before the table, not after
    ds = robustness_table(t.posterior, t.data, epsilons=epsilons, steps=steps, random_start=random_start,
                          mode=mode, n_draws=t.n_draws, seed=seed, model_name=model, config=config,
                          chunk_size=chunk_size, device=t.device)
    ds.attrs["model_sha256"] = t.model_sha256
    path = store.write_netcdf(ds, target, "robustness_table")
    return Done(path, False, f"robust accuracy of {paths.model_tag(model, t.inference)} ({p.name}), PGD step size "
                             f"2.5*eps/steps\n{format_table(ds)}\ntable written to {path}")


def format_table(ds) -> str:
    """A robust-accuracy table as text: one block per norm, a row per ε, a column per step count."""
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


# -- explain -----------------------------------------------------------------------------------------------
#: Config entries that must match for an existing explanation to be reused.
EXPLAIN_SETTINGS = ("preset", "model", "inference", "attack_run", "method", "rules", "composite", "layers",
                    "initial", "n_draws", "seed", "attack_sha256", "model_sha256")


def resolve_attack_run(out: Path, preset: str, model: str, inference: str | None, run: str | Path | None) -> Path:
    """The attack file to explain: a path to a ``.nc`` file, a run name under ``OUT/attacks/PRESET``, or —
    when ``run`` is ``None`` — the only attack run of ``model`` there.

    Raises
    ------
    FileNotFoundError
        No such file (the message lists the runs that exist and the attack command).
    ValueError
        ``run`` is ``None`` and the model has several attack runs (the message lists them).
    """
    folder = paths.attack_path(out, preset, "x").parent
    found = sorted(p.stem for p in folder.glob("*.nc") if "_robustness_table_" not in p.stem) \
        if folder.is_dir() else []
    listing = ", ".join(found) if found else f"none under {folder}"
    command = (f"python -m bayesrobust.attack --model {model} --preset {preset}"
               + (f" --inference {inference}" if inference else "") + f" --out {out}")
    if run is None:
        tag = paths.model_tag(model, inference)
        mine = [name for name in found if name.startswith(tag + "_")]
        if not mine:
            raise FileNotFoundError(f"no attack run of {tag} under {folder}; run `{command}` first")
        if len(mine) > 1:
            raise ValueError(f"{tag} has several attack runs ({', '.join(mine)}); choose one with --attack-run")
        return paths.attack_path(out, preset, mine[0])
    given = Path(run)
    path = given if given.suffix == ".nc" or len(given.parts) > 1 else paths.attack_path(out, preset, str(run))
    if not path.is_file():
        raise FileNotFoundError(f"no attack run {str(run)!r} (looked for {path}); available runs: {listing}. "
                                f"Run `{command}` first")
    return path


def explain(preset: str | Preset, model: str, attack_run: str | Path | None = None, *,
            inference: str | None = None, out: str | Path | None = None, method: str = "lrp",
            rules: Sequence[str] = (), composite: str | None = None, layers: str | Sequence[int] = "all",
            initial: str = "one_hot", n_draws: int | None = None, keep_draws: bool = False,
            batch_size: int | None = None, seed: int = 0, device: str = "cpu", force: bool = False,
            progress: Callable[[int], object] | None = None,
            on_start: Callable[[int], object] | None = None, draws_per_task: int | None = None,
            map_chunks: Callable | None = None) -> Done:
    """Explain an attack run's clean and adversarial images with every draw (docs/method.md §5) and write
    ``OUT/explanations/PRESET/RUN_METHOD.nc`` (with ``keep_draws`` also every draw's maps to
    ``RUN_METHOD_draws.zarr``). ``n_draws`` defaults to the attack run's, so each image is explained by the
    networks that attacked it. ``on_start(total)`` is called once the work is known (total draw passes) and
    ``progress(1)`` after each. With ``draws_per_task``, the draws are explained in chunks of at most that
    many, each through ``map_chunks`` (e.g. on dask workers; default here, one after the other), and merged
    exactly (:func:`bayesrobust.explain.split.explain_split`; ``progress`` is then not called)."""
    from . import store
    from .explain.captum_methods import METHODS
    from .explain.explanation import attack_images, check_attack, explain_attack, make_explainers
    from .explain.layers import resolve_layers
    from .explain.rules import COMPOSITES, RULES
    from .inference import load_model
    from .models.posterior import WEIGHTS_FILE
    from .redo import attack_command
    out = paths.resolve_out(out)
    p = _preset(preset)
    device = resolve_device(device)
    if method != "lrp" and method not in METHODS and method != "rise":
        raise ValueError(f"unknown method {method!r}; expected lrp, rise or one of {', '.join(METHODS)}")
    if method != "lrp" and (rules or composite):
        raise ValueError(f"rules and composites choose LRP rules; they do not apply to method {method!r}")
    for rule in rules:
        if rule not in RULES:
            raise ValueError(f"unknown LRP rule {rule!r}; expected one of {', '.join(RULES)}")
    if composite is not None and composite not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; expected one of {', '.join(COMPOSITES)}")
    if method == "lrp" and not rules and composite is None:
        rules = ("epsilon",)
    _counts(n_draws=n_draws, batch_size=batch_size, draws_per_task=draws_per_task)
    checks.seed("seed", seed)
    inference = resolve_inference(p, model, inference)
    path = resolve_attack_run(out, p.name, model, inference, attack_run)
    run = path.stem
    target = paths.explanation_path(out, p.name, run, method)
    draws_path = paths.explanation_draws_path(out, p.name, run, method) if keep_draws else None
    posterior = load_model(out, p, model, inference)
    model_sha = store.file_hash(paths.model_dir(out, p.name, model, inference) / WEIGHTS_FILE)
    resolve_layers(posterior.network(), layers)  # fail on a bad layer before any work
    explainers = make_explainers(method, tuple(rules), composite, initial)
    with store.open_result(path, "attack") as opened:
        attack_ds = opened.load()
    attack_sha = store.file_hash(path)
    attack_images(attack_ds)  # a NaN, infinite or out-of-range pixel is refused before any work
    attack_preset = store.config_of(attack_ds).get("preset")
    if attack_preset not in (None, p.name):
        raise ValueError(f"attack run {run} was made with preset {attack_preset!r}, not {p.name!r}")
    expected = {"model": model, "inference": posterior.kind, "arch": posterior.arch.name,
                "hidden": posterior.arch.hidden}
    check_attack(attack_ds, expected)  # another model's attack run: say so before comparing model versions
    attacked = str(attack_ds.attrs.get("model_sha256", "") or "")
    if attacked and attacked != model_sha:
        raise store.StaleResultError(
            f"attack run {path} was made with another version of the model in "
            f"{paths.model_dir(out, p.name, model, inference)} (retrained since); redo the attack: "
            f"`{attack_command(out, store.config_of(attack_ds))}`")
    attack_draws = int(attack_ds.attrs.get("n_draws", 1))
    s = posterior.resolve_n_draws(n_draws if n_draws is not None else attack_draws)
    if posterior.kind != "deterministic" and s != attack_draws:
        log.warning("explaining with S=%d draws; the attack used S=%d (draw j is the same network in both)",
                    s, attack_draws)
    link = _attack_link(out, p.name, run, path)
    layer_sel = layers if isinstance(layers, str) else [int(v) for v in layers]
    config = {"preset": p.name, "model": model, "inference": inference, "attack_run": link,
              "method": method, "rules": list(rules), "composite": composite, "layers": layer_sel,
              "initial": initial, "n_draws": s, "batch_size": batch_size, "seed": seed, "keep_draws": keep_draws,
              "device": device, "model_config": posterior.config, "attack_sha256": attack_sha,
              "model_sha256": model_sha}
    for result in (target, paths.explanation_draws_path(out, p.name, run, method)):
        store.clean_leftovers(result)
    if not force and _explanation_up_to_date(target, draws_path, config):
        return Done(target, True, f"{target} is up to date (same settings and attack run); --force "
                                  f"redoes it")
    paths.prepare_out(out, "explanations", p.name)  # an unusable --out is reported before the work, not after
    if on_start is not None:
        on_start(s * len(explainers))
    hashes = {"attack_sha256": attack_sha, "model_sha256": model_sha}
    if draws_per_task is not None and s > draws_per_task:
        from .explain.split import explain_split
        ds = explain_split(posterior, attack_ds, explainers, model_dir=paths.model_dir(out, p.name, model, inference),
                           attack_path=path, draws_per_task=draws_per_task, map_chunks=map_chunks or map,
                           layers=layer_sel, n_draws=s, batch_size=batch_size, seed=seed, draws_path=draws_path,
                           config=config, attack_run=link, expected=expected, device=device, extra_attrs=hashes)
    else:
        ds = explain_attack(posterior, attack_ds, explainers, layers=layer_sel, n_draws=s, batch_size=batch_size,
                            seed=seed, draws_path=draws_path, config=config, attack_run=link, expected=expected,
                            progress=progress, device=device, extra_attrs=hashes)
    written = store.write_netcdf(ds, target, "explanation")
    stale = paths.explanation_draws_path(out, p.name, run, method)
    lines = []
    if draws_path is None and stale.is_dir():
        shutil.rmtree(stale)
        lines.append(f"removed {stale}: its draws belonged to the previous explanation")
    names = ", ".join(str(r) for r in ds["rule"].values)
    lines.append(f"explained {ds.sizes['image']} clean + {ds.sizes['image']} adversarial images of {run} with "
                 f"S={s} draw(s), {method} ({names}), layers "
                 + ", ".join(f"{i} ({n})" for i, n in zip(ds["layer"].values, ds["layer_name"].values)))
    lines.append(f"explanation written to {written}" + (f" (every draw: {draws_path})" if draws_path else ""))
    return Done(written, False, "\n".join(lines))


def _attack_link(out: Path, preset: str, run: str, path: Path) -> str:
    """How an explanation names its attack run: the run name when it lies at its place under ``OUT``, else
    its path relative to ``OUT`` if it is below it, else the path as given — never an absolute path into
    ``OUT``, so a copied or moved output folder keeps its links."""
    if path.resolve() == paths.attack_path(out, preset, run).resolve():
        return run
    try:
        return str(path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def _explanation_up_to_date(target: Path, draws_path: Path | None, config: dict) -> bool:
    """Whether ``target`` holds an explanation made with the same :data:`EXPLAIN_SETTINGS` — among them the
    content hashes of the attack run and the model (a redone attack or a retrained model makes it stale) —
    and the draws store exists if one is asked for. A damaged explanation or draws store raises
    :class:`~.store.CorruptResultError`."""
    from . import store
    if not target.exists() or (draws_path is not None and not draws_path.exists()):
        return False
    with store.open_result(target, "explanation") as ds:
        stored = store.config_of(ds)
    if not up_to_date(stored, {k: config.get(k) for k in EXPLAIN_SETTINGS}):
        return False
    if draws_path is not None:
        store.open_result(draws_path, "explanation").close()  # readable, every chunk there
    return True


# -- controls ----------------------------------------------------------------------------------------------
def control(preset: str | Preset, model: str, kind: str, attack_run: str | Path, *,
            other_run: str | Path | None = None, inference: str | None = None, out: str | Path | None = None,
            seed: int = 0, device: str = "cpu", force: bool = False) -> Done:
    """One control of an explained attack run (``cross`` on ``other_run``'s x̃, or ``random``-sign), written
    to ``OUT/controls/PRESET/`` (:func:`bayesrobust.controls.run`, docs/method.md §9.8)."""
    from . import controls
    return controls.run(preset, model, kind, attack_run, other_run=other_run, inference=inference, out=out,
                        seed=seed, device=device, force=force)


# -- analyze and plot --------------------------------------------------------------------------------------
def analyze(out: str | Path | None = None, preset: str | None = None, *, topk: float = 20,
            attack: str | None = None, norm: str | None = None, epsilon: float | None = None,
            mode: str | None = None, method: str | None = None, name: str | None = None,
            models: Sequence[str] | None = None, loss: str | None = None) -> Done:
    """The stability analysis (docs/method.md §6) of a preset's explained attack runs under ``out``, written
    to ``OUT/analysis/NAME.nc``; ``Done.details['dataset']`` is the analysis Dataset."""
    from . import results, stability
    out = paths.resolve_out(out)
    topk = check_topk(topk)
    attack = None if attack is None else AttackName.parse(attack, "attack").value
    norm = None if norm is None else Norm.parse(norm, "norm").value
    mode = None if mode is None else PosteriorMode.parse(mode, "posterior mode").value
    loss = None if loss is None else AttackLoss.parse(loss, "attack loss").value
    checks.real("epsilon", epsilon, low=0, high=checks.MAX_LINF_EPSILON if norm == Norm.LINF else None)
    if name is not None:
        paths.analysis_path(out, name)  # a name that cannot be a file name is refused before the work
    if out.is_dir():  # (a missing folder is "no results", said by analyse_stored)
        paths.prepare_out(out)  # an unusable --out is reported before the analysis, not after
        if (out / "analysis").exists() and not (out / "analysis").is_dir():
            raise ValueError(f"{out / 'analysis'} is a file; expected the folder of the analysis (move the file away)")
    ds = results.analyse_stored(out, preset, topk, attack=attack, norm=norm, epsilon=epsilon, mode=mode,
                                method=method, models=models, loss=loss)
    if name is None:
        name = results.analysis_name(ds)
        try:  # the default name comes from the stored runs' attributes: never trusted as a path
            paths.analysis_path(out, name)
        except ValueError as err:
            raise ValueError(f"{err}; the attributes of the stored attack runs make this name (crafted or "
                             f"corrupt results?); check them, or choose a name with --name") from None
    path = stability.write(ds, out, name)
    return Done(path, False, f"{analysis_summary(ds)}\n\nanalysis written to {path}", {"dataset": ds})


def _frame(da: xr.DataArray, row: str, fmt: str = ".3f") -> str:
    """``da`` (row, rule, layer) as a text table: a line per (row, layer), a column per rule."""
    import pandas as pd

    from .figures import layer_label, ordered_rules, rule_label
    da = da.transpose(row, "layer", "rule").sel(rule=ordered_rules(da.rule.values.tolist()))
    index = pd.MultiIndex.from_tuples([(str(r), layer_label(da, v)) for r in da[row].values
                                       for v in da.layer.values], names=[row, "layer"])
    df = pd.DataFrame(da.values.reshape(-1, da.sizes["rule"]), index=index,
                      columns=[rule_label(r) for r in da.rule.values])
    return df.to_string(float_format=lambda v: format(v, fmt), na_rep="nan")


def format_ci(median: float, low: float, high: float) -> str:
    """``+0.030 [+0.010, +0.050]``; ``nan`` parts as ``nan``."""
    return f"{median:+.3f} [{low:+.3f}, {high:+.3f}]"


def _ci_frame(ds: xr.Dataset) -> str:
    """Median paired differences with their CIs (subset all): a line per (comparison, layer), a column per rule."""
    import pandas as pd

    from .figures import layer_label, ordered_rules, rule_label
    rules = ordered_rules(ds.rule.values.tolist())
    sel = {"subset": "all"}
    rows, index = [], []
    for comparison in ds.comparison.values:
        for layer in ds.layer.values:
            at = dict(sel, comparison=comparison, layer=layer)
            rows.append([format_ci(*(float(ds[v].sel(at).sel(rule=r)) for v in ("diff_median", "diff_ci_low",
                                                                               "diff_ci_high"))) for r in rules])
            index.append((str(comparison), layer_label(ds, layer)))
    df = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["comparison", "layer"]),
                      columns=[rule_label(r) for r in rules])
    return df.to_string()


def analysis_summary(ds: xr.Dataset) -> str:
    """The printed summary of an analysis Dataset (subset: all images)."""
    outcome = [f"{m}: {int(ds.success.sel(model=m).sum())} successful, {int(ds.failed.sel(model=m).sum())} failed"
               for m in ds.model.values.tolist()]
    parts = [f"{ds.sizes['image']} images, top {float(ds.attrs.get('topk', 20)):g}%; attacks: " + "; ".join(outcome),
             "\nMedian LRP robustness", _frame(ds.lrp_robustness.median("image"), "model")]
    if ds.sizes["comparison"]:
        parts += ["\nMedian paired difference (model - Det) [paired bootstrap 95% CI]", _ci_frame(ds),
                  "\nWilcoxon signed-rank p (two-sided, paired; Benjamini-Hochberg adjusted)",
                  _frame(ds.wilcoxon_p_adjusted.sel(subset="all", drop=True), "comparison", ".2g"),
                  "\nMann-Whitney p (one-sided, H1: Det less robust; the paper's test, unadjusted)",
                  _frame(ds.mannwhitney_p.sel(subset="all", drop=True), "comparison", ".2g")]
    parts += ["\nSpearman rho (LRP robustness, softmax robustness)",
              _frame(ds.spearman_rho.sel(subset="all", drop=True), "model")]
    if ds.sizes.get("comparison", 0) and ds.attrs.get("controls"):  # docs/method.md §9.8
        from .control_figures import control_rows
        from .figures import layer_label, ordered_rules
        rules = ordered_rules(ds.rule.values.tolist())
        parts.append(f"\nControls ({layer_label(ds, ds.layer.values[-1])}): median paired difference (model - Det) "
                     "[paired bootstrap 95% CI]")
        parts += [f"  {c:>20} {label:<24} " + "  ".join(f"{r} {format_ci(*v[r])}" for r in rules)
                  for c, label, v in control_rows(ds)]
    return "\n".join(parts)



def check_topk(topk: Any) -> float:
    """k of the top-k% selection: a percentage of pixels in (0, 100] (not NaN); ``ValueError`` otherwise."""
    try:
        value = float(topk)
    except (TypeError, ValueError):
        raise ValueError(f"topk is a percentage of pixels in (0, 100], got {topk!r}") from None
    if isinstance(topk, bool) or not 0 < value <= 100:  # NaN and inf fail too
        raise ValueError(f"topk is a percentage of pixels in (0, 100], got {topk}")
    return value


FIGURE_NAMES = ("fig1", "fig3", "fig4", "fig5", "fig6", "robustness_table", "controls", "perturbation")
FORMATS = ("png", "pdf")


def plot(out: str | Path | None = None, *, figures: Sequence[str] = (), analyses: Sequence[str] = (),
         preset: str | None = None, rule: str | None = None, layer: str | None = None, subset: str = "all",
         model: str | None = None, topk: float | None = None, formats: Sequence[str] = FORMATS,
         dpi: int = 200) -> Done:
    """Draw the paper's figures from the stored results under ``out`` into ``OUT/figures/``.

    Without ``figures`` every figure the stored results allow is drawn and the others are listed in
    ``Done.details['skipped']`` with the reason; a figure named in ``figures`` that cannot be drawn is an
    error. ``Done.details['written']`` lists the files.
    """
    from . import results, store
    from .figures import table_name
    out = paths.resolve_out(out)
    if topk is not None:
        topk = check_topk(topk)
    checks.count("dpi", dpi, allow_none=False)
    unknown = [f for f in figures if f not in FIGURE_NAMES] + [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown figure or format {', '.join(map(repr, unknown))}; figures: "
                         f"{', '.join(FIGURE_NAMES)}; formats: {', '.join(FORMATS)}")
    if not formats:
        raise ValueError(f"no file format given; expected some of {', '.join(FORMATS)}")
    if out.is_dir():  # (a missing folder is "no analysis", said below)
        paths.prepare_out(out)  # an unusable --out is reported before drawing, not after
        if (out / "figures").exists() and not (out / "figures").is_dir():
            raise ValueError(f"{out / 'figures'} is a file; expected the folder of the figures (move the file away)")
    explicit = bool(figures)
    wanted = list(dict.fromkeys(figures or FIGURE_NAMES))
    settings = {"rule": rule, "layer": layer, "subset": subset, "model": model, "topk": topk}
    jobs: list[tuple[str, Callable[[], Any]]] = []
    if set(wanted) - {"robustness_table"}:
        stored = results.find_analyses(out)
        if analyses:
            unknown = [a for a in analyses if a not in stored]
            if unknown:
                raise ValueError(f"no analysis {', '.join(unknown)} under {out / 'analysis'}; stored: "
                                 f"{', '.join(stored) or 'none'}")
            stored = {a: stored[a] for a in analyses}
        opened = {name: store.open_result(path, "analysis") for name, path in stored.items()}
        if preset is not None:
            opened = {n: ds for n, ds in opened.items() if ds.attrs.get("preset") == preset}
        if not opened and (explicit or "robustness_table" not in wanted or not results.find_tables(out, preset)):
            raise FileNotFoundError(f"no analysis{f' of preset {preset}' if preset else ''} under "
                                    f"{out / 'analysis'}; run `python -m bayesrobust.analyze --out {out}` first")
        for name, ds in opened.items():
            jobs += [(f"{name}_{fig}", build)
                     for fig, build in _analysis_figures(out, ds, wanted, settings, name).items()]
    if "robustness_table" in wanted:
        groups: dict[str, dict] = {}
        for path, ds in results.find_tables(out, preset).items():
            groups.setdefault(path.parent.name, {})[table_name(ds, path.stem)] = ds
        if not groups and explicit:
            raise FileNotFoundError(f"no robust-accuracy table (a result of kind robustness_table) under {out}; "
                                    "compute one with `python -m bayesrobust.robustness_table` first")
        for group, tables in groups.items():
            jobs.append((f"robustness_table_{group}", functools.partial(_table_figure, tables)))
    written, skipped = [], []
    for stem, build in jobs:
        try:
            fig = build()
        except (store.StaleResultError, store.CorruptResultError):
            raise  # the stored results contradict each other: an error, never a figure left out
        except (ValueError, FileNotFoundError) as err:
            if explicit:
                raise ValueError(f"{stem}: {err}") from err
            skipped.append(f"{stem} ({err})")
            continue
        written += save_figure(fig, paths.figure_stem(out, stem), formats, dpi)
    if not written:
        raise ValueError("no figure could be drawn from the stored results"
                         + (f" ({'; '.join(skipped)})" if skipped else ""))
    lines = [f"wrote {p}" for p in written] + [f"skipped {s}" for s in skipped]
    return Done(paths.figures_dir(out), False, "\n".join(lines), {"written": written, "skipped": skipped})


def _table_figure(tables: dict) -> Any:
    from .figures import robustness_table
    return robustness_table(tables)


def _analysis_figures(out: Path, ds: Any, names: Sequence[str], settings: dict,
                      analysis: str | None = None) -> dict[str, Callable[[], Any]]:
    """Builders (figure name → no-argument function) of the figures of one analysis (file stem ``analysis``).
    The figures that reload the runs check they are the files the analysis was computed from
    (:func:`bayesrobust.results.load_runs`)."""
    from . import figures, results
    topk = settings["topk"] if settings["topk"] is not None else float(ds.attrs.get("topk", 20))
    det = str(ds.attrs.get("det", "baseNN"))
    common = {"rule": settings["rule"]}

    @functools.cache
    def runs():
        return results.load_runs(out, ds, analysis)

    def fig1():
        loaded = runs()
        bay = [m for m in ds.model.values.tolist() if str(ds.role.sel(model=m).item()) == "Bay"]
        if not bay:
            raise ValueError("fig1 needs a Bayesian model in the analysis")
        best = max(bay, key=lambda m: int(ds.n_draws.sel(model=m)))
        return figures.fig1(loaded[det], loaded[best], layer=settings["layer"], topk=topk, **common)

    def fig3():
        loaded = runs()
        model = settings["model"] or det
        if model not in loaded:
            raise ValueError(f"no model {model!r} in this analysis; expected one of {', '.join(loaded)}")
        return figures.fig3(loaded[model], topk=topk, **common)

    layers = None if settings["layer"] is None else [settings["layer"]]
    builders = {
        "fig1": fig1, "fig3": fig3,
        "fig4": lambda: figures.fig4(ds, subset=settings["subset"], layers=layers, **common),
        "fig5": lambda: figures.fig5(ds, subset=settings["subset"], layer=settings["layer"]),
        "fig6": lambda: figures.fig6(ds, subset=settings["subset"], layers=layers, **common),
    }
    from . import control_figures  # docs/method.md §9.8
    builders["controls"] = lambda: control_figures.controls_figure(ds, layer=settings["layer"])
    builders["perturbation"] = lambda: control_figures.perturbation_figure(ds, layer=settings["layer"])
    return {n: builders[n] for n in names if n in builders}


def save_figure(fig: Any, stem: Path, formats: Sequence[str] = FORMATS, dpi: int = 200) -> list[Path]:
    """Write ``fig`` to ``STEM.FORMAT`` for each format, each through a hidden temporary file and a rename
    (normal permissions; leftovers of a killed earlier run are removed)."""
    from . import store
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with store.atomic_file(path) as name:
            fig.savefig(name, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=0.04)
        written.append(path)
    return written


# -- faithfulness ------------------------------------------------------------------------------------------
def faithfulness(preset: str | Preset, *, out: str | Path | None = None, models: Sequence[str] | None = None,
                 methods: Sequence[str] | None = None, n_inputs: int | None = None, inputs_seed: int = 0,
                 n_draws: int | None = None, steps: int = 50, deletion_baseline: str = "zero",
                 insertion_baseline: str = "blur", threshold: float = 0.5, rise_masks: int = 2000,
                 randomisation: bool = True, randomisation_inputs: int | None = None, seed: int = 0,
                 data_root: str | Path | None = None, device: str = "cpu", force: bool = False,
                 progress: Callable[[int], object] | None = None) -> Done:
    """Faithfulness and sanity checks of every trained model of ``preset`` and every method, per draw and for
    the mean map, next to the stored LRP robustness (docs/method.md §10); written to
    ``OUT/faithfulness/PRESET/`` (:mod:`bayesrobust.faithfulness_report`)."""
    from . import faithfulness_report
    folder, summary, details = faithfulness_report.run(
        _preset(preset).name, out=out, models=models, methods=methods, n_inputs=n_inputs, inputs_seed=inputs_seed,
        n_draws=n_draws, steps=steps, deletion_baseline=deletion_baseline, insertion_baseline=insertion_baseline,
        threshold=threshold, rise_masks=rise_masks, randomisation=randomisation,
        randomisation_inputs=randomisation_inputs, seed=seed, data_root=data_root,
        device=resolve_device(device), force=force, progress=progress)
    return Done(folder, False, summary, details)
# -- attacks on explanations (docs/method.md §11) ---------------------------------------------------------
#: Attacks whose target is the attribution map, not the prediction.
ATTRIBUTION_ATTACKS = (AttackName.IFIA.value, AttackName.MANIPULATE.value)


def check_attribution_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The given (not ``None``) settings of an attribution attack, each checked: ``method``, ``variant`` (by
    name), ``k`` and ``ig_steps`` positive integers, ``beta`` positive and finite, ``gamma`` ≥ 0 and finite."""
    from .choices import AttributionMethod, IFIAVariant
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    unknown = set(given) - {"method", "variant", "k", "beta", "ig_steps", "gamma"}
    if unknown:
        raise ValueError(f"unknown attribution setting(s) {sorted(unknown)}")
    if "method" in given:
        AttributionMethod.parse(given["method"], "attribution method")
    if "variant" in given:
        IFIAVariant.parse(given["variant"], "IFIA variant")
    _counts(k=given.get("k"), ig_steps=given.get("ig_steps"))
    checks.positive("beta", given.get("beta"))
    checks.real("gamma", given.get("gamma"), low=0)
    return given


def attribution_run_name(model: str, inference: str | None, params: dict, n_draws: int) -> str:
    """E.g. ``artBNN_ifia_topk_saliency_eps0.3_steps100_S20``."""
    variant = f"_{params['variant']}" if "variant" in params else ""
    return paths.safe_name(f"{paths.model_tag(model, inference)}_{params['attack']}{variant}_{params['method']}"
                           f"_eps{params['epsilon']:g}_steps{params['steps']}_S{n_draws}", "attribution run name")


def attribution_attack(preset: str | Preset, model: str, *, inference: str | None = None,
                       out: str | Path | None = None, attack: str = "ifia", method: str = "saliency",
                       variant: str = "topk", epsilon: float | None = None, steps: int | None = None,
                       step_size: float | None = None, k: int | None = None, beta: float | None = 10.0,
                       ig_steps: int = 16, gamma: float = 1.0, n_inputs: int | None = None, inputs_seed: int = 0,
                       n_draws: int | None = None, chunk_size: int | None = None, seed: int = 0,
                       data_root: str | Path | None = None, device: str = "cpu", force: bool = False) -> Done:
    """Attack the Bayesian explanation of a trained model (IFIA or the targeted manipulation) on the preset's
    class-balanced test subset and write ``OUT/attributions/PRESET/RUN.nc`` (an ``attribution_attack``
    Dataset, :func:`bayesrobust.adversarial.attribution_run.run_attribution_attack`). ε, steps, step size and
    k default to the literature's for the image size (:func:`~.adversarial.manipulation.literature_defaults`);
    the PGD column uses the preset's attack settings."""
    from . import store
    from .adversarial.attribution_run import run_attribution_attack
    from .adversarial.manipulation import IFIA, Manipulate, literature_defaults
    from .adversarial.pgd import PGD
    out = paths.resolve_out(out)
    p = _preset(preset)
    attack = AttackName.parse(attack, "attack").value
    if attack not in ATTRIBUTION_ATTACKS:
        raise ValueError(f"attack {attack!r} is not an attribution attack; expected one of "
                         f"{', '.join(ATTRIBUTION_ATTACKS)}")
    _counts(chunk_size=chunk_size, n_inputs=n_inputs, n_draws=n_draws)
    checks.seed("seed", seed)
    defaults = literature_defaults(tuple(p.arch.in_shape))
    settings = {"method": method, "epsilon": defaults["epsilon"] if epsilon is None else epsilon,
                "steps": defaults["steps"] if steps is None else steps,
                "step_size": defaults["step_size"] if step_size is None else step_size,
                "beta": beta, "ig_steps": ig_steps}
    made = (IFIA(variant=variant, k=defaults["k"] if k is None else k, **settings) if attack == "ifia"
            else Manipulate(gamma=gamma, **settings))  # validates every setting before the model is loaded
    pgd = PGD(epsilon=p.attack_epsilon, steps=p.attack_steps, step_size=p.attack_step_size)
    t = Target.load(p, model, inference, n_inputs, inputs_seed, n_draws, data_root, device, out)
    params = made.params()
    config = t.config(**params, pgd=pgd.params(), inputs_seed=inputs_seed, seed=seed, chunk_size=chunk_size)
    run = attribution_run_name(model, t.inference, params, t.n_draws)
    target = paths.under(out, "attributions", p.name, f"{run}.nc")
    store.clean_leftovers(target)
    if not force and _result_up_to_date(target, config):
        return Done(target, True, f"{target} is up to date (same settings and model); --force redoes it")
    paths.prepare_out(out, "attributions", p.name)
    ds = run_attribution_attack(t.posterior, t.data, made, n_draws=t.n_draws, seed=seed, model_name=model,
                                config=config, chunk_size=chunk_size, device=t.device, pgd=pgd)
    ds.attrs["model_sha256"] = t.model_sha256
    path = store.write_netcdf(ds, target, "attribution_attack")
    a = ds.attrs
    summary = (f"{made!r} on {paths.model_tag(model, t.inference)} ({len(t.data)} {t.data.name} test images, "
               f"S={t.n_draws}): natural accuracy {a['natural_accuracy']:.4f}, PGD accuracy "
               f"{a['pgd_accuracy']:.4f}, labels kept {a['label_kept']:.4f}, top-{params.get('k', 200)} "
               f"intersection {a['mean_topk_intersection']:.4f}, Kendall tau {a['mean_kendall_tau']:.4f}"
               f"\nattribution attack written to {path}")
    return Done(path, False, summary, {k_: a[k_] for k_ in ("natural_accuracy", "pgd_accuracy",
                                                             "mean_topk_intersection", "mean_kendall_tau")})


def attribution_table(preset: str | Preset, *, out: str | Path | None = None, attack: str | None = None,
                      method: str | None = None, image: int = 0, formats: Sequence[str] = ("png",),
                      dpi: int = 150) -> Done:
    """Seed 002's table (natural accuracy, PGD accuracy, top-k intersection, Kendall τ under the attribution
    attack) over the stored attribution runs of ``preset`` (optionally one attack or method), written to
    ``OUT/attributions/PRESET/attribution_table.nc``, and the figure of one image's original and attacked
    image and map per run, ``OUT/figures/attribution_PRESET.FORMAT``."""
    from . import store
    from .adversarial.attribution_run import attribution_table as make_table
    from .adversarial.attribution_run import format_table
    from .choices import AttributionMethod
    from .figures import attribution_figure
    out = paths.resolve_out(out)
    p = _preset(preset)
    attack = None if attack is None else AttackName.parse(attack, "attack").value
    method = None if method is None else AttributionMethod.parse(method, "attribution method").value
    checks.count("image", image, minimum=0, allow_none=False)
    folder = paths.under(out, "attributions", p.name)
    found = sorted(folder.glob("*.nc")) if folder.is_dir() else []
    runs, names = [], []
    for path in found:
        if path.stem == "attribution_table":
            continue
        ds = store.open_result(path, "attribution_attack")
        if (attack is None or ds.attrs.get("attack") == attack) \
                and (method is None or ds.attrs.get("method") == method):
            runs.append(ds.load())
            names.append(path.stem)
        ds.close()
    if not runs:
        raise FileNotFoundError(f"no attribution-attack run of preset {p.name!r} under {folder}"
                                + (f" (attack {attack}, method {method})" if attack or method else "")
                                + f"; run `bayesrobust attack --attack ifia --model baseNN --preset {p.name}` first")
    if image >= min(r.sizes["image"] for r in runs):
        raise ValueError(f"image {image} but a run has only {min(r.sizes['image'] for r in runs)} images")
    table = make_table(runs, names)
    written = [store.write_netcdf(table, folder / "attribution_table.nc", "attribution_table")]
    fig = attribution_figure([dict(zip(names, runs))[n] for n in table["run"].values], list(table["run"].values),
                             image=image)
    written += save_figure(fig, paths.figure_stem(out, f"attribution_{p.name}"), formats, dpi)
    return Done(written[0], False, format_table(table) + "\n" + "\n".join(f"wrote {w}" for w in written),
                {"table": table, "written": written})


# -- diagnose ----------------------------------------------------------------------------------------------
#: Held-out images of the function-space diagnostics (a class-balanced subset of the test split).
DIAGNOSE_IMAGES = 500
FUNCTION_DIAGNOSTICS_FILE = "function_diagnostics.json"


def function_diagnostics(posterior: Any, test: Any, n_images: int = DIAGNOSE_IMAGES, n_draws: int | None = None,
                         device: str = "cpu") -> dict[str, Any]:
    """Function-space (and weight-space) diagnostics of ``posterior`` on a class-balanced subset of
    ``n_images`` images of ``test`` (all of it when ``n_images`` covers it;
    :func:`bayesrobust.convergence.function_space`), with the settings."""
    from .convergence import function_space
    from .data import balanced_or_whole
    subset = balanced_or_whole(test, n_images, seed=0, name="n_images")
    diag = function_space(posterior, subset.x, subset.y, n_draws, device=device)
    diag["settings"] = {"n_images": len(subset), "n_draws": n_draws, "dataset": test.name}
    return diag


def diagnose(preset: str | Preset, model: str = "fullBNN", *, inference: str | None = None,
             out: str | Path | None = None, n_images: int | None = None, n_draws: int | None = None,
             data_root: str | Path | None = None, device: str = "cpu", force: bool = False) -> Done:
    """Function-space convergence of a trained model (docs/method.md §13.4): R-hat/ESS of held-out log
    predictive probabilities and of probe-batch logits across chains, chain-to-chain disagreement, and
    weight-space numbers beside them. Computed at training for every posterior and stored with the checkpoint
    (``config['function_diagnostics']``); other settings (``n_images``, ``n_draws`` for posteriors without
    stored samples) are computed here and written to ``function_diagnostics.json`` in the model folder."""
    import json

    from . import store
    from .convergence import describe
    from .data import load
    from .inference import load_model
    Model.parse(model)
    _counts(n_images=n_images, n_draws=n_draws)
    device = resolve_device(device)
    out = paths.resolve_out(out)
    p = _preset(preset)
    inference = resolve_inference(p, model, inference)
    posterior = load_model(out, p, model, inference)
    folder = paths.model_dir(out, p.name, model, inference)
    dataset = posterior.config.get("dataset", p.dataset)
    if posterior.kind == "deterministic":
        raise ValueError(f"{paths.model_tag(model, inference)} is one deterministic network: there are no draws "
                         f"to diagnose (diagnose a fullBNN)")
    tag = paths.model_tag(model, inference)
    extra_file = folder / FUNCTION_DIAGNOSTICS_FILE
    test = load(dataset, "test", data_root)
    wanted = {"n_images": min(DIAGNOSE_IMAGES if n_images is None else n_images, len(test)), "n_draws": n_draws,
              "dataset": dataset}
    stored = [posterior.config.get("function_diagnostics")]
    if extra_file.is_file():
        try:
            stored.append(json.loads(extra_file.read_text()))
        except ValueError as err:
            raise store.CorruptResultError(extra_file, store.error_reason(err)) from err
    for diag in stored:
        if not force and isinstance(diag, dict) and diag.get("settings") == wanted:
            return Done(folder, True, f"{tag} ({p.name}), stored diagnostics:\n{describe(diag)}", diag)
    diag = function_diagnostics(posterior, test, wanted["n_images"], n_draws, device)
    store.write_text_atomic(extra_file, json.dumps(diag, indent=2))
    return Done(extra_file, False, f"{tag} ({p.name}):\n{describe(diag)}\nwritten to {extra_file}", diag)


# -- evaluate ----------------------------------------------------------------------------------------------
def trained_models(out: str | Path, preset: str) -> list[str]:
    """The tags of the models trained under ``OUT/models/PRESET`` (``baseNN``, ``fullBNN_sghmc``, ...),
    baseNN and advNN first."""
    from .models.posterior import CONFIG_FILE
    folder = paths.resolve_out(out) / "models" / preset
    found = sorted(d.name for d in folder.iterdir() if (d / CONFIG_FILE).is_file()) if folder.is_dir() else []
    return sorted(found, key=lambda t: (not t.startswith("baseNN"), not t.startswith("advNN"), t))


def split_tag(tag: str) -> tuple[str, str | None]:
    """``'fullBNN_sghmc'`` → (``'fullBNN'``, ``'sghmc'``); ``'baseNN'`` → (``'baseNN'``, ``None``).

    Raises
    ------
    ValueError
        Not a model tag: the message lists the valid forms.
    """
    from .choices import Inference
    model, _, inference = tag.partition("_")
    ok = (model in ("baseNN", "advNN") and not inference) or (model == "fullBNN" and inference in Inference.values())
    if not ok:
        raise ValueError(f"unknown model {tag!r}; expected baseNN, advNN or fullBNN_<inference> with inference "
                         f"one of {', '.join(Inference.values())}")
    return model, inference or None


def evaluate(preset: str | Preset, models: Sequence[str] | None = None, *, out: str | Path | None = None,
             n_images: int | None = None, n_draws: int | None = None, ood: str | None = "auto",
             data_root: str | Path | None = None, device: str = "cpu", force: bool = False) -> Done:
    """Accuracy, NLL, Brier, ECE, predictive entropy, mutual information and OOD AUROC of trained models side
    by side (docs/method.md §13.5), written to ``OUT/evaluation/PRESET/evaluation_N{n}_S{S}_{ood}.nc`` with
    the reliability diagram beside it (``.png``/``.pdf``).

    Parameters
    ----------
    models
        Model tags (``baseNN``, ``advNN``, ``fullBNN_sghmc``, ...); default every model trained under ``out``
        for the preset.
    n_images
        In-distribution test images (class-balanced subset, seed 0) and as many OOD images; default all.
    n_draws
        Posterior draws (default the preset's ``eval_draws``, capped at a sampled posterior's samples).
    ood
        The out-of-distribution dataset, ``'auto'`` (MNIST ↔ Fashion-MNIST) or ``None``/``'none'``.
    """
    from . import data as datasets
    from . import store
    from . import uncertainty_report as report
    from .inference import load_model
    from .models.posterior import WEIGHTS_FILE
    _counts(n_images=n_images, n_draws=n_draws)
    device = resolve_device(device)
    out = paths.resolve_out(out)
    p = _preset(preset)
    tags = list(dict.fromkeys(models)) if models else trained_models(out, p.name)  # a tag given twice: once
    if not tags:
        raise FileNotFoundError(f"no trained models for preset {p.name!r} under {out / 'models' / p.name}; train "
                                f"some first, e.g. python -m bayesrobust.train --model baseNN --preset {p.name} "
                                f"--out {out}")
    parsed = [split_tag(t) for t in tags]
    ood = OOD_NONE if ood in (None, "none") else ood
    if ood == "auto":
        ood = report.OOD_OF.get(p.dataset, OOD_NONE)
    if ood != OOD_NONE:
        datasets.dataset_info(ood)
    posteriors = {t: load_model(out, p, m, i) for t, (m, i) in zip(tags, parsed)}  # missing ones named first
    dataset = next(iter(posteriors.values())).config.get("dataset", p.dataset)
    test = datasets.load(dataset, "test", data_root)
    n = len(test) if n_images is None else min(n_images, len(test))
    test = datasets.balanced_or_whole(test, n, seed=0, name="n_images")
    x_ood = None
    if ood != OOD_NONE:
        other = datasets.load(ood, "test", data_root)
        if other.x.shape[1:] != test.x.shape[1:]:
            raise ValueError(f"OOD dataset {ood!r} has images of shape {tuple(other.x.shape[1:])}, the models "
                             f"take {tuple(test.x.shape[1:])}")
        # Fashion-MNIST: all 10,000 MNIST test images
        x_ood = datasets.balanced_or_whole(other, n, seed=0, name="n_images").x
    s = p.eval_draws if n_draws is None else n_draws
    draws = {t: post.resolve_n_draws(min(s, post.max_draws) if post.max_draws and n_draws is None else s)
             for t, post in posteriors.items()}
    hashes = {t: store.file_hash(paths.model_dir(out, p.name, m, i) / WEIGHTS_FILE) for t, (m, i) in
              zip(tags, parsed)}
    config = {"preset": p.name, "models": tags, "n_images": len(test), "n_draws": draws, "ood": ood,
              "dataset": dataset, "model_sha256": hashes}
    folder = paths.prepare_out(out, "evaluation", p.name) / "evaluation" / p.name
    name = paths.safe_name(f"evaluation_{'-'.join(tags)}_N{len(test)}_S{s}_{ood}", "evaluation name")
    target = folder / f"{name}.nc"
    if not force and _result_up_to_date(target, config):
        with store.open_result(target, "evaluation") as ds:
            return Done(target, True, f"{report.format_table(ds.load())}\nup to date: {target}")
    results = {t: report.evaluate_posterior(post, test.x, test.y, x_ood, draws[t], device)
               for t, post in posteriors.items()}
    ds = report.to_dataset(results, config, len(next(iter(results.values()))["bin_count"]))
    store.write_netcdf(ds, target, "evaluation")
    figures = save_figure(report.reliability_figure(ds), target.with_suffix(""))
    table = report.format_table(ds)
    return Done(target, False, f"{dataset}, {len(test)} images; OOD {ood}\n{table}\nwritten to {target} and "
                               f"{', '.join(str(f) for f in figures)}", {"table": table})


OOD_NONE = "none"
