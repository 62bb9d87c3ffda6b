"""Layer-wise explanations of deterministic and Bayesian networks (docs/method.md §5).

- :mod:`~bayesrobust.explain.rules`: LRP rules (``epsilon``, ``gamma``, ``alpha1beta0``) and Zennit
  composites by name, canonizers;
- :mod:`~bayesrobust.explain.layers`: which layers are explained and where their outputs are read;
- :mod:`~bayesrobust.explain.lrp`: :class:`LRP`, relevance of every layer's argmax unit at the pixels;
- :mod:`~bayesrobust.explain.fused`: :class:`~bayesrobust.explain.fused.FusedLRP`, the rules ``epsilon``,
  ``gamma`` and ``alpha1beta0`` in one pass on fc2/conv networks (same maps as :class:`LRP`, faster);
- :mod:`~bayesrobust.explain.captum_methods`: :class:`CaptumMethod` (IG, GradientSHAP, saliency,
  SmoothGrad, Grad-CAM) behind the same interface;
- :mod:`~bayesrobust.explain.rise`: :class:`RISE`, random-mask relevance behind the same interface;
- :mod:`~bayesrobust.explain.bayesian`: :func:`explain_posterior`, one map per draw reduced to mean, std
  and sign agreement;
- :mod:`~bayesrobust.explain.explanation`: :func:`explain_attack`, the explanation Dataset of an attack run
  (optionally streaming every draw's maps to zarr).

Example::

    ds = explain_attack(posterior, attack_ds, make_explainers("lrp", ["epsilon", "gamma"]))
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each public name and the submodule that defines it. They are imported on first use (PEP 562), so
#: ``python -m bayesrobust.explain`` starts without loading Zennit and Captum before it can handle Ctrl-C.
_WHERE = {"DrawReducer": "bayesian", "Explainer": "bayesian", "PosteriorExplanation": "bayesian",
          "explain_posterior": "bayesian", "METHODS": "captum_methods", "CaptumMethod": "captum_methods",
          "INPUTS": "explanation", "check_attack": "explanation", "explain_attack": "explanation",
          "make_explainers": "explanation", "resolve_layers": "layers", "LRP": "lrp", "layer_relevance": "lrp",
          "COMPOSITES": "rules", "RULES": "rules", "RISE": "rise", "rise_masks": "rise"}

__all__ = ["COMPOSITES", "CaptumMethod", "DrawReducer", "Explainer", "INPUTS", "LRP", "METHODS",
           "PosteriorExplanation", "RULES", "check_attack", "explain_attack", "explain_posterior",
           "layer_relevance", "make_explainers", "resolve_layers", "RISE", "rise_masks"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
