"""SVI and NUTS, run through the library's own training functions, recover an exact posterior.

Bayesian linear regression y = w·x + b + noise with a N(0, s²) prior on (w, b) and known noise σ has the
conjugate Gaussian posterior  Σ = (XᵀX/σ² + I/s²)⁻¹,  μ = Σ Xᵀy/σ²  (X with a column of ones for b).
The inputs are nearly orthogonal so the posterior is nearly diagonal and a mean-field guide can match it.
"""

import math

import pytest
import torch

from bayesrobust.data import Data
from bayesrobust.models.architectures import ArchConfig
from bayesrobust.presets import HMCConfig, SVIConfig
from bayesrobust.inference.mcmc import train_hmc
from bayesrobust.inference.svi import train_svi

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


def test_nuts_recovers_conjugate_posterior(regression):
    data, mean, std = regression
    post = train_hmc(ARCH, data, HMCConfig(warmup=150, samples=300, chains=2, jit=False), prior_scale=PRIOR,
                     seed=0, likelihood="normal", noise_scale=NOISE)
    samples = torch.cat([post.params["1.weight"].reshape(600, -1), post.params["1.bias"].reshape(600, -1)], 1)
    # Monte Carlo error of the mean with ESS >= 100: about std / 10
    torch.testing.assert_close(samples.mean(0), mean, atol=float(4 * std.max() / math.sqrt(100)), rtol=0)
    ratio = samples.std(0) / std
    assert torch.all((ratio > 0.75) & (ratio < 1.25)), ratio
    d = post.config["diagnostics"]
    assert d["rhat_max"] < 1.05 and d["ess_bulk_min"] > 100 and d["divergences"] == 0


def test_bad_likelihood_is_rejected():
    from bayesrobust.models.bayesian import BayesianNetwork
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        BayesianNetwork(ARCH, likelihood="poisson")
    with pytest.raises(ValueError, match="prior_scale must be positive, got -1"):
        BayesianNetwork(ARCH, prior_scale=-1)
    with pytest.raises(ValueError, match="unknown likelihood_scaling 'half'; expected one of full, reference"):
        train_svi(ARCH, None, SVIConfig(likelihood_scaling="half"))
