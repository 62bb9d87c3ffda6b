"""Where each stage reads and writes under an output folder ``OUT``.

::

    OUT/models/PRESET/MODEL_TAG/            config.json, weights.pt (+ diagnostics.json for NUTS)
    OUT/attacks/PRESET/RUN.nc               one attack Dataset (RUN names model, attack, norm, ε, S, mode)
    OUT/explanations/PRESET/RUN_METHOD.nc   one explanation Dataset (+ RUN_METHOD_draws.zarr with --keep-draws)
    OUT/analysis/NAME.nc                    one analysis Dataset
    OUT/figures/                            PNG and PDF figures

File names only make results easy to find; every parameter is also in the Dataset's attributes.
``MODEL_TAG`` is ``baseNN``, ``advNN`` or ``fullBNN_svi`` / ``fullBNN_hmc``.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The preset every command and :class:`bayesrobust.Experiment` use when none is named.
DEFAULT_PRESET = "quick"
#: Environment variable naming the output folder when none is given (default ``./results``).
OUT_ENV = "BAYESROBUST_OUT"
DEFAULT_OUT = "results"


def resolve_out(out: str | Path | None = None) -> Path:
    """``out`` if given, else ``$BAYESROBUST_OUT`` if set, else ``./results``.

    Raises
    ------
    ValueError
        The folder is an existing file.
    """
    path = Path(out if out is not None else os.environ.get(OUT_ENV) or DEFAULT_OUT)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {str(path)!r} is a file; expected a folder (or a path to create)")
    return path


def model_tag(model: str, inference: str | None = None) -> str:
    return f"{model}_{inference}" if model == "fullBNN" else model


def model_dir(out: str | Path, preset: str, model: str, inference: str | None = None) -> Path:
    return Path(out) / "models" / preset / model_tag(model, inference)


def attack_run_name(model: str, inference: str | None, attack: str, norm: str, epsilon: float,
                    n_draws: int, mode: str, steps: int | None = None) -> str:
    """E.g. ``fullBNN_svi_pgd_l2_eps0.5_steps20_S100_mean_grad``; PGD runs name their step count."""
    steps_part = f"_steps{steps}" if attack == "pgd" and steps is not None else ""
    name = f"{model_tag(model, inference)}_{attack}_{norm}_eps{epsilon:g}{steps_part}_S{n_draws}"
    return name if model != "fullBNN" else f"{name}_{mode}"


def attack_path(out: str | Path, preset: str, run: str) -> Path:
    return Path(out) / "attacks" / preset / f"{run}.nc"


def explanation_path(out: str | Path, preset: str, run: str, method: str) -> Path:
    return Path(out) / "explanations" / preset / f"{run}_{method}.nc"


def explanation_draws_path(out: str | Path, preset: str, run: str, method: str) -> Path:
    return Path(out) / "explanations" / preset / f"{run}_{method}_draws.zarr"


def analysis_path(out: str | Path, name: str) -> Path:
    return Path(out) / "analysis" / f"{name}.nc"


def figures_dir(out: str | Path) -> Path:
    return Path(out) / "figures"
