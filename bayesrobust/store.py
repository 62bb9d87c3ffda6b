"""The results store: one labelled ``xarray.Dataset`` per stage and experiment (docs/method.md §7).

Small results are netCDF files (h5netcdf engine), large ones zarr stores; both are written atomically
(a temporary sibling, then a rename), so an interrupted run leaves nothing half-written behind. Every
Dataset carries its provenance in attributes (:func:`provenance`); netCDF attributes cannot hold dicts or
booleans, so the full config is stored as a JSON string under ``config``.

Each result records the sha256 of the files it was computed from (:func:`file_hash`), so a stale one is told
apart from a current one by content, not by path or time (:class:`StaleResultError`); a result that exists
but cannot be read raises :class:`CorruptResultError` from :func:`open_result` (docs/method.md §7.7).

Open any result in a notebook with ``xr.open_dataset(path)`` (netCDF) or ``xr.open_zarr(path)``.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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


def _git_revision(where: Path = Path(__file__).parent) -> str:
    """The commit the library runs from, with ``+dirty`` when tracked files differ from it (untracked files such
    as results do not count); ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        revision = head.stdout.strip()
        if head.returncode or not revision:
            return "unknown"
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=where, capture_output=True,
                                 timeout=5)
        return revision + ("+dirty" if changed.returncode == 1 else "")
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


def stamp() -> dict[str, str]:
    """Where a result comes from: ``versions`` (the libraries', as JSON), ``git_revision``, ``created`` (UTC)."""
    return {"versions": _versions(), "git_revision": _git_revision(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def provenance(kind: str, config: Mapping[str, Any], **attrs: Any) -> dict[str, Any]:
    """Attributes for a result of ``kind``: the flat ``attrs``, the config as JSON and the :func:`stamp`
    (library versions, git revision, creation time), all netCDF-safe."""
    out = {k: _attr_value(v) for k, v in attrs.items()}
    out.update(kind=kind, config=json.dumps(dict(config), sort_keys=True, default=str), **stamp())
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


class CorruptResultError(ValueError):
    """A stored result (netCDF file, zarr store, model checkpoint file) that exists but cannot be read: damaged,
    truncated, empty or incomplete. The message is one line naming the file and the command that redoes it."""

    def __init__(self, path: str | Path, reason: str, redo: str | None = None) -> None:
        from . import redo as commands
        self.path = Path(path)
        command = redo or commands.for_path(path)
        hint = command if command.startswith("redo ") else f"redo it: `{command}`"
        super().__init__(f"{path} is unreadable ({reason}); {hint}")


class StaleResultError(ValueError):
    """A stored result computed from another version of one of its inputs (the input was redone after it).
    The message names both files and the command that redoes the stale one."""


def error_reason(err: BaseException) -> str:
    """The first sentence of an exception's first line (at most 160 characters), for a one-line message."""
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    text = text.split(". ")[0].rstrip(".")
    text = text if len(text) <= 160 else text[:159] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def file_hash(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes: the identity of a stored result, whatever its path or age."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Suffix of the temporary siblings a write goes through (``.NAME.<random>.tmp``), and of the previous
#: version of a folder while it is being replaced (``.NAME.old``).
TMP_SUFFIX, OLD_SUFFIX = ".tmp", ".old"


def temp_sibling(path: str | Path, directory: bool = False) -> Path:
    """A new, empty hidden sibling ``.NAME.<random>.tmp`` of ``path`` (a file or, with ``directory``, a
    folder) with the permissions a plain ``open``/``mkdir`` gives (``0o666``/``0o777`` less the umask), not the
    owner-only ones of :mod:`tempfile`."""
    import secrets
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            if directory:
                tmp.mkdir(0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def normal_mode(path: str | Path) -> None:
    """Give ``path`` the permissions a plain ``open`` (file) or ``mkdir`` (folder) would have."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def leftovers(path: str | Path) -> list[Path]:
    """What a killed write of ``path`` may have left next to it: the hidden siblings ``.NAME.*`` (temporary
    ``.NAME.<random>.tmp``, earlier versions' ``.NAME.<random>``, the previous version ``.NAME.old``)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*"))


def clean_leftovers(path: str | Path) -> list[Path]:
    """Remove :func:`leftovers` of ``path``; returns what was removed."""
    removed = leftovers(path)
    for p in removed:
        remove_path(p)
    return removed


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, whichever ``path`` is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` onto ``path`` as the last step of a write. A folder (zarr store) replaces whatever is at
    ``path`` (a folder or a damaged file); a file never replaces a folder."""
    if path.is_dir() and not tmp.is_dir():
        raise IsADirectoryError(f"{path} is a folder; refusing to replace it with a file")
    if tmp.is_dir() and (path.exists() or path.is_symlink()):
        old = path.with_name(f".{path.name}{OLD_SUFFIX}")
        remove_path(old)
        os.replace(path, old)
        os.replace(tmp, path)
        remove_path(old)
    else:
        os.replace(tmp, path)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """``with atomic_file(path) as tmp:`` write the file ``tmp``; on leaving the block it gets normal
    permissions and replaces ``path`` in one rename, and on an error it is removed, so ``path`` is either its old
    self or complete. Leftovers of an earlier killed write are removed first."""
    path = Path(path)
    clean_leftovers(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        normal_mode(tmp)
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_netcdf(ds: xr.Dataset, path: str | Path, kind: str | None = None) -> Path:
    """Validate ``ds`` and write it to ``path`` as netCDF (h5netcdf), atomically (through a hidden temporary
    sibling; leftovers of an earlier killed write are removed first). The file gets normal permissions."""
    validate(ds, kind)
    with atomic_file(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a hidden temporary sibling and a rename, like
    :func:`write_netcdf` (reports, tables)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def open_result(path: str | Path, kind: str | None = None) -> xr.Dataset:
    """Open a stored result (netCDF file or zarr folder) lazily and validate it.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    CorruptResultError
        Something at ``path`` that cannot be read (empty, truncated, not netCDF/zarr, a zarr store with
        missing chunks); the message names the file and the command that redoes it.
    ValueError
        A readable Dataset that is not a complete result of ``kind`` (:func:`validate`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result at {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise CorruptResultError(path, "empty file")
    try:
        if path.is_dir():
            _check_zarr_chunks(path)
            ds = xr.open_zarr(path)
        else:
            ds = xr.open_dataset(path, engine="h5netcdf")
    except CorruptResultError:
        raise
    except Exception as err:  # whatever the backend raises on bytes it cannot read
        raise CorruptResultError(path, error_reason(err)) from err
    return validate(ds, kind)


#: Attribute of a zarr store written with every chunk (even those equal to the fill value, which zarr skips
#: by default): there any missing chunk is damage. Older stores are checked on ``relevance_draws`` only.
ALL_CHUNKS_ATTR = "all_chunks_written"


def _check_zarr_chunks(path: Path) -> None:
    """Every chunk of the zarr store at ``path`` exists (a missing chunk would read back as the fill value,
    e.g. NaN): of every array if the store says it wrote them all (:data:`ALL_CHUNKS_ATTR`), else of
    ``relevance_draws`` (whose chunks are never the fill value)."""
    import zarr
    try:
        group = zarr.open_group(str(path), mode="r")
        arrays = list(group.arrays())
        complete = bool(group.attrs.get(ALL_CHUNKS_ATTR, 0))
    except Exception as err:
        raise CorruptResultError(path, error_reason(err)) from err
    if not arrays:
        raise CorruptResultError(path, "no arrays in the zarr store")
    for name, array in arrays:
        if not complete and name != "relevance_draws":
            continue
        if array.nchunks_initialized < array.nchunks:
            raise CorruptResultError(path, f"array {name!r} has {array.nchunks - array.nchunks_initialized} of "
                                           f"{array.nchunks} chunks missing")


def atomic_zarr(path: str | Path):
    """Context manager yielding a temporary zarr path that replaces ``path`` on success only (leftovers of
    an earlier killed write are removed first; the folder gets normal permissions).

    >>> with atomic_zarr(out) as tmp:           # doctest: +SKIP
    ...     ds.to_zarr(tmp, mode="w")
    """
    from contextlib import contextmanager

    @contextmanager
    def _cm():
        target = Path(path)
        clean_leftovers(target)
        tmp = temp_sibling(target, directory=True)
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
register_schema("control", {  # bayesrobust.controls (docs/method.md §9.8)
    "relevance": ("rule", "layer", "image", "channel", "height", "width"),
    "x_control": ("image", "channel", "height", "width"), "perturbation_l2": ("image",), "target_l2": ("image",)})
