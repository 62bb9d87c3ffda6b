"""The fused three-rule LRP engine (bayesrobust.explain.fused) against the naive definitions, Zennit's hooks
and the per-rule explanation path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import xarray as xr
from test_explain import CONV, FC, RESNET, fake_attack, images, naive_lrp, svi_posterior, tiny_net
from torch import nn
from zennit.rules import Gamma, ZPlus

from bayesrobust.explain import LRP, CaptumMethod, explain_attack, make_explainers
from bayesrobust.explain.fused import FUSED_RULES, FusedLRP, explain_each, fuse, sequential_network
from bayesrobust.models.architectures import ArchConfig, Network, Normalize
from bayesrobust.models.draws import DrawSet

pytestmark = pytest.mark.threads(1)

ALL = list(FUSED_RULES)


def fused_maps(net: nn.Module, x: torch.Tensor, layers: list[int], rules=ALL, **kwargs) -> tuple:
    fused = FusedLRP([LRP(rule, **kwargs) for rule in rules])
    with fused.attached(net), fused.draw(net):
        return fused(net, x, layers)


def hook_maps(net: nn.Module, x: torch.Tensor, layers: list[int], rule, **kwargs) -> tuple:
    lrp = LRP(rule, **kwargs)
    with lrp.attached(net), lrp.draw(net):
        return lrp(net, x, layers)


def strided_net(dtype=torch.float64) -> Network:
    """Normalize (inputs of both signs) → strided, padded conv (the dense first step and the transposed
    convolution with output padding) → LeakyReLU → overlapping max pool → Linear."""
    torch.manual_seed(4)
    net = Network(Normalize((0.5,), (0.25,)), nn.Conv2d(1, 6, 3, stride=2, padding=1), nn.LeakyReLU(0.01),
                  nn.MaxPool2d(2, stride=1), nn.Flatten(), nn.Linear(6 * 4 * 4, 3),
                  layers=[("1", "2"), ("5", "5")], arch=ArchConfig("custom", 6, (1, 10, 10), 3))
    with torch.no_grad():
        net[1].bias.copy_(torch.linspace(-0.3, 0.3, 6))
    return net.to(dtype).eval()


@pytest.mark.parametrize("arch", [FC, CONV], ids=["fc2", "conv"])
def test_fused_maps_are_the_definitions(arch):
    """Every rule and layer of the fused pass against LRP written from the definitions (NumPy, float64)."""
    net, x = tiny_net(arch), images(arch, 3)
    layers = list(range(len(net.layers)))
    maps, _ = fused_maps(net, x, layers)
    for r, rule in enumerate(ALL):
        for k, layer in enumerate(layers):
            for i in range(x.shape[0]):
                expected = naive_lrp(net, x[i].numpy(), layer, rule)
                np.testing.assert_allclose(maps[r, k, i].numpy(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("initial", ["one_hot", "value"])
@pytest.mark.parametrize("arch", [FC, CONV, "strided"], ids=["fc2", "conv", "strided"])
def test_fused_maps_equal_the_hook_path(arch, initial):
    """Same maps and units as LRP(rule) through Zennit hooks, every rule subset order, both seeds."""
    net = strided_net() if arch == "strided" else tiny_net(arch)
    x = images(net.arch, 4)
    layers = list(range(len(net.layers)))
    for rules in (ALL, ["alpha1beta0", "epsilon"], ["gamma", "alpha1beta0"]):
        maps, units = fused_maps(net, x, layers, rules, initial=initial)
        assert maps.shape == (len(rules), len(layers), *x.shape)
        for r, rule in enumerate(rules):
            expected, expected_units = hook_maps(net, x, layers, rule, initial=initial)
            torch.testing.assert_close(maps[r], expected, rtol=1e-10, atol=1e-13)
            assert torch.equal(units, expected_units)
            assert expected.abs().sum() > 0


def test_fused_rule_parameters_are_used():
    net, x = tiny_net(CONV), images(CONV, 2)
    params = {"epsilon": {"epsilon": 0.3}, "gamma": {"gamma": 0.7, "stabilizer": 1e-4}, "alpha1beta0": {}}
    fused = FusedLRP([LRP(rule, **params[rule]) for rule in ALL])
    with fused.attached(net), fused.draw(net):
        maps, _ = fused(net, x, [0, 1, 2])
    for r, rule in enumerate(ALL):
        torch.testing.assert_close(maps[r], hook_maps(net, x, [0, 1, 2], rule, **params[rule])[0],
                                   rtol=1e-10, atol=1e-13)


def test_fused_float32_is_accurate_where_an_output_has_no_positive_part():
    """As for the hook rules (test_explain): an output whose terms a⁺w⁺ + a⁻w⁻ all vanish has the
    stabiliser as its z⁺ denominator; in float32 the fused maps must match Zennit's rules in float64."""
    torch.manual_seed(0)
    net = Network(Normalize((0.6,), (0.3,)), nn.Flatten(), nn.Linear(12, 5), nn.LeakyReLU(0.01), nn.Linear(5, 3),
                  layers=[("2", "3"), ("4", "4")], arch=ArchConfig("custom", 5, (1, 3, 4), 3)).double().eval()
    with torch.no_grad():
        net[2].weight[0] = net[2].weight[0].abs() + 0.1      # output 0: positive weights on ...
        net[2].weight[0, :3] = -net[2].weight[0, :3].abs()   # ... inputs 3.. and negative ones on inputs 0..2
        net[2].bias.fill_(-0.2)
        net[4].weight.abs_()
    x = torch.rand(6, 1, 3, 4, dtype=torch.float64) * 0.5     # after Normalize: mostly negative
    x.view(6, -1)[:, :3] = 0.9                                # inputs 0..2 positive
    truth = {}
    for rule, zennit_rule in (("epsilon", None), ("gamma", Gamma(gamma=0.1, stabilizer=1e-6)),
                              ("alpha1beta0", ZPlus(stabilizer=1e-6))):
        truth[rule] = hook_maps(net, x, [0, 1], zennit_rule or rule)[0]
    maps, _ = fused_maps(copy.deepcopy(net).float(), x.float(), [0, 1])
    for r, rule in enumerate(ALL):
        scale = truth[rule].abs().amax(dim=(-3, -2, -1), keepdim=True)
        assert ((maps[r].double() - truth[rule]).abs() <= 1e-4 * scale + 1e-12).all(), rule


def test_fuse_groups_only_the_fusable_rules():
    conv, resnet = tiny_net(CONV), tiny_net(RESNET)
    eps, gam, zp = LRP("epsilon"), LRP("gamma"), LRP("alpha1beta0")
    quad, comp, sal = LRP("gamma_quadratic"), LRP(composite="epsilon_plus"), CaptumMethod("saliency")
    groups = fuse([quad, eps, sal, gam, comp, zp], conv)
    assert [positions for _, positions in groups] == [[0], [1, 3, 5], [2], [4]]
    assert isinstance(groups[1][0], FusedLRP) and groups[1][0].rules == ALL
    assert [g for g, _ in groups if not isinstance(g, FusedLRP)] == [quad, sal, comp]
    assert [p for _, p in fuse([eps, LRP("gamma", initial="value"), zp], conv)] == [[0, 2], [1]]
    assert [p for _, p in fuse([eps], conv)] == [[0]] and fuse([eps], conv)[0][0] is eps
    assert not sequential_network(resnet)
    assert [p for _, p in fuse([eps, gam, zp], resnet)] == [[0], [1], [2]]
    assert sequential_network(conv) and sequential_network(tiny_net(FC)) and sequential_network(strided_net())


def test_fused_lrp_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="FusedLRP takes LRP rules among epsilon, gamma, alpha1beta0"):
        FusedLRP([LRP("epsilon"), LRP("gamma_quadratic")])
    with pytest.raises(ValueError, match="rule twice"):
        FusedLRP([LRP("epsilon"), LRP("epsilon", epsilon=0.2)])
    with pytest.raises(ValueError, match="one initial relevance"):
        FusedLRP([LRP("epsilon"), LRP("gamma", initial="value")])
    fused = FusedLRP([LRP("epsilon"), LRP("gamma")])
    with pytest.raises(ValueError, match="sequential Network"):
        with fused.attached(tiny_net(RESNET)):
            pass
    net = tiny_net(CONV)
    with pytest.raises(RuntimeError, match="inside `with fused.draw"):
        fused(net, images(CONV, 1), [0])


def test_explanations_with_fused_rules_equal_one_rule_at_a_time(tmp_path):
    """explain_attack with three fusable rules (one fused pass, per-draw maps streamed to zarr) equals
    explain_attack run with each rule alone (the hook path), summaries, units and every draw's maps."""
    net = tiny_net(CONV, dtype=torch.float32)
    post, attack = svi_posterior(net, 0.1), fake_attack(CONV)
    steps: list[int] = []
    together = explain_attack(post, attack, make_explainers("lrp", ALL), layers="all",
                              draws_path=tmp_path / "all_draws.zarr", progress=steps.append)
    assert steps == [1] * (3 * 3)
    draws = xr.open_zarr(tmp_path / "all_draws.zarr")["relevance_draws"].load()
    for rule in ALL:
        alone = explain_attack(post, attack, make_explainers("lrp", [rule]), layers="all",
                               draws_path=tmp_path / f"{rule}_draws.zarr")
        for name in ("relevance", "relevance_std", "relevance_sign_agreement"):
            np.testing.assert_allclose(together[name].sel(rule=rule).values, alone[name].sel(rule=rule).values,
                                       rtol=1e-4, atol=1e-6, err_msg=f"{rule} {name}")
        np.testing.assert_array_equal(together["unit"].values, alone["unit"].values)
        alone_draws = xr.open_zarr(tmp_path / f"{rule}_draws.zarr")["relevance_draws"].sel(rule=rule).values
        np.testing.assert_allclose(draws.sel(rule=rule).values, alone_draws, rtol=1e-4, atol=1e-6)


def test_explain_each_returns_one_result_and_reducer_per_explainer():
    net = tiny_net(CONV)
    post = svi_posterior(net, 0.1)
    x = images(CONV, 3)
    draws = DrawSet(post, 4, dtype=torch.float64)
    explainers = [LRP("epsilon"), CaptumMethod("saliency"), LRP("alpha1beta0")]
    seen: list[tuple[int, int]] = []
    results = explain_each(draws, x, explainers, layers=[0, 2], on_draw=lambda r, j, m, u: seen.append((r, j)))
    assert sorted(seen) == [(r, j) for r in range(3) for j in range(4)]
    for explainer, (result, reducer) in zip(explainers, results):
        alone = explain_each(DrawSet(post, 4, dtype=torch.float64), x, [explainer], layers=[0, 2])[0][0]
        torch.testing.assert_close(result.mean, alone.mean)
        torch.testing.assert_close(result.std, alone.std)
        assert result.mean.shape == (2, *x.shape) and reducer.count == 4
        torch.testing.assert_close(reducer.result()[0], result.mean)
