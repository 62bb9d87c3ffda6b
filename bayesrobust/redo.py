"""The command that redoes a stored result: what an error about a damaged or stale result tells the user to run.

A result whose config can be read gets the command with its own settings (:func:`attack_command`,
:func:`explain_command`, :func:`analyze_command`); an unreadable one gets the command guessed from where it
lies in the layout of :mod:`.paths` (:func:`for_path`): ``OUT/models/PRESET/TAG/`` → train,
``OUT/attacks/PRESET/RUN.nc`` → attack (or robustness_table), ``OUT/explanations/PRESET/RUN_METHOD.nc`` (and
``RUN_METHOD_draws.zarr``) → explain, ``OUT/analysis/NAME.nc`` → analyze. Every command but analyze ends with
``--force``, so it redoes the result whatever state the old one is in.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TAGS = ("fullBNN_svi", "fullBNN_hmc", "baseNN", "advNN")
_TAG = "|".join(TAGS)
_ATTACK_RUN = re.compile(rf"^(?P<tag>{_TAG})_(?P<attack>fgsm|pgd)_(?P<norm>linf|l2)_eps(?P<eps>[^_]+)"
                         rf"(?:_steps(?P<steps>\d+))?_S(?P<s>\d+)(?:_(?P<mode>.+))?$")
_TABLE = re.compile(rf"^(?P<tag>{_TAG})_robustness_table_S(?P<s>\d+)(?:_(?P<mode>.+))?$")
STAGE_DIRS = ("models", "attacks", "explanations", "analysis")


def _join(module: str, args: Sequence[Any]) -> str:
    return shlex.join(["python", "-m", f"bayesrobust.{module}", *(str(a) for a in args)])


def _model_args(model: str, preset: str, inference: str | None) -> list[Any]:
    return ["--model", model, "--preset", preset, *(["--inference", inference] if inference else [])]


def _split_tag(tag: str) -> tuple[str, str | None]:
    model, _, inference = tag.partition("_")
    return model, inference or None


def train_command(out: str | Path, preset: str, model: str, inference: str | None = None) -> str:
    return _join("train", [*_model_args(model, preset, inference), "--out", out, "--force"])


def attack_command(out: str | Path, cfg: Mapping[str, Any]) -> str:
    """The attack command of an attack run made with config ``cfg`` (its stored ``config``)."""
    model = str(cfg.get("model", "MODEL"))
    args = [*_model_args(model, str(cfg.get("preset", "PRESET")), cfg.get("inference")),
            "--attack", cfg.get("attack", "fgsm"), "--norm", cfg.get("norm", "linf")]
    if cfg.get("epsilon") is not None:
        args += ["--epsilon", f"{float(cfg['epsilon']):g}"]
    if cfg.get("attack") == "pgd":
        for key, option in (("steps", "--steps"), ("step_size", "--step-size")):
            if cfg.get(key) is not None:
                args += [option, f"{cfg[key]:g}" if isinstance(cfg[key], float) else cfg[key]]
        if cfg.get("random_start") in (False, 0):
            args.append("--no-random-start")
    if cfg.get("loss", "ce") != "ce":
        args += ["--loss", cfg["loss"]]
    for key, option in (("n_inputs", "--n-inputs"), ("inputs_seed", "--inputs-seed"), ("seed", "--seed"),
                        ("chunk_size", "--chunk-size")):
        value = cfg.get(key)
        if value is not None and (key == "n_inputs" or value != 0):
            args += [option, value]
    if model == "fullBNN":
        if cfg.get("n_draws") is not None:
            args += ["--n-draws", cfg["n_draws"]]
        if cfg.get("posterior_mode"):
            args += ["--posterior-mode", cfg["posterior_mode"]]
    return _join("attack", [*args, "--out", out, "--force"])


def explain_command(out: str | Path, cfg: Mapping[str, Any], attack_run: str | None = None) -> str:
    """The explain command of an explanation made with config ``cfg`` (its stored ``config``)."""
    run = attack_run or cfg.get("attack_run") or "RUN"
    args = [*_model_args(str(cfg.get("model", "MODEL")), str(cfg.get("preset", "PRESET")), cfg.get("inference")),
            "--attack-run", run]
    method = cfg.get("method") or "lrp"
    if method != "lrp":
        args += ["--method", method]
    for rule in cfg.get("rules") or ():
        args += ["--rule", rule]
    if cfg.get("composite"):
        args += ["--composite", cfg["composite"]]
    layers = cfg.get("layers")
    if layers not in (None, "all"):
        args += ["--layers", ",".join(str(v) for v in layers) if isinstance(layers, list) else layers]
    if cfg.get("initial") not in (None, "one_hot"):
        args += ["--initial", cfg["initial"]]
    if cfg.get("n_draws") is not None and cfg.get("model") == "fullBNN":
        args += ["--n-draws", cfg["n_draws"]]
    if cfg.get("seed") not in (None, 0):
        args += ["--seed", cfg["seed"]]
    if cfg.get("keep_draws"):
        args.append("--keep-draws")
    return _join("explain", [*args, "--out", out, "--force"])


def analyze_command(out: str | Path, cfg: Mapping[str, Any], name: str | None = None) -> str:
    """The analyze command of an analysis made with config ``cfg`` (its stored ``config``)."""
    args: list[Any] = ["--out", out, "--preset", cfg.get("preset", "PRESET")]
    if cfg.get("topk") is not None:
        args += ["--topk", f"{float(cfg['topk']):g}"]
    for key, value in (cfg.get("filters") or {}).items():
        if value is not None:
            args += [f"--{key}", f"{value:g}" if isinstance(value, float) else value]
    if name:
        args += ["--name", name]
    return _join("analyze", args)


def _preset_prefix(name: str) -> str | None:
    from .presets import PRESETS
    found = [p for p in PRESETS if name == p or name.startswith(p + "_")]
    return max(found, key=len) if found else None


def for_path(path: str | Path) -> str:
    """The command that redoes the result at ``path``, from its place under ``OUT`` alone (for a result whose
    settings cannot be read); a generic hint if ``path`` is not in the layout."""
    path = Path(path)
    parts = path.parts
    generic = "redo the stage that wrote it with --force"
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in STAGE_DIRS:
            stage, rest, out = parts[i], parts[i + 1:], Path(*parts[:i]) if i else Path(".")
            break
    else:
        return generic
    if stage == "models" and len(rest) >= 2:
        model, inference = _split_tag(rest[1])
        return train_command(out, rest[0], model, inference)
    if stage == "analysis" and len(rest) == 1:
        name = Path(rest[0]).stem
        return analyze_command(out, {"preset": _preset_prefix(name) or "PRESET"}, name)
    if len(rest) != 2:
        return generic
    preset, name = rest
    if stage == "attacks":
        stem = Path(name).stem
        if m := _TABLE.match(stem):
            model, inference = _split_tag(m["tag"])
            args = [*_model_args(model, preset, inference)]
            if model == "fullBNN":
                args += ["--n-draws", m["s"], *(["--posterior-mode", m["mode"]] if m["mode"] else [])]
            return _join("robustness_table", [*args, "--out", out, "--force"])
        if m := _ATTACK_RUN.match(stem):
            model, inference = _split_tag(m["tag"])
            return attack_command(out, {"preset": preset, "model": model, "inference": inference,
                                        "attack": m["attack"], "norm": m["norm"], "epsilon": float(m["eps"]),
                                        "steps": int(m["steps"]) if m["steps"] else None,
                                        "n_draws": int(m["s"]), "posterior_mode": m["mode"]})
        return generic
    if stage == "explanations":
        keep = name.endswith("_draws.zarr")
        stem = name[: -len("_draws.zarr")] if keep else Path(name).stem
        run, _, method = stem.rpartition("_")
        tag = next((t for t in TAGS if run.startswith(t + "_")), None)
        if not run or tag is None:
            return generic
        model, inference = _split_tag(tag)
        return explain_command(out, {"preset": preset, "model": model, "inference": inference, "method": method,
                                     "keep_draws": keep}, run)
    return generic
