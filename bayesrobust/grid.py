"""Sweep descriptions: an experiment grid as named axes in a TOML file, and its work units (docs/method.md §12).

A sweep file (``experiments/sweeps/*.toml``) has these tables::

    description = "what the sweep reproduces"
    [grid]            # the axes: each a value or a list of values
    preset = ["mnist_fc2", "fashion_mnist_fc2"]
    models = ["baseNN", "advNN", "fullBNN"]
    attack = ["fgsm"]
    epsilon = []      # [] = the preset's
    draws = [10, 50, 100]
    rules = ["epsilon"]
    seeds = [0]
    [settings]        # one value each (controls: a list)
    draws_per_task = 50
    [quick]           # replaces grid axes or settings in --quick mode
    preset = ["quick"]
    [steps.0_reference]      # optional: named variants of the experiment (the fidelity ladder)
    likelihood_scaling = "reference"
    [steps.0_reference.quick]

Each point of ``preset × attack × epsilon × seed`` is one :class:`~bayesrobust.Experiment` (its models,
draws and rules are axes within it), checked in full before any work. With ``[steps.NAME]`` tables every
point is run once per step, the step's axes and settings replacing the sweep's, in ``OUT/PRESET/FOLDER``
(``folder``: default the step's name; steps may share one, e.g. a PGD run beside an FGSM one); ``for_inference``
limits a step to presets whose fullBNN uses one of the given inferences; a setting that does not apply to the
fullBNN's inference (``likelihood_scaling`` to SVI; ``hmc_scheme``, ``subset_size``, ``warmup``, ``n_train``
to NUTS; ``chains`` and ``samples`` to NUTS and SGHMC/SGLD, but to NUTS only when a step sets them; ``burnin``,
``precondition``, ``max_precondition`` and ``temperature`` to SGHMC/SGLD; the fullBNN's ``epochs`` and ``lr``
to all but NUTS, ``prior_scale`` to all but the ensemble, ``members`` to the ensemble, ``optimizer`` and
``momentum`` to the ensemble's and Laplace's baseNNs) is left out
(:data:`ONLY_FOR`, :data:`STEP_ONLY_FOR`).
:func:`units` turns the experiments into :class:`Unit` s — one stage call each (train, attack, explain, control,
analyze, plot), described by its settings and the keys of the units it needs, never by a model — shared between
experiments when equal (a model is trained once for all its attacks); a model that another step trains with the
very same settings is copied from that step's folder, not trained again. The runner is :mod:`bayesrobust.cluster`.

Several seeds write to ``OUT/seed{N}`` (the stores' layout has no seed in its names); several ε share ``OUT``
(attack runs are named by ε) and get one analysis each, named ``..._eps{ε}``.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import checks, paths
from .choices import Control, Inference, Model
from .errors import UserError
from .presets import APPLIES_TO
from .stability import model_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib

#: Grid axes (each a list in the file; a single value is a list of one) and their element types.
AXES: dict[str, type | tuple[type, ...]] = {
    "preset": str, "models": str, "attack": str, "epsilon": (int, float), "draws": int, "rules": str,
    "seeds": int}
#: One-valued settings and their types (those in :data:`LIST_SETTINGS`: a list of them).
SETTINGS: dict[str, type | tuple[type, ...]] = {
    "inference": str, "norm": str, "steps": int, "mode": str, "loss": str, "n_inputs": int, "topk": (int, float),
    "likelihood_scaling": str, "hmc_scheme": str, "subset_size": int, "chains": int, "warmup": int, "samples": int,
    "n_train": int, "epochs": int, "lr": (int, float), "burnin": int, "precondition": str,
    "max_precondition": (int, float), "temperature": (int, float), "prior_scale": (int, float), "members": int,
    "optimizer": str, "momentum": (int, float),
    "controls": str,
    "draws_per_task": int, "keep_draws": bool, "data_root": str, "device": str}
LIST_SETTINGS = ("controls",)
#: Settings of the whole sweep, which a step cannot change.
SWEEP_ONLY = ("data_root", "device", "draws_per_task", "keep_draws")
#: Settings a step leaves out when the fullBNN's inference is not one of those they belong to: the fullBNN
#: inferences of :data:`~bayesrobust.presets.APPLIES_TO`.
ONLY_FOR: dict[str, tuple[str, ...]] = {
    k: tuple(r for r in APPLIES_TO[k] if r in Inference.values())
    for k in ("likelihood_scaling", "hmc_scheme", "subset_size", "warmup", "n_train", "burnin", "precondition",
              "max_precondition", "temperature", "epochs", "lr", "prior_scale", "members", "chains", "samples",
              "optimizer", "momentum")}
#: Narrower for a value from a ``[steps.NAME]`` table (or ``--set STEP.KEY``): there ``chains`` and ``samples``
#: reach NUTS only, as the ladder's ``CHAINS`` sizes the reference's subset chains, not SGHMC's; set for the
#: whole sweep (``--set chains=1``) they reach SGHMC and SGLD too.
STEP_ONLY_FOR: dict[str, tuple[str, ...]] = {"chains": ("hmc",), "samples": ("hmc",)}
#: The keys of a ``[steps.NAME]`` table besides its axes and settings.
STEP_ONLY = ("folder", "for_inference", "quick")
STEP_KEYS = tuple([a for a in AXES if a not in ("preset", "seeds")] +
                  [k for k in SETTINGS if k not in SWEEP_ONLY] + list(STEP_ONLY))
TABLES = ("description", "grid", "settings", "quick", "steps")


class SweepError(UserError):
    """A sweep file that cannot be run; the message is one line naming the file and the bad key or value."""


@dataclass(frozen=True)
class Step:
    """One ``[steps.NAME]`` table: the axes (tuples) and settings it replaces, its folder under ``OUT/PRESET``
    and the fullBNN inferences it is for (empty: every one)."""

    name: str
    changes: dict[str, Any] = field(hash=False)
    folder: str = ""
    for_inference: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: its grid (axis → values), settings (name → value) and the steps to run (none: one
    experiment per point in ``OUT`` itself); ``folders`` are the folders of all the file's steps (the
    selected ones and the others: a model may be copied from any of them)."""

    name: str
    grid: dict[str, tuple]
    settings: dict[str, Any]
    description: str = ""
    steps: tuple[Step, ...] = ()
    folders: tuple[str, ...] = ()

    def resolved(self, step: Step | None) -> tuple[dict[str, tuple], dict[str, Any]]:
        """The grid and settings of ``step`` (the sweep's, the step's changes applied)."""
        if step is None:
            return self.grid, self.settings
        grid, settings = dict(self.grid), dict(self.settings)
        for key, value in step.changes.items():
            (grid if key in AXES else settings)[key] = value
        return grid, settings

    def points(self) -> list[dict[str, Any]]:
        """One dict per ``preset × step × attack × epsilon × seed`` (ε ``None``: the preset's; step ``None``
        without steps), the steps a preset's fullBNN inference excludes left out."""
        found = []
        for preset, seed in itertools.product(self.grid["preset"], self.grid["seeds"]):
            for step in self.steps or (None,):
                grid, settings = self.resolved(step)
                if step is not None and step.for_inference and \
                        _bayes_inference(preset, self.settings) not in step.for_inference:
                    continue
                for a, e in itertools.product(grid["attack"], grid.get("epsilon") or (None,)):
                    found.append({"preset": preset, "step": step.name if step else None, "attack": a,
                                  "epsilon": e, "seed": seed})
        return found

    def root(self, out: Path, point: Mapping[str, Any], folder: str | None = None) -> Path:
        """The output folder of a point (of its step's ``folder`` unless another is given)."""
        root = out / f"seed{point['seed']}" if len(self.grid["seeds"]) > 1 else out
        if point["step"] is None:
            return root
        return root / point["preset"] / (folder or self._step(point["step"]).folder)

    def _step(self, name: str | None) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def experiments(self, out: str | Path | None = None, force: bool = False) -> list[tuple[dict, Any]]:
        """``(point, Experiment)`` for every point, each checked (``ValueError`` naming the point)."""
        from .experiment import Experiment
        out = paths.resolve_out(out)
        points = self.points()
        if not points:  # every chosen step is for another inference than the presets'
            inferences = ", ".join(f"{p}: {_bayes_inference(p, self.settings)}" for p in self.grid["preset"])
            raise SweepError(f"sweep {self.name!r}: none of the steps {', '.join(s.name for s in self.steps)} "
                             f"applies to the presets' fullBNN inference ({inferences})")
        found = []
        for point in points:
            step = self._step(point["step"])
            grid, settings = self.resolved(step)
            kwargs = self._applying(step, settings, _bayes_inference(point["preset"], settings))
            try:
                exp = Experiment(point["preset"], self.root(out, point), attack=point["attack"],
                                 epsilon=point["epsilon"], seed=point["seed"], models=grid["models"],
                                 draws=grid.get("draws", ()), rules=grid["rules"], force=force, **kwargs)
            except (ValueError, OSError) as err:
                where = ", ".join(f"{k}={v}" for k, v in point.items() if v is not None)
                raise SweepError(f"sweep {self.name!r}, point {where}: {err}") from None
            found.append((point, exp))
        return found

    def _applying(self, step: Step | None, settings: Mapping[str, Any], inference: str) -> dict[str, Any]:
        """The experiment settings among ``settings`` (``step``'s resolved) that reach a fullBNN of ``inference``
        (:data:`ONLY_FOR`): a step's value, or the sweep's where the step's is only for NUTS
        (:data:`STEP_ONLY_FOR`)."""
        found = {}
        for key, value in settings.items():
            if key in ("draws_per_task", "keep_draws"):
                continue
            if step is not None and key in step.changes and inference not in STEP_ONLY_FOR.get(key, (inference,)):
                if key not in self.settings:
                    continue
                value = self.settings[key]
            if inference in ONLY_FOR.get(key, (inference,)):
                found[key] = value
        return found


def _bayes_inference(preset: str, settings: Mapping[str, Any]) -> str:
    """The fullBNN inference of ``preset`` under ``settings`` (their ``inference``, else the preset's)."""
    from .presets import get_preset
    return settings.get("inference") or get_preset(preset).inference


def _as_list(name: str, value: Any, kind: type | tuple[type, ...], where: str) -> tuple:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
            raise SweepError(f"{where}: {name} has the value {v!r}; expected {_type_name(kind)}")
    return tuple(values)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names[kind[-1] if isinstance(kind, tuple) else kind]


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(allowed)}")


def _check_setting(key: str, value: Any, where: str) -> Any:
    """A setting's value, type-checked (a list setting as a tuple)."""
    kind = SETTINGS[key]
    if key in LIST_SETTINGS:
        return _as_list(key, value, kind, where)
    if isinstance(value, list) or not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SweepError(f"{where}: {key} = {value!r}; expected {_type_name(kind)}")
    return value


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SweepError(f"{where}: {key} must be a table ([{key}]), got {value!r}")
    return dict(value)


def parse(text: str, name: str = "sweep", *, quick: bool = False,
          overrides: Mapping[str, Any] | None = None, steps: Sequence[str] = (),
          skip_steps: Sequence[str] = ()) -> Sweep:
    """Read and check a sweep description (TOML text). ``quick`` applies its ``[quick]`` tables; then
    ``overrides`` (axis or setting → value; ``STEP.KEY`` → a step's value) replace entries (e.g.
    ``{"preset": "tiny"}`` from ``--set``). ``steps``/``skip_steps``: run only the steps matching one of
    these names or shell patterns / not those matching one.

    Raises
    ------
    SweepError
        Not TOML, an unknown table, key, step or value, a value of the wrong type, an empty axis — one line
        naming it.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{name}: not a valid TOML file: {err}") from None
    _check_keys(raw, TABLES, name)
    grid, settings, quick_table = (_table(raw, t, name) for t in ("grid", "settings", "quick"))
    raw_steps = _table(raw, "steps", name)
    _check_keys(grid, list(AXES), f"{name} [grid]")
    _check_keys(settings, list(SETTINGS), f"{name} [settings]")
    _check_keys(quick_table, [*AXES, *SETTINGS], f"{name} [quick]")
    step_changes: dict[str, dict[str, Any]] = {}
    for step, table in raw_steps.items():
        where = f"{name} [steps.{step}]"
        if not isinstance(table, dict):
            raise SweepError(f"{where}: a step must be a table of settings, got {table!r}")
        step_changes[step] = dict(table)
        _check_keys(table, STEP_KEYS, where)
        step_quick = _table(table, "quick", where)
        _check_keys(step_quick, [k for k in STEP_KEYS if k not in STEP_ONLY], f"{where[:-1]}.quick]")
        if quick:
            step_changes[step].update(step_quick)
        step_changes[step].pop("quick", None)
    for key, value in (quick_table if quick else {}).items():
        (grid if key in AXES else settings)[key] = value
    for key, value in dict(overrides or {}).items():
        step, dot, key_in_step = key.rpartition(".")
        if dot:
            if step not in step_changes:
                raise SweepError(f"{name} --set {key}: no step {step!r}; the steps are "
                                 f"{', '.join(step_changes) or '(none)'}")
            _check_keys({key_in_step: value}, [k for k in STEP_KEYS if k != "quick"], f"{name} --set")
            step_changes[step][key_in_step] = value
        else:
            _check_keys({key: value}, [*AXES, *SETTINGS], f"{name} --set")
            (grid if key in AXES else settings)[key] = value
    for axis in ("preset", "attack", "seeds", "rules", "models"):
        grid.setdefault(axis, {"attack": ["fgsm"], "seeds": [0], "rules": ["epsilon"],
                               "models": list(Model.values())}.get(axis))
        if grid[axis] is None:
            raise SweepError(f"{name} [grid]: the axis {axis!r} is missing; give it one or more values")
    checked = _check_axes(grid, f"{name} [grid]")
    settings = {key: _check_setting(key, value, f"{name} [settings]") for key, value in settings.items()}
    _check_values(checked, settings, name)
    if settings.get("data_root") == "":
        settings.pop("data_root")
    all_steps = [_check_step(step, changes, checked, settings, f"{name} [steps.{step}]")
                 for step, changes in step_changes.items()]
    chosen = [s for s in all_steps if (not steps or any(fnmatch.fnmatchcase(s.name, p) for p in steps))
              and not any(fnmatch.fnmatchcase(s.name, p) for p in skip_steps)]
    for pattern in steps:
        if not any(fnmatch.fnmatchcase(s.name, pattern) for s in all_steps):
            raise SweepError(f"{name}: no step matches {pattern!r}; the steps are "
                             f"{', '.join(s.name for s in all_steps) or '(none)'}")
    if all_steps and not chosen:
        raise SweepError(f"{name}: every step is left out (steps {list(steps)}, skipped {list(skip_steps)})")
    return Sweep(name, checked, settings, str(raw.get("description", "")), tuple(chosen),
                 tuple(dict.fromkeys(s.folder for s in all_steps)))


def _check_axes(grid: Mapping[str, Any], where: str) -> dict[str, tuple]:
    checked = {axis: _as_list(axis, value, AXES[axis], where) for axis, value in grid.items()}
    for axis, values in checked.items():
        if not values and axis not in ("epsilon", "draws"):
            raise SweepError(f"{where}: the axis {axis!r} is empty; give it one or more values")
        if len(set(values)) != len(values):
            raise SweepError(f"{where}: the axis {axis!r} repeats a value: {list(values)}")
    return checked


def _check_step(name: str, changes: Mapping[str, Any], grid: Mapping[str, tuple], settings: Mapping[str, Any],
          where: str) -> Step:
    """A checked step: its name and folder safe path components, its axes and settings checked as the
    sweep's are (with the sweep's grid and settings they replace)."""
    from .presets import INFERENCES
    try:
        paths.safe_name(name, "step name")
        folder = paths.safe_name(changes.get("folder", name), "step folder")
    except ValueError as err:
        raise SweepError(f"{where}: {err}") from None
    only = _as_list("for_inference", changes.get("for_inference", []), str, where)
    for inference in only:
        if inference not in INFERENCES:
            raise SweepError(f"{where}: for_inference has the value {inference!r}; expected one of "
                             f"{', '.join(INFERENCES)}")
    own = {k: v for k, v in changes.items() if k not in STEP_ONLY}
    axes = _check_axes({k: v for k, v in own.items() if k in AXES}, where)
    values = {k: _check_setting(k, v, where) for k, v in own.items() if k in SETTINGS}
    merged_settings = {**settings, **values}
    _check_values({**grid, **axes}, merged_settings, where)
    return Step(name, {**axes, **values}, folder, only)


def _check_values(grid: dict[str, tuple], settings: dict[str, Any], name: str) -> None:
    """The values every experiment shares (the rest is checked by :meth:`Sweep.experiments`)."""
    from .choices import AttackName
    from .explain.rules import RULES
    from .presets import PRESETS

    def bad(key: str, value: Any, expected: str) -> SweepError:
        return SweepError(f"{name}: {key} has the value {value!r}; expected {expected}")
    for preset in grid["preset"]:
        if preset not in PRESETS:
            raise bad("preset", preset, f"one of {', '.join(PRESETS)}")
    for model in grid["models"]:
        if model not in Model.values():
            raise bad("models", model, f"one of {', '.join(Model.values())}")
    for attack in grid["attack"]:
        if attack not in AttackName.values():
            raise bad("attack", attack, f"one of {', '.join(AttackName.values())}")
    for rule in grid["rules"]:
        if rule not in RULES:
            raise bad("rules", rule, f"one of {', '.join(RULES)}")
    for control in settings.get("controls", ()):
        if control not in Control.values():
            raise bad("controls", control, f"some of {', '.join(Control.values())}")
    for key in ("draws", "seeds", "epsilon"):
        for value in grid.get(key, ()):
            try:
                if key == "epsilon":
                    checks.positive("epsilon", value)
                else:
                    checks.count(key, value, minimum=0 if key == "seeds" else 1, allow_none=False)
            except ValueError:
                raise bad(key, value, "a positive number" if key == "epsilon" else
                          "an integer >= 0" if key == "seeds" else "a positive integer") from None
    bounds = {**{key: ("count", 1, "a positive integer") for key in
                 ("draws_per_task", "n_inputs", "steps", "subset_size", "chains", "samples", "n_train", "members")},
              **{key: ("count", 0, "an integer >= 0") for key in ("warmup", "epochs", "burnin")},
              **{key: ("real", 0, "a finite positive number") for key in ("prior_scale", "lr")},
              "max_precondition": ("real", 1, "a finite number >= 1")}
    for key, (kind, low, expected) in bounds.items():
        if key not in settings:
            continue
        try:
            if kind == "count":
                checks.count(key, settings[key], minimum=low, allow_none=False)
            else:
                checks.real(key, settings[key], low=low, low_open=low == 0, allow_none=False)
        except ValueError:
            raise bad(key, settings[key], expected) from None


def load(path: str | Path, *, quick: bool = False, overrides: Mapping[str, Any] | None = None,
         steps: Sequence[str] = (), skip_steps: Sequence[str] = ()) -> Sweep:
    """:func:`parse` the sweep file ``path`` (its name names the sweep)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"no sweep file {str(path)!r}" + "; the paper's are in experiments/sweeps/")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(f"cannot read sweep file {str(path)!r}: {err}") from None
    return parse(text, path.name, quick=quick, overrides=overrides, steps=steps, skip_steps=skip_steps)


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--set``: VALUE is read as TOML (``draws=[5, 10]``, ``epsilon=0.1``,
    ``keep_draws=true``), else as a string (``preset=tiny``); a comma-separated list is a list."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepError(f"--set {text!r}: expected KEY=VALUE, e.g. --set preset=tiny")
    items = [value] if value.strip().startswith("[") else value.split(",")

    def read(item: str) -> Any:
        try:
            return tomllib.loads(f"v = {item.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            return item.strip()
    parsed = [read(i) for i in items]
    return key, parsed[0] if len(parsed) == 1 else parsed


# -- work units ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One stage call: ``stages.<stage>(**kwargs)``, after the units ``needs`` (by key). ``kwargs`` are
    settings and paths only. An explain unit takes its attack file from its one dependency."""

    key: str
    stage: str
    kwargs: dict[str, Any] = field(hash=False)
    needs: tuple[str, ...] = ()
    #: The analysis unit's model names (to tell whether the stored analysis is up to date).
    label: str = ""


def units(sweep: Sweep, experiments: Sequence[tuple[dict, Any]]) -> list[Unit]:
    """The work units of the experiments in dependency order (train → attack → explain → control → analyze →
    plot), with the same stage arguments as :meth:`Experiment.run` (so the results are the same); equal units
    of different experiments (a model's training) appear once. A model that an earlier step trains with the
    same settings is copied from its folder (``reuse_from``) after that unit, not trained again.

    Raises
    ------
    SweepError
        Two experiments that would write one result with different settings (steps sharing a folder).
    """
    found: dict[str, Unit] = {}
    trained_by: dict[str, str] = {}  # training settings (JSON) -> the unit that trains the model with them
    several_eps = len(sweep.grid.get("epsilon") or ()) > 1
    per_task = sweep.settings.get("draws_per_task")
    keep = bool(sweep.settings.get("keep_draws", False))

    def add(unit: Unit, point: Mapping[str, Any]) -> str:
        known = found.setdefault(unit.key, unit)
        if known is not unit and (known.kwargs != unit.kwargs or known.needs != unit.needs):
            raise SweepError(f"sweep {sweep.name!r}: step {point['step']!r} would redo `{unit.key}` with other "
                             f"settings than an earlier step in the same folder; give the steps their own folders")
        return unit.key
    for point, e in experiments:
        where = str(e.out)
        trained = {}
        for model in e.models:
            key = f"train {where} {e.preset.name} {paths.model_tag(model, e._inference(model))}"
            settings = _training_settings(e, model)
            twin = trained_by.setdefault(settings, key)
            reuse: tuple[Path, ...] = ()
            if twin != key:
                reuse = (Path(found[twin].kwargs["out"]),)
            if point["step"] is not None and not e.force:  # or one a run of other steps left in their folders
                siblings = (Path(e.out).parent / folder for folder in sweep.folders)  # OUT/PRESET/FOLDER
                reuse += tuple(f for f in siblings if f != Path(e.out) and f not in reuse)
            trained[model] = add(Unit(key, "train", dict(
                preset=e.preset, model=model, inference=e._inference(model), out=e.out,
                overrides=e._overrides(model),
                seed=e.seed, device=e.device, data_root=e.data_root, force=e.force,
                **({"reuse_from": reuse} if reuse else {})), (twin,) if twin != key else ()), point)
        runs = []
        eps = e.epsilon if e.epsilon is not None else e.preset.attack_epsilon
        for model, s in e.runs():
            common = dict(inference=e._inference(model), out=e.out, seed=e.seed, device=e.device, force=e.force)
            tag = f"{where} {e.preset.name} {model_name(model, s)} {e.attack} {e.norm} eps{eps:g}" \
                + (f" {e.loss}" if e.loss != "ce" else "")
            attacked = add(Unit(f"attack {tag}", "attack", dict(
                preset=e.preset, model=model, attack=e.attack, norm=e.norm, epsilon=e.epsilon, steps=e.steps,
                n_inputs=e.n_inputs, n_draws=s, mode=e.mode, loss=e.loss, data_root=e.data_root, **common),
                (trained[model],)), point)
            explained = add(Unit(f"explain {tag}", "explain", dict(
                preset=e.preset, model=model, rules=tuple(e.rules), layers="all", n_draws=s, keep_draws=keep,
                draws_per_task=per_task, **common), (attacked,)), point)
            runs.append((model, s, tag, attacked, explained))
        controlled = []
        det = next(r for r in runs if r[0] == Model.BASE)
        for model, s, tag, attacked, explained in runs:  # docs/method.md §9.8, as Experiment.run_controls
            jobs = [(model, Control.RANDOM.value, (attacked, explained), tag)] \
                if Control.RANDOM in e.controls else []
            if Control.CROSS in e.controls and model != Model.BASE:
                jobs += [(model, Control.CROSS.value, (attacked, explained, det[3]), tag),
                         (Model.BASE.value, Control.CROSS.value, (det[3], det[4], attacked), det[2])]
            for who, kind, needs, own in jobs:
                on = f" on {model_name(model, s) if who == Model.BASE else model_name(Model.BASE, 1)}" \
                    if kind == Control.CROSS else ""
                controlled.append(add(Unit(f"control {own} {kind}{on}", "control", dict(
                    preset=e.preset, model=who, kind=kind, inference=e._inference(who), out=e.out, seed=e.seed,
                    device=e.device, force=e.force), needs), point))
        name = e.analysis_name + (f"_eps{eps:g}" if several_eps else "")
        models = [model_name(m, s) for m, s in e.runs()]
        analysed = add(Unit(f"analyze {where} {name}", "analyze", dict(
            out=e.out, preset=e.preset.name, topk=e.topk, attack=e.attack, norm=e.norm, epsilon=eps, mode=e.mode,
            loss=e.loss, method="lrp", name=name, models=models), tuple(r[4] for r in runs) + tuple(controlled),
            label=",".join(models)), point)
        add(Unit(f"plot {where} {name}", "plot", dict(out=e.out, analyses=[name], preset=e.preset.name),
                 (analysed,)), point)
    return list(found.values())


def _training_settings(e: Any, model: str) -> str:
    """The experiment's training settings of ``model`` as :func:`bayesrobust.stages.train` compares them
    (:func:`~bayesrobust.stages.training_config`), as JSON."""
    from .inference import resolve_inference
    from .presets import override_training
    from .stages import training_config
    p = override_training(e.preset, model, e._inference(model), **e._overrides(model))
    config = training_config(p, model, resolve_inference(p, model, e._inference(model)), e.seed)
    return json.dumps(config, sort_keys=True, default=str)


def with_kwargs(unit: Unit, **changes: Any) -> Unit:
    return replace(unit, kwargs={**unit.kwargs, **changes})
