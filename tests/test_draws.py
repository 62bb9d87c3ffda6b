"""One path for posterior draws: the predictive, explanations and (chain, sample) identity all go through a
DrawSet; the ArviZ export of a posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from bayesrobust import store
from bayesrobust.adversarial import FGSM, run_attack
from bayesrobust.data import Data
from bayesrobust.explain import LRP, explain_attack, explain_posterior
from bayesrobust.models.architectures import ArchConfig, build
from bayesrobust.models.draws import DrawSet, SeparableMaxPool, draw_probabilities, output_pass, predictive_accuracy
from bayesrobust.models.posterior import Posterior, to_arviz

FC = ArchConfig("fc2", hidden=6, in_shape=(1, 5, 5), n_classes=3)
CONV = ArchConfig("conv", hidden=4, in_shape=(1, 18, 18), n_classes=3)

pytestmark = pytest.mark.threads(1)


def _params(arch: ArchConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in build(arch).named_parameters()}


def svi(arch: ArchConfig = FC, scale: float = 0.3) -> Posterior:
    params = _params(arch)
    return Posterior(arch, "svi", params, {k: torch.full_like(v, scale) for k, v in params.items()}, seed=5)


def hmc(arch: ArchConfig = FC, chains: int = 2, samples: int = 3) -> Posterior:
    """A hand-built HMC posterior: sample (c, s) is the initial weights plus noise."""
    g = torch.Generator().manual_seed(1)
    params = {k: v + 0.3 * torch.randn((chains, samples, *v.shape), generator=g)
              for k, v in _params(arch).items()}
    return Posterior(arch, "hmc", params, seed=2)


def data(arch: ArchConfig = FC, n: int = 12) -> Data:
    g = torch.Generator().manual_seed(3)
    x = torch.rand((n, *arch.in_shape), generator=g)
    y = torch.randint(0, arch.n_classes, (n,), generator=g)
    return Data(x, y, torch.arange(100, 100 + n), "random", "test")


# -- one predictive ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [FC, CONV], ids=["fc2", "conv"])
@pytest.mark.parametrize("make", [svi, hmc], ids=["svi", "hmc"])
def test_training_accuracy_is_the_attack_clean_accuracy(arch, make):
    post, d = make(arch), data(arch)
    acc = predictive_accuracy(post, d.x, d.y, 4, device="cpu")
    ds = run_attack(post, d, FGSM(epsilon=0.1), n_draws=4)
    assert isinstance(acc, float) and acc == ds.attrs["accuracy"]
    probs = draw_probabilities(post, d.x, n_draws=4)[0]
    naive = torch.stack([torch.softmax(post.network(j)(d.x), -1) for j in range(4)]).detach()
    torch.testing.assert_close(probs, naive, rtol=1e-5, atol=1e-6)
    assert acc == int((naive.mean(0).argmax(-1) == d.y).sum()) / len(d.y)
    np.testing.assert_array_equal(ds["probs"].values, probs.mean(0).numpy())


def test_lazy_draws_equal_materialised_draws():
    post, d = svi(CONV), data(CONV)
    kept, lazy = DrawSet(post, 3), DrawSet(post, 3, max_bytes=0)
    assert not kept.lazy and lazy.lazy and lazy._params is None
    a, b = draw_probabilities(kept, d.x)[0], draw_probabilities(lazy, d.x)[0]
    assert torch.equal(a, b)


# -- forward-only passes (RISE, perturbation curves) ---------------------------------------------------------
@pytest.mark.parametrize("arch", [FC, CONV, ArchConfig("resnet20", in_shape=(3, 8, 8), n_classes=3)],
                         ids=["fc2", "conv", "resnet20"])
def test_output_pass_is_the_network_bit_for_bit(arch):
    """Reordered, re-pooled and in the net's memory format, the output must equal the module's own, exactly;
    in a DrawSet's (channels_last) net too, for the loaded draw."""
    x = data(arch, 40).x * 4 - 2                     # negative pixels too: the activations' negative side
    if arch.name != "resnet20":                      # (a posterior of it would need its BatchNorm buffers)
        draws = DrawSet(svi(arch), 2)
        for _ in draws:
            with torch.no_grad():
                assert torch.equal(output_pass(draws.net)(x), draws.net(x))
    net = build(arch).eval()
    with torch.no_grad():
        assert torch.equal(output_pass(net)(x), net(x))


def test_output_pass_keeps_the_modules_a_hook_reads():
    """An activation in ``keep`` stays before its pool, so a hook on it sees the pre-pool map, as in the net."""
    net = svi(CONV).network(0).requires_grad_(False)
    x = data(CONV, 6).x
    seen = []
    handle = net[1].register_forward_hook(lambda _m, _i, out: seen.append(out.clone()))
    with torch.no_grad():
        expected = net(x)
        got = output_pass(net, keep=[net[1]])(x)
    handle.remove()
    assert torch.equal(got, expected)
    assert seen[0].shape == seen[1].shape == (6, 16, 14, 14) and torch.equal(seen[0], seen[1])


@pytest.mark.parametrize("kernel,stride", [(2, 2), (2, 1), (3, 2), ((2, 3), (1, 2)), (3, None)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_separable_max_pool_equals_max_pool2d(kernel, stride, layout):
    """Against PyTorch's max_pool2d on maps with ties (integer values) and odd sizes, in both memory formats."""
    g = torch.Generator().manual_seed(0)
    z = torch.randint(-3, 4, (5, 4, 11, 9), generator=g).double()
    if layout == "channels_last":
        z = z.contiguous(memory_format=torch.channels_last)
    pool = nn.MaxPool2d(kernel, stride)
    assert SeparableMaxPool.fits(pool)
    assert torch.equal(SeparableMaxPool(pool)(z), pool(z))


def test_separable_max_pool_refuses_what_it_does_not_compute():
    for pool in (nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2, dilation=2),
                 nn.MaxPool2d(2, return_indices=True), nn.AvgPool2d(2)):
        assert not SeparableMaxPool.fits(pool)
    net = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2, padding=1))   # left as it is: same output
    x = torch.randn(3, 2, 7, 7)
    assert torch.equal(output_pass(net)(x), net(x))


# -- explanations through a DrawSet --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [FC, CONV], ids=["fc2", "conv"])
def test_explain_posterior_equals_a_naive_per_draw_loop(arch):
    post, x = hmc(arch), data(arch, 4).x.double()
    post = Posterior(arch, "hmc", {k: v.double() for k, v in post.params.items()}, seed=post.seed)
    lrp = LRP("epsilon")
    out = explain_posterior(post, x, lrp, n_draws=5)
    maps, units = [], []
    for j in range(5):
        net = post.network(j).double()
        with lrp.attached(net), lrp.draw(net):
            m, u = lrp(net, x, list(range(len(net.layers))))
        maps.append(m)
        units.append(u)
    maps = torch.stack(maps)
    torch.testing.assert_close(out.mean, maps.mean(0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.std, maps.std(0, unbiased=False), rtol=1e-8, atol=1e-10)
    assert torch.equal(out.units, torch.stack(units))


# -- (chain, sample) identity --------------------------------------------------------------------------------
def test_draws_know_their_chain_and_sample():
    post = hmc()
    chain, sample = post.draw_coords(range(6))
    assert sorted(zip(chain.tolist(), sample.tolist())) == [(c, s) for c in range(2) for s in range(3)]
    for j in range(6):  # draw j is params[chain[j], sample[j]]
        for k, v in post.draw_params(j).items():
            assert torch.equal(v, post.params[k][chain[j], sample[j]])
    draws = DrawSet(post, 4)
    assert draws.chains == tuple(chain[:4]) and draws.samples == tuple(sample[:4])
    c, s = svi().draw_coords([0, 1, 2])
    assert c.tolist() == [-1, -1, -1] and s.tolist() == [0, 1, 2]
    with pytest.raises(IndexError, match=r"draw indices \[6\] out of range: this hmc posterior has 6 draw\(s\)"):
        post.draw_coords([6])


def test_every_draw_dataset_has_chain_and_sample(tmp_path):
    post, d = hmc(), data(n=4)
    attack = run_attack(post, d, FGSM(epsilon=0.1), n_draws=5)
    chain, sample = post.draw_coords(range(5))
    for ds in (attack, explain_attack(post, attack, [LRP("epsilon")], draws_path=tmp_path / "d.zarr")):
        assert ds["chain"].dims == ("draw",) and ds["sample"].dims == ("draw",)
        np.testing.assert_array_equal(ds["chain"].values, chain)
        np.testing.assert_array_equal(ds["sample"].values, sample)
    with xr.open_zarr(tmp_path / "d.zarr") as kept:
        assert kept["relevance_draws"].dims[3] == "draw"
        np.testing.assert_array_equal(kept["chain"].values, chain)
        np.testing.assert_array_equal(kept["sample"].values, sample)
    assert attack.attrs["inference"] == "hmc"
    with pytest.raises(ValueError, match="no coordinate 'chain'"):
        store.validate(attack.drop_vars(["chain"]))


# -- ArviZ -----------------------------------------------------------------------------------------------------
def split_rhat(a: np.ndarray) -> float:
    """Split R-hat (Gelman et al., BDA3, 11.4) of a (chain, draw) array, written out."""
    half = a.shape[1] // 2
    parts = np.concatenate([a[:, :half], a[:, a.shape[1] - half:]])
    n = parts.shape[1]
    between = n * parts.mean(1).var(ddof=1)
    within = parts.var(1, ddof=1).mean()
    return float(np.sqrt(((n - 1) / n * within + between / n) / within))


def test_to_arviz_of_an_hmc_posterior():
    from arviz_stats import rhat

    post, d = hmc(samples=8), data(n=5)
    tree = to_arviz(post, d.x, d.y)
    assert tree["posterior"]["1.weight"].dims[:2] == ("chain", "draw")
    assert tree["posterior"].sizes["chain"] == 2 and tree["posterior"].sizes["draw"] == 8
    torch.testing.assert_close(torch.from_numpy(tree["posterior"]["1.weight"].values), post.params["1.weight"])
    loglik = tree["log_likelihood"]["y"]
    assert loglik.dims == ("chain", "draw", "obs")
    for j in (0, 7, 15):  # each draw's log p(y|x) sits at its (chain, sample)
        c, s = (int(v[0]) for v in post.draw_coords([j]))
        expected = torch.log_softmax(post.network(j)(d.x), -1).gather(1, d.y[:, None])[:, 0].detach()
        np.testing.assert_allclose(loglik.values[c, s], expected.numpy(), rtol=1e-5, atol=1e-6)
    ours = rhat(tree, group="log_likelihood", method="split")["y"].values
    by_hand = [split_rhat(loglik.values[..., i]) for i in range(5)]
    np.testing.assert_allclose(ours, by_hand, rtol=1e-10)
    assert tree["predictions"]["probs"].dims == ("chain", "draw", "obs", "class")
    assert tree.attrs["inference"] == "hmc"


def test_to_arviz_of_an_svi_posterior():
    tree = to_arviz(svi(), n_draws=4)
    assert tree["posterior"].sizes["chain"] == 1 and tree["posterior"].sizes["draw"] == 4
    assert "log_likelihood" not in tree.children
    with pytest.raises(ValueError, match="exports all 6 HMC samples"):
        to_arviz(hmc(), n_draws=2)
