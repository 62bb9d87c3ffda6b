"""The results store: one labelled ``xarray.Dataset`` per stage and experiment (docs/method.md §7).

Small results are netCDF files (h5netcdf engine), large ones zarr stores; both are written atomically
(a temporary sibling, then a rename), so an interrupted run leaves nothing half-written behind. Every
Dataset carries its provenance in attributes (:func:`provenance`); netCDF attributes cannot hold dicts or
booleans, so the full config is stored as a JSON string under ``config``.

Open any result in a notebook with ``xr.open_dataset(path)`` (netCDF) or ``xr.open_zarr(path)``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

#: Required variables (name → dims) of each kind of result; checked by :func:`validate`.
SCHEMAS: dict[str, dict[str, tuple[str, ...]]] = {}
#: Required attributes of every result.
COMMON_ATTRS = ("kind", "created", "git_revision", "versions", "config")
#: Coordinates every result with a ``draw`` dimension must have along it: each draw's chain and sample in
#: the posterior (chain −1 and sample = draw index for SVI and deterministic draws).
DRAW_COORDS = ("chain", "sample")


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> str:
    from importlib import metadata
    names = ("torch", "pyro-ppl", "zennit", "captum", "numpy", "xarray")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return json.dumps(found, sort_keys=True)


def _attr_value(value: Any) -> Any:
    """netCDF-safe attribute: bools become ints, None becomes '', containers become JSON."""
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return int(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def provenance(kind: str, config: Mapping[str, Any], **attrs: Any) -> dict[str, Any]:
    """Attributes for a result of ``kind``: the flat ``attrs``, the config as JSON, library versions, the
    git revision and the creation time, all netCDF-safe."""
    out = {k: _attr_value(v) for k, v in attrs.items()}
    out.update(kind=kind, config=json.dumps(dict(config), sort_keys=True, default=str),
               versions=_versions(), git_revision=_git_revision(),
               created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return out


def config_of(ds: xr.Dataset) -> dict:
    """The config a result was made with (parsed from its ``config`` attribute)."""
    return json.loads(ds.attrs.get("config", "{}"))


def validate(ds: xr.Dataset, kind: str | None = None) -> xr.Dataset:
    """Check that ``ds`` is a complete result of ``kind`` (default: its own ``kind`` attribute).

    Every result with a ``draw`` dimension must also have the coordinates :data:`DRAW_COORDS` along it.

    Raises
    ------
    ValueError
        Unknown kind, or a missing variable, dimension, coordinate or attribute — named in the message.
    """
    kind = kind or ds.attrs.get("kind")
    if kind not in SCHEMAS:
        raise ValueError(f"unknown result kind {kind!r}; expected one of {', '.join(sorted(SCHEMAS))}")
    missing = [a for a in COMMON_ATTRS if a not in ds.attrs]
    if missing:
        raise ValueError(f"{kind} result is missing attribute(s) {', '.join(missing)}")
    for name, dims in SCHEMAS[kind].items():
        if name not in ds.variables:
            raise ValueError(f"{kind} result is missing variable {name!r} with dims {dims}")
        if tuple(ds[name].dims) != dims:
            raise ValueError(f"{kind} result variable {name!r} has dims {tuple(ds[name].dims)}, "
                             f"expected {dims}")
    if "draw" in ds.dims:
        for name in DRAW_COORDS:
            if name not in ds.coords or tuple(ds[name].dims) != ("draw",):
                raise ValueError(f"{kind} result has a draw dimension but no coordinate {name!r} along it "
                                 f"(each draw's {name} in the posterior; see DrawSet.coords)")
    return ds


def _replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` onto ``path`` (file or folder) as the last step of a write."""
    if path.is_dir() and not tmp.is_dir():
        raise IsADirectoryError(f"{path} is a folder; refusing to replace it with a file")
    if path.is_dir():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def write_netcdf(ds: xr.Dataset, path: str | Path, kind: str | None = None) -> Path:
    """Validate ``ds`` and write it to ``path`` as netCDF (h5netcdf), atomically."""
    validate(ds, kind)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def open_result(path: str | Path, kind: str | None = None) -> xr.Dataset:
    """Open a stored result (netCDF file or zarr folder) lazily and validate it.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result at {path}")
    ds = xr.open_zarr(path) if path.is_dir() else xr.open_dataset(path, engine="h5netcdf")
    return validate(ds, kind)


def atomic_zarr(path: str | Path):
    """Context manager yielding a temporary zarr path that replaces ``path`` on success only.

    >>> with atomic_zarr(out) as tmp:           # doctest: +SKIP
    ...     ds.to_zarr(tmp, mode="w")
    """
    from contextlib import contextmanager

    @contextmanager
    def _cm():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            yield tmp
            _replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _cm()


def register_schema(kind: str, variables: Mapping[str, Iterable[str]]) -> None:
    """Declare the variables (name → dims) that a result of ``kind`` must hold."""
    SCHEMAS[kind] = {k: tuple(v) for k, v in variables.items()}


register_schema("attack", {
    "x": ("image", "channel", "height", "width"), "x_adv": ("image", "channel", "height", "width"),
    "label": ("image",), "pred": ("image",), "pred_adv": ("image",), "success": ("image",),
    "failed": ("image",), "softmax_robustness": ("image",), "probs": ("image", "class"),
    "probs_adv": ("image", "class"), "draw_pred": ("draw", "image"), "draw_pred_adv": ("draw", "image")})
register_schema("robustness_table", {"accuracy": ("norm", "epsilon", "steps"), "clean_accuracy": ()})
register_schema("analysis", {
    "lrp_robustness": ("model", "rule", "layer", "image"), "softmax_robustness": ("model", "image"),
    "success": ("model", "image"), "failed": ("model", "image"), "label": ("image",),
    "lrp_robustness_diff": ("comparison", "rule", "layer", "image"),
    "mannwhitney_u": ("comparison", "subset", "rule", "layer"),
    "mannwhitney_p": ("comparison", "subset", "rule", "layer"),
    "spearman_rho": ("model", "subset", "rule", "layer"), "spearman_p": ("model", "subset", "rule", "layer")})
register_schema("explanation", {
    name: ("input", "rule", "layer", "image", "channel", "height", "width")
    for name in ("relevance", "relevance_std", "relevance_sign_agreement")})
