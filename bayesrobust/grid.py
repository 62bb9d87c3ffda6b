"""Sweep descriptions: an experiment grid as named axes in a TOML file, and its work units (docs/method.md §12).

A sweep file (``experiments/sweeps/*.toml``) has three tables::

    description = "what the sweep reproduces"
    [grid]            # the axes: each a value or a list of values
    preset = ["mnist_fc2", "fashion_mnist_fc2"]
    models = ["baseNN", "advNN", "fullBNN"]
    attack = ["fgsm"]
    epsilon = []      # [] = the preset's
    draws = [10, 50, 100]
    rules = ["epsilon"]
    seeds = [0]
    [settings]        # one value each
    draws_per_task = 50
    [quick]           # replaces grid axes or settings in --quick mode
    preset = ["quick"]

Each point of ``preset × attack × epsilon × seed`` is one :class:`~bayesrobust.Experiment` (its models,
draws and rules are axes within it), checked in full before any work. :func:`units` turns the experiments
into :class:`Unit` s — one stage call each (train, attack, explain, analyze, plot), described by its
settings and the keys of the units it needs, never by a model — shared between experiments when equal
(a model is trained once for all its attacks). The runner is :mod:`bayesrobust.cluster`.

Several seeds write to ``OUT/seed{N}`` (the stores' layout has no seed in its names); several ε share ``OUT``
(attack runs are named by ε) and get one analysis each, named ``..._eps{ε}``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import checks, paths
from .choices import Model
from .errors import UserError
from .stability import model_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib

#: Grid axes (each a list in the file; a single value is a list of one) and their element types.
AXES: dict[str, type | tuple[type, ...]] = {
    "preset": str, "models": str, "attack": str, "epsilon": (int, float), "draws": int, "rules": str,
    "seeds": int}
#: One-valued settings and their types.
SETTINGS: dict[str, type | tuple[type, ...]] = {
    "inference": str, "norm": str, "steps": int, "mode": str, "n_inputs": int, "topk": (int, float),
    "likelihood_scaling": str, "draws_per_task": int, "keep_draws": bool, "data_root": str, "device": str}
TABLES = ("description", "grid", "settings", "quick")


class SweepError(UserError):
    """A sweep file that cannot be run; the message is one line naming the file and the bad key or value."""


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: its grid (axis → values) and settings (name → value)."""

    name: str
    grid: dict[str, tuple]
    settings: dict[str, Any]
    description: str = ""

    def points(self) -> list[dict[str, Any]]:
        """One dict per ``preset × attack × epsilon × seed`` (ε ``None``: the preset's)."""
        eps = self.grid.get("epsilon") or (None,)
        return [{"preset": p, "attack": a, "epsilon": e, "seed": s}
                for p, a, e, s in itertools.product(self.grid["preset"], self.grid["attack"], eps,
                                                    self.grid["seeds"])]

    def experiments(self, out: str | Path | None = None, force: bool = False) -> list[tuple[dict, Any]]:
        """``(point, Experiment)`` for every point, each checked (``ValueError`` naming the point)."""
        from .experiment import Experiment
        out = paths.resolve_out(out)
        several_seeds = len(self.grid["seeds"]) > 1
        found = []
        for point in self.points():
            kwargs = {k: v for k, v in self.settings.items() if k not in ("draws_per_task", "keep_draws")}
            try:
                exp = Experiment(point["preset"], out / f"seed{point['seed']}" if several_seeds else out,
                                 attack=point["attack"], epsilon=point["epsilon"], seed=point["seed"],
                                 models=self.grid["models"], draws=self.grid.get("draws", ()), rules=self.grid["rules"],
                                 force=force, **kwargs)
            except (ValueError, OSError) as err:
                where = ", ".join(f"{k}={v}" for k, v in point.items() if v is not None)
                raise SweepError(f"sweep {self.name!r}, point {where}: {err}") from None
            found.append((point, exp))
        return found


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


def parse(text: str, name: str = "sweep", *, quick: bool = False,
          overrides: Mapping[str, Any] | None = None) -> Sweep:
    """Read and check a sweep description (TOML text). ``quick`` applies its ``[quick]`` table; then
    ``overrides`` (axis or setting → value) replace entries (e.g. ``{"preset": "tiny"}`` from ``--set``).

    Raises
    ------
    SweepError
        Not TOML, an unknown table, key or value, a value of the wrong type, an empty axis — one line naming it.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{name}: not a valid TOML file: {err}") from None
    _check_keys(raw, TABLES, name)
    for table in ("grid", "settings", "quick"):
        if not isinstance(raw.get(table, {}), dict):
            raise SweepError(f"{name}: {table} must be a table ([{table}]), got {raw[table]!r}")
    grid, settings = dict(raw.get("grid", {})), dict(raw.get("settings", {}))
    _check_keys(grid, list(AXES), f"{name} [grid]")
    _check_keys(settings, list(SETTINGS), f"{name} [settings]")
    changes = [("quick", dict(raw.get("quick", {})))] if quick else []
    changes.append(("--set", dict(overrides or {})))
    for where, table in changes:
        _check_keys(table, [*AXES, *SETTINGS], f"{name} {where if where == '--set' else '[quick]'}")
        for key, value in table.items():
            (grid if key in AXES else settings)[key] = value
    if "quick" in raw:
        _check_keys(raw["quick"], [*AXES, *SETTINGS], f"{name} [quick]")
    for axis in ("preset", "attack", "seeds", "rules", "models"):
        grid.setdefault(axis, {"attack": ["fgsm"], "seeds": [0], "rules": ["epsilon"],
                               "models": list(Model.values())}.get(axis))
        if grid[axis] is None:
            raise SweepError(f"{name} [grid]: the axis {axis!r} is missing; give it one or more values")
    checked = {axis: _as_list(axis, value, AXES[axis], f"{name} [grid]") for axis, value in grid.items()}
    for axis, values in checked.items():
        if not values and axis not in ("epsilon", "draws"):
            raise SweepError(f"{name} [grid]: the axis {axis!r} is empty; give it one or more values")
        if len(set(values)) != len(values):
            raise SweepError(f"{name} [grid]: the axis {axis!r} repeats a value: {list(values)}")
    for key, value in settings.items():
        if isinstance(value, list) or not isinstance(value, SETTINGS[key]) or \
                (isinstance(value, bool) and SETTINGS[key] is not bool):
            raise SweepError(f"{name} [settings]: {key} = {value!r}; expected {_type_name(SETTINGS[key])}")
    _check_values(checked, settings, name)
    if settings.get("data_root") == "":
        settings.pop("data_root")
    return Sweep(name, checked, settings, str(raw.get("description", "")))


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
    for key in ("draws_per_task", "n_inputs", "steps"):
        if key in settings and (settings[key] < 1):
            raise bad(key, settings[key], "a positive integer")


def load(path: str | Path, *, quick: bool = False, overrides: Mapping[str, Any] | None = None) -> Sweep:
    """:func:`parse` the sweep file ``path`` (its stem names the sweep)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"no sweep file {str(path)!r}" + "; the paper's are in experiments/sweeps/")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(f"cannot read sweep file {str(path)!r}: {err}") from None
    return parse(text, path.name, quick=quick, overrides=overrides)


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
    """The work units of the experiments in dependency order (train → attack → explain → analyze → plot),
    with the same stage arguments as :meth:`Experiment.run` (so the results are the same); equal units
    of different experiments (a model's training) appear once."""
    found: dict[str, Unit] = {}
    several_eps = len(sweep.grid.get("epsilon") or ()) > 1
    per_task = sweep.settings.get("draws_per_task")
    keep = bool(sweep.settings.get("keep_draws", False))

    def add(unit: Unit) -> str:
        found.setdefault(unit.key, unit)
        return unit.key
    for _point, e in experiments:
        where = str(e.out)
        trained = {}
        for model in e.models:
            overrides = {"likelihood_scaling": e.likelihood_scaling} if model == Model.BAYES else {}
            trained[model] = add(Unit(
                f"train {where} {e.preset.name} {paths.model_tag(model, e._inference(model))}", "train",
                dict(preset=e.preset, model=model, inference=e._inference(model), out=e.out, overrides=overrides,
                     seed=e.seed, device=e.device, data_root=e.data_root, force=e.force)))
        explained = []
        eps = e.epsilon if e.epsilon is not None else e.preset.attack_epsilon
        for model, s in e.runs():
            common = dict(inference=e._inference(model), out=e.out, seed=e.seed, device=e.device, force=e.force)
            tag = f"{where} {e.preset.name} {model_name(model, s)} {e.attack} {e.norm} eps{eps:g}"
            attacked = add(Unit(f"attack {tag}", "attack", dict(
                preset=e.preset, model=model, attack=e.attack, norm=e.norm, epsilon=e.epsilon, steps=e.steps,
                n_inputs=e.n_inputs, n_draws=s, mode=e.mode, data_root=e.data_root, **common),
                (trained[model],)))
            explained.append(add(Unit(f"explain {tag}", "explain", dict(
                preset=e.preset, model=model, rules=tuple(e.rules), layers="all", n_draws=s, keep_draws=keep,
                draws_per_task=per_task, **common), (attacked,))))
        name = e.analysis_name + (f"_eps{eps:g}" if several_eps else "")
        models = [model_name(m, s) for m, s in e.runs()]
        analysed = add(Unit(f"analyze {where} {name}", "analyze", dict(
            out=e.out, preset=e.preset.name, topk=e.topk, attack=e.attack, norm=e.norm, epsilon=eps, mode=e.mode,
            method="lrp", name=name, models=models), tuple(explained), label=",".join(models)))
        add(Unit(f"plot {where} {name}", "plot", dict(out=e.out, analyses=[name], preset=e.preset.name),
                 (analysed,)))
    return list(found.values())


def with_kwargs(unit: Unit, **changes: Any) -> Unit:
    return replace(unit, kwargs={**unit.kwargs, **changes})
