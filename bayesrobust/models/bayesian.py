"""The Bayesian counterpart of a network, built from exchangeable parts with Pyro (docs/method.md, fullBNN).

Following TyXe, a Bayesian network is *plain network + prior + likelihood*; the inference is a fourth,
separate part (a guide builder for SVI, :class:`~bayesrobust.inference.svi.MeanFieldGuide`, or a kernel
builder for MCMC, :class:`~bayesrobust.inference.hmc.NUTSKernel`).

- A **prior** is any callable ``prior(name, param) -> distribution`` over one parameter, with its event dims
  set (``name`` is the state-dict name, e.g. ``'1.weight'``). :class:`NormalPrior` (the paper: independent
  ``N(0, 1)``) is the default; :class:`LayerwiseNormalPrior` scales per layer (a mapping, or ∝ 1/√fan_in).
- A **likelihood** (:class:`Categorical` on the logits, :class:`Gaussian` with a fixed noise scale) observes
  a minibatch under ``pyro.plate("data", dataset_size, subsample=...)``: Pyro scales its log-likelihood by
  ``N / B``, so a minibatch ELBO estimates the full-data ELBO. ``dataset_size=None`` leaves a minibatch
  unscaled — the reference code's setting, whose KL term weighs about N / B ≈ 470 times too much.

:func:`pyro_scope` runs inference in its own Pyro parameter store and a forked, seeded RNG, so the
caller's global state is unchanged afterwards.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_
from torch import nn

from .architectures import ArchConfig, build

SITE_PREFIX = "net."


# ---------------------------------------------------------------------------------------------- priors
@runtime_checkable
class Prior(Protocol):
    """``prior(name, param)``: the prior of one parameter (``name`` e.g. ``'1.weight'``, ``param`` its
    initial value) as a Pyro distribution with ``batch_shape == ()`` and ``event_shape == param.shape``."""

    def __call__(self, name: str, param: torch.Tensor) -> dist.TorchDistributionMixin: ...


def _positive(what: str, value: float) -> float:
    if not value > 0:  # NaN fails too
        raise ValueError(f"{what} must be positive, got {value}")
    if value == float("inf"):
        raise ValueError(f"{what} must be finite, got {value}")
    return float(value)


def iid_normal(param: torch.Tensor, scale: float, loc: float = 0.0) -> dist.TorchDistributionMixin:
    """``Normal(loc, scale)`` on every entry of ``param`` as one event of shape ``param.shape``."""
    prior = dist.Normal(torch.full((), float(loc), device=param.device), torch.tensor(scale, device=param.device))
    return prior.expand(param.shape).to_event(param.dim())


@dataclass(frozen=True)
class NormalPrior:
    """Independent ``Normal(loc, scale)`` on every weight and bias (the paper: ``N(0, 1)``)."""

    scale: float = 1.0
    loc: float = 0.0

    def __post_init__(self):
        _positive("prior scale", self.scale)

    def __call__(self, name: str, param: torch.Tensor) -> dist.TorchDistributionMixin:
        return iid_normal(param, self.scale, self.loc)


@dataclass(frozen=True)
class LayerwiseNormalPrior:
    """Independent ``Normal(0, s_layer)`` with a scale per layer.

    ``scales`` maps a parameter name (``'1.weight'``) or its module's name (``'1'``, covering weight and
    bias) to a scale; the exact name wins. Names not in it get ``default`` (an error when ``None``).
    :meth:`fan_in` builds the mapping ``gain / sqrt(fan_in)`` from a network.
    """

    scales: Mapping[str, float]
    default: float | None = None

    def __post_init__(self):
        for key, value in self.scales.items():
            _positive(f"prior scale of {key!r}", value)
        if self.default is not None:
            _positive("default prior scale", self.default)

    def scale_of(self, name: str) -> float:
        module = name.rpartition(".")[0]
        for key in (name, module):
            if key in self.scales:
                return float(self.scales[key])
        if self.default is None:
            raise ValueError(f"no prior scale for parameter {name!r}: give it (or its module {module!r}) in "
                             f"scales, or a default; scales has {', '.join(map(repr, self.scales)) or 'nothing'}")
        return float(self.default)

    def __call__(self, name: str, param: torch.Tensor) -> dist.TorchDistributionMixin:
        return iid_normal(param, self.scale_of(name))

    @classmethod
    def fan_in(cls, net: nn.Module | ArchConfig, gain: float = 1.0) -> LayerwiseNormalPrior:
        """Scale ``gain / sqrt(fan_in)`` for each module with a weight of ≥ 2 dims (fan_in = inputs × kernel
        size), shared by that module's bias; other parameters (e.g. norm layers) get ``gain``."""
        _positive("gain", gain)
        net = build(net) if isinstance(net, ArchConfig) else net
        scales = {}
        for name, module in net.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
                scales[name] = gain / weight[0].numel() ** 0.5
        return cls(scales, default=gain)


def make_prior(prior: Prior | None = None, prior_scale: float = 1.0) -> Prior:
    """``prior`` itself, or ``NormalPrior(prior_scale)`` when it is ``None`` (not both)."""
    if prior is None:
        return NormalPrior(_positive("prior_scale", prior_scale))
    if prior_scale != 1.0:
        raise ValueError(f"give either prior_scale ({prior_scale}) or prior ({prior!r}), not both")
    if not callable(prior):
        raise ValueError(f"prior must be callable as prior(name, param), got {prior!r}")
    return prior


# ------------------------------------------------------------------------------------------ likelihoods
@dataclass(frozen=True)
class Likelihood:
    """``p(y | f_w(x))`` of a minibatch, observed at site ``obs`` under ``pyro.plate("data")``.

    ``dataset_size`` N: a minibatch of B < N is a subsample of the plate, so Pyro scales its log-likelihood
    by N / B. ``None`` (or N == B, full batch): unscaled. Subclasses give :meth:`distribution`.
    """

    dataset_size: int | None = None

    def __post_init__(self):
        if self.dataset_size is not None and self.dataset_size <= 0:
            raise ValueError(f"dataset_size must be positive or None, got {self.dataset_size}")

    def with_dataset_size(self, n: int | None) -> Likelihood:
        return replace(self, dataset_size=n)

    def distribution(self, out: torch.Tensor) -> dist.TorchDistributionMixin:
        """The observation distribution given the network output ``out`` (B, ...); batch shape (B,)."""
        raise NotImplementedError

    def __call__(self, out: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b = out.shape[0]
        if self.dataset_size is None or self.dataset_size == b:
            plate = pyro.plate("data", b)
        else:  # the batch is already drawn: indices given, so the plate draws nothing from the RNG
            plate = pyro.plate("data", self.dataset_size, subsample=torch.arange(b, device=out.device))
        with plate:
            return pyro.sample("obs", self.distribution(out), obs=y)


@dataclass(frozen=True)
class Categorical(Likelihood):
    """``y ~ Categorical(logits=f_w(x))``, logits (B, classes), labels (B,) — the paper's classifier."""

    def distribution(self, out: torch.Tensor) -> dist.TorchDistributionMixin:
        return dist.Categorical(logits=out)


@dataclass(frozen=True)
class Gaussian(Likelihood):
    """``y ~ Normal(f_w(x), noise_scale)`` with a fixed noise scale: output (B, 1) with targets (B,), or
    (B, k) with targets (B, k) as one event. Used to check inference against a conjugate posterior."""

    noise_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _positive("noise_scale", self.noise_scale)

    def distribution(self, out: torch.Tensor) -> dist.TorchDistributionMixin:
        if out.dim() == 2 and out.shape[-1] == 1:
            return dist.Normal(out.squeeze(-1), self.noise_scale)
        return dist.Normal(out, self.noise_scale).to_event(out.dim() - 1)


#: Shorthand names of :func:`make_likelihood`.
LIKELIHOODS: dict[str, Callable[..., Likelihood]] = {
    "categorical": lambda noise_scale: Categorical(),
    "normal": lambda noise_scale: Gaussian(noise_scale=noise_scale),
}


def make_likelihood(likelihood: str | Likelihood, noise_scale: float | None = None) -> Likelihood:
    """A :class:`Likelihood` from itself or a shorthand name (``'categorical'``, ``'normal'`` with
    ``noise_scale``, default 1)."""
    if isinstance(likelihood, Likelihood):
        if noise_scale is not None:
            raise ValueError(f"noise_scale is for likelihood='normal'; {likelihood!r} carries its own")
        return likelihood
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {', '.join(LIKELIHOODS)} "
                         f"or a Likelihood")
    return LIKELIHOODS[likelihood](1.0 if noise_scale is None else noise_scale)


# ------------------------------------------------------------------------------------------------ model
class BayesianNetwork(PyroModule):
    """Pyro model ``p(w) p(y | f_w(x))`` around a copy of a plain network.

    Parameters
    ----------
    net
        The plain network (copied, not modified) or an :class:`ArchConfig` to build one. Its parameter
        values are kept as :meth:`initial_values` (where SVI means and NUTS chains start).
    prior
        A :class:`Prior`; default ``NormalPrior(1.0)``.
    likelihood
        A :class:`Likelihood` or shorthand name (``'categorical'``, the default, or ``'normal'``).

    Sample sites are ``net.<state-dict name>`` (e.g. ``net.1.weight``, see :func:`site_to_param`) and
    ``obs``. ``forward(x, y=None)`` returns the network output (B, classes) and observes ``y`` (B,).
    """

    def __init__(self, net: nn.Module | ArchConfig, prior: Prior | None = None,
                 likelihood: str | Likelihood = "categorical", device: str | torch.device | None = None):
        super().__init__()
        self.arch = net if isinstance(net, ArchConfig) else getattr(net, "arch", None)
        net = build(net) if isinstance(net, ArchConfig) else copy.deepcopy(net)
        if device is not None:
            net.to(device)
        self.prior = make_prior(prior)
        self.likelihood = make_likelihood(likelihood)
        self._initial = {SITE_PREFIX + k: v.detach().clone() for k, v in net.named_parameters()}
        self.net = net
        to_pyro_module_(self.net)
        modules = dict(self.net.named_modules())
        for name, value in self._initial.items():
            module_name, _, attr = site_to_param(name).rpartition(".")
            prior_dist = self.prior(site_to_param(name), value)
            if prior_dist.batch_shape != () or prior_dist.event_shape != value.shape:
                raise ValueError(f"the prior of {site_to_param(name)!r} must have batch shape () and event "
                                 f"shape {tuple(value.shape)}, got {tuple(prior_dist.batch_shape)} and "
                                 f"{tuple(prior_dist.event_shape)} (use .expand(shape).to_event(dim))")
            setattr(modules[module_name], attr, PyroSample(prior_dist))

    def initial_values(self) -> dict[str, torch.Tensor]:
        """Site name → the plain network's parameter at construction (for ``init_to_value``)."""
        return {k: v.clone() for k, v in self._initial.items()}

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(x)
        self.likelihood(out, y)
        return out


def site_to_param(site: str) -> str:
    """``'net.1.weight'`` → ``'1.weight'``."""
    return site[len(SITE_PREFIX):] if site.startswith(SITE_PREFIX) else site


def param_sites(arch: ArchConfig) -> dict[str, torch.Size]:
    """Sample-site name → shape for every parameter of ``arch``."""
    return {SITE_PREFIX + k: v.shape for k, v in build(arch).named_parameters()}


def initial_values(arch: ArchConfig, seed: int) -> dict[str, torch.Tensor]:
    """Site name → the parameter of a plain network freshly initialised from ``seed`` (PyTorch's default
    init). The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {SITE_PREFIX + k: v.detach().clone() for k, v in build(arch).named_parameters()}


# ---------------------------------------------------------------------------------------- global state
@contextmanager
def pyro_scope(seed: int | None = None) -> Iterator[None]:
    """Run Pyro inference apart from the caller's global state.

    Inside: an empty Pyro parameter store (``ParamStore.scope``) and, with ``seed``, the torch (CPU and
    CUDA), numpy and ``random`` generators seeded as ``pyro.set_rng_seed(seed)`` does. On exit, even after
    an exception, the caller's parameter store and RNG states are restored.
    """
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda), pyro.get_param_store().scope():
            if seed is not None:
                pyro.set_rng_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
