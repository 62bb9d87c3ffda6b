"""Faithfulness and sanity checks (docs/method.md §10) against answers known by construction, and RISE.

- insertion/deletion on a two-class linear model that looks at one pixel block: the true ordering gives the
  extreme AUCs, computed by hand; random orderings give the expectation over a hypergeometric count;
- RISE on a linear model ranks regions like weight × input;
- cascading randomisation of a trained net drops the gradient's rank correlation towards zero, while a map
  that ignores the weights (the input itself) keeps it at one;
- localisation on synthetic images whose foreground is known.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from bayesrobust import faithfulness_metrics as fa
from bayesrobust.explain.rise import RISE, rise_masks
from bayesrobust.models.architectures import ArchConfig, build
from bayesrobust.models.draws import DrawSet

H = W = 28
D = H * W
BLOCK = (slice(4, 12), slice(10, 18))   # 64 relevant pixels
N_BLOCK = 64
A, B = 0.5, -16.0                      # logit of class 1 = A * (sum of the block) + B, class 0 = 0


def block_model() -> torch.nn.Module:
    """Linear 2-class model: p(class 1) = sigmoid(A·Σ_block x + B)."""
    net = build(ArchConfig("linear", 1, (1, H, W), 2)).double().eval().requires_grad_(False)
    w = torch.zeros(1, H, W, dtype=torch.float64)
    w[0, BLOCK[0], BLOCK[1]] = A
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[1] = w.flatten()
        net[1].bias.copy_(torch.tensor([0.0, B]))
    return net


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_deletion_and_insertion_on_a_known_model():
    net = block_model()
    steps = 49  # 16 pixels a step
    x = torch.ones(200, 1, H, W, dtype=torch.float64)
    target = torch.ones(200, dtype=torch.int64)
    truth = torch.zeros(1, H, W, dtype=torch.float64)
    truth[0, BLOCK[0], BLOCK[1]] = 1
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(200, 1, H, W, generator=g, dtype=torch.float64)   # random orderings...
    maps[0] = truth + 1e-3 * maps[0]                                     # ...but image 0: the true one
    maps[1] = -maps[0]                                                   # image 1: the worst one
    bases = {c: torch.zeros_like(x) for c in fa.CURVES}
    curves = fa.perturbation_curves(net, x, maps, target, steps=steps, baselines=bases, forward_batch=700)
    aucs = {c: fa.auc(v, steps).numpy() for c, v in curves.items()}
    removed = np.round(np.arange(steps + 1) / steps * D).astype(int)
    frac = np.arange(steps + 1) / steps
    # true ordering: the block goes first; reverse: it goes last
    best_del = sigmoid(A * np.clip(N_BLOCK - removed, 0, None) + B)
    worst_del = sigmoid(A * np.clip(N_BLOCK - np.clip(removed - (D - N_BLOCK), 0, None), 0, None) + B)
    np.testing.assert_allclose(curves["deletion"][0].numpy(), best_del, atol=1e-12)
    np.testing.assert_allclose(curves["deletion"][1].numpy(), worst_del, atol=1e-12)
    np.testing.assert_allclose(curves["insertion"][0].numpy(), sigmoid(A * np.minimum(removed, N_BLOCK) + B),
                               atol=1e-12)
    assert aucs["deletion"][0] == aucs["deletion"].min() and aucs["deletion"][1] == aucs["deletion"].max()
    assert aucs["insertion"][0] == aucs["insertion"].max() and aucs["insertion"][1] == aucs["insertion"].min()
    # random orderings: the block pixels removed after k steps are hypergeometric
    expected = np.array([stats.hypergeom(D, N_BLOCK, r).expect(lambda h: sigmoid(A * (N_BLOCK - h) + B))
                         for r in removed])
    mean_auc = aucs["deletion"][2:].mean()
    se = aucs["deletion"][2:].std() / math.sqrt(198)
    assert abs(mean_auc - np.trapezoid(expected, frac)) < 4 * se + 1e-6
    np.testing.assert_allclose(curves["deletion"][2:].numpy().mean(0), expected, atol=0.03)


def test_first_pixels_counts_and_blur_baseline():
    rel = torch.tensor([[0.1, 0.9, 0.5, 0.5]])
    first = fa.first_pixels(rel, 4)
    assert first.sum(-1).tolist() == [[0, 1, 2, 3, 4]]
    assert first[0, 2].tolist() == [False, True, True, False]      # tie 0.5/0.5: the earlier pixel first
    x = torch.rand(3, 1, H, W, dtype=torch.float64)
    blur = fa.baseline_images(x, "blur")
    assert blur.shape == x.shape and blur.std() < x.std()
    np.testing.assert_allclose(blur.mean().item(), x.mean().item(), atol=0.02)
    with pytest.raises(ValueError, match="unknown baseline 'grey'"):
        fa.baseline_images(x, "grey")


def test_rise_on_a_linear_model_ranks_like_weight_times_input():
    torch.manual_seed(0)
    net = build(ArchConfig("linear", 1, (1, H, W), 2)).double().eval().requires_grad_(False)

    def blocks(t):  # 7-pixel blocks, so that RISE's smooth masks can resolve them
        return F.interpolate(t, size=(H, W), mode="nearest")
    x = blocks(torch.rand(8, 1, 4, 4, dtype=torch.float64))
    with torch.no_grad():
        net[1].weight.copy_(blocks(torch.randn(2, 1, 4, 4, dtype=torch.float64)).reshape(2, -1))
        net[1].bias.zero_()
    maps, units = RISE(n_masks=2000, cells=14, score="output")(net, x, [0])
    wx = net[1].weight[units[0]].reshape(8, 1, H, W) * x
    pooled_map = F.avg_pool2d(maps[0], 7).reshape(8, -1)
    pooled_wx = F.avg_pool2d(wx, 7).reshape(8, -1)
    rho = [stats.spearmanr(a, b).statistic for a, b in zip(pooled_map, pooled_wx)]
    assert np.mean(rho) > 0.9 and min(rho) > 0.8, rho
    # the expectation identity: with p = 1 every mask is all ones and the map is f(x) everywhere
    full, _ = RISE(n_masks=3, p=1.0, score="output")(net, x, [0])
    np.testing.assert_allclose(full[0, :, 0], net(x).gather(1, units[0][:, None])[:, :, None].expand(-1, H, W),
                               rtol=1e-12)


def test_rise_masks_are_fixed_by_the_seed_and_checked():
    a, b = rise_masks(50, H, W, seed=3), rise_masks(50, H, W, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, rise_masks(50, H, W, seed=4))
    assert a.min() >= 0 and a.max() <= 1 and abs(a.mean().item() - 0.5) < 0.1
    with pytest.raises(ValueError, match="keep-probability"):
        RISE(p=0)
    with pytest.raises(ValueError, match="no parameter"):
        RISE(masks=3)


class Gradient:
    """Plain gradient of the explained unit (saliency without abs) as an Explainer."""

    name = "gradient"

    def config(self):
        return {"method": "gradient"}

    def attached(self, net):
        from contextlib import nullcontext
        return nullcontext(net)

    draw = attached

    def __call__(self, net, x, layers):
        from bayesrobust.explain.lrp import layer_relevance
        return layer_relevance(net, x, layers)


class Input(Gradient):
    """A 'map' that ignores the weights: the image itself."""

    name = "input"

    def __call__(self, net, x, layers):
        return x[None].clone(), torch.zeros((1, x.shape[0]), dtype=torch.int64)


def test_randomisation_sanity_check(mnist5k_train):
    import dataclasses

    from bayesrobust.inference.deterministic import train_network
    from bayesrobust.presets import OptimConfig
    d = mnist5k_train
    part = dataclasses.replace(d, x=d.x[:1500], y=d.y[:1500], index=d.index[:1500])
    net, _ = train_network(ArchConfig("fc2", 32, (1, H, W), 10), part, OptimConfig(epochs=3, batch_size=50))
    draws = DrawSet.from_module(net.double().eval().requires_grad_(False))
    x = mnist5k_train.x[2000:2040].double()
    trained = Gradient()(draws.net, x, [2])[0][0]
    for explainer, low, high in ((Gradient(), -0.3, 0.3), (Input(), 1.0, 1.0)):
        maps = explainer(draws.net, x, [2])[0][0][None]
        randomised, names = fa.cascading_randomisation(draws, x, explainer, maps)
        rho = fa.rank_correlation(maps[:, None], randomised)       # (1, 3 layers, images)
        assert names == ["5", "3", "1"]
        fully = np.nanmedian(rho[0, -1])
        assert low - 1e-9 <= fully <= high + 1e-9, (explainer.name, rho[0].mean(-1))
    # the network got its trained weights back
    assert torch.equal(Gradient()(draws.net, x, [2])[0][0], trained)


def test_localisation_on_synthetic_images():
    x = torch.zeros(3, 1, H, W)
    x[:, 0, 5:15, 5:15] = 0.9                       # the object: a 10 x 10 square
    fg = fa.foreground(x)
    assert fg.sum(-1).tolist() == [100, 100, 100]
    maps = torch.zeros(3, 1, H, W)
    maps[0, 0, 5:15, 5:15] = 1.0                    # all on the object
    maps[1, 0, 20:25, 20:25] = 1.0                  # all off it
    maps[1, 0, 6, 6] = -5.0                         # negative relevance does not count
    maps[2, 0, 5:15, 5:15] = 1.0                    # 100 on, 100 off, the peak off
    maps[2, 0, 18:28, 18:28] = 1.0
    maps[2, 0, 25, 25] = 3.0                    # off: 99 + 3
    share = fa.relevance_share(maps, fg)
    np.testing.assert_allclose(share.numpy(), [1.0, 0.0, 100 / 202], rtol=1e-12)
    assert fa.pointing_game(maps, fg).tolist() == [True, False, False]
    assert torch.isnan(fa.relevance_share(-maps[:1], fg)).all()


def random_posterior(arch: str, hidden: int):
    from bayesrobust.models.posterior import Posterior
    torch.manual_seed(0)
    net = build(ArchConfig(arch, hidden))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    return Posterior(net.arch, "svi", params, {k: torch.full_like(v, 0.05) for k, v in params.items()}, seed=1)


@pytest.mark.parametrize("forward_batch", [70, 3], ids=["masks_per_pass", "images_per_pass"])
@pytest.mark.parametrize("arch", ["fc2", "conv"])
def test_rise_per_draw_sees_the_same_masks(arch, forward_batch):
    """Each draw's RISE maps and units through explain_posterior (images and masks batched; passes of several
    masks for all images, or of a chunk of images) must be those of RISE on that draw's own network, one image
    at a time."""
    from bayesrobust.explain import explain_posterior
    posterior = random_posterior(arch, 8)
    x = torch.rand(5, 1, H, W)
    seen, seen_units = {}, {}

    def keep(j, maps, units):
        seen[j], seen_units[j] = maps.clone(), units.clone()
    rise = RISE(n_masks=60, forward_batch=forward_batch)
    result = explain_posterior(posterior, x, rise, n_draws=3, on_draw=keep)
    assert rise.forwards == 3 * 60 * len(x)
    for j in range(3):  # each draw's map is RISE on that draw's network, with the masks of a fresh RISE
        net = posterior.network(j).requires_grad_(False)
        for i in range(len(x)):  # the naive loop: one image at a time
            direct, units = RISE(n_masks=60, forward_batch=7)(net, x[i:i + 1], [0, 1, 2])
            torch.testing.assert_close(seen[j][:, i:i + 1], direct, rtol=1e-5, atol=1e-7)
            assert torch.equal(seen_units[j][:, i:i + 1], units)
        assert torch.equal(result.units[j], seen_units[j])
    torch.testing.assert_close(result.mean, torch.stack(list(seen.values())).mean(0), rtol=1e-5, atol=1e-7)


def test_nine_methods_on_one_interface():
    from bayesrobust.faithfulness_report import ALL_METHODS, make_explainer
    assert len(ALL_METHODS) == 9
    posterior = random_posterior("conv", 4)
    draws = DrawSet(posterior, 2)
    x = torch.rand(3, 1, H, W)
    ds = fa.evaluate(draws, x, [make_explainer(m, 50) for m in ALL_METHODS], steps=4, randomisation_images=2)
    assert list(ds.rule.values) == list(ALL_METHODS)
    assert ds.deletion_auc.dims == ("rule", "map", "draw", "image") and ds.sizes["draw"] == 2
    assert np.isfinite(ds.deletion_auc).all() and np.isfinite(ds.insertion_auc).all()
    assert np.isfinite(ds.randomisation_rho.isel(image=slice(0, 2))).all()
    assert list(ds.randomised.values) == ["7", "3", "0"]
