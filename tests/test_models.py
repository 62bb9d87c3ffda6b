import json
from pathlib import Path

import pytest
import torch

from bayesrobust.models.architectures import ArchConfig, build, explained_layers
from bayesrobust.models.draws import DrawSet
from bayesrobust.models.posterior import Posterior, deterministic
from bayesrobust.store import CorruptResultError

ARCHS = [ArchConfig("fc2", 8), ArchConfig("conv", 4), ArchConfig("resnet20", 16, (3, 32, 32)),
         ArchConfig("linear", 1)]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.name)
def test_architectures_shapes_and_layers(arch):
    net = build(arch).eval()
    x = torch.rand(3, *arch.in_shape)
    assert net(x).shape == (3, arch.n_classes)
    layers = explained_layers(net)
    learnable = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [m for _, m, _ in layers] == learnable  # every learnable layer, in forward order
    assert layers[-1][2] is learnable[-1]  # the last layer is explained at its logits


def test_paper_architectures_match_spec():
    conv = build(ArchConfig("conv", 512))
    assert conv[7].in_features == 49 * 512 and conv[0].out_channels == 16 and conv[3].out_channels == 512
    assert isinstance(conv[1], torch.nn.LeakyReLU) and conv[1].negative_slope == 0.01
    fc = build(ArchConfig("fc2", 512))
    assert [(m.in_features, m.out_features) for m in fc if isinstance(m, torch.nn.Linear)] == \
        [(784, 512), (512, 512), (512, 10)]
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in build(ARCHS[2]).modules())
    assert n_conv == 19  # ResNet-20: 19 conv + 1 linear, option-A shortcuts have no weights


def test_build_errors():
    with pytest.raises(ValueError, match="unknown architecture 'mlp'; expected one of linear, fc2, conv"):
        build(ArchConfig("mlp"))
    with pytest.raises(ValueError, match="hidden size must be positive, got 0"):
        build(ArchConfig("fc2", 0))


def _svi_posterior(arch=ARCHS[0], seed=0):
    net = build(arch)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    return Posterior(arch, "svi", params, {k: torch.full_like(v, 0.1) for k, v in params.items()}, seed=seed)


def test_deterministic_model_is_a_one_draw_posterior():
    net = build(ARCHS[0])
    post = deterministic(net)
    assert post.max_draws == 1 and post.resolve_n_draws(100) == 1
    draws = DrawSet(post, 10)
    assert len(list(draws)) == 1
    clone = draws.net
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(clone(x), net.eval()(x), rtol=0, atol=0)
    with pytest.raises(IndexError, match="only draw 0"):
        post.draw_params(1)


def test_draw_j_is_fixed_by_the_posterior_alone(tmp_path):
    post = _svi_posterior()
    a = post.stacked_params(5)
    b = post.stacked_params(3)
    for k in b:
        torch.testing.assert_close(a[k][:3], b[k], rtol=0, atol=0)  # draw j does not depend on S
    assert not torch.equal(a["1.weight"][0], a["1.weight"][1])
    post.save(tmp_path / "m")
    again = Posterior.load(tmp_path / "m")
    third = Posterior.load(tmp_path / "m")
    for j in range(3):
        for k, v in again.draw_params(j).items():
            torch.testing.assert_close(v, third.draw_params(j)[k], rtol=0, atol=0)
            torch.testing.assert_close(v, post.draw_params(j)[k], rtol=0, atol=0)


def test_drawset_swaps_weights_in_place():
    post = _svi_posterior()
    draws = DrawSet(post, 3)
    net = draws.net
    ids = [id(p) for p in net.parameters()]
    x = torch.rand(4, 1, 28, 28)
    outs = [net(x).detach().clone() for _ in draws]
    assert [id(p) for p in net.parameters()] == ids
    for j in range(3):
        torch.testing.assert_close(outs[j], post.network(j)(x), rtol=0, atol=0)


def test_hmc_draws_are_a_fixed_subset_without_replacement():
    arch = ARCHS[3]
    samples = {"1.weight": torch.arange(2 * 5 * 10 * 784, dtype=torch.float32).view(2, 5, 10, 784),
               "1.bias": torch.arange(2 * 5 * 10, dtype=torch.float32).view(2, 5, 10)}
    post = Posterior(arch, "hmc", samples, seed=1)
    assert post.max_draws == 10
    firsts = {float(post.draw_params(j)["1.bias"][0]) for j in range(10)}
    assert len(firsts) == 10
    with pytest.raises(ValueError, match="n_draws=11 but this HMC posterior has only 10 samples"):
        post.resolve_n_draws(11)
    with pytest.raises(ValueError, match="n_draws must be positive, got 0"):
        post.resolve_n_draws(0)


def test_checkpoint_is_tensors_plus_json_and_checks_the_architecture(tmp_path):
    post = _svi_posterior()
    post.config["note"] = "hello"
    post.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["kind"] == "svi" and meta["config"]["note"] == "hello"
    torch.load(tmp_path / "m" / "weights.pt", weights_only=True)  # no arbitrary unpickling needed
    with pytest.raises(ValueError, match=r"holds architecture .*'fc2'.* but .*'conv'.* was requested"):
        Posterior.load(tmp_path / "m", ArchConfig("conv", 8))
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        Posterior.load(tmp_path / "nothing")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_checkpoint_keeps_where_it_came_from(tmp_path):
    """config.json records the versions, git revision and creation time of the first save; a later save of the
    loaded posterior keeps them; a checkpoint without them (written before they were kept) still loads."""
    import subprocess
    from importlib import metadata

    post = _svi_posterior()
    post.save(tmp_path / "m")
    stamp = json.loads((tmp_path / "m" / "config.json").read_text())["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    assert stamp["git_revision"] in ({head, head + "+dirty"} if head else {"unknown"})  # +dirty: test_store_attack
    assert json.loads(stamp["versions"])["torch"] == metadata.version("torch")
    assert stamp["created"].endswith("+00:00")
    loaded = Posterior.load(tmp_path / "m")
    assert loaded.provenance == stamp
    loaded.config["note"] = "saved again"
    loaded.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["provenance"] == stamp and meta["config"]["note"] == "saved again"
    del meta["provenance"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    assert Posterior.load(tmp_path / "m").provenance == {}
    meta["provenance"] = "yesterday"
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptResultError, match="provenance is not a mapping"):
        Posterior.load(tmp_path / "m")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    post = _svi_posterior()
    post.save(tmp_path / "m")
    before = (tmp_path / "m" / "weights.pt").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        _svi_posterior(seed=5).save(tmp_path / "m")
    assert (tmp_path / "m" / "weights.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown posterior kind 'vi'"):
        Posterior(ARCHS[0], "vi", {})
