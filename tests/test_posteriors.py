"""SGHMC/SGLD, Laplace and the deep ensemble against exact answers; the uncertainty metrics against hand
computations; function-space R-hat on chains of one posterior and of two modes.

The conjugate model is the one of tests/test_inference.py: Bayesian linear regression with a N(0, 1) prior on
(w, b) and known noise σ = 0.5, whose posterior is N(μ, Σ), Σ = (XᵀX/σ² + I)⁻¹, μ = Σ Xᵀy/σ².
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_inference import ARCH, NOISE, PRIOR, D, N, _flat

from bayesrobust import convergence, uncertainty
from bayesrobust.data import Data
from bayesrobust.errors import UserError
from bayesrobust.inference.laplace import (
    MAX_KRON_FACTOR,
    check_arch_for_laplace,
    fit_laplace,
    laplace_approximation,
    laplace_draw,
    last_layer_name,
    to_posterior,
)
from bayesrobust.inference.sgmcmc import preconditioner, sample_steps, step_size, train_sgmcmc
from bayesrobust.models.architectures import ArchConfig, build
from bayesrobust.models.posterior import Posterior, _draw_generator
from bayesrobust.presets import LaplaceConfig, SGMCMCConfig, get_preset

pytestmark = pytest.mark.threads(1)  # tiny networks: one thread is faster


@pytest.fixture(scope="module")
def regression():
    """Data and the exact posterior mean (D + 1,) and covariance (D + 1, D + 1) of (w, b)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = x @ torch.tensor([1.5, -2.0, 0.5]) + 0.3 + NOISE * torch.randn(N, generator=g)
    X = torch.cat([x, torch.ones(N, 1)], 1).double()
    cov = torch.linalg.inv(X.T @ X / NOISE**2 + torch.eye(D + 1, dtype=torch.float64) / PRIOR**2)
    mean = cov @ X.T @ y.double() / NOISE**2
    return Data(x.view(N, 1, 1, D), y, torch.arange(N), "regression", "train"), mean, cov


# ------------------------------------------------------------------------------------------- SG-MCMC
@pytest.mark.parametrize("method,lr,friction,std_tol", [("sghmc", 0.006, 0.3, 0.10), ("sgld", 0.02, 1.0, 0.12)])
def test_sgmcmc_recovers_conjugate_posterior(regression, method, lr, friction, std_tol):
    """Minibatches of 100 of the 200 points, likelihood scaled by N/B; 2 chains of 3,000 steps, 2 × 1,400
    samples. All posterior precisions are ≈ λ = N/σ² = 800.

    SGHMC: step ε = lr/N = 3e-5 and friction 0.3 (about critical damping, so decorrelation in a few steps);
    its biases (discretisation, minibatch-gradient noise ε·Var(∇Ũ)/2) are about 1% of the variance.
    SGLD: ε = 1e-4 (it mixes in ≈ 1/(ελ) ≈ 12 steps, so it needs the larger step); Euler–Maruyama on this
    Gaussian has stationary variance (1/λ)(1 + εV/2)/(1 − ελ/2), ≈ 8% above the posterior's (≈ 4% in std).

    Tolerances: mean within 0.2 posterior std per coordinate (≥ 4 Monte Carlo standard errors at ESS of
    several hundred), std within ``std_tol``."""
    data, mean, cov = regression
    std = cov.diagonal().sqrt()
    cfg = SGMCMCConfig(epochs=1500, burnin=100, samples=1400, chains=2, lr=lr, friction=friction, batch_size=100)
    post = train_sgmcmc(ARCH, data, cfg, method, seed=0, likelihood="normal", noise_scale=NOISE)
    assert post.kind == method and post.max_draws == 2800
    samples = torch.cat([post.params["1.weight"].reshape(2, 1400, -1), post.params["1.bias"].reshape(2, 1400, -1)],
                        -1).reshape(2800, -1).double()
    mean_err = (samples.mean(0) - mean).abs() / std
    ratio = samples.std(0) / std
    assert torch.all(mean_err < 0.2), mean_err
    assert torch.all((ratio > 1 - std_tol) & (ratio < 1 + std_tol)), ratio


def test_preconditioned_sghmc_mixes_a_flat_direction_the_plain_sampler_does_not():
    """An ill-conditioned conjugate posterior: the first input scaled by 0.02, so its weight's posterior std is
    0.87 (precision ≈ 1.3, mostly the prior's) against ≈ 0.035 (precision ≈ 800) for the others. At the step
    that suits the stiff weights, plain SGHMC relaxes the flat one in ≈ α/(ε·1.3) ≈ 7,500 steps — longer than
    the chains — and underestimates its std (measured: 0.51–0.63 of the true one over seeds 0–1); the
    preconditioner adapted during burn-in (P ≈ 25 there, 1 on the stiff weights) mixes it, and a fixed P leaves
    the target unchanged: every mean within 0.2 posterior std, every std within 12 %."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    x[:, 0] *= 0.02
    y = x @ torch.tensor([1.5, -2.0, 0.5]) + 0.3 + NOISE * torch.randn(N, generator=g)
    X = torch.cat([x, torch.ones(N, 1)], 1).double()
    cov = torch.linalg.inv(X.T @ X / NOISE**2 + torch.eye(D + 1, dtype=torch.float64) / PRIOR**2)
    mean, std = cov @ X.T @ y.double() / NOISE**2, cov.diagonal().sqrt()
    data = Data(x.view(N, 1, 1, D), y, torch.arange(N), "regression", "train")

    def fit(precondition):
        cfg = SGMCMCConfig(epochs=1500, burnin=100, samples=1400, chains=2, lr=0.006, friction=0.3, batch_size=100,
                           precondition=precondition)
        post = train_sgmcmc(ARCH, data, cfg, "sghmc", seed=0, likelihood="normal", noise_scale=NOISE)
        assert post.config["sgmcmc"]["precondition"] == precondition
        s = torch.cat([post.params["1.weight"].reshape(2800, -1), post.params["1.bias"].reshape(2800, -1)], -1)
        return (s.double().mean(0) - mean).abs() / std, s.double().std(0) / std

    mean_err, ratio = fit("adapted")
    assert torch.all(mean_err < 0.2), mean_err
    assert torch.all((ratio > 0.88) & (ratio < 1.12)), ratio
    _, plain_ratio = fit("none")
    assert plain_ratio[0] < 0.8, plain_ratio  # the flat weight: what the preconditioner is for
    assert torch.all((plain_ratio[1:] > 0.88) & (plain_ratio[1:] < 1.12)), plain_ratio


def test_an_adapted_preconditioner_without_burnin_is_refused_before_sampling(regression):
    data, _, _ = regression
    with pytest.raises(ValueError, match="burnin must be at least 1 epoch, got 0"):
        train_sgmcmc(ARCH, data, SGMCMCConfig(epochs=3, burnin=0, samples=2, precondition="adapted"), "sghmc",
                     likelihood="normal", noise_scale=NOISE)


def test_a_diverging_chain_stops_at_once_with_the_step_and_what_to_lower(regression):
    data, _, _ = regression
    cfg = SGMCMCConfig(epochs=50, burnin=10, samples=5, chains=1, lr=1e4, batch_size=100, precondition="adapted")
    with pytest.raises(FloatingPointError, match=r"diverged at step \d+ \(epoch \d+\): non-finite network outputs; "
                                                 r"lower lr \(now 10000\) or max_precondition \(now 1000\)"):
        train_sgmcmc(ARCH, data, cfg, "sghmc", likelihood="normal", noise_scale=NOISE)
    with pytest.raises(UserError):  # the user's settings, not a bug (the commands print one line)
        train_sgmcmc(ARCH, data, cfg, "sghmc", likelihood="normal", noise_scale=NOISE)


def test_preconditioner_is_the_root_ratio_to_the_mean_squared_gradient_clipped():
    sq = torch.tensor([5.48, 2.0, 0.5, 0.02, 0.0])  # mean 1.6
    torch.testing.assert_close(preconditioner(sq, 1000.0), torch.tensor([1.0, 1.0, 3.2 ** 0.5, 80 ** 0.5, 1000.0]))
    assert preconditioner(sq, 5.0).max() == 5.0 and preconditioner(sq, 5.0).min() == 1.0


def test_sgmcmc_schedule_and_sample_steps():
    cfg = SGMCMCConfig(epochs=10, burnin=2, samples=4, schedule="cyclical", cycles=2, lr=0.2)
    steps = sample_steps(cfg, 20, 100)  # 80 steps after burn-in: 2 cycles of 40, samples in their second halves
    assert len(steps) == 4 and all(20 <= s < 100 for s in steps)
    assert all((s - 20) % 40 >= 20 for s in steps)
    assert step_size(cfg, 5, 20, 100) == 0.2 and step_size(cfg, 20, 20, 100) == pytest.approx(0.2)
    assert step_size(cfg, 40, 20, 100) == pytest.approx(0.1)  # half-way through the first cycle
    constant = sample_steps(SGMCMCConfig(samples=5), 10, 60)
    assert list(constant) == [19, 29, 39, 49, 59]  # equally spaced, the last at the last step
    with pytest.raises(ValueError, match="samples need at least"):
        sample_steps(SGMCMCConfig(samples=100), 10, 60)


# ------------------------------------------------------------------------------------------- Laplace
def test_laplace_recovers_exact_linear_gaussian_posterior(regression):
    """Around the exact MAP (= μ), laplace-torch's full GGN of a linear-Gaussian model is the exact Hessian:
    the stored factor reproduces Σ, and the mean of draws is μ."""
    data, mean, cov = regression
    net = build(ARCH)
    with torch.no_grad():
        net[1].weight.copy_(mean[:D].float()[None])
        net[1].bias.copy_(mean[D:].float())
    post = fit_laplace(net, data, LaplaceConfig(subset="all", structure="full", marglik_steps=0),
                       likelihood="regression", sigma_noise=NOISE, prior_precision=1 / PRIOR**2)
    scale = post.extra["laplace.scale"].double()
    torch.testing.assert_close(scale @ scale.T, cov, rtol=1e-4, atol=1e-7)
    draws = torch.stack([_flat(post.draw_params(j)) for j in range(4000)]).double()
    assert torch.all((draws.mean(0) - mean).abs() < 4 * cov.diagonal().sqrt() / math.sqrt(4000))
    torch.testing.assert_close(torch.cov(draws.T), cov, rtol=0.1, atol=2e-4)


def test_diagonal_laplace_ggn_equals_the_jacobian_computation(mnist5k_train):
    """The last-layer diagonal GGN we fit through BackPACK (DiagGGNExact) equals laplace-torch's default
    backend, which forms it from whole Jacobians: Σ_b diag(J_bᵀ H_b J_b)."""
    from laplace import Laplace
    torch.manual_seed(0)
    net = build(ArchConfig("conv", 8, (1, 28, 28)))
    data = Data(mnist5k_train.x[:200], mnist5k_train.y[:200], mnist5k_train.index[:200], "mnist5k", "train")
    ours = laplace_approximation(net, data, LaplaceConfig(subset="last_layer", structure="diag", marglik_steps=0))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x, data.y), batch_size=256)
    reference = Laplace(net, "classification", subset_of_weights="last_layer", hessian_structure="diag",
                        last_layer_name=last_layer_name(net))
    reference.fit(loader)
    torch.testing.assert_close(ours.H, reference.H, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("subset,structure", [("last_layer", "kron"), ("last_layer", "diag"), ("all", "diag"),
                                              ("all", "kron"), ("last_layer", "full")])
def test_laplace_draws_are_laplace_torch_samples(mnist5k_train, subset, structure):
    """Draw j of the stored posterior is exactly laplace-torch's own ``sample`` with the generator of
    (seed, j): what we store is enough to reproduce its posterior; the marginal likelihood fit moves the prior
    precision; the Posterior survives a save/load."""
    torch.manual_seed(0)
    arch = ArchConfig("fc2", 8, (1, 28, 28))
    net = build(arch)
    data = Data(mnist5k_train.x[:300], mnist5k_train.y[:300], mnist5k_train.index[:300], "mnist5k", "train")
    cfg = LaplaceConfig(subset=subset, structure=structure, marglik_steps=5)
    la = laplace_approximation(net, data, cfg)
    post = to_posterior(la, net, cfg, seed=3)
    assert post.config["laplace"]["prior_precision"] != [1.0]
    names = post.config["laplace"]["names"]
    for j in (0, 7):
        ours = torch.cat([post.draw_params(j)[k].reshape(-1) for k in names])
        theirs = la.sample(1, generator=_draw_generator(3, j))[0]
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        others = [k for k in post.params if k not in names]
        assert all(torch.equal(post.draw_params(j)[k], post.params[k]) for k in others)


def test_laplace_structures_too_large_are_refused_before_any_work():
    """mnist_conv's last layer reads 7*7*512 = 25,088 features: its KFAC factor is refused (the diagonal is
    not); the quick conv net's (7*7*32 = 1,568) is not; a full precision over 250,890 weights is refused."""
    conv = get_preset("mnist_conv").arch
    assert 7 * 7 * 512 > MAX_KRON_FACTOR
    with pytest.raises(ValueError, match="25,088 x 25,088 Kronecker factor.*--laplace-structure kron_lowrank"):
        check_arch_for_laplace(conv, LaplaceConfig(structure="kron"))
    with pytest.raises(ValueError, match="250,890 weights"):
        check_arch_for_laplace(conv, LaplaceConfig(structure="full"))
    check_arch_for_laplace(conv, LaplaceConfig(structure="diag"))
    check_arch_for_laplace(get_preset("quick").arch, LaplaceConfig(structure="kron"))
    check_arch_for_laplace(get_preset("mnist_fc2").arch, LaplaceConfig(subset="all", structure="kron"))


def test_laplace_checkpoint_round_trip(tmp_path, mnist5k_train):
    torch.manual_seed(0)
    net = build(ArchConfig("fc2", 8, (1, 28, 28)))
    data = Data(mnist5k_train.x[:200], mnist5k_train.y[:200], mnist5k_train.index[:200], "mnist5k", "train")
    post = fit_laplace(net, data, LaplaceConfig(marglik_steps=3), seed=5)
    back = Posterior.load(post.save(tmp_path / "m"))
    assert back.kind == "laplace" and back.max_draws is None
    for j in (0, 4):
        for k, v in post.draw_params(j).items():
            torch.testing.assert_close(back.draw_params(j)[k], v, rtol=0, atol=0)
    g = _draw_generator(5, 4)
    assert torch.equal(laplace_draw(back, g)["5.weight"], post.draw_params(4)["5.weight"])


# ------------------------------------------------------------------------------------------- metrics
PROBS = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]],
                      [[0.5, 0.4, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]]],
                     dtype=torch.float64)  # (S=2, N=4, classes=3)
LABELS = torch.tensor([0, 1, 0, 1])


def test_uncertainty_metrics_by_hand():
    mean = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.2, 0.2, 0.6], [0.375, 0.375, 0.25]])
    p_true = np.array([0.6, 0.7, 0.2, 0.375])
    assert uncertainty.nll(PROBS, LABELS) == pytest.approx(-np.log(p_true).mean())
    onehot = np.eye(3)[[0, 1, 0, 1]]
    assert uncertainty.brier(PROBS, LABELS) == pytest.approx(((mean - onehot) ** 2).sum(1).mean())
    # argmax of image 4 is a tie (0.375, 0.375): the first class, 0, wrong; images 1, 2 right, image 3 wrong
    assert uncertainty.accuracy(PROBS, LABELS) == pytest.approx(0.5)
    # ECE with 5 bins: confidences .6 (right), .7 (right), .6 (wrong), .375 (wrong);
    # bin [.2,.4): conf .375 acc 0; bin [.6,.8): conf mean .6333 acc 2/3
    expected = 0.25 * abs(0.375 - 0) + 0.75 * abs((0.6 + 0.7 + 0.6) / 3 - 2 / 3)
    assert uncertainty.ece(PROBS, LABELS, n_bins=5) == pytest.approx(expected, abs=1e-6)
    conf, acc, count = uncertainty.reliability(PROBS, LABELS, n_bins=5)
    np.testing.assert_allclose(count.numpy(), [0, 1, 0, 3, 0])
    assert conf[3] == pytest.approx(1.9 / 3) and acc[3] == pytest.approx(2 / 3) and acc[1] == 0
    h = -(mean * np.log(mean)).sum(1)
    np.testing.assert_allclose(uncertainty.predictive_entropy(PROBS).numpy(), h)
    each = -(PROBS.numpy() * np.log(PROBS.numpy())).sum(-1).mean(0)
    np.testing.assert_allclose(uncertainty.mutual_information(PROBS).numpy(), h - each)
    assert uncertainty.mutual_information(PROBS[:1]).abs().max() < 1e-12  # one draw: no epistemic part


def test_auroc_by_hand():
    """AUROC = P(score_out > score_in) + ½ P(tie): pairs counted by hand."""
    inside, outside = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0.9, 0.4, 0.5])
    wins = sum(float(o > i) + 0.5 * float(o == i) for o in outside for i in inside)
    assert uncertainty.auroc(inside, outside) == pytest.approx(wins / 12)
    assert uncertainty.auroc(inside, inside + 10) == 1.0


# ------------------------------------------------------------------------------------------- diagnostics
def _sampled(params_by_chain: list[dict[str, torch.Tensor]], arch: ArchConfig) -> Posterior:
    return Posterior(arch, "sghmc", {k: torch.stack([c[k] for c in params_by_chain]) for k in params_by_chain[0]})


def test_function_space_rhat_same_posterior_and_two_modes(mnist5k_test):
    """Chains of independent draws of one Gaussian posterior over a linear classifier: function-space R-hat
    near 1. Chains around two different classifiers (two modes): R-hat far above 1.1 and the chains disagree."""
    arch = ArchConfig("linear", 1, (1, 28, 28))
    x, y = mnist5k_test.x[:100], mnist5k_test.y[:100]
    g = torch.Generator().manual_seed(0)
    centre = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in build(arch).named_parameters()}
    other = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in centre.items()}

    def chain(around):
        return {k: v + 0.01 * torch.randn((40, *v.shape), generator=g) for k, v in around.items()}

    same = convergence.function_space(_sampled([chain(centre), chain(centre)], arch), x, y)
    assert same["logprob_rhat_max"] < 1.1 and same["probe_logit_rhat_max"] < 1.1
    assert abs(same["mean_logprob_rhat"] - 1) < 0.05 and same["disagreement_mean"] < 0.1
    assert same["converged"]
    modes = convergence.function_space(_sampled([chain(centre), chain(other)], arch), x, y)
    assert modes["logprob_rhat_median"] > 1.5 and modes["probe_logit_rhat_max"] > 1.5
    assert modes["disagreement_mean"] > 0.3 and not modes["converged"]
    # one chain of 40 independent draws: no R-hat and "unknown", not "not converged"; its ESS is about 40
    one = convergence.function_space(_sampled([chain(centre)], arch), x, y)
    assert one["converged"] is None and np.isnan(one["logprob_rhat_max"]) and np.isnan(one["weight_rhat_max"])
    assert 25 < one["logprob_ess_median"] < 60 and 25 < one["mean_logprob_ess"] < 60
    assert "unknown (one chain" in convergence.describe(one)


def test_vectorised_rhat_ess_agree_with_arviz():
    """Our vectorised rank-normalised split R-hat is ArviZ's (``method='rank'``) to rounding; the bulk ESS
    (Pyro's estimator on the split, rank-normalised chains) is within 10% of ArviZ's in the median."""
    from arviz_stats.base import array_stats
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 60, 30))
    for t in range(1, 60):  # AR(1) chains, some entries with shifted chains, some skewed
        a[:, t] = 0.6 * a[:, t - 1] + 0.8 * a[:, t]
    a[1, :, :10] += np.linspace(0, 1.5, 10)
    a[:, :, 20:] = np.exp(a[:, :, 20:])
    rhat, ess = convergence._rhat_ess(a)
    moved = np.moveaxis(a, -1, 0)
    np.testing.assert_allclose(rhat, array_stats.rhat(moved, chain_axis=1, draw_axis=2), rtol=1e-10)
    theirs = array_stats.ess(moved, chain_axis=1, draw_axis=2, method="bulk")
    assert np.median(np.abs(ess / theirs - 1)) < 0.1
    # the per-parameter MCMC diagnostics: the same R-hat and bulk ESS, and a tail ESS near ArviZ's
    rhat2, bulk, tail = convergence.sample_diagnostics(a)
    np.testing.assert_array_equal(rhat2, rhat)
    np.testing.assert_array_equal(bulk, ess)
    theirs = array_stats.ess(moved, chain_axis=1, draw_axis=2, method="tail", prob=0.05)
    assert np.median(np.abs(tail / theirs - 1)) < 0.1 and np.all(np.abs(tail / theirs - 1) < 0.35)
    # one chain: no R-hat; ESS as before on the split halves
    r1, b1, t1 = convergence.sample_diagnostics(a[:1])
    assert np.isnan(r1).all()
    assert np.median(np.abs(b1 / array_stats.ess(moved[:, :1], chain_axis=1, draw_axis=2, method="bulk") - 1)) < 0.1
    assert np.median(np.abs(t1 / array_stats.ess(moved[:, :1], chain_axis=1, draw_axis=2, method="tail",
                                                 prob=0.05) - 1)) < 0.1
