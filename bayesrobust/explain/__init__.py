"""Layer-wise explanations of deterministic and Bayesian networks (docs/method.md §5).

- :mod:`~bayesrobust.explain.rules`: LRP rules (``epsilon``, ``gamma``, ``alpha1beta0``) and Zennit
  composites by name, canonizers;
- :mod:`~bayesrobust.explain.layers`: which layers are explained and where their outputs are read;
- :mod:`~bayesrobust.explain.lrp`: :class:`LRP`, relevance of every layer's argmax unit at the pixels;
- :mod:`~bayesrobust.explain.captum_methods`: :class:`CaptumMethod` (IG, GradientSHAP, saliency,
  SmoothGrad, Grad-CAM) behind the same interface;
- :mod:`~bayesrobust.explain.bayesian`: :func:`explain_posterior`, one map per draw reduced to mean, std
  and sign agreement;
- :mod:`~bayesrobust.explain.explanation`: :func:`explain_attack`, the explanation Dataset of an attack run
  (optionally streaming every draw's maps to zarr).

Example::

    ds = explain_attack(posterior, attack_ds, make_explainers("lrp", ["epsilon", "gamma"]))
"""

from .bayesian import DrawReducer, Explainer, PosteriorExplanation, explain_posterior
from .captum_methods import METHODS, CaptumMethod
from .explanation import INPUTS, check_attack, explain_attack, make_explainers
from .layers import resolve_layers
from .lrp import LRP, layer_relevance
from .rules import COMPOSITES, RULES

__all__ = ["COMPOSITES", "CaptumMethod", "DrawReducer", "Explainer", "INPUTS", "LRP", "METHODS",
           "PosteriorExplanation", "RULES", "check_attack", "explain_attack", "explain_posterior",
           "layer_relevance", "make_explainers", "resolve_layers"]
