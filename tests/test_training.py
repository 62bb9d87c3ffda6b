"""Training of the quick preset on the embedded mnist5k data, and the train CLI."""

import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bayesrobust.adversarial import FGSM
from bayesrobust.inference import load_model, train_model
from bayesrobust.inference.hmc import train_hmc
from bayesrobust.models.architectures import ArchConfig
from bayesrobust.models.draws import predictive_accuracy as accuracy
from bayesrobust.presets import HMCConfig, get_preset, override_training
from bayesrobust.train import main as train_cli

QUICK = get_preset("quick")


FC = override_training(override_training(get_preset("quick_fc2"), "baseNN", epochs=3), "advNN", epochs=3)


@pytest.fixture(scope="module")
def base_nn():
    return train_model(QUICK, "baseNN", seed=0)


def _fgsm_accuracy(post, data):
    net = post.network()
    x_adv = FGSM(epsilon=0.2)(net, data.x, data.y)
    return float((net(x_adv).argmax(-1) == data.y).float().mean())


def test_quick_basenn_conv_reaches_95_percent(base_nn, mnist5k_test):
    assert base_nn.kind == "deterministic" and base_nn.config["model"] == "baseNN"
    assert accuracy(base_nn, mnist5k_test.x, mnist5k_test.y) >= 0.95


def test_quick_svi_posterior_predictive_reaches_90_percent(mnist5k_test):
    post = train_model(QUICK, "fullBNN", "svi", seed=0)
    assert post.kind == "svi"
    elbo = post.extra["elbo"]
    assert len(elbo) == QUICK.svi.epochs and elbo[-1] > elbo[0]  # the ELBO history is kept and rises
    assert accuracy(post, mnist5k_test.x, mnist5k_test.y, n_draws=20) >= 0.90


def test_adversarial_training_raises_fgsm_accuracy(mnist5k_test):
    base_nn, adv_nn = train_model(FC, "baseNN", seed=0), train_model(FC, "advNN", seed=0)
    assert adv_nn.config["preset"]["adv"] == {"attack": "fgsm", "norm": "linf", "epsilon": 0.2, "steps": 10,
                                              "step_size": None, "adv_ratio": 1.0}
    base, adv = _fgsm_accuracy(base_nn, mnist5k_test), _fgsm_accuracy(adv_nn, mnist5k_test)
    assert adv > base + 0.2, (base, adv)


def test_short_nuts_reports_finite_diagnostics(mnist5k_train):
    post = train_hmc(ArchConfig("fc2", 4), mnist5k_train,
                     HMCConfig(warmup=10, samples=10, chains=2, max_tree_depth=4, n_train=100, jit=False))
    d = post.config["diagnostics"]
    assert post.kind == "hmc" and post.max_draws == 20
    assert math.isfinite(d["rhat_max"]) and math.isfinite(d["ess_bulk_min"]) and math.isfinite(d["ess_tail_min"])
    assert len(d["divergences_per_chain"]) == 2


def test_train_cli_writes_a_loadable_model(tmp_path):
    result = CliRunner().invoke(train_cli, ["--model", "baseNN", "--preset", "quick_fc2", "--epochs", "1",
                                            "--hidden", "8", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "model written to" in result.output
    post = load_model(tmp_path, override_training(get_preset("quick_fc2"), "baseNN", hidden=8), "baseNN",
                      check_arch=True)
    assert post.arch.hidden == 8 and post.config["test_accuracy"] > 0.2  # one epoch: better than chance


@pytest.mark.parametrize("args, message", [
    (["--model", "baseNN", "--preset", "nope"], "Invalid value for '--preset'"),
    (["--model", "bnn", "--preset", "quick"], "Invalid value for '--model'"),
    (["--model", "baseNN", "--preset", "quick", "--dataset", "svhn"], "Invalid value for '--dataset'"),
    (["--model", "baseNN", "--preset", "quick", "--epochs", "-1"], "Error: epochs must be non-negative, got -1"),
    (["--model", "baseNN", "--preset", "mnist_conv"], "Error: dataset 'mnist' is read from disk: pass data_root"),
    (["--model", "baseNN", "--preset", "mnist_conv", "--data-root", "{tmp}"],
     "Error: dataset 'mnist' (test) not found"),
    (["--model", "baseNN", "--preset", "quick", "--warmup", "5"],
     "Error: warmup=5 does not apply to baseNN; it is a setting of fullBNN --inference hmc"),
    (["--model", "fullBNN", "--preset", "quick", "--burnin", "2"],  # quick's fullBNN is SVI
     "Error: burnin=2 does not apply to a fullBNN trained by svi; it is a setting of fullBNN --inference sghmc, "
     "fullBNN --inference sgld"),
    (["--model", "fullBNN", "--preset", "quick", "--device", "cuda:7"],
     "Error: device 'cuda:7' requested but CUDA is not available on this machine; use cpu"),
])
def test_train_cli_bad_input_is_one_line(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args] + ["--out", str(tmp_path / "out")]
    if torch.cuda.is_available() and "cuda:7" in args:
        pytest.skip("a machine with CUDA")
    result = CliRunner().invoke(train_cli, args)
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "models").exists()


def test_a_diverging_sampler_is_the_users_error_and_leaves_no_model(tmp_path):
    """A step too large for the posterior is a setting to change (one line, exit status 1, what to lower), not a
    bug report; nothing is stored."""
    result = CliRunner().invoke(train_cli, ["--model", "fullBNN", "--preset", "tiny", "--inference", "sgld",
                                            "--lr", "1e9", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "Error: SG-MCMC chain (seed 0) diverged" in result.output and "lower lr (now 1e+09)" in result.output
    assert "bug" not in result.output and "Traceback" not in result.output
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.json"))


def test_load_model_names_the_train_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m bayesrobust.train --model fullBNN --preset quick "
                                                "--inference svi --out"):
        load_model(tmp_path, QUICK, "fullBNN")


def test_pgd_l2_adversarial_training_with_a_clean_share(mnist5k_train):
    from bayesrobust.inference import train_network
    from bayesrobust.presets import AdvConfig, OptimConfig
    small = mnist5k_train.subset(torch.arange(256))
    net, hist = train_network(ArchConfig("fc2", 8), small, OptimConfig(epochs=1, batch_size=64),
                              AdvConfig(attack="pgd", norm="l2", epsilon=1.0, steps=3, adv_ratio=0.5))
    assert len(hist.loss) == 1 and math.isfinite(hist.loss[0])
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def test_bad_training_settings_are_named():
    from bayesrobust.inference.deterministic import make_attack
    from bayesrobust.presets import AdvConfig
    with pytest.raises(ValueError, match=r"adv_ratio must be in \[0, 1\], got 1.5"):
        make_attack(AdvConfig(adv_ratio=1.5))
    with pytest.raises(ValueError, match="FGSM is an Linf attack; got norm 'l2'"):
        make_attack(AdvConfig(norm="l2"))
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        make_attack(AdvConfig(attack="cw"))
    with pytest.raises(ValueError, match="unknown preset 'mnist'; expected one of mnist_conv"):
        get_preset("mnist")
    with pytest.raises(ValueError, match="lr must be positive, got 0"):
        override_training(QUICK, "baseNN", lr=0)
    with pytest.raises(ValueError, match="unknown model 'BNN'"):
        override_training(QUICK, "BNN")
    # a setting the model does not train with is an error, never silently ignored
    for model, inference, given, message in [
            ("fullBNN", "svi", {"warmup": 20}, "warmup=20 does not apply to a fullBNN trained by svi; it is a setting "
                                               "of fullBNN --inference hmc"),
            ("fullBNN", "hmc", {"epochs": 3}, "epochs=3 does not apply to a fullBNN trained by hmc"),
            ("fullBNN", "ensemble", {"prior_scale": 0.1}, "prior_scale=0.1 does not apply to a fullBNN trained by "
                                                          "ensemble"),
            ("fullBNN", "svi", {"members": 3}, "it is a setting of fullBNN --inference ensemble"),
            ("baseNN", None, {"adv_epsilon": 0.1}, "adv_epsilon=0.1 does not apply to baseNN; it is a setting of "
                                                   "advNN"),
            ("advNN", None, {"likelihood_scaling": "reference"}, "it is a setting of fullBNN --inference svi "
                                                                 "\\(and artBNN\\)"),
            ("artBNN", None, {"chains": 2}, "chains=2 does not apply to artBNN"),
            ("fullBNN", "svi", {"weight_decay": 1e-4}, "weight_decay=0.0001 does not apply to a fullBNN trained by "
                                                       "svi; it is a setting of baseNN/artNN, advNN, fullBNN "
                                                       "--inference laplace, fullBNN --inference ensemble"),
            ("baseNN", None, {"weight_decay": -1e-4}, "weight_decay must be in \\[0, inf\\], got -0.0001"),
            ("fullBNN", "svi", {"precondition": "adapted"}, "precondition='adapted' does not apply to a fullBNN "
                                                            "trained by svi; it is a setting of fullBNN --inference "
                                                            "sghmc, fullBNN --inference sgld"),
            ("fullBNN", "sghmc", {"precondition": "rmsprop"}, "unknown preconditioner 'rmsprop'; expected one of "
                                                              "none, adapted"),
            ("fullBNN", "sgld", {"precondition": "adapted", "burnin": 0}, "burnin must be at least 1 epoch, got 0"),
            ("fullBNN", "sghmc", {"max_precondition": 0.5}, "max_precondition must be in \\[1, inf\\], got 0.5"),
            ("fullBNN", "svi", {"max_precondition": 10}, "max_precondition=10 does not apply to a fullBNN trained "
                                                         "by svi"),
            ("fullBNN", "sghmc", {"optimizer": "sgd"}, "optimizer='sgd' does not apply to a fullBNN trained by "
                                                       "sghmc; it is a setting of baseNN/artNN, advNN"),
            ("baseNN", None, {"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; expected one of adam, sgd"),
            ("baseNN", None, {"optimizer": "sgd", "momentum": 1.0}, "momentum must be in \\[0, 1\\), got 1$"),
            ("baseNN", None, {"momentum": 0.9}, "momentum=0.9 is a setting of the SGD optimiser; this model is "
                                                "trained with 'adam'")]:
        with pytest.raises(ValueError, match=message):
            override_training(QUICK, model, inference, **given)
    # ... and the settings that apply pass (artBNN trains by SVI; samples/chains are NUTS' and SG-MCMC's)
    assert override_training(QUICK, "artBNN", likelihood_scaling="reference").svi.likelihood_scaling == "reference"
    assert override_training(QUICK, "fullBNN", "sghmc", samples=4, chains=3).sgmcmc.chains == 3
    assert override_training(QUICK, "fullBNN", "sgld", precondition="adapted").sgmcmc.precondition == "adapted"
    assert override_training(QUICK, "fullBNN", "sghmc", max_precondition=100).sgmcmc.max_precondition == 100
    assert override_training(QUICK, "fullBNN", "laplace", prior_scale=0.5, epochs=1).base.epochs == 1
    assert override_training(QUICK, "advNN", weight_decay=1e-4).adv_optim.weight_decay == 1e-4
    sgd = override_training(QUICK, "fullBNN", "ensemble", optimizer="sgd", momentum=0.5).base
    assert (sgd.optimizer, sgd.momentum) == ("sgd", 0.5)
    with pytest.raises(ValueError, match="unknown inference 'vi'; expected one of svi, hmc"):
        train_model(QUICK, "fullBNN", "vi")
    with pytest.raises(ValueError, match="need warmup >= 0, samples > 0 and chains > 0"):
        train_hmc(ArchConfig("fc2", 4), None, HMCConfig(samples=0))


@pytest.mark.parametrize("ratio, batch, n, expected", [
    (0.25, 32, 100, [8, 8, 8, 1]),  # the last batch of 4: round(0.25 · 4) = 1
    (0.5, 30, 70, [15, 15, 5]),
    (1.0, 32, 64, [32, 32]),
    (0.0, 32, 64, []),  # no attack at all
])
def test_adv_ratio_is_the_adversarial_share_of_every_batch(mnist5k_train, monkeypatch, ratio, batch, n, expected):
    """advNN attacks round(adv_ratio · batch size) images of every batch (the attack is wrapped to count what it
    is given) and trains on a batch of the full size."""
    from bayesrobust.inference import deterministic as training
    from bayesrobust.presets import AdvConfig, OptimConfig
    given, trained_on = [], []
    make = training.make_attack

    def counting(cfg):
        attack = make(cfg)

        def run(net, x, y, **kwargs):
            given.append(len(x))
            assert len(y) == len(x)
            return attack(net, x, y, **kwargs)
        return run
    monkeypatch.setattr(training, "make_attack", counting)
    monkeypatch.setattr(training.nn.CrossEntropyLoss, "forward",
                        lambda self, logits, y: trained_on.append(len(y)) or nn.functional.cross_entropy(logits, y))
    training.train_network(ArchConfig("fc2", 4), mnist5k_train.subset(torch.arange(n)),
                           OptimConfig(epochs=1, batch_size=batch), AdvConfig(epsilon=0.1, adv_ratio=ratio))
    assert given == expected
    assert trained_on == [min(batch, n - k * batch) for k in range(-(-n // batch))]


def test_train_network_keeps_the_callers_rng_and_repeats_for_a_seed(mnist5k_train):
    """Training seeds its own forked RNG: the caller's global torch state is untouched, and the same seed
    gives the same network whatever that state was."""
    from bayesrobust.inference import train_network
    from bayesrobust.presets import OptimConfig
    small = mnist5k_train.subset(torch.arange(64))
    cfg = OptimConfig(epochs=1, batch_size=32)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, _ = train_network(ArchConfig("fc2", 4), small, cfg, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    second, _ = train_network(ArchConfig("fc2", 4), small, cfg, seed=5)
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name


def test_hmc_eval_draws_are_checked_before_sampling(tmp_path, monkeypatch):
    """An HMC posterior has chains x samples draws: asking for more to evaluate is refused before NUTS runs,
    and without --eval-draws the preset's count is capped at what the chains give."""
    from bayesrobust import inference, stages
    calls = []
    monkeypatch.setattr(inference, "train_model", lambda *a, **k: calls.append(a) or 1 / 0)
    with pytest.raises(ValueError, match=r"eval_draws=50 but the HMC posterior will have only 10 draws "
                                         r"\(2 chains x 5 samples\)"):
        stages.train("quick_fc2", "fullBNN", out=tmp_path, eval_draws=50, overrides={"samples": 5})
    assert calls == []
    with pytest.raises(ZeroDivisionError):  # reached the sampler: the default 50 eval draws were capped to 10
        stages.train("quick_fc2", "fullBNN", out=tmp_path, overrides={"samples": 5})
    assert len(calls) == 1


class _ReadsRecorded:
    """A preset that records which of its fields are read (``to_dict`` and ``name``/``inference`` aside: the
    whole-config record and the ART/inference look-ups, compared apart)."""

    def __init__(self, preset):
        object.__setattr__(self, "_preset", preset)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name):
        preset = object.__getattribute__(self, "_preset")
        if name not in ("to_dict", "name", "inference"):
            self.read.add(name)
        return getattr(preset, name)


@pytest.mark.parametrize("model,inference", [("baseNN", None), ("advNN", None), ("artNN", None), ("artBNN", "svi")]
                         + [("fullBNN", i) for i in ("svi", "hmc", "sghmc", "sgld", "ensemble", "laplace")])
def test_training_fields_are_the_fields_training_reads(monkeypatch, model, inference):
    """The table that decides whether a stored model is stale names exactly the preset fields train_model
    reads for that model (the trainers are replaced by stand-ins: only the reading is checked)."""
    import bayesrobust.inference as inf
    from bayesrobust.models.architectures import build
    from bayesrobust.models.posterior import deterministic

    class History:
        def as_tensors(self):
            return {}

    monkeypatch.setattr(inf, "train_network", lambda arch, *a, **k: (build(arch), History()))
    for name in ("train_svi", "train_sgmcmc", "train_ensemble", "train_hmc"):
        monkeypatch.setattr(inf, name, lambda arch, *a, **k: deterministic(build(arch)))
    monkeypatch.setattr(inf, "fit_laplace", lambda network, *a, **k: deterministic(network))
    preset = _ReadsRecorded(get_preset("tiny"))
    inf.train_model(preset, model, inference)
    assert preset.read == set(inf.training_fields(model, inference))


def test_a_stored_model_is_stale_only_when_its_own_training_settings_change(tmp_path):
    """A baseNN stays up to date when n_inputs, the attack or the SVI settings change, and retrains when its
    epochs do; the SVI fullBNN stays up to date when the SGHMC settings or the baseNN's change."""
    from bayesrobust import stages
    from bayesrobust.presets import SVIConfig
    tiny = get_preset("tiny")
    first = stages.train(tiny, "baseNN", out=tmp_path)
    weights = (first.path / "weights.pt").read_bytes()
    unrelated = tiny.with_overrides(n_inputs=7, attack_epsilon=0.1, svi=SVIConfig(epochs=1))
    assert stages.train(unrelated, "baseNN", out=tmp_path).skipped
    assert (first.path / "weights.pt").read_bytes() == weights
    assert not stages.train(override_training(tiny, "baseNN", epochs=1), "baseNN", out=tmp_path).skipped
    stages.train(tiny, "fullBNN", inference="svi", out=tmp_path)
    again = override_training(override_training(tiny, "fullBNN", "sghmc", burnin=0), "baseNN", epochs=1)
    assert stages.train(again, "fullBNN", inference="svi", out=tmp_path).skipped
    assert not stages.train(override_training(tiny, "fullBNN", "svi", epochs=1), "fullBNN", inference="svi",
                            out=tmp_path).skipped


def test_weight_decay_shrinks_the_map_and_laplace_reuses_only_a_matching_basenn(tmp_path):
    """``--weight-decay wd`` trains the baseNN on the mean loss + wd/2 ||θ||², so a strong decay shrinks its
    weights; a Laplace fullBNN with the same decay approximates around that stored baseNN (its MAP is then a
    mode under a Gaussian prior), one without the decay trains a MAP of its own."""
    from bayesrobust.models.posterior import Posterior

    def train(*args, out):
        result = CliRunner().invoke(train_cli, ["--preset", "tiny", "--no-progress", "--out", str(out), *args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    def squared_norm(post):
        return sum(float((v.double() ** 2).sum()) for v in post.params.values())

    train("--model", "baseNN", out=tmp_path / "plain")
    train("--model", "baseNN", "--weight-decay", "0.5", out=tmp_path / "decay")
    plain = Posterior.load(tmp_path / "plain" / "models" / "tiny" / "baseNN")
    decayed = Posterior.load(tmp_path / "decay" / "models" / "tiny" / "baseNN")
    assert decayed.config["preset"]["base"]["weight_decay"] == 0.5
    assert plain.config["preset"]["base"]["weight_decay"] == 0.0
    assert squared_norm(decayed) < 0.5 * squared_norm(plain)
    laplace = tmp_path / "decay" / "models" / "tiny" / "fullBNN_laplace"
    train("--model", "fullBNN", "--inference", "laplace", "--weight-decay", "0.5", out=tmp_path / "decay")
    assert all(torch.equal(Posterior.load(laplace).params[k], decayed.params[k]) for k in decayed.params)
    train("--model", "fullBNN", "--inference", "laplace", out=tmp_path / "decay")  # no decay: not that baseNN
    first = next(iter(decayed.params))
    assert not torch.equal(Posterior.load(laplace).params[first], decayed.params[first])


def test_sgd_optimizer_from_the_command_line_takes_the_momentum_steps_of_a_hand_computation(tmp_path):
    """``train --optimizer sgd --momentum 0.9`` with one full batch per epoch: two epochs are the two heavy-ball
    steps θ1 = θ0 − lr g0, θ2 = θ1 − lr (0.9 g0 + g1) from the seeded initialisation (full-batch gradients, so
    the shuffling does not matter); Adam, the preset's default, would not give them."""
    from bayesrobust import data as datasets
    from bayesrobust.models.architectures import build
    from bayesrobust.models.posterior import Posterior
    train = datasets.load("mnist5k", "train")
    result = CliRunner().invoke(train_cli, ["--preset", "tiny", "--model", "baseNN", "--no-progress", "--out",
                                            str(tmp_path), "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.5",
                                            "--epochs", "2", "--batch-size", str(len(train))])
    assert result.exit_code == 0, result.output + repr(result.exception)
    trained = Posterior.load(tmp_path / "models" / "tiny" / "baseNN")
    assert trained.config["preset"]["base"]["optimizer"] == "sgd"
    assert trained.config["preset"]["base"]["momentum"] == 0.9
    torch.manual_seed(0)
    net = build(get_preset("tiny").arch).train()
    params = list(net.parameters())

    def grads():
        loss = nn.functional.cross_entropy(net(train.x), train.y.long())
        return torch.autograd.grad(loss, params)

    g0 = grads()
    with torch.no_grad():
        for p, g in zip(params, g0):
            p.sub_(0.5 * g)
    g1 = grads()
    with torch.no_grad():
        for p, a, b in zip(params, g0, g1):
            p.sub_(0.5 * (0.9 * a + b))
    for (name, p) in net.named_parameters():
        torch.testing.assert_close(trained.params[name], p.detach(), rtol=1e-4, atol=1e-5)
