"""bayesrobust: how much to trust a network's prediction and its explanation under attack, for
deterministic, adversarially trained and Bayesian networks (docs/method.md).

The library entry point is :class:`Experiment` (one preset's stages from Python); the stages are in
:mod:`bayesrobust.stages`, the commands in :mod:`bayesrobust.cli`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Experiment", "headline"]


def __getattr__(name: str) -> Any:
    """Import :class:`Experiment` on first use, so ``import bayesrobust`` stays light."""
    if name in __all__:
        from . import experiment
        return getattr(experiment, name)
    raise AttributeError(f"module 'bayesrobust' has no attribute {name!r}")
