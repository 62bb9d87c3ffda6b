"""fullBNN by stochastic variational inference: mean-field Normal guide, Trace_ELBO (SPEC 1.3).

The likelihood of a minibatch of B images is scaled by N / B (N = training-set size) so the ELBO is an
unbiased estimate of the full-data ELBO; the reference code omits this and over-weights its KL term by
about N / B ≈ 470. The guide's means start at PyTorch's default initialisation of the plain network (not at
a prior sample, which makes wide nets unusable at the start) and its standard deviations at ``init_scale``.
``SVIConfig.likelihood_scaling='reference'`` reproduces the reference's unscaled likelihood on request.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from tqdm.auto import tqdm

from ..data import Data, batches
from ..models.architectures import ArchConfig
from ..models.bayesian import BayesianNetwork, initial_values, site_to_param
from ..models.posterior import Posterior
from ..presets import SVIConfig

log = logging.getLogger(__name__)
#: ``full``: minibatch likelihood × N/B (correct); ``reference``: unscaled, as the paper's code.
SCALINGS = ("full", "reference")


def train_svi(arch: ArchConfig, data: Data, cfg: SVIConfig, prior_scale: float = 1.0, seed: int = 0,
              device: str | torch.device = "cpu", progress: bool = False,
              likelihood: str = "categorical", noise_scale: float = 1.0,
              callback: Callable[[int, float], None] | None = None) -> Posterior:
    """Fit a mean-field Normal posterior over every weight and bias of ``arch`` on ``data``.

    Returns
    -------
    A ``Posterior`` of kind ``'svi'`` (means and standard deviations per parameter). Its ``extra`` holds
    ``elbo`` (per-epoch mean ELBO per image, the negative loss) and ``epoch_seconds``.
    """
    if cfg.epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {cfg.epochs}")
    if cfg.likelihood_scaling not in SCALINGS:
        raise ValueError(f"unknown likelihood_scaling {cfg.likelihood_scaling!r}; expected one of "
                         f"{', '.join(SCALINGS)}")
    if cfg.batch_size <= 0 or cfg.lr <= 0:
        raise ValueError(f"batch_size and lr must be positive, got {cfg.batch_size} and {cfg.lr}")
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = BayesianNetwork(arch, prior_scale, device=device, likelihood=likelihood, noise_scale=noise_scale)
    init = {k: v.to(device) for k, v in initial_values(arch, seed).items()}
    guide = AutoNormal(model, init_loc_fn=init_to_value(values=init), init_scale=cfg.init_scale)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": cfg.lr}), Trace_ELBO(num_particles=cfg.num_particles))
    n_total = len(data)
    scale_to = n_total if cfg.likelihood_scaling == "full" else None  # None: the reference's unscaled batch
    steps = math.ceil(n_total / cfg.batch_size)
    gen = torch.Generator().manual_seed(seed)
    elbo, seconds = [], []
    for epoch in range(cfg.epochs):
        start, total = time.perf_counter(), 0.0
        bar = tqdm(batches(data, cfg.batch_size, shuffle=True, generator=gen), total=steps,
                   desc=f"SVI epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        model.train()
        for xb, yb in bar:
            loss = svi.step(xb.to(device), yb.to(device), scale_to)
            total += loss
            bar.set_postfix(elbo_per_image=f"{-loss / n_total:.4f}")
        elbo.append(-total / steps / n_total)
        seconds.append(time.perf_counter() - start)
        log.info("SVI epoch %d/%d  ELBO/image %.4f  (%.1f s)", epoch + 1, cfg.epochs, elbo[-1], seconds[-1])
        if callback is not None:
            callback(epoch, elbo[-1])
    locs, scales = {}, {}
    with torch.no_grad():
        if cfg.epochs == 0:
            guide(data.x[:2].to(device), data.y[:2].to(device), scale_to)  # materialise the guide's parameters
        for site in init:
            loc, scale = guide._get_loc_and_scale(site)
            locs[site_to_param(site)] = loc.detach().cpu().clone()
            scales[site_to_param(site)] = scale.detach().cpu().clone()
    buffers = {k: v.detach().cpu().clone() for k, v in model.net.named_buffers()}
    return Posterior(arch, "svi", locs, scales, buffers, seed=seed,
                     extra={"elbo": torch.tensor(elbo), "epoch_seconds": torch.tensor(seconds)})
