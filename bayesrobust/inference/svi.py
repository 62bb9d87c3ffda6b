"""fullBNN by stochastic variational inference: mean-field Normal guide, Trace_ELBO (docs/method.md).

:func:`train_svi` assembles a :class:`~bayesrobust.models.bayesian.BayesianNetwork` (plain network + prior +
likelihood) with a guide builder (default :class:`MeanFieldGuide`). With ``likelihood_scaling='full'`` the
likelihood knows the training-set size N, so a minibatch of B images is a subsample of the data plate and
its log-likelihood is scaled by N / B: the ELBO is an unbiased estimate of the full-data ELBO. The reference
code omits this (``likelihood_scaling='reference'``, available on request) and over-weights its KL term by
about N / B ≈ 470. The guide's means start at PyTorch's default initialisation of the plain network (not at
a prior sample, which makes wide nets unusable at the start) and its standard deviations at ``init_scale``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoGuide, AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from tqdm.auto import tqdm

from ..choices import LikelihoodScaling
from ..data import Data, batches
from ..models.architectures import ArchConfig
from ..models.bayesian import BayesianNetwork, Likelihood, Prior, make_likelihood, make_prior, pyro_scope, site_to_param
from ..models.posterior import Posterior
from ..presets import ARTConfig, SVIConfig

log = logging.getLogger(__name__)
#: ``full``: minibatch likelihood × N/B (correct); ``reference``: unscaled, as the paper's code.
SCALINGS = LikelihoodScaling.values()
#: Builds the guide of a Bayesian network; the guide must expose per-site ``locs`` and ``scales``.
GuideBuilder = Callable[[BayesianNetwork], AutoGuide]


@dataclass(frozen=True)
class MeanFieldGuide:
    """Mean-field Normal guide (``AutoNormal``): means at the network's initial parameters
    (``BayesianNetwork.initial_values``), standard deviations ``init_scale``."""

    init_scale: float = 1e-3

    def __post_init__(self):
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {self.init_scale}")

    def __call__(self, model: BayesianNetwork) -> AutoNormal:
        return AutoNormal(model, init_loc_fn=init_to_value(values=model.initial_values()),
                          init_scale=float(self.init_scale))


def normal_moments(guide: AutoGuide, sites) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Means and standard deviations (CPU copies) of a mean-field guide's ``sites``, read from its public
    ``locs`` / ``scales`` modules (``AutoNormal``)."""
    if not (hasattr(guide, "locs") and hasattr(guide, "scales")):
        raise ValueError(f"train_svi stores a mean-field Normal posterior: the guide must have per-site locs "
                         f"and scales (AutoNormal), got {type(guide).__name__}")
    locs, scales = {}, {}
    with torch.no_grad():
        for site in sites:
            loc, scale = guide.locs, guide.scales
            for part in site.split("."):
                loc, scale = getattr(loc, part), getattr(scale, part)
            locs[site_to_param(site)] = loc.detach().cpu().clone()
            scales[site_to_param(site)] = scale.detach().cpu().clone()
    return locs, scales


def train_svi(arch: ArchConfig, data: Data, cfg: SVIConfig, prior_scale: float = 1.0, seed: int = 0,
              device: str | torch.device = "cpu", progress: bool = False,
              likelihood: str | Likelihood = "categorical", noise_scale: float | None = None,
              callback: Callable[[int, float], None] | None = None, *, prior: Prior | None = None,
              guide: GuideBuilder | None = None, art: ARTConfig | None = None) -> Posterior:
    """Fit a mean-field Normal posterior over every weight and bias of ``arch`` on ``data``.

    Parameters
    ----------
    prior_scale, prior
        ``NormalPrior(prior_scale)`` unless a ``prior`` object is given (not both).
    likelihood, noise_scale
        A :class:`~bayesrobust.models.bayesian.Likelihood`, or ``'categorical'`` / ``'normal'`` (with
        ``noise_scale``, default 1). Its dataset size is set here from ``cfg.likelihood_scaling``.
    guide
        Guide builder, default ``MeanFieldGuide(cfg.init_scale)``.
    art
        ``None``, or the ART settings of artBNN: the model is then
        :class:`~bayesrobust.inference.art.ARTBayesianNetwork` (docs/method.md §11.5).

    Runs in :func:`~bayesrobust.models.bayesian.pyro_scope`: seeded with ``seed`` inside, and the caller's
    Pyro parameter store and RNG states are unchanged afterwards.

    Returns
    -------
    A ``Posterior`` of kind ``'svi'`` (means and standard deviations per parameter). Its ``extra`` holds
    ``elbo`` (per-epoch mean ELBO per image, the negative loss) and ``epoch_seconds``.
    """
    if cfg.epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {cfg.epochs}")
    LikelihoodScaling.parse(cfg.likelihood_scaling, "likelihood_scaling")
    if cfg.batch_size <= 0 or not 0 < cfg.lr < float("inf"):  # NaN fails too
        raise ValueError(f"batch_size and lr must be positive, got {cfg.batch_size} and {cfg.lr}")
    prior = make_prior(prior, prior_scale)
    n_total = len(data)
    # full: a minibatch is a subsample of N (scaled by N/B); reference: size unset, the unscaled batch
    lik = make_likelihood(likelihood, noise_scale).with_dataset_size(
        n_total if cfg.likelihood_scaling == "full" else None)
    build_guide = MeanFieldGuide(cfg.init_scale) if guide is None else guide
    steps = math.ceil(n_total / cfg.batch_size)
    gen = torch.Generator().manual_seed(seed)
    elbo, seconds = [], []
    with pyro_scope(seed):
        if art is None:
            model = BayesianNetwork(arch, prior, lik, device=device)
        else:
            from .art import ARTBayesianNetwork
            model = ARTBayesianNetwork(arch, prior, lik, device=device, art=art)
        fitted = build_guide(model)
        svi = SVI(model, fitted, pyro.optim.Adam({"lr": cfg.lr}), Trace_ELBO(num_particles=cfg.num_particles))
        for epoch in range(cfg.epochs):
            start, total = time.perf_counter(), 0.0
            bar = tqdm(batches(data, cfg.batch_size, shuffle=True, generator=gen), total=steps,
                       desc=f"SVI epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
            model.train()
            for xb, yb in bar:
                loss = svi.step(xb.to(device), yb.to(device))
                total += loss
                bar.set_postfix(elbo_per_image=f"{-loss / n_total:.4f}")
            elbo.append(-total / steps / n_total)
            seconds.append(time.perf_counter() - start)
            log.info("SVI epoch %d/%d  ELBO/image %.4f  (%.1f s)", epoch + 1, cfg.epochs, elbo[-1], seconds[-1])
            if callback is not None:
                callback(epoch, elbo[-1])
        if cfg.epochs == 0:
            with torch.no_grad():  # materialise the guide's parameters
                fitted(data.x[:2].to(device), data.y[:2].to(device))
        locs, scales = normal_moments(fitted, model.initial_values())
    buffers = {k: v.detach().cpu().clone() for k, v in model.net.named_buffers()}
    return Posterior(arch, "svi", locs, scales, buffers, seed=seed,
                     extra={"elbo": torch.tensor(elbo), "epoch_seconds": torch.tensor(seconds)})
