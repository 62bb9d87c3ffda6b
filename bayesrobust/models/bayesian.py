"""The Bayesian counterpart of an architecture, built from the same module with Pyro (SPEC 1.3).

Following TyXe's split, a Bayesian network is *architecture + prior + likelihood*; the inference (mean-field
SVI guide or NUTS kernel) is chosen in :mod:`bayesrobust.inference`. Every weight and bias gets an
independent ``Normal(0, prior_scale)`` prior (the paper: scale 1); the likelihood is Categorical on the
logits. For minibatch SVI the likelihood is scaled by ``N / B`` (the reference code forgets this and so
weighs its KL term about 470 times too strongly).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_

from .architectures import ArchConfig, build

SITE_PREFIX = "net."
#: ``categorical`` on the logits (classification, the paper) or ``normal`` with a fixed noise scale on a
#: single output (regression; used to check inference against the conjugate posterior).
LIKELIHOODS = ("categorical", "normal")


class BayesianNetwork(PyroModule):
    """Pyro model ``p(w) p(y | f_w(x))`` around a plain network of architecture ``arch``.

    Sample sites are named ``net.<state-dict name>`` (e.g. ``net.1.weight``); :func:`site_to_param` strips
    the prefix. ``forward(x, y=None, n_total=None)`` returns the logits (B, classes) and observes ``y``;
    ``n_total`` (the training set size) scales the likelihood of a minibatch by ``n_total / B``.
    ``likelihood='normal'`` observes ``y ~ Normal(f_w(x), noise_scale)`` on a one-output network instead.
    """

    def __init__(self, arch: ArchConfig, prior_scale: float = 1.0, device: str | torch.device = "cpu",
                 likelihood: str = "categorical", noise_scale: float = 1.0):
        super().__init__()
        if prior_scale <= 0:
            raise ValueError(f"prior_scale must be positive, got {prior_scale}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {', '.join(LIKELIHOODS)}")
        if noise_scale <= 0:
            raise ValueError(f"noise_scale must be positive, got {noise_scale}")
        self.likelihood = likelihood
        self.noise_scale = float(noise_scale)
        self.arch = arch
        self.prior_scale = float(prior_scale)
        self.net = build(arch)
        self.net.to(device)
        to_pyro_module_(self.net)
        for module in self.net.modules():
            for name, value in list(module.named_parameters(recurse=False)):
                prior = dist.Normal(torch.zeros((), device=device), torch.tensor(self.prior_scale, device=device))
                setattr(module, name, PyroSample(prior.expand(value.shape).to_event(value.dim())))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, n_total: int | None = None):
        out = self.net(x)
        scale = 1.0 if n_total is None else n_total / x.shape[0]
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=scale):
            if self.likelihood == "categorical":
                pyro.sample("obs", dist.Categorical(logits=out), obs=y)
            else:
                pyro.sample("obs", dist.Normal(out.squeeze(-1), self.noise_scale), obs=y)
        return out


def site_to_param(site: str) -> str:
    """``'net.1.weight'`` → ``'1.weight'``."""
    return site[len(SITE_PREFIX):] if site.startswith(SITE_PREFIX) else site


def param_sites(arch: ArchConfig) -> dict[str, torch.Size]:
    """Sample-site name → shape for every parameter of ``arch``."""
    return {SITE_PREFIX + k: v.shape for k, v in build(arch).named_parameters()}


def initial_values(arch: ArchConfig, seed: int) -> dict[str, torch.Tensor]:
    """Site name → the parameter of a freshly initialised plain network (PyTorch's default init), used to
    start SVI means and NUTS chains where a deterministic net would start, not at a prior sample."""
    torch.manual_seed(seed)
    return {SITE_PREFIX + k: v.detach().clone() for k, v in build(arch).named_parameters()}
