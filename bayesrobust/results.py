"""Finding stored results under an output folder by what their attributes say (the layout of :mod:`.paths`).

The analysis and the figures start from whatever the earlier stages wrote under ``OUT``:

- :func:`find_runs`: every attack run of a preset with its explanation(s), as :class:`~.stability.Run`
  (model label and S from the attack Dataset's ``model`` and ``n_draws`` attributes, the attack settings
  from ``attack``, ``norm``, ``epsilon``, ``posterior_mode``, the explanation method from ``method``);
- :func:`load_runs`: the runs an analysis was built from, by the paths recorded in its config;
- :func:`find_analyses` and :func:`find_tables`: stored analyses and robust-accuracy tables.

An explanation names the attack run it explains in an attribute (``attack_run``: the run's file stem, or
``attack_path``: its path, relative to ``OUT`` or absolute); only when it has neither is the run read from
its file name ``RUN_METHOD.nc``. Several explanation files of one attack run (e.g. one per LRP rule) are
joined along ``rule``.

Every "nothing found" is a :class:`FileNotFoundError` whose message names the command to run first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import paths, redo, store
from .stability import Run, model_name

log = logging.getLogger(__name__)

#: Explanation attributes naming the attack run, in the order they are tried.
ATTACK_LINK_ATTRS = ("attack_run", "attack_path")
#: Attack attributes that must agree between the runs of one analysis.
ATTACK_SETTINGS = ("attack", "norm", "epsilon", "loss")


def attack_loss(attrs: Mapping[str, Any]) -> str:
    """The loss an attack run increased: its ``loss`` attribute; ``'ce'`` for runs stored before attacks had one
    (all of them attacked the cross-entropy)."""
    return str(attrs.get("loss", "ce"))


def _setting(attrs: Mapping[str, Any], key: str) -> Any:
    return attack_loss(attrs) if key == "loss" else attrs.get(key)

ATTACK_COMMAND = "python -m bayesrobust.attack --out {out} --preset {preset} --model MODEL --attack fgsm"
EXPLAIN_COMMAND = ("python -m bayesrobust.explain --out {out} --preset {preset} --model MODEL "
                   "--attack-run RUN")
ANALYZE_COMMAND = "python -m bayesrobust.analyze --out {out} --preset PRESET"


@dataclass
class Found:
    """One attack run and the explanation files of it that were found."""

    attack_path: Path
    attack: xr.Dataset
    explanations: list[tuple[Path, xr.Dataset]] = field(default_factory=list)
    #: sha256 of the attack file (:func:`bayesrobust.store.file_hash`)
    attack_sha256: str = ""

    @property
    def name(self) -> str:
        """The model coordinate of the analysis: ``baseNN``, ``fullBNN_S10``, ..."""
        return model_name(str(self.attack.attrs["model"]), int(self.attack.attrs.get("n_draws", 1)))

    def settings(self) -> str:
        a = self.attack.attrs
        mode = f" {a.get('posterior_mode')}" if int(a.get("n_draws", 1)) > 1 else ""
        loss = f" loss={attack_loss(a)}" if attack_loss(a) != "ce" else ""
        return f"{a.get('attack')} {a.get('norm')} eps={float(a.get('epsilon', np.nan)):g}{loss}{mode}"


def _nc_files(folder: Path, kind: str | None = None) -> list[Path]:
    """The netCDF results in ``folder`` (of ``kind`` only, if given), by name."""
    files = sorted(p for p in folder.glob("*.nc") if p.is_file() and not p.name.startswith("."))
    return files if kind is None else [p for p in files if _kind(p) == kind]


def presets_with(out: str | Path, stage: str = "explanations") -> list[str]:
    """Names of the presets with at least one result under ``OUT/STAGE/`` (``'attacks'`` or
    ``'explanations'``)."""
    kind = {"attacks": "attack", "explanations": "explanation"}[stage]
    root = Path(out) / stage
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _nc_files(p, kind))


def resolve_preset(out: str | Path, preset: str | None) -> str:
    """``preset``, or the only preset with explanations under ``OUT``.

    Raises
    ------
    FileNotFoundError
        No attack result or no explanation of any preset under ``OUT`` (the message names the command to
        run).
    ValueError
        Several presets and none chosen (the message lists them).
    """
    if preset is not None:
        return preset
    found = presets_with(out)
    if not found and not presets_with(out, "attacks"):
        raise FileNotFoundError(f"no attack results under {Path(out) / 'attacks'}; run "
                                f"`{ATTACK_COMMAND.format(out=out, preset='PRESET')}` (on a model trained with "
                                f"`python -m bayesrobust.train --out {out} ...`) first")
    if not found:
        raise FileNotFoundError(f"no explanations under {Path(out) / 'explanations'}; run "
                                f"`{EXPLAIN_COMMAND.format(out=out, preset='PRESET')}` first")
    if len(found) > 1:
        raise ValueError(f"results of several presets under {out}: {', '.join(found)}; choose one with --preset")
    return found[0]


def _match(value: Any, wanted: Any) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, float) or isinstance(value, (float, np.floating)):
        try:
            return bool(np.isclose(float(value), float(wanted), rtol=1e-6, atol=1e-9))
        except (TypeError, ValueError):
            return False
    return str(value) == str(wanted)


def _linked_attack(out: Path, preset: str, path: Path, ds: xr.Dataset) -> Path:
    """The attack file an explanation explains: its link attribute (a run name or a path), else ``RUN`` of
    its file name ``RUN_METHOD.nc``."""
    for key in ATTACK_LINK_ATTRS:
        link = str(ds.attrs.get(key, "") or "")
        if not link:
            continue
        linked = Path(link)
        if linked.suffix != ".nc" and len(linked.parts) == 1:  # a run name
            try:
                return paths.attack_path(out, preset, link)
            except ValueError as err:
                raise ValueError(f"explanation {path} names attack run {link!r} in its {key!r} attribute, which "
                                 f"is not a run name ({err})") from None
        candidates = [linked, out / linked]
        if paths.SAFE_NAME.fullmatch(linked.stem):
            candidates.append(paths.attack_path(out, preset, linked.stem))
        for candidate in candidates:
            if candidate.exists():
                return candidate
        return linked
    method = str(ds.attrs.get("method", ""))
    stem = path.stem
    if method and stem.endswith(f"_{method}"):
        return paths.attack_path(out, preset, stem[: -len(method) - 1])
    candidates = [p for p in _nc_files(out / "attacks" / preset) if stem.startswith(p.stem + "_")]
    if not candidates:
        raise FileNotFoundError(f"explanation {path} names no attack run (attribute "
                                f"{' or '.join(ATTACK_LINK_ATTRS)}) and no attack file matches its name")
    return max(candidates, key=lambda p: len(p.stem))


def find_runs(out: str | Path, preset: str | None = None, *, attack: str | None = None,
              norm: str | None = None, epsilon: float | None = None, mode: str | None = None,
              method: str | None = None, models: Sequence[str] | None = None, loss: str | None = None
              ) -> list[Found]:
    """The attack runs of ``preset`` that have an explanation, one per model, filtered by attack settings.

    Parameters
    ----------
    out
        The output folder.
    preset
        Preset name (a folder under ``OUT/attacks`` and ``OUT/explanations``); default the only one.
    attack, norm, epsilon
        Keep only attack runs with these attributes (``'fgsm'``/``'pgd'``, ``'linf'``/``'l2'``, radius).
    mode
        Posterior-averaging mode of the Bayesian runs (``mean_grad``, ``predictive``, ``mean_image``, ``mean_sign``);
        deterministic runs (S = 1) match any mode.
    method
        Keep only explanations whose ``method`` attribute is this.
    models
        Keep only these model names (``baseNN``, ``fullBNN_S100``, ...).
    loss
        Keep only attack runs that increased this loss (``'ce'``, ``'margin'``; :func:`attack_loss`).

    Returns
    -------
    list of Found
        One per model name, in the order Det, Adv, Bay by increasing S, then others; the Datasets are open
        lazily.

    Raises
    ------
    FileNotFoundError
        No attack results, no explanations, or none left by the filters (the message says what to run).
    ValueError
        Several attack runs left for one model, or runs attacked with different settings (the message lists
        them and the options that choose).
    StaleResultError
        An explanation of a chosen run was computed from another version of its attack file
        (:func:`check_explains`).
    CorruptResultError
        An unreadable result file (named, with the command that redoes it).
    """
    out = Path(out)
    preset = resolve_preset(out, preset)
    attack_dir, expl_dir = out / "attacks" / preset, out / "explanations" / preset
    if not _nc_files(attack_dir, "attack"):
        raise FileNotFoundError(f"no attack results under {attack_dir}; run "
                                f"`{ATTACK_COMMAND.format(out=out, preset=preset)}` first")
    explanations = _nc_files(expl_dir, "explanation")
    if not explanations:
        raise FileNotFoundError(f"no explanations under {expl_dir}; run "
                                f"`{EXPLAIN_COMMAND.format(out=out, preset=preset)}` first")
    runs: dict[Path, Found] = {}
    for path in explanations:
        ds = store.open_result(path, "explanation")
        if not _match(ds.attrs.get("method"), method):
            continue
        target = _linked_attack(out, preset, path, ds).resolve()
        if target not in runs:
            if not target.exists():
                raise FileNotFoundError(f"explanation {path} explains attack run {target}, which does not exist")
            runs[target] = Found(target, store.open_result(target, "attack"), attack_sha256=store.file_hash(target))
        runs[target].explanations.append((path, ds))
    wanted = {"attack": attack, "norm": norm, "epsilon": epsilon, "loss": loss}
    kept = [f for f in runs.values()
            if all(_match(_setting(f.attack.attrs, k), v) for k, v in wanted.items())
            and (int(f.attack.attrs.get("n_draws", 1)) == 1 or _match(f.attack.attrs.get("posterior_mode"), mode))
            and (models is None or f.name in models)]
    for f in kept:  # only the runs an analysis would use: a stale explanation of another attack does not matter
        for path, ds in f.explanations:
            check_explains(out, path, ds, f.attack_path, f.attack, f.attack_sha256)
    if not kept:
        have = sorted({f"{f.name}: {f.settings()}" for f in runs.values()}) or ["none"]
        raise FileNotFoundError(f"no explained attack run of preset {preset!r} matches the filters; explained "
                                f"runs: {'; '.join(have)}")
    by_model: dict[str, list[Found]] = {}
    for f in kept:
        by_model.setdefault(f.name, []).append(f)
    for name, found in by_model.items():
        if len(found) > 1:
            raise ValueError(f"several attack runs of {name} match: {'; '.join(f.settings() for f in found)}; "
                             "choose one with --attack, --norm, --epsilon, --loss or --mode")
    settings = {tuple(str(_setting(f.attack.attrs, k)) for k in ATTACK_SETTINGS) for f in kept}
    if len(settings) > 1:
        listed = "; ".join(f"{f.name}: {f.settings()}" for f in kept)
        raise ValueError(f"the explained runs were attacked differently ({listed}); choose one attack with "
                         "--attack, --norm, --epsilon and --loss")
    chosen = sorted((fs[0] for fs in by_model.values()), key=_model_order)
    log.info("explained attack runs of %s: %s", preset, ", ".join(f.attack_path.stem for f in chosen))
    return chosen


def check_explains(out: str | Path, explanation_path: Path, explanation: xr.Dataset, attack_path: Path,
                   attack: xr.Dataset, attack_sha256: str) -> None:
    """Check that ``explanation`` was computed from this very attack file (the content hash of the attack it
    recorded, ``attack_sha256``; for explanations of older versions the attack's ``created`` time), and with
    the same model as the attack (their ``model_sha256``). An explanation that records neither (made by
    hand) is not checked.

    Raises
    ------
    StaleResultError
        The attack run was redone after the explanation; the message names both files and the explain
        command that redoes the explanation.
    """
    recorded = str(explanation.attrs.get("attack_sha256", "") or "")
    if recorded:
        same = recorded == attack_sha256
    elif explanation.attrs.get("attack_created"):
        same = str(explanation.attrs["attack_created"]) == str(attack.attrs.get("created", ""))
    else:
        return
    cfg = store.config_of(explanation)
    explain = redo.explain_command(out, cfg) if cfg.get("model") else redo.for_path(explanation_path)
    if not same:
        raise store.StaleResultError(
            f"explanation {explanation_path} was computed from another version of attack run {attack_path} "
            f"(the attack was redone after it); redo the explanation: `{explain}`")
    models = {str(ds.attrs.get("model_sha256", "") or "") for ds in (explanation, attack)}
    if len(models) > 1 and "" not in models:
        raise store.StaleResultError(
            f"explanation {explanation_path} and attack run {attack_path} were computed with different versions "
            f"of the model; redo the attack (`{redo.attack_command(out, store.config_of(attack))}`), then the "
            f"explanation (`{explain}`)")


def _model_order(f: Found) -> tuple:
    model = str(f.attack.attrs["model"])
    rank = {"baseNN": 0, "advNN": 1, "fullBNN": 2}.get(model, 3)
    return rank, int(f.attack.attrs.get("n_draws", 1)), f.name


def join_explanations(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """Explanations of one attack run in one Dataset, joined along ``rule``.

    A Dataset without a ``rule`` dimension gets one named by its ``method`` attribute.

    Raises
    ------
    ValueError
        Two explanations with the same rule (choose one with ``method``).
    """
    parts = []
    for ds in datasets:
        if "rule" not in ds["relevance"].dims:
            ds = ds.expand_dims(rule=[str(ds.attrs.get("method", "relevance"))])
        parts.append(ds)
    if len(parts) == 1:
        return parts[0]
    rules = [str(r) for ds in parts for r in ds.rule.values]
    if len(set(rules)) != len(rules):
        methods = sorted({str(ds.attrs.get("method", "?")) for ds in parts})
        raise ValueError(f"several explanations of one attack run have the same rule ({', '.join(rules)}; "
                         f"methods {', '.join(methods)}); choose one with --method")
    keep = [v for v in store.SCHEMAS["explanation"] if all(v in ds.variables for ds in parts)]
    joined = xr.concat([ds[keep] for ds in parts], dim="rule", join="outer", combine_attrs="drop_conflicts")
    return joined


def to_run(found: Found) -> Run:
    """The :class:`~.stability.Run` of a found attack run (explanations joined along ``rule``)."""
    a = found.attack.attrs
    return Run(str(a["model"]), int(a.get("n_draws", 1)), found.attack,
               join_explanations([ds for _, ds in found.explanations]))


def describe(found: Sequence[Found], out: str | Path) -> list[dict[str, Any]]:
    """What an analysis records of its runs: names, attack settings and the paths relative to ``OUT``."""
    out = Path(out).resolve()

    def rel(p: Path) -> str:
        p = p.resolve()
        return str(p.relative_to(out)) if p.is_relative_to(out) else str(p)
    return [{"model": f.name, "label": str(f.attack.attrs["model"]), "n_draws": int(f.attack.attrs.get("n_draws", 1)),
             "attack_path": rel(f.attack_path), "explanation_paths": [rel(p) for p, _ in f.explanations],
             "attack_sha256": f.attack_sha256 or store.file_hash(f.attack_path),
             "explanation_sha256": [store.file_hash(p) for p, _ in f.explanations],
             "attack": store.config_of(f.attack), "explanation": [store.config_of(ds) for _, ds in f.explanations]}
            for f in found]


def load_runs(out: str | Path, analysis: xr.Dataset, name: str | None = None) -> dict[str, Run]:
    """The runs (by model name) an analysis written by ``python -m bayesrobust.analyze`` was built from,
    checked to be the very files it was computed from (their sha256, recorded in the analysis) and each
    explanation to be of its attack run (:func:`check_explains`). ``name`` (the analysis' file stem) only goes
    into the analyze command of an error.

    Raises
    ------
    ValueError
        The analysis records no paths or no content hashes (it was not written by this version of
        ``bayesrobust.analyze``).
    StaleResultError
        An explanation of another version of its attack run, or a file redone after the analysis; the
        message names the files and the command that redoes the stale one.
    FileNotFoundError
        A recorded file is gone.
    """
    out = Path(out)
    cfg = store.config_of(analysis)
    runs = cfg.get("runs", [])
    command = redo.analyze_command(out, cfg, name) if cfg.get("preset") else ANALYZE_COMMAND.format(out=out)
    if not runs or not all("attack_path" in r and r.get("attack_sha256") and
                           len(r.get("explanation_sha256") or ()) == len(r["explanation_paths"]) for r in runs):
        raise ValueError("this analysis does not record which attack and explanation results it was computed "
                         f"from (their paths and sha256); re-create it with `{command}`")
    loaded = {}
    for r in runs:
        files = [Path(p) if Path(p).is_absolute() else out / p for p in (r["attack_path"], *r["explanation_paths"])]
        for p in files:
            if not p.exists():
                raise FileNotFoundError(f"{p} (used by this analysis) is gone; re-run the stage that writes it "
                                        f"and `{command}`")
        attack = store.open_result(files[0], "attack")
        explanations = [store.open_result(p, "explanation") for p in files[1:]]
        hashes = [store.file_hash(p) for p in files]
        for p, ds in zip(files[1:], explanations):
            check_explains(out, p, ds, files[0], attack, hashes[0])
        for p, now, then in zip(files, hashes, [r["attack_sha256"], *r["explanation_sha256"]]):
            if now != then:
                raise store.StaleResultError(
                    f"{p} was redone after the analysis{f' {name}' if name else ''} was computed from it; redo "
                    f"the analysis: `{command}`")
        loaded[r["model"]] = Run(r["label"], int(r["n_draws"]), attack, join_explanations(explanations))
    return loaded


def find_analyses(out: str | Path) -> dict[str, Path]:
    """Stored analyses by name (``OUT/analysis/NAME.nc``)."""
    return {p.stem: p for p in _nc_files(Path(out) / "analysis")}


def find_tables(out: str | Path, preset: str | None = None) -> dict[Path, xr.Dataset]:
    """Robust-accuracy tables (results of kind ``robustness_table``) anywhere under ``OUT``, opened lazily.

    With ``preset``, only those in a folder of that name (``OUT/attacks/PRESET/...``).
    """
    out, found = Path(out), {}
    for path in sorted(out.rglob("*.nc")):
        parts = path.relative_to(out).parts
        if path.name.startswith(".") or parts[0] in ("analysis", "explanations", "figures"):
            continue
        if preset is not None and preset not in parts[:-1]:
            continue
        if _kind(path) == "robustness_table":
            found[path] = store.open_result(path, "robustness_table")
    return found


def _kind(path: Path) -> str | None:
    """The ``kind`` attribute of a netCDF result, read without opening it as a Dataset (much faster).

    Raises
    ------
    CorruptResultError
        The file cannot be read (empty, truncated, not netCDF).
    """
    import h5py
    if path.stat().st_size == 0:
        raise store.CorruptResultError(path, "empty file")
    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get("kind")
    except OSError as err:  # not absent: reported, never skipped
        raise store.CorruptResultError(path, store.error_reason(err)) from err
    return kind.decode() if isinstance(kind, bytes) else None if kind is None else str(kind)


def layer_names(explanation: xr.Dataset | xr.DataArray) -> dict[Any, str] | None:
    """``{layer: module name}`` from a string coordinate along ``layer`` (the explanation's
    ``layer_name``), if there is one."""
    for name, coord in explanation.coords.items():
        if name != "layer" and coord.dims == ("layer",) and coord.dtype.kind in "UOS":
            return {k: str(v) for k, v in zip(explanation.layer.values.tolist(), coord.values.tolist())}
    return None


def analyse_stored(out: str | Path, preset: str | None = None, topk: float = 20, *, attack: str | None = None,
                   norm: str | None = None, epsilon: float | None = None, mode: str | None = None,
                   method: str | None = None, models: Sequence[str] | None = None, det: str = "baseNN",
                   adv: str = "advNN", loss: str | None = None) -> xr.Dataset:
    """The analysis (:func:`~.stability.analyse`) of the explained attack runs of a preset stored under ``OUT``.

    The runs are chosen by :func:`find_runs` (same filters); the analysis records the preset, the filters and
    each run's files (relative to ``OUT``) in its config, so :func:`load_runs` finds them again, and gets a
    ``layer_name`` coordinate when the explanations name their layers. Write it with
    :func:`~.stability.write`.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`find_runs` and :func:`~.stability.analyse`.
    """
    from .stability import analyse
    preset = resolve_preset(out, preset)
    found = find_runs(out, preset, attack=attack, norm=norm, epsilon=epsilon, mode=mode, method=method,
                      models=models, loss=loss)
    if det not in [f.name for f in found]:
        raise FileNotFoundError(f"no explained attack run of the deterministic reference {det!r} in preset "
                                f"{preset!r} (found {', '.join(f.name for f in found)}); run "
                                f"`{EXPLAIN_COMMAND.format(out=out, preset=preset).replace('MODEL', det)}` first")
    filters = {"attack": attack, "norm": norm, "epsilon": epsilon, "mode": mode, "method": method, "loss": loss}
    config = {"preset": preset, "topk": topk, "det": det, "adv": adv, "filters": filters,
              "runs": describe(found, out)}
    runs = [to_run(f) for f in found]
    ds = analyse(runs, topk, det=det, adv=adv, config=config)
    names = layer_names(runs[[f.name for f in found].index(det)].explanation)
    if names is not None:
        ds = ds.assign_coords(layer_name=("layer", [names.get(v, str(v)) for v in ds.layer.values.tolist()]))
    first = found[0].attack.attrs
    ds.attrs.update(preset=preset, attack=str(first.get("attack", "")), norm=str(first.get("norm", "")),
                    epsilon=float(first.get("epsilon", np.nan)), loss=attack_loss(first))
    from .controls import attach  # perturbation norms and the stored controls (docs/method.md §9.8)
    return attach(ds, out, preset, found)


def analysis_name(ds: xr.Dataset) -> str:
    """The default file name of an analysis: ``PRESET_ATTACK_NORM_epsEPS[_LOSS]_topK`` (the loss when not the
    cross-entropy), from its attributes (which come from the stored attack runs:
    :func:`bayesrobust.paths.analysis_path` refuses a name they make unsafe)."""
    a = ds.attrs
    eps, topk = float(a.get("epsilon", 0)), float(a.get("topk", 20))
    loss = paths.loss_part(attack_loss(a))
    return f"{a.get('preset', 'analysis')}_{a.get('attack', '')}_{a.get('norm', '')}_eps{eps:g}{loss}_top{topk:g}"
