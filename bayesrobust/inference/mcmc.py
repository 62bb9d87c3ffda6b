"""fullBNN by Hamiltonian Monte Carlo (NUTS) on the full training set, with convergence diagnostics.

The reference runs 15 short chains on different 4,000-image minibatches and pools them with replacement —
not a sample of the full-data posterior. Here every chain targets the posterior given the whole training
set (``n_train`` images when the preset caps it, e.g. the quick presets), and the chains are pooled only
after R-hat, bulk/tail ESS (arviz) and divergences have been computed and saved.

Chains run one after another in this process (each with its own seed), which keeps ``jit_compile`` and
progress bars reliable on a CPU; on a GPU the same code runs each chain there.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value

from ..data import Data, balanced_subset
from ..models.architectures import ArchConfig
from ..models.bayesian import SITE_PREFIX, BayesianNetwork, initial_values, site_to_param
from ..models.posterior import Posterior
from ..presets import HMCConfig

log = logging.getLogger(__name__)
RHAT_WARN = 1.1


def diagnostics(samples: dict[str, np.ndarray], divergences: list[int]) -> dict[str, Any]:
    """Convergence summary of MCMC ``samples`` (name → (chain, draw, ...)) with ArviZ 1.x.

    The samples become an ArviZ DataTree (``arviz_base.from_dict``, group ``posterior``); rank-normalised
    split R-hat and bulk/tail ESS are ``arviz_stats.rhat``/``ess`` (ArviZ 1.x is arviz-base + arviz-stats;
    ``arviz.rhat`` there is the same function).

    Returns a JSON-serialisable dict: ``rhat_max``, ``ess_bulk_min``, ``ess_tail_min`` over all scalar
    parameters (NaN when there is a single chain), per-site maxima/minima, ``divergences`` per chain and
    their total.
    """
    from arviz_base import from_dict
    from arviz_stats import ess, rhat as split_rhat
    tree = from_dict({"posterior": samples})
    rhat = split_rhat(tree)
    bulk = ess(tree, method="bulk")
    tail = ess(tree, method="tail")
    per_site = {}
    for name in samples:
        per_site[name] = {"rhat_max": float(np.nanmax(rhat[name].values)) if np.isfinite(rhat[name].values).any() else float("nan"),
                          "ess_bulk_min": float(np.nanmin(bulk[name].values)),
                          "ess_tail_min": float(np.nanmin(tail[name].values))}

    def pooled(key: str, fn) -> float:
        values = [v[key] for v in per_site.values() if np.isfinite(v[key])]
        return float(fn(values)) if values else float("nan")

    return {"rhat_max": pooled("rhat_max", max), "ess_bulk_min": pooled("ess_bulk_min", min),
            "ess_tail_min": pooled("ess_tail_min", min), "divergences_per_chain": [int(d) for d in divergences],
            "divergences": int(sum(divergences)), "per_site": per_site,
            "chains": int(next(iter(samples.values())).shape[0]),
            "draws_per_chain": int(next(iter(samples.values())).shape[1])}


def _chain_start(arch: ArchConfig, data: Data, cfg: HMCConfig, seed: int,
                 device: str | torch.device) -> dict[str, torch.Tensor]:
    """Sample-site values a chain starts from: a fresh initialisation (overdispersed across chains), moved
    by ``cfg.init_epochs`` epochs of Adam on the cross-entropy when that is positive."""
    if cfg.init_epochs <= 0:
        return {k: v.to(device) for k, v in initial_values(arch, seed).items()}
    from ..presets import OptimConfig
    from .deterministic import train_network
    net, _ = train_network(arch, data, OptimConfig(epochs=cfg.init_epochs, batch_size=64), seed=seed,
                           device=device)
    return {SITE_PREFIX + k: v.detach().clone() for k, v in net.named_parameters()}


def train_hmc(arch: ArchConfig, data: Data, cfg: HMCConfig, prior_scale: float = 1.0, seed: int = 0,
              device: str | torch.device = "cpu", progress: bool = False,
              likelihood: str = "categorical", noise_scale: float = 1.0) -> Posterior:
    """Sample the full-data posterior of ``arch`` on ``data`` with NUTS, ``cfg.chains`` chains.

    Returns
    -------
    A ``Posterior`` of kind ``'hmc'`` whose parameters have leading dims (chain, sample); the diagnostics
    of :func:`diagnostics` are in ``config['diagnostics']``, per-chain wall time in ``extra``. A
    ``RuntimeWarning`` is issued when R-hat > 1.1 or any transition diverged.
    """
    if cfg.warmup < 0 or cfg.samples <= 0 or cfg.chains <= 0 or cfg.init_epochs < 0:
        raise ValueError(f"need warmup >= 0, samples > 0 and chains > 0 (init_epochs >= 0); got "
                         f"warmup={cfg.warmup}, samples={cfg.samples}, chains={cfg.chains}, "
                         f"init_epochs={cfg.init_epochs}")
    if cfg.n_train is not None:
        if cfg.n_train <= 0:
            raise ValueError(f"n_train must be positive, got {cfg.n_train}")
        if cfg.n_train < len(data):  # class-balanced: the datasets are often stored sorted by class
            data = balanced_subset(data, cfg.n_train, seed=seed)
    x, y = data.x.to(device), data.y.to(device)
    chains: list[dict[str, torch.Tensor]] = []
    divergences, seconds = [], []
    model = BayesianNetwork(arch, prior_scale, device=device, likelihood=likelihood, noise_scale=noise_scale)
    for chain in range(cfg.chains):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed + 1000 * chain)
        init = _chain_start(arch, data, cfg, seed + 1000 * chain, device)
        kernel = NUTS(model, jit_compile=cfg.jit, ignore_jit_warnings=True, max_tree_depth=cfg.max_tree_depth,
                      target_accept_prob=cfg.target_accept, init_strategy=init_to_value(values=init))
        mcmc = MCMC(kernel, num_samples=cfg.samples, warmup_steps=cfg.warmup, num_chains=1,
                    disable_progbar=not progress)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            mcmc.run(x, y)
        seconds.append(time.perf_counter() - start)
        chains.append({k: v.detach().cpu() for k, v in mcmc.get_samples().items()})
        diag = mcmc.diagnostics()
        divergences.append(sum(len(v) for v in diag.get("divergences", {}).values()))
        log.info("NUTS chain %d/%d: %d warmup + %d samples in %.1f s (%.3f s/iteration), %d divergences",
                 chain + 1, cfg.chains, cfg.warmup, cfg.samples, seconds[-1],
                 seconds[-1] / (cfg.warmup + cfg.samples), divergences[-1])
    stacked = {site: torch.stack([c[site] for c in chains]) for site in init}
    diag = diagnostics({site_to_param(k): v.numpy() for k, v in stacked.items()}, divergences)
    diag["seconds_per_iteration"] = float(sum(seconds) / (cfg.chains * (cfg.warmup + cfg.samples)))
    if diag["divergences"] or (np.isfinite(diag["rhat_max"]) and diag["rhat_max"] > RHAT_WARN):
        warnings.warn(f"NUTS did not converge cleanly: max R-hat {diag['rhat_max']:.3f} "
                      f"(warn above {RHAT_WARN}), {diag['divergences']} divergent transitions; "
                      f"consider more warmup/samples or chains", RuntimeWarning, stacklevel=2)
    params = {site_to_param(k): v for k, v in stacked.items()}
    buffers = {k: v.detach().cpu().clone() for k, v in model.net.named_buffers()}
    return Posterior(arch, "hmc", params, buffers=buffers, seed=seed, config={"diagnostics": diag},
                     extra={"chain_seconds": torch.tensor(seconds)})
