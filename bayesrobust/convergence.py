"""Convergence diagnostics that mean something for neural networks: in function space (docs/method.md §13.4).

Weight-space R-hat of a network posterior is large even when every chain predicts the same (permuted hidden
units, equivalent modes), and small R-hat on a handful of weights says little. What a user of the posterior
consumes are predictions, so the chains are compared through functions of the weights that are invariant
to those symmetries:

- the held-out log predictive ``log p_s(y_i | x_i)`` of each draw s: per image (R-hat and bulk ESS over
  (chain, sample) for every image; the maximum and median are reported) and its mean over images (one
  scalar per draw);
- the logits of a fixed probe batch (the first images of the held-out set), per image and class;
- chain-to-chain disagreement: for each pair of chains, the share of held-out images on which the argmax
  of the two chains' predictive means differ.

R-hat is the rank-normalised split R-hat (bulk and folded, the larger) and ESS the bulk ESS of Vehtari et al.
(2021), vectorised over all quantities (ArviZ's per-quantity loop takes ≈ 2 ms each, seconds for a thousand
images). R-hat equals ArviZ's ``rhat(method='rank')``; ESS is Pyro's estimator on the split, rank-normalised
chains, typically within a few % of ArviZ's bulk ESS (their truncations of the autocorrelation sum can differ;
tests/test_posteriors.py checks both). Weight-space numbers of a
seeded random subset of :data:`WEIGHT_SUBSET` scalar weights are reported beside them.
R-hat needs ≥ 2 chains of ≥ 4 samples (split halves); otherwise it is NaN (e.g. an ensemble: K chains of one
sample, where only the disagreement is defined).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .models.draws import DrawSet, chunks
from .models.posterior import SAMPLED, Posterior

#: Largest number of scalar weights whose weight-space R-hat/ESS is computed.
WEIGHT_SUBSET = 2000
#: Images of the probe batch whose logits are compared across chains.
PROBE_IMAGES = 16
#: R-hat below this is read as converged.
RHAT_OK = 1.1


def _rank_normal(flat: np.ndarray) -> np.ndarray:
    """Rank normalisation over all draws (Vehtari et al. 2021): z = Φ⁻¹((rank − 3/8) / (S + 1/4)), average
    ranks for ties; ``flat`` (chain, sample, entry)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata
    chains, samples = flat.shape[:2]
    ranks = rankdata(flat.reshape(chains * samples, -1), axis=0, method="average")
    return ndtri((ranks - 0.375) / (chains * samples + 0.25)).reshape(flat.shape)


def _split(t: torch.Tensor) -> torch.Tensor:
    """Each chain's first and last halves as chains of their own (an odd count drops the middle sample):
    (chain, sample, entry) → (2·chain, sample // 2, entry)."""
    half = t.shape[1] // 2
    return torch.cat([t[:, :half], t[:, t.shape[1] - half:]], 0)


def _ess(split: torch.Tensor) -> np.ndarray:
    """Effective sample size of every entry of ``split`` (chain, sample, entry): Pyro's estimator, the
    autocorrelation time held at least 1 / log10(draws) as ArviZ holds it; NaN for a constant entry.

    Constant entries are left out of Pyro's call: its cumulative minimum fills with one maximum over all
    entries, so a single constant entry's NaN would turn every entry's ESS into NaN (as it did for the
    held-out log-probs of a net that gives some image probability 1 in every draw)."""
    from pyro.ops.stats import effective_sample_size
    out = np.full(split.shape[2:], np.nan)
    varying = (split.amax((0, 1)) > split.amin((0, 1))).numpy()
    if varying.any():
        ess = effective_sample_size(split[:, :, varying], chain_dim=0, sample_dim=1).numpy()
        total = split.shape[0] * split.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[varying] = total / np.maximum(total / ess, 1 / np.log10(total))
    return out


def _rhat_ess(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat (the larger of the bulk and folded values, as ArviZ's ``method='rank'``)
    and bulk ESS of ``grid`` (chain, sample, *rest) for every entry of ``rest``, vectorised over entries
    (Pyro's ``split_gelman_rubin`` and ``effective_sample_size`` on the rank-normalised draws; ArviZ computes
    the same per entry, ≈ 2 ms each). Both NaN below 4 samples and for constant entries; R-hat NaN for one
    chain (its halves alone say nothing of mixing between chains), whose ESS is that of its split halves."""
    from pyro.ops.stats import split_gelman_rubin
    flat = grid.reshape(grid.shape[0], grid.shape[1], -1).astype(np.float64)
    if grid.shape[1] < 4:
        nan = np.full(flat.shape[-1], np.nan)
        return nan, nan.copy()
    constant = np.ptp(flat.reshape(-1, flat.shape[-1]), axis=0) == 0
    if grid.shape[0] < 2:
        ess = _ess(_split(torch.from_numpy(_rank_normal(flat))))
        ess[constant] = np.nan
        return np.full(flat.shape[-1], np.nan), ess
    bulk = torch.from_numpy(_rank_normal(flat))
    folded = torch.from_numpy(_rank_normal(np.abs(flat - np.median(flat, axis=(0, 1), keepdims=True))))
    rhat = torch.maximum(split_gelman_rubin(bulk, chain_dim=0, sample_dim=1),
                         split_gelman_rubin(folded, chain_dim=0, sample_dim=1)).numpy()
    ess = _ess(_split(bulk))  # bulk ESS on split chains, as R-hat
    rhat[constant], ess[constant] = np.nan, np.nan
    return rhat, ess


def tail_ess(grid: np.ndarray, prob: float = 0.05) -> np.ndarray:
    """Tail ESS of every entry of ``grid`` (chain, sample, *rest), vectorised: the smaller ESS of the
    indicators x ≤ q_prob and x ≤ q_(1−prob) on split chains (Vehtari et al. 2021; ArviZ's ``method='tail'``,
    its linear quantiles). An indicator that never changes counts every draw, as in ArviZ; NaN below 4
    samples or for a constant entry."""
    flat = grid.reshape(grid.shape[0], grid.shape[1], -1).astype(np.float64)
    if grid.shape[1] < 4:
        return np.full(flat.shape[-1], np.nan)
    pooled = flat.reshape(-1, flat.shape[-1])
    found = []
    for q in np.quantile(pooled, [prob, 1 - prob], axis=0):
        below = torch.from_numpy((flat <= q).astype(np.float64))
        split = _split(below)
        ess = _ess(split)
        ess[np.ptp(split.reshape(-1, split.shape[-1]).numpy(), axis=0) == 0] = split.shape[0] * split.shape[1]
        found.append(ess)
    out = np.minimum(*found)
    out[np.ptp(pooled, axis=0) == 0] = np.nan
    return out


def sample_diagnostics(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat, bulk ESS and tail ESS of every entry of ``grid`` (chain, sample, *rest),
    vectorised (the per-parameter diagnostics of MCMC samples). R-hat is NaN below 2 chains, all three below 4
    samples and for constant entries."""
    flat = grid.reshape(grid.shape[0], grid.shape[1], -1).astype(np.float64)
    rhat, bulk = _rhat_ess(flat)
    return rhat, bulk, tail_ess(flat)


def finite_stat(values: np.ndarray, fn) -> float:
    """``fn`` (e.g. ``np.max``) of the finite entries of ``values``; NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(fn(finite)) if finite.size else float("nan")


def draw_grid(posterior: Posterior, n_draws: int | None = None) -> tuple[DrawSet, int, int]:
    """A DrawSet of every draw laid out as a (chain, sample) grid: all stored samples of a sampled posterior,
    else ``n_draws`` draws as one chain. Returns the set and the grid's (chains, samples)."""
    if posterior.kind in SAMPLED:
        first = next(iter(posterior.params.values()))
        return DrawSet(posterior, posterior.max_draws), int(first.shape[0]), int(first.shape[1])
    n = posterior.resolve_n_draws(n_draws)
    return DrawSet(posterior, n), 1, n


def function_space(posterior: Posterior, x: torch.Tensor, y: torch.Tensor, n_draws: int | None = None,
                   device: str | torch.device = "cpu", probe: int = PROBE_IMAGES) -> dict[str, Any]:
    """Function-space and weight-space diagnostics of ``posterior`` on held-out ``x`` (N, C, H, W), ``y`` (N,).

    Returns a JSON-serialisable dict: ``chains``, ``samples``; ``logprob_rhat_max`` / ``_median`` and
    ``logprob_ess_min`` / ``_median`` (per image); ``mean_logprob_rhat`` and ``mean_logprob_ess`` (of the
    mean over images); ``probe_logit_rhat_max`` / ``_median``, ``probe_logit_ess_min``; ``disagreement``
    (chains × chains matrix) and ``disagreement_mean`` (over pairs); ``weight_rhat_max`` /
    ``weight_ess_bulk_min`` on at most :data:`WEIGHT_SUBSET` weights; ``converged`` (all function-space
    R-hat maxima below :data:`RHAT_OK`; None for one chain, whose R-hats are NaN and ESSs those of its halves).
    """
    draws, n_chains, n_samples = draw_grid(posterior, n_draws)
    draws.net.to(device)
    x, labels = x.to(device), y.to(device).long()
    n_probe = min(probe, len(x))
    logp = torch.empty(len(draws), len(x))
    logits = torch.empty(len(draws), n_probe, posterior.arch.n_classes)
    probs = torch.empty(len(draws), len(x), posterior.arch.n_classes)
    with torch.no_grad():
        for position in draws:
            out = torch.cat([draws.net(x[sl]) for sl in chunks(len(x), draws.chunk_size)])
            log_softmax = torch.log_softmax(out, -1)
            logp[position] = log_softmax.gather(-1, labels[:, None])[:, 0].cpu()
            logits[position] = out[:n_probe].cpu()
            probs[position] = log_softmax.exp().cpu()
    rows, cols = np.asarray(draws.chains), np.asarray(draws.samples)
    if posterior.kind not in SAMPLED:
        rows = np.zeros_like(rows)

    def grid(values: torch.Tensor) -> np.ndarray:
        out = np.empty((n_chains, n_samples, *values.shape[1:]), dtype=np.float64)
        out[rows, cols] = values.double().numpy()
        return out

    lp_rhat, lp_ess = _rhat_ess(grid(logp))
    mean_rhat, mean_ess = _rhat_ess(grid(logp.mean(1, keepdim=True)))
    logit_rhat, logit_ess = _rhat_ess(grid(logits))
    chain_pred = grid(probs).mean(1).argmax(-1)  # (chain, image): argmax of each chain's predictive
    disagree = (chain_pred[:, None, :] != chain_pred[None, :, :]).mean(-1)
    pairs = disagree[np.triu_indices(n_chains, 1)]
    result = {
        "chains": n_chains, "samples": n_samples, "n_images": int(len(x)), "probe_images": n_probe,
        "logprob_rhat_max": finite_stat(lp_rhat, np.max), "logprob_rhat_median": finite_stat(lp_rhat, np.median),
        "logprob_ess_min": finite_stat(lp_ess, np.min), "logprob_ess_median": finite_stat(lp_ess, np.median),
        "mean_logprob_rhat": finite_stat(mean_rhat, np.max), "mean_logprob_ess": finite_stat(mean_ess, np.min),
        "probe_logit_rhat_max": finite_stat(logit_rhat, np.max),
        "probe_logit_rhat_median": finite_stat(logit_rhat, np.median),
        "probe_logit_ess_min": finite_stat(logit_ess, np.min),
        "disagreement": disagree.tolist(), "disagreement_mean": float(pairs.mean()) if pairs.size else float("nan"),
        **weight_space(posterior, n_chains, n_samples, draws),
    }
    maxima = [result["logprob_rhat_max"], result["probe_logit_rhat_max"]]
    # one chain: unknown (None), not "no" — R-hat needs chains to compare
    result["converged"] = bool(all(np.isfinite(m) and m < RHAT_OK for m in maxima)) if n_chains > 1 else None
    return result


def weight_space(posterior: Posterior, n_chains: int, n_samples: int, draws: DrawSet) -> dict[str, float]:
    """Weight-space R-hat (max) and bulk ESS (min) of a seeded random subset of at most :data:`WEIGHT_SUBSET`
    scalar weights (the draws of ``draws`` on the same grid)."""
    if posterior.kind in SAMPLED:
        grids = {k: v.reshape(n_chains, n_samples, -1) for k, v in sorted(posterior.params.items())}
    else:
        grids = {k: v.reshape(1, len(draws), -1) for k, v in sorted(posterior.stacked_params(len(draws)).items())}
    sizes = torch.tensor([v.shape[-1] for v in grids.values()])
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(int(sizes.sum()), generator=g)[:WEIGHT_SUBSET].sort().values
    starts = torch.cumsum(sizes, 0) - sizes
    owner = torch.searchsorted(starts + sizes, pick, right=True)  # which parameter each picked weight is in
    chosen = torch.cat([v[..., pick[owner == i] - starts[i]] for i, v in enumerate(grids.values())], -1)
    rhat, ess = _rhat_ess(chosen.double().numpy())
    return {"weight_rhat_max": finite_stat(rhat, np.max), "weight_rhat_median": finite_stat(rhat, np.median),
            "weight_ess_bulk_min": finite_stat(ess, np.min), "weights_checked": int(len(pick))}


def describe(diag: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    def f(v: float) -> str:
        return "nan" if not np.isfinite(v) else f"{v:.3f}"
    lines = [f"{diag['chains']} chains x {diag['samples']} samples, {diag['n_images']} held-out images",
             f"function space: log-prob R-hat max {f(diag['logprob_rhat_max'])} (median "
             f"{f(diag['logprob_rhat_median'])}), bulk ESS min {f(diag['logprob_ess_min'])}; mean log-prob R-hat "
             f"{f(diag['mean_logprob_rhat'])}, ESS {f(diag['mean_logprob_ess'])}",
             f"probe logits ({diag['probe_images']} images): R-hat max {f(diag['probe_logit_rhat_max'])} (median "
             f"{f(diag['probe_logit_rhat_median'])}), bulk ESS min {f(diag['probe_logit_ess_min'])}",
             f"chain-to-chain disagreement of predictions: mean {f(diag['disagreement_mean'])} over chain pairs",
             f"weight space ({diag['weights_checked']} weights): R-hat max {f(diag['weight_rhat_max'])} (median "
             f"{f(diag['weight_rhat_median'])}), bulk ESS min {f(diag['weight_ess_bulk_min'])}",
             f"converged in function space (R-hat < {RHAT_OK}): "
             + {True: "yes", False: "no", None: "unknown (one chain: R-hat compares chains)"}[diag["converged"]]]
    return "\n".join(lines)
