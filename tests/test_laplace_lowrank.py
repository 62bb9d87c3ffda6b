"""The low-rank last-layer KFAC Laplace (``kron_lowrank``) against exact answers: the Nyström eigenpairs
against a dense eigendecomposition; the linear-Gaussian posterior and marginal likelihood against the closed
forms and laplace-torch's full Laplace; at full rank, the KFAC precision and marginal likelihood against
laplace-torch's own KFAC; the stored draws against the deviation operator; the evidence refit against
MacKay's fixed point (linear-Gaussian) and the penalised MAP's optimality conditions and scipy (softmax)."""

from __future__ import annotations

import math

import pytest
import torch
from test_inference import ARCH, NOISE, D, N
from torch import nn

from bayesrobust.data import Data
from bayesrobust.inference.laplace import check_arch_for_laplace, fit_laplace, laplace_draw
from bayesrobust.inference.laplace_lowrank import evidence_prior_precision, fit_lowrank_kfac, nystrom_eigh
from bayesrobust.models.architectures import ArchConfig, build
from bayesrobust.models.posterior import Posterior, _draw_generator
from bayesrobust.presets import LaplaceConfig, get_preset

pytestmark = pytest.mark.threads(1)


def _psd(dim: int, rank: int, decay: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64)).Q[:, :rank]
    return basis @ torch.diag(decay ** torch.arange(rank, dtype=torch.float64)) @ basis.T


def test_nystrom_is_exact_for_low_rank_and_close_on_a_decaying_spectrum():
    """Rank 20 ≤ rank + oversample: exact (values and A = V S Vᵀ). A full 300-dim spectrum falling by 0.9 per
    eigenvalue, one subspace iteration: the top 40 eigenvalues within 1e-3 relative of a dense eigh."""
    a = _psd(120, 20, 0.8)
    values, vectors = nystrom_eigh(lambda om: a @ om, 120, 10, oversample=16, power_iters=0,
                                   rel_shift=1e-14, generator=torch.Generator().manual_seed(1))
    exact = torch.linalg.eigvalsh(a).flip(0)
    torch.testing.assert_close(values, exact[:10], rtol=1e-9, atol=1e-12)
    big, big_vecs = nystrom_eigh(lambda om: a @ om, 120, 26, oversample=0, power_iters=0,
                                 rel_shift=1e-14, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(big_vecs @ torch.diag(big) @ big_vecs.T, a, rtol=0, atol=1e-10)
    a = _psd(300, 300, 0.9, seed=2)
    values, _ = nystrom_eigh(lambda om: a @ om, 300, 40, oversample=32, power_iters=1,
                             generator=torch.Generator().manual_seed(3))
    exact = torch.linalg.eigvalsh(a).flip(0)[:40]
    assert ((values - exact).abs() / exact).max() < 1e-3


def test_evidence_prior_precision_is_the_maximiser():
    """The root λ of λ‖θ‖² = Σ n g/(g + λ) maximises −½λ‖θ‖² − ½Σ n log(1 + g/λ), checked on a fine grid."""
    gains = torch.tensor([1e4, 300.0, 20.0, 1.0, 0.01, 0.0], dtype=torch.float64)
    counts = torch.tensor([1.0, 1.0, 2.0, 1.0, 40.0, 3.0], dtype=torch.float64)
    lam = evidence_prior_precision(gains, theta_sq=3.0, counts=counts)
    grid = torch.logspace(-4, 4, 20001, dtype=torch.float64)
    objective = -0.5 * grid * 3.0 - 0.5 * (counts[:, None] * torch.log1p(gains[:, None] / grid)).sum(0)
    assert abs(math.log(lam) - math.log(float(grid[objective.argmax()]))) < 2e-3
    assert lam * 3.0 == pytest.approx(float((counts * gains / (gains + lam)).sum()), rel=1e-9)
    with pytest.raises(ValueError, match="squared norm must be positive to fit a prior precision, got 0.0"):
        evidence_prior_precision(gains, theta_sq=0.0)


@pytest.fixture(scope="module")
def linear_regression():
    """A linear model y = w·x + b with Gaussian noise σ and its data; the weights at a fixed θ (the MAP of the
    Laplace marginal likelihood is taken at a given θ, not re-solved per λ)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = x @ torch.tensor([1.5, -2.0, 0.5]) + 0.3 + NOISE * torch.randn(N, generator=g)
    net = build(ARCH)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.4, -1.9, 0.6]]))
        net[1].bias.copy_(torch.tensor([0.25]))
    return net, Data(x.view(N, 1, 1, D), y, torch.arange(N), "regression", "train")


def _operator(fit) -> torch.Tensor:
    """The deviation operator P^(-1/2) as a dense matrix (it is symmetric: row j = P^(-1/2) e_j)."""
    n = fit.mean.numel()
    return fit.deviation(torch.eye(n, dtype=torch.float64)).double()


def test_linear_gaussian_posterior_and_marginal_likelihood_are_exact(linear_regression):
    """For one Gaussian output the KFAC GGN is exact: P = XᵀX/σ² + λI over (w, b), so the deviation operator
    squares to P⁻¹; the closed-form λ and log marginal likelihood equal laplace-torch's full Laplace at the
    same weights (its value at λ, and λ its maximiser)."""
    from laplace import Laplace
    net, data = linear_regression
    fit = fit_lowrank_kfac(net, data, rank=D + 1, likelihood="regression", sigma_noise=NOISE)
    X = torch.cat([data.x.reshape(N, D), torch.ones(N, 1)], 1).double()
    precision = X.T @ X / NOISE**2 + fit.prior_precision * torch.eye(D + 1, dtype=torch.float64)
    root = _operator(fit)
    torch.testing.assert_close(root @ root, torch.linalg.inv(precision), rtol=1e-4, atol=1e-8)  # float32 storage
    assert fit.captured == pytest.approx(1.0, abs=1e-6)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x, data.y[:, None]), batch_size=N)
    la = Laplace(net, "regression", subset_of_weights="all", hessian_structure="full", sigma_noise=NOISE)
    la.fit(loader)

    def theirs(lam: float) -> float:
        return float(la.log_marginal_likelihood(prior_precision=torch.tensor([lam])))

    assert fit.log_marglik == pytest.approx(theirs(fit.prior_precision), rel=1e-5)
    assert theirs(fit.prior_precision) > max(theirs(fit.prior_precision * 1.05), theirs(fit.prior_precision / 1.05))
    post = fit_laplace(net, data, LaplaceConfig(structure="kron_lowrank", rank=4), likelihood="regression",
                       sigma_noise=NOISE)  # the same through the library's route
    assert post.config["laplace"]["prior_precision"] == [pytest.approx(fit.prior_precision, rel=1e-9)]


def test_full_rank_matches_laplace_torch_kfac_on_a_bias_free_last_layer(mnist5k_train):
    """Classification, last layer without bias, one batch, rank = all 6 features: our G ⊗ A + λI is
    laplace-torch's KFAC posterior precision, and our log marginal likelihood its value at our λ."""
    from laplace import Laplace
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 6), nn.Tanh(), nn.Linear(6, 3, bias=False))
    data = Data(mnist5k_train.x[:150], mnist5k_train.y[:150] % 3, mnist5k_train.index[:150], "mnist5k", "train")
    fit = fit_lowrank_kfac(net, data, rank=6)
    la = Laplace(net, "classification", subset_of_weights="last_layer", hessian_structure="kron",
                 last_layer_name="3", prior_precision=fit.prior_precision)
    la.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x, data.y), batch_size=150))
    theirs = la.posterior_precision.to_matrix().double()
    root = _operator(fit)
    torch.testing.assert_close(torch.linalg.inv(root @ root), theirs, rtol=1e-4, atol=1e-4)
    assert fit.log_marglik == pytest.approx(float(la.log_marginal_likelihood()), rel=1e-5)
    recomputed = fit_lowrank_kfac(net, data, rank=6, batch_size=64, cache_bytes=0)  # no feature cache, 3 batches
    torch.testing.assert_close(recomputed.values, fit.values, rtol=1e-4, atol=1e-6)
    assert recomputed.prior_precision == pytest.approx(fit.prior_precision, rel=1e-4)


def test_truncated_input_factor_against_the_dense_computation(mnist5k_train):
    """Rank 3 of 81 augmented features (80 + bias), 4 classes, so the Nyström sketch (35 columns) is not
    exact: ρ is the mean of A's 78 other eigenvalues, the kept ones are A's top 3 (within 1%), the deviation
    operator squares to the inverse of the dense G ⊗ (V S Vᵀ + ρ (I − V Vᵀ)) + λI taken into our [W, b]
    order, ``solve`` applies its inverse, and the log marginal likelihood uses its log determinant."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 80), nn.Tanh(), nn.Linear(80, 4))
    data = Data(mnist5k_train.x[:400], mnist5k_train.y[:400] % 4, mnist5k_train.index[:400], "mnist5k", "train")
    fit = fit_lowrank_kfac(net, data, rank=3)
    with torch.no_grad():
        phi = torch.cat([net[:3](data.x), torch.ones(400, 1)], 1).double()
        logits = net(data.x).double()
    a = phi.T @ phi
    exact = torch.linalg.eigvalsh(a).flip(0)
    assert ((fit.values.double() - exact[:3]).abs() / exact[:3]).max() < 0.01
    assert fit.residual == pytest.approx(float(a.trace() - fit.values.double().sum()) / 78, rel=1e-4)
    assert fit.residual == pytest.approx(float(exact[3:].mean()), rel=0.01)
    p = logits.softmax(-1)
    g = (torch.diag(p.sum(0)) - p.T @ p) / len(p)
    v = fit.vectors.double()
    approx = v @ torch.diag(fit.values.double()) @ v.T + fit.residual * (torch.eye(81, dtype=torch.float64) - v @ v.T)
    lam = fit.prior_precision
    row_major = torch.kron(g, approx) + lam * torch.eye(324, dtype=torch.float64)  # index c·81 + j, j = 80: bias
    order = [c * 81 + j for c in range(4) for j in range(80)] + [c * 81 + 80 for c in range(4)]  # W then b
    precision = row_major[order][:, order]
    root = _operator(fit)
    torch.testing.assert_close(root @ root, torch.linalg.inv(precision), rtol=1e-4, atol=1e-6)
    m = torch.randn(4, 81, dtype=torch.float64)  # the refit's Newton solve, in (C, d̃) = [W, b] form
    dense = torch.linalg.solve(row_major, m.reshape(-1)).reshape(4, 81)
    torch.testing.assert_close(fit.solve(m.float()).double(), dense, rtol=1e-4, atol=1e-6)
    theta = torch.cat([net[3].weight.detach().reshape(-1), net[3].bias.detach()]).double()
    loglik = -float(nn.functional.cross_entropy(logits, data.y, reduction="sum"))
    expected = loglik - 0.5 * (lam * float(theta @ theta) + float(torch.logdet(precision)) - 324 * math.log(lam))
    assert fit.log_marglik == pytest.approx(expected, rel=1e-4)


def test_low_rank_posterior_draws_round_trip_and_covariance(tmp_path, mnist5k_train):
    """Through ``fit_laplace``: draw j is MAP + P^(-1/2) ε(seed, j) on the last layer only, the same after a
    save/load; the sample covariance of 3,000 draws of two last-layer weights matches P⁻¹."""
    torch.manual_seed(0)
    net = build(ArchConfig("fc2", 8, (1, 28, 28)))
    data = Data(mnist5k_train.x[:300], mnist5k_train.y[:300], mnist5k_train.index[:300], "mnist5k", "train")
    post = fit_laplace(net, data, LaplaceConfig(structure="kron_lowrank", rank=4), seed=5)
    info = post.config["laplace"]
    assert info["rank"] == 4 and 0 < info["captured"] < 1 and info["prior_precision"][0] > 0
    back = Posterior.load(post.save(tmp_path / "m"))
    names = info["names"]
    for j in (0, 3):
        assert all(torch.equal(back.draw_params(j)[k], post.draw_params(j)[k]) for k in post.params)
        assert all(torch.equal(post.draw_params(j)[k], post.params[k]) for k in post.params if k not in names)
    g = _draw_generator(5, 3)
    assert torch.equal(laplace_draw(back, g)[names[0]], post.draw_params(3)[names[0]])

    from bayesrobust.inference.laplace import LOWRANK_FIELDS
    from bayesrobust.inference.laplace_lowrank import LowRankKFAC
    fit = LowRankKFAC(mean=post.extra["laplace.mean"], prior_precision=info["prior_precision"][0],
                      captured=info["captured"], bias=True, residual=info["residual"],
                      **{f: post.extra[f"laplace.lowrank.{f}"] for f in LOWRANK_FIELDS})
    root = _operator(fit)
    cov = (root @ root)[:2, :2]
    draws = torch.stack([torch.cat([post.draw_params(j)[k].reshape(-1) for k in names])[:2]
                         for j in range(3000)]).double()
    torch.testing.assert_close(torch.cov(draws.T), cov, rtol=0.12, atol=0.12 * float(cov.diagonal().max()))


def test_low_rank_structure_checks_and_the_conv_presets_default():
    """kron_lowrank covers the last layer only (refused for all weights before any work); the conv presets,
    whose dense KFAC factor is refused, default to it; a dense KFAC's refusal names it."""
    conv = get_preset("mnist_conv")
    assert conv.laplace.structure == "kron_lowrank"
    check_arch_for_laplace(conv.arch, conv.laplace)
    with pytest.raises(ValueError, match="kron_lowrank covers the last layer only, got --laplace-subset all"):
        check_arch_for_laplace(conv.arch, LaplaceConfig(subset="all", structure="kron_lowrank"))
    with pytest.raises(ValueError, match="25,088 x 25,088 Kronecker factor.*kron_lowrank"):
        check_arch_for_laplace(conv.arch, LaplaceConfig(structure="kron"))
    with pytest.raises(ValueError, match="the rank of the input factor must be at least 1, got 0"):
        fit_lowrank_kfac(nn.Linear(2, 2), None, rank=0)
    with pytest.raises(ValueError, match="likelihood must be 'classification' or 'regression', got 'poisson'"):
        fit_lowrank_kfac(nn.Linear(2, 2), None, rank=1, likelihood="poisson")
    with pytest.raises(ValueError, match="the prior precision must be positive, got -1.0"):
        fit_lowrank_kfac(nn.Linear(2, 2), None, rank=1, prior_precision=-1.0)
    with pytest.raises(ValueError, match="peaks below λ = 1e-12"):
        evidence_prior_precision(torch.tensor([1e-30]), theta_sq=1e6)


@pytest.mark.parametrize("structure", ["kron_lowrank", "diag"])
def test_last_layer_draw_probabilities_compute_the_features_once(mnist5k_train, structure):
    """A last-layer Laplace posterior's predictive computes the body's features once and applies each draw's
    output layer: the same probabilities as running every draw's whole network."""
    from bayesrobust.models.draws import DrawSet, draw_probabilities
    torch.manual_seed(0)
    net = build(ArchConfig("conv", 4, (1, 28, 28)))
    data = Data(mnist5k_train.x[:200], mnist5k_train.y[:200], mnist5k_train.index[:200], "mnist5k", "train")
    post = fit_laplace(net, data, LaplaceConfig(structure=structure, rank=8, marglik_steps=3), seed=1)
    x, x2 = mnist5k_train.x[200:230], mnist5k_train.x[230:237]
    draws = DrawSet(post, 5)
    assert draws.varying_output_layer() is not None
    fast, fast2 = draw_probabilities(draws, x, x2, chunk_size=8, log=True)
    slow = torch.stack([draws.net(x).log_softmax(-1) for _ in draws])
    slow2 = torch.stack([draws.net(x2).log_softmax(-1) for _ in draws])
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast2, slow2, rtol=1e-5, atol=1e-6)
    assert (fast[0] - fast[1]).abs().max() > 1e-4  # the draws differ
    from bayesrobust.models.draws import _output_layer_probabilities
    tail = nn.Sequential(nn.Linear(4, 3), nn.Tanh())  # the last Linear's output is not the network's
    assert _output_layer_probabilities(DrawSet.from_module(tail), tail[0], (torch.rand(5, 4),), None,
                                       torch.softmax) is None
    post.config["laplace"]["subset"] = "all"  # every layer differs between draws: the ordinary path
    assert DrawSet(post, 2).varying_output_layer() is None and DrawSet.from_module(net).varying_output_layer() is None


def test_evidence_refit_reaches_mackays_fixed_point_on_a_linear_gaussian_model(linear_regression):
    """Regression with one output, full rank: the refit pair (θ, λ) is MacKay's fixed point, computed here
    independently by iterating θ = (H + λI)⁻¹ Xᵀy/σ², λ = Σ h/(h + λ) / ‖θ‖² (H = XᵀX/σ², eigenvalues h) to
    convergence; the posterior is N(θ, (H + λI)⁻¹); the network itself is left unchanged."""
    net, data = linear_regression
    before = [p.detach().clone() for p in net.parameters()]
    fit = fit_lowrank_kfac(net, data, rank=D + 1, likelihood="regression", sigma_noise=NOISE, refit_steps=300,
                           refit_tol=1e-15)
    X = torch.cat([data.x.reshape(N, D), torch.ones(N, 1)], 1).double()
    h = X.T @ X / NOISE**2
    eig = torch.linalg.eigvalsh(h)
    lam = 1.0
    for _ in range(5000):
        theta = torch.linalg.solve(h + lam * torch.eye(D + 1, dtype=torch.float64), X.T @ data.y.double() / NOISE**2)
        lam = float((eig / (eig + lam)).sum() / (theta @ theta))
    assert fit.prior_precision == pytest.approx(lam, rel=1e-4)
    torch.testing.assert_close(fit.mean.double(), theta, rtol=1e-4, atol=1e-5)
    root = _operator(fit)
    torch.testing.assert_close(root @ root, torch.linalg.inv(h + lam * torch.eye(D + 1, dtype=torch.float64)),
                               rtol=1e-4, atol=1e-8)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_evidence_refit_is_the_penalised_map_at_its_own_prior_precision(mnist5k_train):
    """Softmax, 4 classes, a truncated input factor (rank 5 of 41): after the refit, the gradient of
    CE + ½λ‖θ‖² at the mean is ~0 (float64, computed here), the mean equals scipy's L-BFGS minimiser at that λ,
    and λ is the marginal-likelihood root for that mean and the G it implies; the refit moves the last layer
    and raises λ (the start, trained without a penalty, has the larger norm)."""
    from scipy.optimize import minimize
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 40), nn.Tanh(), nn.Linear(40, 4))
    data = Data(mnist5k_train.x[:500], mnist5k_train.y[:500] % 4, mnist5k_train.index[:500], "mnist5k", "train")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):  # an unpenalised fit: the evidence at the trained weights is not at a consistent λ
        opt.zero_grad()
        nn.functional.cross_entropy(net(data.x), data.y).backward()
        opt.step()
    plain = fit_lowrank_kfac(net, data, rank=5)
    fit = fit_lowrank_kfac(net, data, rank=5, refit_steps=200, refit_tol=1e-12)
    lam = fit.prior_precision
    with torch.no_grad():
        phi = torch.cat([net[:3](data.x), torch.ones(500, 1)], 1).double()
    theta = fit.mean.double()
    w = torch.cat([theta[:160].reshape(4, 40), theta[160:, None]], 1)  # (C, d̃): [W, b]

    def penalised(flat):
        m = torch.as_tensor(flat).reshape(4, 41).requires_grad_()
        loss = nn.functional.cross_entropy(phi @ m.T, data.y, reduction="sum") + 0.5 * lam * (m ** 2).sum()
        loss.backward()
        return float(loss.detach()), m.grad.reshape(-1).numpy()

    _, grad = penalised(w.reshape(-1).numpy())
    _, grad_start = penalised(torch.cat([net[3].weight, net[3].bias[:, None]], 1).detach().double().reshape(-1).numpy())
    assert torch.linalg.norm(torch.as_tensor(grad)) < 1e-3 * torch.linalg.norm(torch.as_tensor(grad_start))
    best = minimize(penalised, torch.zeros(164, dtype=torch.float64).numpy(), jac=True, method="L-BFGS-B",
                    options={"ftol": 0, "gtol": 1e-10, "maxiter": 5000})
    torch.testing.assert_close(w.reshape(-1), torch.as_tensor(best.x), rtol=1e-3, atol=1e-3)
    gains = torch.cat([(fit.output_values[:, None] * fit.values[None, :]).reshape(-1),
                       fit.output_values * fit.residual]).double()
    counts = torch.cat([torch.ones(20, dtype=torch.float64), torch.full((4,), 36.0, dtype=torch.float64)])
    assert evidence_prior_precision(gains, float(theta @ theta), counts) == pytest.approx(lam, rel=1e-3)
    p = (phi @ w.T).softmax(-1)
    g_at_mean = torch.linalg.eigvalsh((torch.diag(p.sum(0)) - p.T @ p) / 500)
    torch.testing.assert_close(fit.output_values.double(), g_at_mean, rtol=1e-3, atol=1e-6)  # G at the refit mean
    assert lam > plain.prior_precision and float(theta @ theta) < float(plain.mean.double() @ plain.mean.double())


def test_evidence_refit_through_the_library_route_and_its_checks(mnist5k_train):
    """``LaplaceConfig.refit_steps``: the posterior's MAP (``params``, the draws' centre) is the refit last
    layer, ``refit_shift`` records how far it moved (0, and net's own weights, without a refit); refused for
    a network whose output is not its last Linear layer's, for a negative count, for a laplace-torch
    structure, and a rank for a structure without one."""
    from bayesrobust.presets import override_training
    torch.manual_seed(0)
    net = build(ArchConfig("fc2", 8, (1, 28, 28)))
    data = Data(mnist5k_train.x[:300], mnist5k_train.y[:300], mnist5k_train.index[:300], "mnist5k", "train")
    plain = fit_laplace(net, data, LaplaceConfig(structure="kron_lowrank", rank=4))
    post = fit_laplace(net, data, LaplaceConfig(structure="kron_lowrank", rank=4, refit_steps=20))
    names = post.config["laplace"]["names"]
    assert plain.config["laplace"]["refit_shift"] == 0 and post.config["laplace"]["refit_shift"] > 0
    assert all(torch.equal(plain.params[k], dict(net.state_dict())[k]) for k in names)
    flat = torch.cat([post.params[k].reshape(-1) for k in names])
    torch.testing.assert_close(flat, post.extra["laplace.mean"])
    assert not torch.equal(flat, plain.extra["laplace.mean"])
    squashed = nn.Sequential(nn.Flatten(), nn.Linear(784, 4), nn.Tanh(), nn.Linear(4, 10), nn.Tanh())
    with pytest.raises(ValueError, match="differs from its last Linear layer's.*ends in that layer"):
        fit_lowrank_kfac(squashed, data, rank=2, refit_steps=1)
    with pytest.raises(ValueError, match="evidence refit steps must be at least 0, got -1"):
        fit_lowrank_kfac(net, data, rank=2, refit_steps=-1)
    conv = get_preset("mnist_conv")
    with pytest.raises(ValueError, match="laplace_refit_steps must be.*-1"):
        override_training(conv, "fullBNN", "laplace", laplace_refit_steps=-1)
    with pytest.raises(ValueError, match="refit_steps=2\\) needs --laplace-structure kron_lowrank, got 'diag'"):
        override_training(conv, "fullBNN", "laplace", laplace_structure="diag", laplace_refit_steps=2)
    with pytest.raises(ValueError, match="refit_steps=1\\) needs --laplace-structure kron_lowrank, got 'kron'"):
        fit_laplace(net, data, LaplaceConfig(structure="kron", refit_steps=1))
    with pytest.raises(ValueError, match="laplace_rank=8 applies to --laplace-structure kron_lowrank only, got 'diag'"):
        override_training(conv, "fullBNN", "laplace", laplace_structure="diag", laplace_rank=8)
    with pytest.raises(ValueError, match="laplace_rank=8 does not apply to a fullBNN trained by svi"):
        override_training(conv, "fullBNN", "svi", laplace_rank=8)
