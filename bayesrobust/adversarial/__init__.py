"""Adversarial attacks on deterministic and Bayesian networks (docs/method.md §4).

=====================  =========================================================================
:class:`FGSM`          one signed-gradient step, Linf (``fgsm.py``)
:class:`PGD`           projected gradient descent, Linf or L2, random start (``pgd.py``)
:class:`PosteriorAverage`  any attack on S posterior draws: ``mean_grad``, ``predictive``, ``mean_image``
:class:`DrawSet`       S draws swapped into one module in place (:mod:`bayesrobust.models.draws`)
:func:`evaluate`       predictive, predictions, success/failed, softmax robustness (``evaluate.py``)
:func:`run_attack`     one attack run end to end → the ``attack`` Dataset (``run.py``)
:func:`robustness_table`  accuracy under PGD over (norm, ε, steps) (``table.py``)
:class:`IFIA`          attack on the explanation: top-k, mass-center, targeted (``manipulation.py``, §11)
:class:`Manipulate`    targeted manipulation of the map towards a target map (``manipulation.py``)
:class:`MapModel`      S draws vmapped: predictive and differentiable Bayesian map (``attribution.py``)
:func:`run_attribution_attack`  one attribution-attack run → ``attribution_attack`` Dataset
=====================  =========================================================================
"""

from __future__ import annotations

from typing import Any

from ..models.draws import DrawSet, draw_probabilities
from .attribution import MapModel, softplus_activations
from .attribution_run import attribution_table, run_attribution_attack
from .base import NORMS, Attack, LossGradient, module_gradient, perturbation_norm
from .evaluate import Evaluation, evaluate
from .fgsm import FGSM
from .manipulation import IFIA, AttributionAttack, Manipulate
from .pgd import PGD
from .posterior import MODES, PosteriorAverage
from .run import run_attack
from .table import SEED000_EPSILONS, SEED000_STEPS, robustness_table

#: Attacks by name (CLI choices).
ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD}


def make_attack(name: str, **hyperparameters: Any) -> Attack:
    """The attack ``name`` ('fgsm', 'pgd') with keyword hyperparameters; ``None`` values are dropped.

    Raises
    ------
    ValueError
        Unknown name (the valid ones are listed), or a hyperparameter the attack does not take.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(ATTACKS)}")
    kwargs = {k: v for k, v in hyperparameters.items() if v is not None}
    if name == "fgsm":
        norm = kwargs.pop("norm", "linf")
        if norm != "linf":
            raise ValueError(f"FGSM is an Linf attack; got norm={norm!r} (use pgd for 'l2')")
    try:
        return ATTACKS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"attack {name!r} does not take these settings {sorted(kwargs)}: {err}") from err


__all__ = ["ATTACKS", "Attack", "DrawSet", "Evaluation", "FGSM", "LossGradient", "MODES", "NORMS", "PGD",
           "PosteriorAverage", "SEED000_EPSILONS", "SEED000_STEPS", "draw_probabilities", "evaluate",
           "make_attack", "module_gradient", "perturbation_norm", "robustness_table", "run_attack",
           "IFIA", "AttributionAttack", "Manipulate", "MapModel", "softplus_activations", "attribution_table",
           "run_attribution_attack"]
