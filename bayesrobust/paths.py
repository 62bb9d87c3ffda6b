"""Where each stage reads and writes under an output folder ``OUT``.

::

    OUT/models/PRESET/MODEL_TAG/            config.json, weights.pt (+ diagnostics.json for NUTS)
    OUT/attacks/PRESET/RUN.nc               one attack Dataset (RUN names model, attack, norm, ε, S, mode)
    OUT/explanations/PRESET/RUN_METHOD.nc   one explanation Dataset (+ RUN_METHOD_draws.zarr with --keep-draws)
    OUT/analysis/NAME.nc                    one analysis Dataset
    OUT/figures/                            PNG and PDF figures

File names only make results easy to find; every parameter is also in the Dataset's attributes.
``MODEL_TAG`` is ``baseNN``, ``advNN`` or ``fullBNN_svi`` / ``fullBNN_hmc``.

Every path below ``OUT`` is made here, from names checked by :func:`safe_name` (letters, digits, ``_ . + -``,
no leading dot), and checked to lie inside ``OUT`` (:func:`under`): no stored attribute or config value can
send a result elsewhere. :func:`prepare_out` is the one check that ``OUT`` can be written, made before any
computation.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

#: The preset every command and :class:`bayesrobust.Experiment` use when none is named.
DEFAULT_PRESET = "quick"
#: Environment variable naming the output folder when none is given (default ``./results``).
OUT_ENV = "BAYESROBUST_OUT"
DEFAULT_OUT = "results"
#: What a name that becomes part of an output path may hold (no separator, no leading dot: never ``..``).
SAFE_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]*")
SAFE_CHARS = "letters, digits and _ . + - (not starting with a dot)"


class OutputError(ValueError):
    """The output folder cannot be used: it is a file, lies below a file, or cannot be written."""


def resolve_out(out: str | Path | None = None) -> Path:
    """``out`` if given, else ``$BAYESROBUST_OUT`` if set, else ``./results``. Nothing is created.

    Raises
    ------
    OutputError
        The folder is an existing file, or lies below one.
    """
    path = Path(out if out is not None else os.environ.get(OUT_ENV) or DEFAULT_OUT)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {str(path)!r} is a file; expected a folder (or a path to create)")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"output folder {str(path)!r} lies below {str(parent)!r}, which is a file; "
                                  f"expected a folder (or a path to create)")
            break
    return path


def probe_writable(folder: Path) -> None:
    """Create and remove a temporary file in ``folder`` (``os.access`` says yes to root even on a read-only
    file system); raises ``OSError`` if that fails."""
    fd, name = tempfile.mkstemp(prefix=".bayesrobust-probe.", dir=folder)
    os.close(fd)
    os.unlink(name)


def prepare_out(out: str | Path | None = None, *sub: str) -> Path:
    """The output folder (:func:`resolve_out`), created if needed and checked to be writable — the check every
    stage makes after its arguments and before any computation, so an unusable ``--out`` is one line, not a
    traceback after the work. ``sub``: names of the folder below ``out`` the stage writes into (created and
    probed instead of ``out`` itself; each a safe name).

    Raises
    ------
    OutputError
        A file in the way, or the folder cannot be created or written.
    """
    root = resolve_out(out)
    folder = under(root, *sub) if sub else root
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder {str(folder)!r}: {err.strerror or err}") from None
    try:
        probe_writable(folder)
    except OSError as err:
        raise OutputError(f"output folder {str(folder)!r} is not writable: {err.strerror or err}") from None
    return root


def safe_name(value: object, what: str = "name") -> str:
    """``value`` as a string if it may be one component of an output path: only :data:`SAFE_CHARS`, not
    empty, not starting with a dot. Stored attributes and config values pass through here before they name
    a file.

    Raises
    ------
    ValueError
        Any other character (a path separator, ``..``, a space, ...); the message names the value.
    """
    text = str(value)
    if not SAFE_NAME.fullmatch(text):
        raise ValueError(f"{what} {text!r} cannot name an output file: use only {SAFE_CHARS}")
    return text


def under(out: str | Path, *names: str) -> Path:
    """``OUT/NAME1/NAME2/...``, each name checked by :func:`safe_name`, and the result checked to lie inside
    ``out`` (lexically, so a symlinked sub-folder is fine).

    Raises
    ------
    ValueError
        An unsafe name, or a path outside ``out``.
    """
    root = Path(out)
    path = root.joinpath(*(safe_name(n, "path component") for n in names))
    inside(root, path)
    return path


def inside(out: str | Path, path: str | Path) -> Path:
    """``path`` if it lies inside ``out`` (after normalising ``..``, without following symlinks); otherwise a
    ``ValueError`` — no result is ever written outside the output folder."""
    root = os.path.normpath(os.path.abspath(out))
    target = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([root, target]) != root:
        raise ValueError(f"refusing to write {str(path)!r}: it lies outside the output folder {str(out)!r}")
    return Path(path)


def model_tag(model: str, inference: str | None = None) -> str:
    return f"{model}_{inference}" if model == "fullBNN" else model


def model_dir(out: str | Path, preset: str, model: str, inference: str | None = None) -> Path:
    return under(out, "models", preset, model_tag(model, inference))


def loss_part(loss: str) -> str:
    """The part of a run or analysis name that names its attack's loss: none for the cross-entropy (every name
    made before attacks had a loss), ``_margin`` for the margin."""
    return f"_{loss}" if loss != "ce" else ""


def attack_run_name(model: str, inference: str | None, attack: str, norm: str, epsilon: float,
                    n_draws: int, mode: str, steps: int | None = None, loss: str = "ce") -> str:
    """E.g. ``fullBNN_svi_pgd_l2_eps0.5_steps20_S100_mean_grad``; PGD runs name their step count, attacks on
    another loss than the cross-entropy name it (``baseNN_fgsm_linf_eps0.2_margin_S1``)."""
    steps_part = f"_steps{steps}" if attack == "pgd" and steps is not None else ""
    name = f"{model_tag(model, inference)}_{attack}_{norm}_eps{epsilon:g}{steps_part}{loss_part(loss)}_S{n_draws}"
    return safe_name(name if model != "fullBNN" else f"{name}_{mode}", "attack run name")


def attack_path(out: str | Path, preset: str, run: str) -> Path:
    return under(out, "attacks", preset, f"{safe_name(run, 'attack run')}.nc")


def explanation_path(out: str | Path, preset: str, run: str, method: str) -> Path:
    return under(out, "explanations", preset, f"{safe_name(run, 'attack run')}_{safe_name(method, 'method')}.nc")


def explanation_draws_path(out: str | Path, preset: str, run: str, method: str) -> Path:
    return under(out, "explanations", preset,
                 f"{safe_name(run, 'attack run')}_{safe_name(method, 'method')}_draws.zarr")


def analysis_path(out: str | Path, name: str) -> Path:
    return under(out, "analysis", f"{safe_name(name, 'analysis name')}.nc")


def figures_dir(out: str | Path) -> Path:
    return under(out, "figures")


def figure_stem(out: str | Path, stem: str) -> Path:
    """``OUT/figures/STEM`` (STEM, e.g. ``ANALYSIS_fig4``, checked by :func:`safe_name`)."""
    return under(out, "figures", safe_name(stem, "figure name"))
