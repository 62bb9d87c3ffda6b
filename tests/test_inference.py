"""SVI and NUTS, run through the library's own training functions, recover an exact posterior.

Bayesian linear regression y = w·x + b + noise with a N(0, s²) prior on (w, b) and known noise σ has the
conjugate Gaussian posterior  Σ = (XᵀX/σ² + I/s²)⁻¹,  μ = Σ Xᵀy/σ²  (X with a column of ones for b).
The inputs are nearly orthogonal so the posterior is nearly diagonal and a mean-field guide can match it.
"""

import logging
import math

import numpy as np
import pytest
import torch

from bayesrobust.data import Data
from bayesrobust.inference.hmc import NUTSKernel, chain_subsets, train_hmc
from bayesrobust.inference.svi import train_svi
from bayesrobust.models.architectures import ArchConfig
from bayesrobust.presets import HMCConfig, SVIConfig

D, N, NOISE, PRIOR = 3, 200, 0.5, 1.0
ARCH = ArchConfig("linear", 1, (1, 1, D), n_classes=1)


def conjugate(x, y, noise):
    """Mean and marginal std of the exact posterior of (w, b) given noise std ``noise``."""
    X = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    cov = torch.linalg.inv(X.T @ X / noise**2 + torch.eye(D + 1, dtype=torch.float64) / PRIOR**2)
    mean = cov @ X.T @ y.double() / noise**2
    return mean.float(), cov.diagonal().sqrt().float()


@pytest.fixture(scope="module")
def regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    w_true, b_true = torch.tensor([1.5, -2.0, 0.5]), 0.3
    y = x @ w_true + b_true + NOISE * torch.randn(N, generator=g)
    data = Data(x.view(N, 1, 1, D), y, torch.arange(N), "regression", "train")
    return (data, *conjugate(x, y, NOISE))


def _flat(params):
    return torch.cat([params["1.weight"].reshape(-1), params["1.bias"].reshape(-1)])


def test_svi_recovers_conjugate_posterior(regression):
    data, mean, std = regression
    post = train_svi(ARCH, data, SVIConfig(epochs=400, lr=0.02, batch_size=50, init_scale=0.1, num_particles=4),
                     prior_scale=PRIOR, seed=0, likelihood="normal", noise_scale=NOISE)
    assert post.kind == "svi"
    torch.testing.assert_close(_flat(post.params), mean, atol=0.02, rtol=0)
    # mean-field on a nearly diagonal posterior: marginal stds within 15%
    ratio = _flat(post.scales) / std
    assert torch.all((ratio > 0.85) & (ratio < 1.15)), ratio


def test_reference_scaling_fits_a_tempered_posterior(regression):
    """Without the N/B factor each step sees a likelihood tempered by B/N: the fit is the conjugate posterior
    with noise variance σ²·N/B — what the reference code computes instead of the posterior."""
    data, _, _ = regression
    x, y = data.x.view(N, D), data.y
    batch = 50
    mean, std = conjugate(x, y, NOISE * math.sqrt(N / batch))
    post = train_svi(ARCH, data, SVIConfig(epochs=400, lr=0.02, batch_size=batch, init_scale=0.1, num_particles=4,
                                           likelihood_scaling="reference"),
                     prior_scale=PRIOR, seed=0, likelihood="normal", noise_scale=NOISE)
    torch.testing.assert_close(_flat(post.params), mean, atol=0.03, rtol=0)
    ratio = _flat(post.scales) / std
    assert torch.all((ratio > 0.85) & (ratio < 1.15)), ratio


def _ess(chains):
    """Effective sample size per coordinate of ``chains`` (chain, draw, coordinate), Pyro's estimator."""
    from pyro.ops.stats import effective_sample_size
    return effective_sample_size(chains.double(), chain_dim=0, sample_dim=1)


def test_nuts_recovers_conjugate_posterior(regression):
    """NUTS sample mean and standard deviation agree with the closed-form posterior within Monte Carlo error.

    With n_eff effective draws of a Gaussian coordinate of std σ, the sample mean has standard error
    σ / √n_eff and the sample std about σ / √(2 n_eff) (the ESS of the squared deviations is used for it).
    Both are checked at 4 standard errors per coordinate (8 checks: a false alarm has probability < 1e-3).
    """
    data, mean, std = regression
    chains, draws = 2, 300
    post = train_hmc(ARCH, data, HMCConfig(warmup=150, samples=draws, chains=chains, jit=False),
                     prior_scale=PRIOR, seed=0, likelihood="normal", noise_scale=NOISE)
    samples = torch.cat([post.params["1.weight"].reshape(chains, draws, -1),
                         post.params["1.bias"].reshape(chains, draws, -1)], -1)  # (chain, draw, D + 1)
    ess_mean = _ess(samples)
    ess_sq = _ess((samples - mean) ** 2)
    assert torch.all(ess_mean > 100) and torch.all(ess_sq > 100), (ess_mean, ess_sq)  # enough to judge
    flat = samples.reshape(chains * draws, -1).double()
    mean_err = (flat.mean(0) - mean.double()).abs() / (std.double() / ess_mean.sqrt())
    std_err = (flat.std(0) - std.double()).abs() / (std.double() / (2 * ess_sq).sqrt())
    assert torch.all(mean_err < 4), mean_err  # in Monte Carlo standard errors
    assert torch.all(std_err < 4), std_err
    d = post.config["diagnostics"]
    assert d["rhat_max"] < 1.05 and d["divergences"] == 0


def test_bad_parts_are_rejected():
    from bayesrobust.models.bayesian import BayesianNetwork, NormalPrior
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'; expected one of categorical, normal"):
        BayesianNetwork(ARCH, likelihood="poisson")
    with pytest.raises(ValueError, match="prior scale must be positive, got -1"):
        BayesianNetwork(ARCH, prior=NormalPrior(-1))
    with pytest.raises(ValueError, match="prior_scale must be positive, got -1"):
        train_svi(ARCH, Data(torch.zeros(4, 1, 1, D), torch.zeros(4), torch.arange(4), "r", "train"),
                  SVIConfig(), prior_scale=-1)
    with pytest.raises(ValueError, match="unknown likelihood_scaling 'half'; expected one of full, reference"):
        train_svi(ARCH, None, SVIConfig(likelihood_scaling="half"))


def test_subset_chains_sample_each_subsets_own_posterior(regression):
    """The reference's scheme: chain c conditions on its own disjoint block of images and starts uniformly in
    [−2, 2]; its draws match the closed-form posterior given that block alone (4 Monte Carlo standard errors),
    which is wider than the full-data posterior."""
    data, full_mean, full_std = regression
    chains, draws, block = 2, 300, 40
    starts = []

    def kernel(model, init):
        starts.append({k: v.clone() for k, v in init.items()})
        return NUTSKernel(jit=False)(model, init)
    post = train_hmc(ARCH, data, HMCConfig(warmup=150, samples=draws, chains=chains, jit=False, scheme="subsets",
                                           subset_size=block),
                     prior_scale=PRIOR, seed=0, likelihood="normal", noise_scale=NOISE, kernel=kernel)
    subsets = post.extra["chain_subsets"]
    assert subsets.shape == (chains, block) and len(set(subsets.reshape(-1).tolist())) == chains * block
    torch.testing.assert_close(subsets, chain_subsets(N, chains, block, seed=0))
    assert post.config["hmc_scheme"] == "subsets"
    for start in starts:
        flat = torch.cat([v.reshape(-1) for v in start.values()])
        assert flat.abs().max() <= 2 and flat.abs().max() > 0.5
    assert not torch.equal(torch.cat([v.reshape(-1) for v in starts[0].values()]),
                           torch.cat([v.reshape(-1) for v in starts[1].values()]))
    samples = torch.cat([post.params["1.weight"].reshape(chains, draws, -1),
                         post.params["1.bias"].reshape(chains, draws, -1)], -1)
    x, y = data.x.view(N, D), data.y
    for c in range(chains):
        mean, std = conjugate(x[subsets[c]], y[subsets[c]], NOISE)
        ess = _ess(samples[c:c + 1])
        err = (samples[c].double().mean(0) - mean.double()).abs() / (std.double() / ess.sqrt())
        assert torch.all(err < 4), (c, err)
        assert torch.all(std > full_std)  # 40 images: a wider posterior than the full data's


def test_subset_chains_need_enough_images():
    with pytest.raises(ValueError, match=r"chains x subset_size <= training images; got 15 x 4000 = 60,000 > 5,000"):
        chain_subsets(5000, 15, 4000, seed=0)


def test_diagnostics_cover_every_parameter_and_find_the_stuck_site():
    """All 600 scalar parameters are diagnosed; a site whose chains sit apart has R-hat far above 1, a mixed
    one near 1, and the pooled extremes are the per-site ones."""
    from bayesrobust.convergence import sample_diagnostics
    from bayesrobust.inference.hmc import DIAGNOSTICS_CHUNK, diagnostics
    rng = np.random.default_rng(0)
    mixed = rng.normal(size=(2, 50, 300))
    stuck = rng.normal(size=(2, 50, 30, 10)) + np.array([0.0, 5.0])[:, None, None, None]  # the chains apart
    found = diagnostics({"a": mixed, "b": stuck}, [0, 2])
    assert found["parameters"] == 600 and found["divergences"] == 2 and found["divergences_per_chain"] == [0, 2]
    assert found["per_site"]["b"]["rhat_max"] > 1.5 and found["per_site"]["a"]["rhat_max"] < 1.1
    assert found["rhat_max"] == found["per_site"]["b"]["rhat_max"]
    assert found["ess_bulk_min"] == min(v["ess_bulk_min"] for v in found["per_site"].values())
    # one parameter moved to the last chunk of a site larger than a chunk is still seen
    big = rng.normal(size=(2, 40, DIAGNOSTICS_CHUNK + 5))
    assert diagnostics({"w": big}, [0, 0])["rhat_max"] < 1.5
    big[1, :, -1] += 50.0  # the chains apart: the largest R-hat of all, that of this parameter alone
    alone = sample_diagnostics(big[:, :, -1:])[0][0]
    assert alone > 1.5 and diagnostics({"w": big}, [0, 0])["rhat_max"] == pytest.approx(alone)


def test_a_constant_entry_leaves_the_other_entries_ess_alone():
    """An entry equal in every draw (a held-out image given probability 1 by every draw) has no ESS; the
    others keep the ESS they have alone (Pyro's estimator, called on all entries at once, let one constant
    entry's NaN spread to every entry)."""
    from bayesrobust.convergence import sample_diagnostics
    rng = np.random.default_rng(2)
    grid = rng.normal(size=(2, 60, 400)).cumsum(1) * 0.3 + rng.normal(size=(2, 60, 400))  # autocorrelated
    alone = sample_diagnostics(grid)
    grid_const = np.concatenate([grid[..., :250], np.zeros((2, 60, 1)), grid[..., 250:]], -1)
    rhat, bulk, tail = sample_diagnostics(grid_const)
    assert np.isnan(rhat[250]) and np.isnan(bulk[250]) and np.isnan(tail[250])
    for found, wanted in zip((rhat, bulk, tail), alone):
        np.testing.assert_allclose(np.delete(found, 250), wanted, rtol=1e-12)
    assert np.all(np.isfinite(alone[1])) and np.all((alone[1] > 1) & (alone[1] < 120))


def test_diagnostics_of_one_chain_or_few_draws_are_nan_where_undefined_and_quiet(caplog):
    """One chain: no R-hat, but ESS; under 4 draws nothing is defined. ArviZ logs
    a line per parameter and statistic for each undefined value (60,000 for one chain of mnist_fc2): none of
    that reaches the log."""
    from bayesrobust.convergence import sample_diagnostics
    from bayesrobust.inference.hmc import diagnostics
    draws = {"a": np.random.default_rng(1).normal(size=(1, 40, 50))}
    with caplog.at_level(logging.DEBUG):
        one = diagnostics(draws, [3])
        few = diagnostics({"a": draws["a"][:, :3]}, [0])
    assert not [r for r in caplog.records if r.name.startswith("arviz")]
    assert np.isnan(one["rhat_max"]) and one["divergences"] == 3 and (one["chains"], one["draws_per_chain"]) == (1, 40)
    # the values themselves against ArviZ's: tests/test_posteriors.py (their minimum over 50 parameters is noisy)
    assert one["ess_bulk_min"] == pytest.approx(sample_diagnostics(draws["a"])[1].min())
    assert 0 < one["ess_bulk_min"] < 40 and 0 < one["ess_tail_min"] < 40
    assert all(np.isnan(few[k]) for k in ("rhat_max", "ess_bulk_min", "ess_tail_min"))
