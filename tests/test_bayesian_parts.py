"""A Bayesian network is plain network + prior + likelihood + inference builder (docs/method.md, fullBNN).

Priors and likelihoods written here, outside the library, plug in; the model's log-density is checked
against sums computed by hand; training leaves the caller's Pyro parameter store and RNG states alone.
"""

import math
import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from bayesrobust.data import Data
from bayesrobust.inference import MeanFieldGuide, NUTSKernel
from bayesrobust.inference.hmc import train_hmc
from bayesrobust.inference.svi import train_svi
from bayesrobust.models.architectures import ArchConfig, build
from bayesrobust.models.bayesian import (
    BayesianNetwork,
    Categorical,
    Gaussian,
    LayerwiseNormalPrior,
    NormalPrior,
    initial_values,
    site_to_param,
)
from bayesrobust.presets import HMCConfig, SVIConfig

D, N, B = 3, 40, 8
FC = ArchConfig("fc2", 4, (1, 1, D), n_classes=3)
LIN = ArchConfig("linear", 1, (1, 1, D), n_classes=1)


def laplace_prior(name, param):
    """A user's prior: Laplace(0, 0.5) on every weight and bias — no library code involved."""
    return dist.Laplace(torch.zeros(()), torch.tensor(0.5)).expand(param.shape).to_event(param.dim())


def user_layerwise_prior(name, param):
    """A user's layer-wise prior: scale 2 on the first layer, 0.1 on the biases, 1 elsewhere."""
    scale = 2.0 if name.startswith("1.") else 0.1 if name.endswith("bias") else 1.0
    return dist.Normal(torch.zeros(()), torch.tensor(scale)).expand(param.shape).to_event(param.dim())


def traced(model, *args):
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(*args)
    trace.compute_log_prob()
    return trace


def prior_log_density(trace):
    return sum(s["log_prob_sum"] for n, s in trace.nodes.items() if n.startswith("net."))


def weights(trace):
    return {site_to_param(n): s["value"] for n, s in trace.nodes.items() if n.startswith("net.")}


def normal_log_density(w, scale):
    return float((-w.double() ** 2 / (2 * scale ** 2) - math.log(scale) - 0.5 * math.log(2 * math.pi)).sum())


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 1, 1, D, generator=g), torch.randint(0, 3, (B,), generator=g), torch.randn(B, generator=g)


def test_laplace_prior_plugs_in(batch):
    x, y, _ = batch
    trace = traced(BayesianNetwork(FC, prior=laplace_prior), x, y)
    w = weights(trace)
    assert set(w) == {k for k, _ in build(FC).named_parameters()}
    by_hand = sum(float((-v.double().abs() / 0.5 - math.log(2 * 0.5)).sum()) for v in w.values())
    assert float(prior_log_density(trace)) == pytest.approx(by_hand, rel=1e-5)


def test_user_layerwise_prior_plugs_in(batch):
    x, y, _ = batch
    trace = traced(BayesianNetwork(FC, prior=user_layerwise_prior), x, y)
    by_hand = sum(normal_log_density(v, 2.0 if k.startswith("1.") else 0.1 if k.endswith("bias") else 1.0)
                  for k, v in weights(trace).items())
    assert float(prior_log_density(trace)) == pytest.approx(by_hand, rel=1e-5)


def test_fan_in_prior_scales_each_layer_by_its_inputs(batch):
    x, y, _ = batch
    prior = LayerwiseNormalPrior.fan_in(FC, gain=2.0)
    assert prior.scales == {"1": 2 / math.sqrt(D), "3": 2 / math.sqrt(4), "5": 2 / math.sqrt(4)}
    trace = traced(BayesianNetwork(FC, prior=prior), x, y)
    by_hand = sum(normal_log_density(v, prior.scales[k.split(".")[0]]) for k, v in weights(trace).items())
    assert float(prior_log_density(trace)) == pytest.approx(by_hand, rel=1e-5)
    mapped = LayerwiseNormalPrior({"1": 0.3, "5.bias": 0.2}, default=1.0)
    assert [mapped.scale_of(n) for n in ("1.weight", "1.bias", "3.weight", "5.bias")] == [0.3, 0.3, 1.0, 0.2]


@pytest.mark.parametrize("dataset_size", [N, None])
def test_subsampled_plate_scales_the_minibatch_likelihood(batch, dataset_size):
    """log p(w) + (N/B) Σ_batch log p(y | x, w) with the dataset size; the unscaled sum without (reference)."""
    x, _, t = batch
    noise = 0.7
    model = BayesianNetwork(LIN, prior=NormalPrior(1.5), likelihood=Gaussian(dataset_size, noise_scale=noise))
    w = initial_values(LIN, 3)
    before = torch.get_rng_state()
    trace = traced(poutine.condition(model, data=w), x, t)
    assert torch.equal(torch.get_rng_state(), before)  # the given batch: the plate draws no indices
    pred = x.view(B, D).double() @ w["net.1.weight"].double().T.squeeze(-1) + w["net.1.bias"].double()
    loglik = float((-(t.double() - pred) ** 2 / (2 * noise ** 2) - math.log(noise) - 0.5 * math.log(2 * math.pi)).sum())
    prior = sum(normal_log_density(v, 1.5) for v in w.values())
    factor = 1.0 if dataset_size is None else N / B
    assert float(trace.log_prob_sum()) == pytest.approx(prior + factor * loglik, rel=1e-5)


def test_categorical_likelihood_scaled_by_dataset_size(batch):
    x, y, _ = batch
    model = BayesianNetwork(FC, likelihood=Categorical(dataset_size=N))
    w = initial_values(FC, 0)
    trace = traced(poutine.condition(model, data=w), x, y)
    net = build(FC)
    net.load_state_dict({site_to_param(k): v for k, v in w.items()})
    with torch.no_grad():
        loglik = float(torch.log_softmax(net(x).double(), -1)[torch.arange(B), y].sum())
    assert float(trace.nodes["obs"]["log_prob_sum"]) == pytest.approx(N / B * loglik, rel=1e-5)


def _regression(n=N):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 1, D, generator=g)
    return Data(x, x.view(n, D) @ torch.tensor([1.0, -1.0, 0.5]) + 0.1 * torch.randn(n, generator=g),
                torch.arange(n), "regression", "train")


def _global_state():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _assert_untouched(user, state):
    store = pyro.get_param_store()
    assert list(store.keys()) == ["user_w"]  # nothing of the library's left, the user's param kept
    assert torch.equal(store["user_w"], user)
    now = _global_state()
    assert torch.equal(now[0], state[0]) and np.array_equal(now[1], state[1]) and now[2] == state[2]


def test_train_svi_leaves_global_state_alone():
    user = pyro.param("user_w", torch.tensor([1.0, 2.0])).detach().clone()
    torch.manual_seed(123)
    state = _global_state()
    post = train_svi(LIN, _regression(), SVIConfig(epochs=2, batch_size=B), seed=5, likelihood="normal",
                     noise_scale=0.1)
    _assert_untouched(user, state)
    assert post.params["1.weight"].shape == (1, D)


def test_train_hmc_leaves_global_state_alone():
    user = pyro.param("user_w", torch.tensor([1.0, 2.0])).detach().clone()
    torch.manual_seed(123)
    state = _global_state()
    with pytest.warns(RuntimeWarning, match="NUTS did not converge"):  # 4 draws: R-hat is not trusted
        train_hmc(LIN, _regression(), HMCConfig(warmup=4, samples=4, chains=2, max_tree_depth=3, jit=False),
                  seed=5, likelihood=Gaussian(noise_scale=0.1))
    _assert_untouched(user, state)


def test_objects_and_shorthands_give_the_same_fit():
    cfg = SVIConfig(epochs=1, batch_size=B)
    a = train_svi(LIN, _regression(), cfg, 1.0, 2, "cpu", False, "normal", 0.3)
    b = train_svi(LIN, _regression(), cfg, seed=2, prior=NormalPrior(1.0), likelihood=Gaussian(noise_scale=0.3),
                  guide=MeanFieldGuide(cfg.init_scale))
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]) and torch.equal(a.scales[k], b.scales[k])


def test_mean_field_guide_starts_at_the_fresh_network():
    post = train_svi(LIN, _regression(), SVIConfig(epochs=0), seed=4, guide=MeanFieldGuide(0.05),
                     likelihood="normal")
    for k, v in initial_values(LIN, 4).items():
        torch.testing.assert_close(post.params[site_to_param(k)], v)
        torch.testing.assert_close(post.scales[site_to_param(k)], torch.full_like(v, 0.05))


def test_custom_kernel_builder_is_used():
    calls = []

    def kernel(model, init):
        calls.append(sorted(init))
        return NUTSKernel(max_tree_depth=2, jit=False)(model, init)

    with pytest.warns(RuntimeWarning):
        post = train_hmc(LIN, _regression(), HMCConfig(warmup=2, samples=4, chains=2), kernel=kernel,
                         likelihood="normal")
    assert calls == [["net.1.bias", "net.1.weight"]] * 2 and post.params["1.weight"].shape == (2, 4, 1, D)


def test_bad_parts_are_rejected():
    with pytest.raises(ValueError, match="must have batch shape \\(\\) and event shape \\(1, 3\\)"):
        BayesianNetwork(LIN, prior=lambda name, p: dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="prior must be callable"):
        BayesianNetwork(LIN, prior=1.0)
    with pytest.raises(ValueError, match="no prior scale for parameter '3.weight'"):
        BayesianNetwork(FC, prior=LayerwiseNormalPrior({"1": 1.0}))
    with pytest.raises(ValueError, match="prior scale of '1' must be positive, got 0"):
        LayerwiseNormalPrior({"1": 0})
    with pytest.raises(ValueError, match="noise_scale must be positive, got 0"):
        Gaussian(noise_scale=0)
    with pytest.raises(ValueError, match="dataset_size must be positive or None, got 0"):
        Categorical(dataset_size=0)
    with pytest.raises(ValueError, match="give either prior_scale \\(2.0\\) or prior"):
        train_svi(LIN, _regression(), SVIConfig(), 2.0, prior=NormalPrior(1.0))
    with pytest.raises(ValueError, match="noise_scale is for likelihood='normal'"):
        train_svi(LIN, _regression(), SVIConfig(), likelihood=Gaussian(noise_scale=0.5), noise_scale=0.5)
    with pytest.raises(ValueError, match="need max_tree_depth > 0 and 0 < target_accept < 1"):
        NUTSKernel(target_accept=1.5)
    with pytest.raises(ValueError, match="init_scale must be positive"):
        MeanFieldGuide(0.0)
