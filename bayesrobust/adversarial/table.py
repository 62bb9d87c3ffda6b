"""Robust-accuracy tables (docs/method.md §4.5): accuracy under PGD Linf and L2 over a grid of ε and steps."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from .. import store
from ..checks import count
from ..data import Data
from ..models.draws import DrawSet
from ..models.posterior import Posterior
from .base import check_epsilon, check_inputs, check_norm
from .evaluate import evaluate
from .pgd import PGD
from .posterior import PosteriorAverage, check_mode
from .run import model_attrs

log = logging.getLogger(__name__)

#: The seed-000 grid: PGD Linf ε ∈ {8/255, 16/255} and L2 ε ∈ {0.25, 0.5, 1, 2}.
SEED000_EPSILONS: dict[str, tuple[float, ...]] = {"linf": (8 / 255, 16 / 255), "l2": (0.25, 0.5, 1.0, 2.0)}
#: The seed-000 step counts (step size 2.5·ε/steps).
SEED000_STEPS: tuple[int, ...] = (20, 100)


def robustness_table(model: Posterior, data: Data, *,
                     epsilons: Mapping[str, Sequence[float]] = SEED000_EPSILONS,
                     steps: Sequence[int] = SEED000_STEPS, random_start: bool = True,
                     mode: str = "mean_grad", n_draws: int | None = None, seed: int = 0,
                     model_name: str = "", config: Mapping[str, Any] | None = None,
                     chunk_size: int | None = None, device: str | torch.device = "cpu",
                     callback: Callable[[str, float, int, float], None] | None = None) -> xr.Dataset:
    """Accuracy of the posterior predictive under PGD for every (norm, ε, steps) of the grid.

    Step size 2.5·ε/steps (the default of :class:`PGD`); every cell restarts the random start generator
    from ``seed``, so a cell does not depend on the rest of the grid.

    Parameters
    ----------
    model
        The trained posterior (deterministic: S = 1).
    data
        The evaluation images.
    epsilons
        ε values per norm ('linf', 'l2'); default the seed-000 grid.
    steps
        Step counts; default (20, 100).
    mode, n_draws, chunk_size
        As in :class:`PosteriorAverage`; one set of S draws serves the whole table.
    callback
        Called as ``callback(norm, epsilon, steps, accuracy)`` after each cell (progress reporting).

    Returns
    -------
    xarray.Dataset
        ``accuracy`` (norm, epsilon, steps), NaN where an ε is not in that norm's grid; ``clean_accuracy``
        (scalar); attributes as for an attack run (kind ``robustness_table``).

    Raises
    ------
    ValueError
        Unknown norm, empty grid, an invalid ε or step count, mode, ``n_draws`` or ``chunk_size``, or images
        with a NaN or ±inf pixel or outside [0, 1] — all before any draw is made.
    """
    for norm in epsilons:
        check_norm(norm)
    if not epsilons or not any(len(v) for v in epsilons.values()) or not steps:
        raise ValueError("the table needs at least one norm with an epsilon and one step count")
    for norm, values in epsilons.items():
        for eps in values:
            check_epsilon(eps, norm)
    for n_steps in steps:
        count("steps", n_steps)
    check_mode(mode)
    count("n_draws", n_draws)
    count("chunk_size", chunk_size)
    check_inputs(data.x, data.y, "the images of data")  # before the draws are made
    norms = list(epsilons)
    eps_grid = sorted({float(e) for values in epsilons.values() for e in values})
    steps_grid = [int(s) for s in steps]
    draws = DrawSet(model, n_draws, device=device)
    x, y = data.x.to(device), data.y.to(device)
    accuracy = np.full((len(norms), len(eps_grid), len(steps_grid)), np.nan)
    clean = float("nan")
    for a, norm in enumerate(norms):
        for eps in epsilons[norm]:
            b = eps_grid.index(float(eps))
            for c, n_steps in enumerate(steps_grid):
                attack = PGD(norm=norm, epsilon=eps, steps=n_steps, random_start=random_start)
                wrapper = PosteriorAverage(attack, mode=mode, chunk_size=chunk_size)
                x_adv = wrapper(draws, x, y, generator=torch.Generator().manual_seed(int(seed)))
                ev = evaluate(draws, x, x_adv, y, chunk_size=chunk_size)
                accuracy[a, b, c], clean = ev.adversarial_accuracy, ev.accuracy
                log.info("%s eps=%g steps=%d: accuracy %.4f", norm, eps, n_steps, accuracy[a, b, c])
                if callback is not None:
                    callback(norm, float(eps), n_steps, float(accuracy[a, b, c]))
    attrs = {**model_attrs(model, data, model_name), "attack": "pgd", "step_size_rule": "2.5*epsilon/steps",
             "random_start": random_start, "posterior_mode": mode, "n_draws": len(draws), "seed": int(seed),
             "epsilons": {k: list(map(float, v)) for k, v in epsilons.items()}, "steps_grid": steps_grid}
    ds = xr.Dataset(
        {"accuracy": (("norm", "epsilon", "steps"), accuracy), "clean_accuracy": ((), clean)},
        coords={"norm": norms, "epsilon": eps_grid, "steps": steps_grid},
        attrs=store.provenance("robustness_table", dict(config) if config is not None else attrs, **attrs))
    ds["accuracy"].attrs["description"] = "accuracy of the posterior predictive under PGD (NaN: not in grid)"
    return store.validate(ds, "robustness_table")
