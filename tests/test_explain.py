"""Layer-wise relevance per posterior draw (docs/method.md §5) and Captum attributions (docs/method.md §5.5).

The LRP rules are checked against a direct NumPy implementation of their formulas, written here from the
definitions on tiny float64 networks: every Linear/Conv layer is a dense matrix, the rules are those of
Bach et al. 2015 (ε), Montavon et al. 2019 / Zennit's generalised γ and z⁺ (α₁β₀). How Zennit treats the
other modules is spelled out in the reference too:

- the first layer gets the same rule as every other (no special first-layer rule);
- LeakyReLU passes relevance through unchanged (Zennit's ``Pass``; the paper's code multiplies by its
  gradient instead);
- MaxPool has no rule, so its gradient routes a window's relevance to the window's (first) maximum;
- Flatten is a reshape.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import COMPOSITES as ZENNIT_COMPOSITES
from zennit.rules import Epsilon, Gamma, Pass, ZPlus

from bayesrobust import store
from bayesrobust.explain import (
    LRP,
    CaptumMethod,
    DrawReducer,
    check_attack,
    explain_attack,
    explain_posterior,
    make_explainers,
    resolve_layers,
)
from bayesrobust.explain.rules import COMPOSITES
from bayesrobust.models.architectures import ArchConfig, Normalize, build
from bayesrobust.models.posterior import Posterior, deterministic

FC = ArchConfig("fc2", hidden=7, in_shape=(1, 6, 6), n_classes=4)
CONV = ArchConfig("conv", hidden=5, in_shape=(1, 18, 18), n_classes=4)
RESNET = ArchConfig("resnet20", hidden=16, in_shape=(3, 8, 8), n_classes=4)
RULES = ("epsilon", "gamma", "alpha1beta0", "gamma_quadratic")


pytestmark = pytest.mark.threads(1)  # tiny networks: one thread is faster


def tiny_net(arch: ArchConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    net = build(arch).to(dtype).eval()
    with torch.no_grad():  # biases of both signs and a visible size, so that the rules differ
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
    return net


def images(arch: ArchConfig, n: int = 4, seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *arch.in_shape), generator=g, dtype=torch.float64).to(dtype)


def svi_posterior(net: nn.Module, scale: float = 0.05, seed: int = 0) -> Posterior:
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    return Posterior(net.arch, "svi", params, {k: torch.full_like(v, scale) for k, v in params.items()},
                     buffers={k: v.detach().clone() for k, v in net.named_buffers()}, seed=seed)


def n_hooks(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in net.modules())


# -- the reference: LRP written from the definitions -------------------------------------------------------
def conv_matrix(w: np.ndarray, in_shape: tuple[int, int, int]) -> np.ndarray:
    """The valid, stride-1 convolution with kernels ``w`` (O, I, k, k) as a dense (O·Ho·Wo, I·H·W) matrix:
    output (o, i, j) = Σ_{c, di, dj} w[o, c, di, dj] · input(c, i + di, j + dj)."""
    c_in, h, wd = in_shape
    out, _, k, _ = w.shape
    ho, wo = h - k + 1, wd - k + 1
    m = np.zeros((out, ho, wo, c_in, h, wd))
    for i in range(ho):
        for j in range(wo):
            m[:, i, j, :, i:i + k, j:j + k] = w
    return m.reshape(out * ho * wo, c_in * h * wd)


def pool_routing(a: np.ndarray, shape: tuple[int, int, int], k: int, s: int) -> np.ndarray:
    """Max pooling of ``a`` (flat C·H·W) as a 0/1 matrix selecting each window's first maximum."""
    c, h, w = shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    a = a.reshape(c, h, w)
    p = np.zeros((c, ho, wo, c, h, w))
    for ch in range(c):
        for i in range(ho):
            for j in range(wo):
                window = a[ch, i * s:i * s + k, j * s:j * s + k]
                di, dj = np.unravel_index(np.argmax(window), window.shape)
                p[ch, i, j, ch, i * s + di, j * s + dj] = 1.0
    return p.reshape(c * ho * wo, c * h * w)


def dense_ops(net: nn.Module, in_shape: tuple[int, int, int]) -> list[tuple]:
    """The network as a list of ops on flat vectors: ('dense', W, b), ('act', slope), ('pool', shape, k, s),
    ('flatten',)."""
    ops, shape = [], in_shape
    for m in net.children():
        if isinstance(m, nn.Flatten):
            ops.append(("flatten",))
        elif isinstance(m, nn.Linear):
            ops.append(("dense", m.weight.detach().numpy(), m.bias.detach().numpy()))
        elif isinstance(m, nn.Conv2d):
            w = m.weight.detach().numpy()
            ho, wo = shape[1] - w.shape[2] + 1, shape[2] - w.shape[3] + 1
            ops.append(("dense", conv_matrix(w, shape), np.repeat(m.bias.detach().numpy(), ho * wo)))
            shape = (w.shape[0], ho, wo)
        elif isinstance(m, nn.LeakyReLU):
            ops.append(("act", m.negative_slope))
        elif isinstance(m, nn.MaxPool2d):
            ops.append(("pool", shape, m.kernel_size, m.stride))
            shape = (shape[0], (shape[1] - m.kernel_size) // m.stride + 1, (shape[2] - m.kernel_size) // m.stride + 1)
        else:
            raise TypeError(m)
    return ops


def stab(d: np.ndarray, eps: float) -> np.ndarray:
    """d + eps·sign(d) with sign(0) = +1."""
    return d + eps * np.where(d >= 0, 1.0, -1.0)


def rule_epsilon(a, w, b, r, eps=0.1):
    z = w @ a + b
    return a * (w.T @ (r / stab(z, eps)))


def rule_gamma(a, w, b, r, gamma=0.1, eps=1e-6):
    ap, an = np.maximum(a, 0), np.minimum(a, 0)
    wp, wn, bp, bn = np.maximum(w, 0), np.minimum(w, 0), np.maximum(b, 0), np.minimum(b, 0)
    z = w @ a + b
    up, down = w + gamma * wp, w + gamma * wn  # ρ(w) = w + γw⁺ (and its mirror for negative outputs)
    pos = (z > 0) * r / stab(up @ ap + down @ an + b + gamma * bp, eps)
    neg = (z < 0) * r / stab(down @ ap + up @ an + b + gamma * bn, eps)
    return ap * (up.T @ pos) + an * (down.T @ pos) + ap * (down.T @ neg) + an * (up.T @ neg)


def rule_zplus(a, w, b, r, eps=1e-6):
    ap, an = np.maximum(a, 0), np.minimum(a, 0)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    s = r / stab(wp @ ap + wn @ an + np.maximum(b, 0), eps)
    return ap * (wp.T @ s) + an * (wn.T @ s)


def rule_gamma_quadratic(a, w, b, r, gamma=0.1, eps=1e-6):
    """The reference code's rule: ρ(p) = p + γ·p·max(0, p) on weights and bias, one term for every input."""
    rw, rb = w + gamma * w * np.maximum(w, 0), b + gamma * b * np.maximum(b, 0)
    return a * (rw.T @ (r / stab(rw @ a + rb, eps)))


NAIVE = {"epsilon": rule_epsilon, "gamma": rule_gamma, "alpha1beta0": rule_zplus,
         "gamma_quadratic": rule_gamma_quadratic}


def naive_lrp(net: nn.Module, x: np.ndarray, layer: int, rule: str) -> np.ndarray:
    """Relevance at the pixels of one image for layer ``layer``, seeded one-hot at its output's argmax."""
    ops = dense_ops(net, net.arch.in_shape)
    acts = [x.reshape(-1)]
    for op in ops:
        a = acts[-1]
        if op[0] == "dense":
            acts.append(op[1] @ a + op[2])
        elif op[0] == "act":
            acts.append(np.where(a > 0, a, op[1] * a))
        elif op[0] == "pool":
            acts.append(pool_routing(a, *op[1:]) @ a)
        else:
            acts.append(a)
    last = int(net.layers[layer][1])  # output module = top-level index in fc2/conv
    r = np.zeros_like(acts[last + 1])
    r[np.argmax(acts[last + 1])] = 1.0
    for k in range(last, -1, -1):
        op, a = ops[k], acts[k]
        if op[0] == "dense":
            r = NAIVE[rule](a, op[1], op[2], r)
        elif op[0] == "pool":
            r = pool_routing(a, *op[1:]).T @ r
    return r.reshape(x.shape)


# -- LRP against the reference ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [FC, CONV], ids=["fc2", "conv"])
@pytest.mark.parametrize("rule", RULES)
def test_rule_equals_the_formula(arch, rule):
    net = tiny_net(arch)
    x = images(arch)
    lrp = LRP(rule)
    layers = list(range(len(net.layers)))
    with lrp.attached(net), lrp.draw(net):
        relevance, units = lrp(net, x, layers)
    assert relevance.shape == (len(layers), *x.shape)
    for layer in layers:
        for i in range(x.shape[0]):
            expected = naive_lrp(net, x[i].numpy(), layer, rule)
            np.testing.assert_allclose(relevance[layer, i].numpy(), expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("arch", [FC, CONV], ids=["fc2", "conv"])
def test_epsilon_to_zero_conserves_relevance_without_biases(arch):
    net = tiny_net(arch)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    x = images(arch)
    lrp = LRP("epsilon", epsilon=0.0, initial="value")
    layers = list(range(len(net.layers)))
    with lrp.attached(net):
        relevance, units = lrp(net, x, layers)
        outputs = {}
        hooks = [dict(net.named_modules())[out].register_forward_hook(
            lambda m, i, o, k=k: outputs.__setitem__(k, o.detach().reshape(len(x), -1)))
            for k, (_, out) in enumerate(net.layers)]
        net(x)
        for h in hooks:
            h.remove()
    for layer in layers:
        explained = outputs[layer].gather(1, units[layer][:, None])[:, 0]
        np.testing.assert_allclose(relevance[layer].sum(dim=(1, 2, 3)).numpy(), explained.numpy(), rtol=1e-9)


def test_epsilon_plus_on_a_fully_connected_net_is_the_epsilon_rule():
    """A composite picks rules by layer type: epsilon_plus gives every Linear Epsilon(1e-6)."""
    net, x = tiny_net(FC), images(FC)
    maps = []
    for lrp in (LRP(composite="epsilon_plus"), LRP("epsilon", epsilon=1e-6)):
        with lrp.attached(net):
            maps.append(lrp(net, x, [0, 1, 2])[0])
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("arch", [FC, CONV, RESNET], ids=["fc2", "conv", "resnet20"])
def test_our_epsilon_is_zennits_epsilon_rule(arch):
    """'epsilon' runs as gradient × input (GradientEpsilon, a zennit.core.Hook); it must equal
    zennit.rules.Epsilon on every layer. The version contract of requirements.txt (zennit>=0.5.1,<0.6): the
    hook uses Hook.active and Hook.tensor_handles, added in 0.5.1 (with 0.5.0 this test fails with an
    AttributeError); a Zennit release that changes the Hook internals again must pass this test first."""
    dtype = torch.float32 if arch is RESNET else torch.float64
    net, x = tiny_net(arch, dtype=dtype), images(arch, 3, dtype=dtype)
    layers = list(range(len(net.layers)))
    maps = []
    for lrp in (LRP("epsilon"), LRP(Epsilon(epsilon=0.1))):
        with lrp.attached(net), lrp.draw(net):
            maps.append(lrp(net, x, layers)[0])
    tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-13}
    torch.testing.assert_close(maps[0], maps[1], **tol)
    assert n_hooks(net) == 0


@pytest.mark.parametrize("rule, zennit_rule", [("gamma", Gamma(gamma=0.1, stabilizer=1e-6))], ids=["gamma"])
@pytest.mark.parametrize("arch", [FC, CONV, RESNET], ids=["fc2", "conv", "resnet20"])
def test_sign_split_rules_are_zennits_rules(arch, rule, zennit_rule):
    """'gamma' runs as GradientGamma (two weight products per pass, from 2a⁺w⁺ + 2a⁻w⁻ = a·w + |a|·|w|); it
    must equal Zennit's Gamma hook on every layer, with the negative activations of LeakyReLU and the
    BatchNorm merge of ResNet-20."""
    for dtype, tol in ((torch.float64, {"rtol": 1e-10, "atol": 1e-13}), (torch.float32, {"rtol": 1e-4, "atol": 1e-6})):
        net, x = tiny_net(arch, dtype=dtype), images(arch, 3, dtype=dtype)
        layers = list(range(len(net.layers)))
        maps = []
        for lrp in (LRP(rule), LRP(zennit_rule)):
            with lrp.attached(net), lrp.draw(net):
                maps.append(lrp(net, x, layers)[0])
        torch.testing.assert_close(maps[0], maps[1], **tol)
        assert maps[1].abs().sum() > 0
        assert n_hooks(net) == 0


@pytest.mark.parametrize("rule, zennit_rule", [("gamma", Gamma(gamma=0.3, stabilizer=1e-6))], ids=["gamma"])
def test_sign_split_rules_on_inputs_of_both_signs(rule, zennit_rule):
    """One Linear and one Conv layer fed inputs of both signs (both branches of each rule), biases of both
    signs and outputs of both signs: our hooks equal Zennit's relevance at the input."""
    torch.manual_seed(3)
    for layer, x in ((nn.Linear(12, 5), torch.randn(6, 12, dtype=torch.float64)),
                     (nn.Conv2d(3, 4, 3, padding=1, stride=2), torch.randn(2, 3, 7, 7, dtype=torch.float64))):
        layer = layer.to(torch.float64)
        with torch.no_grad():
            layer.bias.copy_(torch.linspace(-0.5, 0.5, layer.bias.numel()))
        seed = torch.randn_like(layer(x))
        grads = []
        for lrp in (LRP(rule, gamma=0.3) if rule == "gamma" else LRP(rule), LRP(zennit_rule)):
            wrapped = nn.Sequential(layer)
            with lrp.attached(wrapped):
                xg = x.clone().requires_grad_(True)
                grads.append(torch.autograd.grad(wrapped(xg), xg, seed)[0])
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
        assert (x < 0).any() and (layer(x) < 0).any() and (layer(x) > 0).any()


def zennit_reference(net: nn.Module, composite, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Zennit's own attributor on the prefix of a sequential ``net`` that ends at layer ``layer``'s explained
    output, seeded one-hot at that output's argmax (what our LRP does for every layer)."""
    prefix = nn.Sequential(*list(net.children())[:int(net.layers[layer][1]) + 1])
    with torch.no_grad():
        out = prefix(x).flatten(1)
    seed = torch.zeros_like(out).scatter_(1, out.argmax(1, keepdim=True), 1.0)
    with Gradient(prefix, composite) as attributor:
        _, relevance = attributor(x, seed.reshape(prefix(x).shape))
    return relevance


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("arch", [FC, CONV], ids=["fc2", "conv"])
def test_composite_equals_zennits_attributor(arch, composite):
    """Every registered composite, through our LRP class, equals zennit.attribution.Gradient with a composite
    built by Zennit itself (ZBox bounds: the pixel box [0, 1]), layer by layer."""
    net, x = tiny_net(arch), images(arch, 3)
    layers = list(range(len(net.layers)))
    lrp = LRP(composite=composite)
    with lrp.attached(net), lrp.draw(net):
        relevance, _ = lrp(net, x, layers)
    assert n_hooks(net) == 0
    box = {"low": torch.zeros_like(x), "high": torch.ones_like(x)} if composite == "epsilon_gamma_box" else {}
    for layer in layers:
        expected = zennit_reference(net, ZENNIT_COMPOSITES[composite](**box), x, layer)
        torch.testing.assert_close(relevance[layer], expected, rtol=1e-10, atol=1e-13)
    assert relevance.abs().sum() > 0


@pytest.mark.parametrize("composite", ["epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1_flat"])
def test_composite_equals_zennits_attributor_on_resnet(composite):
    """ResNet-20: the same with Zennit's BatchNorm-merging canonizer and its normalisation passing relevance
    through (our one addition to Zennit's layer maps, see explain/rules.py); the logits' relevance."""
    net, x = tiny_net(RESNET, dtype=torch.float32), images(RESNET, 2, dtype=torch.float32)
    last = len(net.layers) - 1
    lrp = LRP(composite=composite)
    with lrp.attached(net), lrp.draw(net):
        relevance, _ = lrp(net, x, [last])
    assert n_hooks(net) == 0
    kwargs = {"layer_map": [((Normalize,), Pass())], "canonizers": [SequentialMergeBatchNorm()]}
    if composite == "epsilon_gamma_box":
        kwargs.update(zip(("low", "high"), (net[0](torch.zeros_like(x)), net[0](torch.ones_like(x)))))
    expected = zennit_reference(net, ZENNIT_COMPOSITES[composite](**kwargs), x, last)
    torch.testing.assert_close(relevance[0], expected, rtol=1e-4, atol=1e-6)


# -- ResNet-20: canonizer and layer-wise shapes -------------------------------------------------------------
def test_batchnorm_merge_keeps_the_function_and_is_reverted():
    net, x = tiny_net(RESNET), images(RESNET, 3, dtype=torch.float32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        expected = net(x)
    lrp = LRP("epsilon")
    with lrp.attached(net), lrp.draw(net):
        bn = net[2]
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))  # merged: BN is the identity
        with torch.no_grad():
            torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)
    after = net.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("arch", [FC, CONV, RESNET], ids=["fc2", "conv", "resnet20"])
def test_every_layer_map_has_the_input_shape(arch):
    dtype = torch.float32 if arch is RESNET else torch.float64
    net, x = tiny_net(arch, dtype=dtype), images(arch, 3, dtype=dtype)
    post = svi_posterior(net)
    out = explain_posterior(post, x, LRP("epsilon"), n_draws=2, batch_size=2)
    n_layers = len(net.layers)
    assert n_layers == {"fc2": 3, "conv": 3, "resnet20": 20}[arch.name]
    for value in (out.mean, out.std, out.sign_agreement):
        assert value.shape == (n_layers, *x.shape)
        assert torch.isfinite(value).all()
    assert out.units.shape == (2, n_layers, 3)
    assert (out.mean.abs().sum(dim=(1, 2, 3, 4)) > 0).all()


# -- hooks never stay --------------------------------------------------------------------------------------
class Stop(Exception):
    pass


@pytest.mark.parametrize("arch", [CONV, RESNET], ids=["conv", "resnet20"])
def test_no_hook_or_canonizer_remains_even_after_an_exception(arch):
    dtype = torch.float32 if arch is RESNET else torch.float64
    net, x = tiny_net(arch, dtype=dtype), images(arch, 2, dtype=dtype)
    post = svi_posterior(net)
    explain_posterior(post, x, LRP("gamma"), n_draws=2, net=net)
    assert n_hooks(net) == 0

    def fail(j, maps, units):
        if j == 1:
            raise Stop(f"stopped at draw {j}")
    for explainer in (LRP("epsilon"), LRP(composite="epsilon_plus"), CaptumMethod("saliency")):
        with pytest.raises(Stop, match="^stopped at draw 1$"):
            explain_posterior(post, x, explainer, n_draws=3, net=net, on_draw=fail)
        assert n_hooks(net) == 0
        draw = {**post.draw_params(1), **post.buffers}  # the draw in place, not its BatchNorm-merged form
        state = net.state_dict()
        assert set(state) == set(draw) and all(torch.equal(state[k], draw[k].to(dtype)) for k in draw)
    lrp = LRP("epsilon")
    wrong_channels = {"conv": "expected input.* to have 1 channels, but got 2 channels",  # the first conv
                      "resnet20": r"size of tensor a \(6\) must match the size of tensor b \(3\) at non-singleton "
                                  r"dimension 1"}[arch.name]  # ResNet's Normalize: 3 channel means
    with pytest.raises(RuntimeError, match=wrong_channels):  # an error inside the hooked forward
        with lrp.attached(net), lrp.draw(net):
            lrp(net, torch.cat([x, x], dim=1), [0])
    assert n_hooks(net) == 0


def test_lrp_outside_its_context_is_an_error():
    net = tiny_net(FC)
    with pytest.raises(RuntimeError, match="inside `with lrp.attached"):
        LRP("epsilon")(net, images(FC), [0])


# -- per-draw consistency -------------------------------------------------------------------------------------
def collect(post, x, explainer, n, **kwargs):
    draws = {}
    result = explain_posterior(post, x, explainer, n_draws=n,
                               on_draw=lambda j, maps, units: draws.__setitem__(j, maps.clone()), **kwargs)
    return result, draws


@pytest.mark.parametrize("explainer", [LRP("alpha1beta0"), CaptumMethod("smoothgrad", nt_samples=3)],
                         ids=["lrp", "smoothgrad"])
def test_a_draw_gives_the_same_map_in_every_run(explainer):
    net, x = tiny_net(CONV), images(CONV)
    post = svi_posterior(net)
    _, first = collect(post, x, explainer, 3)
    _, second = collect(post, x, explainer, 2)
    assert not torch.equal(first[0], first[1])
    for j in (0, 1):
        assert torch.equal(first[j], second[j])


def test_one_draw_posterior_equals_the_deterministic_network():
    net, x = tiny_net(FC), images(FC)
    lrp = LRP("epsilon")
    with lrp.attached(net):
        direct, units = lrp(net, x, [0, 1, 2])
    out = explain_posterior(deterministic(net), x, lrp, n_draws=10)
    assert out.n_draws == 1
    assert torch.equal(out.mean, direct) and torch.equal(out.units[0], units)
    assert (out.std == 0).all() and (out.sign_agreement == 1).all()
    post = svi_posterior(net)
    one = explain_posterior(post, x, lrp, n_draws=1)
    draw0 = Posterior(post.arch, "deterministic", post.draw_params(0))
    assert torch.equal(one.mean, explain_posterior(draw0, x, lrp).mean)


def test_summaries_are_those_of_the_per_draw_maps():
    net, x = tiny_net(CONV), images(CONV, 5)
    result, draws = collect(svi_posterior(net, 0.2), x, LRP("epsilon"), 6, batch_size=2)
    stack = torch.stack([draws[j] for j in range(6)])
    torch.testing.assert_close(result.mean, stack.mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.std, stack.std(0, unbiased=False), rtol=1e-9, atol=1e-14)
    agreement = (torch.sign(stack) == torch.sign(stack.mean(0))).double().mean(0)
    torch.testing.assert_close(result.sign_agreement, agreement)
    assert (result.sign_agreement < 1).any()
    whole, _ = collect(svi_posterior(net, 0.2), x, LRP("epsilon"), 6)  # image chunking changes nothing
    torch.testing.assert_close(whole.mean, result.mean, rtol=1e-12, atol=1e-14)


def test_reducer_without_draws_is_an_error():
    with pytest.raises(ValueError, match="no draw was added"):
        DrawReducer().result()


# -- Captum methods --------------------------------------------------------------------------------------
def prefix_of(net: nn.Module, module: int, start: int = 0) -> nn.Sequential:
    """Modules ``start..module`` (top-level indices) of a sequential fc2/conv network."""
    return nn.Sequential(*list(net.children())[start:module + 1])


def output_index(net: nn.Module, layer: int) -> int:
    return int(net.layers[layer][1])


def hand_gradients(net: nn.Module, points: torch.Tensor, layer: int, units: torch.Tensor) -> torch.Tensor:
    """∂f_u/∂x at every point (one row per point), f the flattened explained output of ``layer``."""
    points = points.detach().clone().requires_grad_(True)
    out = prefix_of(net, output_index(net, layer))(points).flatten(1)
    out.gather(1, units[:, None]).sum().backward()
    return points.grad


def argmax_units(net: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    with torch.no_grad():
        return prefix_of(net, output_index(net, layer))(x).flatten(1).argmax(1)


def test_saliency_is_the_absolute_gradient_of_each_draw():
    """saliency = |∂f_c/∂x| with c the argmax unit of the explained output, for every layer and every draw."""
    net, x = tiny_net(CONV), images(CONV, 3)
    post = svi_posterior(net, 0.2)
    result, draws = collect(post, x, CaptumMethod("saliency"), 2)
    for j in (0, 1):
        draw = copy.deepcopy(net)
        draw.load_state_dict(post.draw_params(j))  # float64, as explain_posterior copies draws in
        for layer in range(len(net.layers)):
            expected = hand_gradients(draw, x, layer, argmax_units(draw, x, layer)).abs()
            torch.testing.assert_close(draws[j][layer], expected, rtol=1e-12, atol=1e-15)
    assert not torch.equal(draws[0], draws[1])
    torch.testing.assert_close(result.mean, (draws[0] + draws[1]) / 2, rtol=1e-12, atol=1e-15)


def test_smoothgrad_is_the_mean_gradient_at_the_same_noisy_inputs():
    """SmoothGrad with a fixed torch seed = the mean of ∂f_c/∂x at x + N(0, 0.15²) noise drawn by hand from the
    same seed (Captum's NoiseTunnel: nt_samples copies of each image in a row, one normal draw for all)."""
    net, x = tiny_net(CONV), images(CONV, 3)
    n, std = 4, 0.15
    method = CaptumMethod("smoothgrad", nt_samples=n)
    for layer in range(len(net.layers)):
        torch.manual_seed(11)
        maps, units = method(net, x, [layer])
        torch.manual_seed(11)
        noise = torch.normal(0.0, torch.full((len(x) * n, *x.shape[1:]), std))  # float32, as Captum draws it
        assert abs(float(noise.std()) - std) < 0.02
        points = x.repeat_interleave(n, dim=0) + noise
        grads = hand_gradients(net, points, layer, units[0].repeat_interleave(n))
        expected = grads.reshape(len(x), n, *x.shape[1:]).mean(1)
        torch.testing.assert_close(maps[0], expected, rtol=1e-10, atol=1e-13)
        assert torch.equal(units[0], argmax_units(net, x, layer))


def test_gradient_shap_is_the_expected_gradient_times_the_difference():
    """GradientSHAP with a fixed NumPy seed = mean over the n samples of ∂f_c/∂x(b + α(x − b)) · (x − b), with
    the baselines b (from our seeded uniform set) and the α ~ U(0, 1) drawn by hand from the same seed."""
    net, x = tiny_net(CONV), images(CONV, 3)
    n, n_base = 5, 4
    method = CaptumMethod("gradshap", n_samples=n, n_baselines=n_base, baseline_seed=3)
    baselines = torch.rand((n_base, *x.shape[1:]), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for layer in range(len(net.layers)):
        np.random.seed(5)
        torch.manual_seed(5)
        maps, units = method(net, x, [layer])
        np.random.seed(5)
        chosen = baselines[np.random.choice(n_base, len(x) * n).tolist()]
        alpha = torch.from_numpy(np.random.uniform(0.0, 1.0, len(x) * n)).view(-1, 1, 1, 1)
        inputs = x.repeat_interleave(n, dim=0)
        points = alpha * inputs + (1 - alpha) * chosen
        grads = hand_gradients(net, points, layer, units[0].repeat_interleave(n))
        expected = (grads * (inputs - chosen)).reshape(len(x), n, *x.shape[1:]).mean(1)
        torch.testing.assert_close(maps[0], expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_is_the_gradient_weighted_feature_map(relu):
    """Grad-CAM = Σ_k α_k A^k (ReLU of it with relu=True), α_k the spatial mean of ∂f_c/∂A^k, A the
    post-activation output of the last conv layer at or below the explained layer, bilinearly upsampled
    (align_corners=False) to the input's size and repeated over its channels."""
    net, x = tiny_net(CONV, seed=5), images(CONV, 6)  # seed 5: maps of both signs at every layer
    method = CaptumMethod("gradcam", relu=relu)
    features = {0: 1, 1: 4, 2: 4}  # conv: layer -> output module of the last conv layer at or below it
    for layer in range(len(net.layers)):
        maps, units = method(net, x, [layer])
        a = prefix_of(net, features[layer])(x).detach().requires_grad_(True)
        out = prefix_of(net, output_index(net, layer), start=features[layer] + 1)(a).flatten(1)
        out.gather(1, units[0][:, None]).sum().backward()
        cam = (a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True).detach()
        if relu:
            cam = cam.clamp(min=0)
        expected = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False).expand_as(x)
        torch.testing.assert_close(maps[0], expected, rtol=1e-10, atol=1e-13)
        assert bool((maps[0] < 0).any()) != relu  # signed maps by default (Captum's relu_attributions=False)


def test_integrated_gradients_are_complete():
    """Σ IG = f(x) − f(0). Smooth activations, so the trapezoidal error is O(1/n²) and the test would see a
    quadrature whose weights do not sum to one (Captum's riemann_trapezoid: (n−1)/n, corrected by us)."""
    net, x = tiny_net(FC), images(FC)
    net[2], net[4] = nn.Softplus(beta=5.0), nn.Softplus(beta=5.0)
    ig = CaptumMethod("ig", n_steps=200)
    maps, units = ig(net, x, [0, 1, 2])
    outputs = {}
    for k, (_, out) in enumerate(net.layers):
        dict(net.named_modules())[out].register_forward_hook(
            lambda m, i, o, k=k: outputs.__setitem__(k, o.detach().reshape(len(o), -1)))
    net(x)
    at_x = dict(outputs)
    net(torch.zeros_like(x))
    for k in range(3):
        gap = (at_x[k] - outputs[k]).gather(1, units[k][:, None])[:, 0]
        np.testing.assert_allclose(maps[k].sum(dim=(1, 2, 3)).numpy(), gap.numpy(), rtol=1e-4, atol=1e-9)


def test_gradcam_needs_a_convolutional_layer():
    with pytest.raises(ValueError, match="gradcam needs a convolutional layer"):
        explain_posterior(deterministic(tiny_net(FC)), images(FC), CaptumMethod("gradcam"))


# -- the explanation Dataset --------------------------------------------------------------------------------
def fake_attack(arch: ArchConfig, n: int = 5, n_draws: int = 3, **attrs) -> xr.Dataset:
    x = images(arch, n, dtype=torch.float32).numpy()
    x_adv = np.clip(x + 0.1 * np.sign(np.random.default_rng(0).standard_normal(x.shape)), 0, 1).astype(np.float32)
    pixel = ("image", "channel", "height", "width")
    return xr.Dataset({"x": (pixel, x), "x_adv": (pixel, x_adv), "label": ("image", np.arange(n) % 4),
                       "success": ("image", np.arange(n) % 2 == 0)},
                      coords={"image": np.arange(100, 100 + n)},
                      attrs={"n_draws": n_draws, "model": "fullBNN", "config": '{"attack": "fgsm"}', **attrs})


def test_explanation_dataset_streams_draws_to_zarr(tmp_path):
    net = tiny_net(CONV, dtype=torch.float32)
    post = svi_posterior(net, 0.1)
    attack = fake_attack(CONV)
    steps = []
    ds = explain_attack(post, attack, make_explainers("lrp", ["epsilon", "gamma"]), layers=[0, -1],
                        draws_path=tmp_path / "run_draws.zarr", attack_run="attacks/quick/run.nc",
                        expected={"model": "fullBNN"}, progress=steps.append, config={"preset": "quick"})
    assert len(steps) == 2 * 3
    store.validate(ds, "explanation")
    assert ds["relevance"].dims == ("input", "rule", "layer", "image", "channel", "height", "width")
    assert list(ds["input"].values) == ["clean", "adversarial"] and list(ds["rule"].values) == ["epsilon", "gamma"]
    assert list(ds["layer"].values) == [0, 2] and list(ds["layer_name"].values) == ["0", "7"]
    assert list(ds["image"].values) == list(range(100, 105)) and ds.sizes["draw"] == 3
    assert ds.attrs["attack_run"] == "attacks/quick/run.nc" and ds.attrs["attack_config"] == '{"attack": "fgsm"}'
    assert store.config_of(ds)["preset"] == "quick" and store.config_of(ds)["explanation"]["n_draws"] == 3
    assert ds["success"].dims == ("image",)

    lazy = store.open_result(tmp_path / "run_draws.zarr", "explanation")
    draws = lazy["relevance_draws"]
    assert draws.dims == ("input", "rule", "layer", "draw", "image", "channel", "height", "width")
    assert draws.chunks is not None and draws.data.chunksize[3] == 1  # dask, one chunk per draw
    np.testing.assert_allclose(draws.mean("draw").values, ds["relevance"].values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(draws.std("draw").values, ds["relevance_std"].values, rtol=1e-4, atol=1e-7)
    # the clean maps are those of the clean images alone, the adversarial of the adversarial ones
    x_adv = torch.from_numpy(attack["x_adv"].values)
    alone = explain_posterior(post, x_adv, LRP("gamma"), layers=[0, -1], n_draws=3)
    np.testing.assert_allclose(ds["relevance"].sel(input="adversarial", rule="gamma").values,
                               alone.mean.numpy(), rtol=1e-5, atol=1e-7)
    path = store.write_netcdf(ds, tmp_path / "run.nc")
    assert xr.open_dataset(path)["relevance"].shape == ds["relevance"].shape


def test_deterministic_model_is_explained_with_one_draw(tmp_path):
    net = tiny_net(FC, dtype=torch.float32)
    ds = explain_attack(deterministic(net), fake_attack(FC, n_draws=1, model="baseNN"),
                        make_explainers("saliency"))
    assert ds.sizes["draw"] == 1 and list(ds["rule"].values) == ["saliency"] and ds.sizes["layer"] == 3
    assert float(ds["relevance_std"].max()) == 0.0


# -- clear errors ------------------------------------------------------------------------------------------
def test_unknown_names_are_errors_listing_the_valid_ones():
    with pytest.raises(ValueError, match="unknown LRP rule 'zplus'; expected one of epsilon, gamma, alpha1beta0"):
        LRP("zplus")
    with pytest.raises(ValueError, match="unknown Zennit composite 'eps'; expected one of .*epsilon_plus"):
        LRP(composite="eps")
    with pytest.raises(ValueError, match="unknown method 'lime'; expected one of lrp, ig, gradshap"):
        make_explainers("lime")
    with pytest.raises(ValueError, match="unknown attribution method 'lime'"):
        CaptumMethod("lime")
    with pytest.raises(ValueError, match="rule 'gamma' takes no parameter.* epsilon; valid: gamma, stabilizer"):
        LRP("gamma", epsilon=0.2)
    with pytest.raises(ValueError, match="composite 'epsilon_plus' takes no parameter.* gamma"):
        LRP(composite="epsilon_plus", gamma=0.3)
    with pytest.raises(ValueError, match="method 'ig' takes no parameter.* stdevs"):
        CaptumMethod("ig", stdevs=0.1)
    with pytest.raises(ValueError, match="unknown initial relevance 'logit'; expected one of one_hot, value"):
        LRP("epsilon", initial="logit")
    with pytest.raises(ValueError, match="composite applies to method 'lrp' only"):
        make_explainers("ig", composite="epsilon_plus")


def test_layer_selection_errors():
    net = tiny_net(FC)
    assert resolve_layers(net, "all") == [0, 1, 2] and resolve_layers(net, [-1, 0, 0]) == [0, 2]
    with pytest.raises(ValueError, match=r"layer 3 out of range; this fc2 network has layers 0 \(1\), 1 \(3\), "
                                         r"2 \(5\)"):
        resolve_layers(net, [3])
    with pytest.raises(ValueError, match="unknown layer 'last'"):
        resolve_layers(net, ["last"])


def test_attack_dataset_errors():
    net = tiny_net(FC, dtype=torch.float32)
    attack = fake_attack(FC)
    with pytest.raises(ValueError, match="attack run was made with model='fullBNN' but the model to explain has "
                                         "model='baseNN'"):
        check_attack(attack, {"model": "baseNN"})
    with pytest.raises(ValueError, match="lacks variable.* x_adv"):
        explain_attack(deterministic(net), attack.drop_vars("x_adv"), make_explainers())
    with pytest.raises(ValueError, match="explainer names must differ"):
        explain_attack(deterministic(net), attack, make_explainers("lrp", ["epsilon", "epsilon"]))
    with pytest.raises(ValueError, match="batch_size must be positive"):
        explain_posterior(deterministic(net), images(FC, dtype=torch.float32), LRP(), batch_size=0)


@pytest.mark.parametrize("rule, zennit_rule", [("gamma", Gamma(gamma=0.1, stabilizer=1e-6)),
                                               ("alpha1beta0", ZPlus(stabilizer=1e-6))], ids=["gamma", "zplus"])
def test_sign_split_rules_are_accurate_in_float32_where_an_output_has_no_positive_part(rule, zennit_rule):
    """An output whose contributions a⁺w⁺ + a⁻w⁻ all vanish (here: positive weights, negative inputs, negative
    bias) gets a denominator of the stabiliser's size, 10⁻⁶, so its rescaled relevance is 10⁶ times larger
    than the rest. z⁺ passes it nothing (every term is 0), γ passes it the share of its negative part. In float32
    our rule must still match Zennit's rule computed in float64 to 10⁻⁴ of the map's largest value: an
    identity such as a·w + |a|·|w| = 2(a⁺w⁺ + a⁻w⁻) would lose all digits to cancellation there."""
    torch.manual_seed(0)
    layer = nn.Linear(12, 5).to(torch.float64)
    with torch.no_grad():
        layer.weight[0] = layer.weight[0].abs() + 0.1
        layer.bias.fill_(-0.2)
    x = -torch.rand(6, 12, dtype=torch.float64) - 0.1
    x[:, :3] = torch.rand(6, 3, dtype=torch.float64)          # some positive inputs
    with torch.no_grad():
        layer.weight[0, :3] = -layer.weight[0, :3].abs()     # ... which meet negative weights of output 0
    seed = torch.rand(6, 5, dtype=torch.float64)
    maps = {}
    for name, lrp, dtype in (("ours", LRP(rule), torch.float32), ("truth", LRP(zennit_rule), torch.float64)):
        wrapped = nn.Sequential(copy.deepcopy(layer).to(dtype))
        with lrp.attached(wrapped):
            xg = x.to(dtype).requires_grad_(True)
            maps[name] = torch.autograd.grad(wrapped(xg), xg, seed.to(dtype))[0].double()
    scale = maps["truth"].abs().max()
    assert (maps["ours"] - maps["truth"]).abs().max() <= 1e-4 * scale
    assert scale > 0
