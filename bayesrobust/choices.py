"""Every named choice of the library, defined once: models, inferences, attacks, norms, posterior modes,
likelihood scalings, HMC schemes, image subsets.

Each is a ``str`` Enum, so a member compares equal to its value (``Model.BAYES == "fullBNN"``) and is
stored as that value. Command-line options take their choices from here (``click.Choice(Norm.values())``)
and library functions validate with :meth:`Choice.parse`, so a new value is added in one place. LRP rules,
Zennit composites and Captum methods are tables of implementations (:data:`bayesrobust.explain.rules.RULES`,
:data:`~bayesrobust.explain.rules.COMPOSITES`, :data:`bayesrobust.explain.captum_methods.METHODS`); their keys
are the choices.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A named choice: ``str(member)`` is its value."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The valid values, in definition order."""
        return tuple(m.value for m in cls)

    @classmethod
    def parse(cls, value: str | Choice, what: str | None = None) -> Choice:
        """The member whose value is ``value``.

        Raises
        ------
        ValueError
            ``value`` is not valid; the message names it and lists the valid values.
        """
        try:
            return cls(value)
        except ValueError:
            label = what or cls.__name__.lower()
            raise ValueError(f"unknown {label} {value!r}; expected one of {', '.join(cls.values())}") from None


class Model(Choice):
    """The three model kinds of the paper: deterministic, adversarially trained, Bayesian."""

    BASE = "baseNN"
    ADV = "advNN"
    BAYES = "fullBNN"
    #: attributional robustness training (ART, docs/method.md §11.5): deterministic, and added to SVI
    ART = "artNN"
    ART_BAYES = "artBNN"


class Inference(Choice):
    """How a fullBNN's posterior is inferred (``hmc`` runs NUTS; docs/method.md §13 for the others)."""

    SVI = "svi"
    HMC = "hmc"
    SGHMC = "sghmc"
    SGLD = "sgld"
    LAPLACE = "laplace"
    ENSEMBLE = "ensemble"


class AttackName(Choice):
    FGSM = "fgsm"
    PGD = "pgd"
    #: attacks on the explanation, not the prediction (docs/method.md §11)
    IFIA = "ifia"
    MANIPULATE = "manipulate"


class Norm(Choice):
    LINF = "linf"
    L2 = "l2"


class PosteriorMode(Choice):
    """How an attack averages over posterior draws (docs/method.md §4.2)."""

    MEAN_GRAD = "mean_grad"
    PREDICTIVE = "predictive"
    MEAN_IMAGE = "mean_image"
    MEAN_SIGN = "mean_sign"


class AttackLoss(Choice):
    """What an FGSM/PGD attack increases (docs/method.md §4.1): the cross-entropy with the true label (the
    paper's), or the logit margin, which does not saturate with the softmax (§4.4)."""

    CE = "ce"
    MARGIN = "margin"


class LikelihoodScaling(Choice):
    """SVI minibatch likelihood: scaled to the full data (correct) or unscaled as the reference code."""

    FULL = "full"
    REFERENCE = "reference"


class HMCScheme(Choice):
    """Which posterior NUTS samples: the full training set's (correct), or the reference code's subset chains."""

    FULL = "full"
    SUBSETS = "subsets"


class Subset(Choice):
    """Images of an analysis: all, the successful attacks, the failed attacks."""

    ALL = "all"
    SUCCESSFUL = "successful"
    FAILED = "failed"


class AttributionMethod(Choice):
    """Gradient maps an attribution attack can differentiate twice (docs/method.md §11.1)."""

    SALIENCY = "saliency"
    GRAD_INPUT = "grad_input"
    INTEGRATED_GRADIENTS = "integrated_gradients"
    LRP_EPSILON = "lrp_epsilon"


class IFIAVariant(Choice):
    """What the iterative feature-importance attack moves (docs/method.md §11.2)."""

    TOPK = "topk"
    MASS_CENTER = "mass_center"
    TARGETED = "targeted"


class StepSchedule(Choice):
    """Step size of SGHMC/SGLD over the sampling phase (docs/method.md §13.1)."""

    CONSTANT = "constant"
    DECAY = "decay"
    CYCLICAL = "cyclical"


class Preconditioner(Choice):
    """SGHMC/SGLD mass: the plain sampler, or a diagonal preconditioner adapted during burn-in and then fixed
    (docs/method.md §13.1)."""

    NONE = "none"
    ADAPTED = "adapted"


class Optimizer(Choice):
    """Optimiser of a deterministic network (baseNN, advNN, an ensemble's or Laplace's baseNNs)."""

    ADAM = "adam"
    SGD = "sgd"


class LaplaceSubset(Choice):
    """Which weights a Laplace approximation covers (the others stay at the MAP)."""

    LAST_LAYER = "last_layer"
    ALL = "all"


class LaplaceStructure(Choice):
    """Structure of the Laplace posterior precision: diagonal, Kronecker-factored (KFAC), KFAC with a low-rank
    input factor (last layer only; for last layers too wide for a dense factor) or full."""

    DIAG = "diag"
    KRON = "kron"
    KRON_LOWRANK = "kron_lowrank"
    FULL = "full"


class Control(Choice):
    """The controls of the stability comparison (docs/method.md §9.8): explain each model on the other model's
    adversarial images (``cross``), or on a random-sign perturbation of its own attack's L2 norm (``random``)."""

    CROSS = "cross"
    RANDOM = "random"
