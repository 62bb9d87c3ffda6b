"""Stored results that cannot lie (issue 13): every input is checked before any work.

- every bad command-line value ends in one ``Error: ...`` line naming it, before any file is written under
  ``--out`` (0 is never read as "the default"; NaN, ±inf and values outside their range are errors);
- images with a NaN or ±inf pixel (or outside [0, 1]) are refused by every public attack and explanation
  function, and by ``explain`` reading an attack file;
- a stored attribute can never send a result outside ``--out``; an unusable ``--out`` is one line;
- a truncated data file is reported by name; an absurd or mismatched checkpoint is refused in one line.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from helpers import save_untrained_quick_models

from bayesrobust import Experiment, paths, stability, store
from bayesrobust import data as datasets
from bayesrobust.adversarial import (
    FGSM,
    PGD,
    PosteriorAverage,
    evaluate,
    module_gradient,
    robustness_table,
    run_attack,
)
from bayesrobust.adversarial.posterior import mean_grad_gradient
from bayesrobust.cli import COMMANDS
from bayesrobust.data import CorruptDataError, Data
from bayesrobust.explain import LRP, CaptumMethod, explain_attack, explain_posterior, layer_relevance
from bayesrobust.models.architectures import ArchConfig, build, check_arch
from bayesrobust.models.draws import DrawSet, chunks, draw_probabilities
from bayesrobust.models.posterior import Posterior, deterministic

pytestmark = pytest.mark.threads(1)  # tiny networks

ARCH = ArchConfig("fc2", hidden=4, in_shape=(1, 4, 4), n_classes=3)


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _error_line(result) -> str:
    """The one ``Error: ...`` line of a failed command (and no traceback)."""
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# -- bad values on the command line: one line, before any file is written ---------------------------------
BAD_VALUES = [
    ("train", ["--model", "baseNN", "--eval-draws", "0"], "eval_draws must be positive, got 0"),
    ("train", ["--model", "fullBNN", "--batch-size", "0"], "batch_size must be positive, got 0"),
    ("train", ["--model", "fullBNN", "--n-train", "0"], "n_train must be positive, got 0"),
    ("train", ["--model", "baseNN", "--lr", "nan"], "lr must be a finite positive number, got nan"),
    ("train", ["--model", "baseNN", "--lr", "inf"], "lr must be a finite positive number, got inf"),
    ("train", ["--model", "fullBNN", "--prior-scale", "inf"], "prior_scale must be a finite positive number, got inf"),
    ("train", ["--model", "advNN", "--adv-ratio", "1.5"], "adv_ratio must be in [0, 1], got 1.5"),
    ("train", ["--model", "advNN", "--adv-epsilon", "2"], "adv_epsilon (linf) must be in [0, 1], got 2"),
    ("train", ["--model", "advNN", "--adv-epsilon", "nan"], "adv_epsilon must be a finite positive number, got nan"),
    ("train", ["--model", "baseNN", "--hidden", "1000000000"], "hidden must be at most 65,536, got 1,000,000,000"),
    ("train", ["--model", "baseNN", "--seed", "-1"], "Invalid value for '--seed': -1 is not in the range"),
    ("attack", ["--model", "baseNN", "--n-inputs", "0"], "n_inputs must be positive, got 0"),
    ("attack", ["--model", "fullBNN", "--n-draws", "0"], "n_draws must be positive, got 0"),
    ("attack", ["--model", "baseNN", "--chunk-size", "0"], "chunk_size must be positive, got 0"),
    ("attack", ["--model", "baseNN", "--epsilon", "inf"], "epsilon must be >= 0 and finite, got inf"),
    ("attack", ["--model", "baseNN", "--epsilon", "nan"], "epsilon must be >= 0 and finite, got nan"),
    ("attack", ["--model", "baseNN", "--epsilon", "1.5"], "epsilon must be <= 1 in the linf norm"),
    ("attack", ["--model", "baseNN", "--attack", "pgd", "--norm", "l2", "--epsilon", "inf"],
     "epsilon must be >= 0 and finite, got inf"),
    ("attack", ["--model", "baseNN", "--attack", "pgd", "--step-size", "0"], "step_size must be > 0 and finite, got 0"),
    ("attack", ["--model", "baseNN", "--attack", "pgd", "--step-size", "inf"],
     "step_size must be > 0 and finite, got inf"),
    ("attack", ["--model", "baseNN", "--attack", "pgd", "--steps", "0"], "steps must be an integer >= 1, got 0"),
    ("attack", ["--model", "baseNN", "--inputs-seed", "-1"], "Invalid value for '--inputs-seed': -1 is not in"),
    ("table", ["--model", "baseNN", "--steps", "0"], "steps must be positive, got 0"),
    ("table", ["--model", "baseNN", "--linf-eps", "2"], "linf epsilon must be in (0, 1], got 2"),
    ("table", ["--model", "baseNN", "--l2-eps", "inf"], "cannot read epsilon 'inf'"),
    ("table", ["--model", "baseNN", "--n-draws", "0"], "n_draws must be positive, got 0"),
    ("table", ["--model", "baseNN", "--chunk-size", "0"], "chunk_size must be positive, got 0"),
    ("explain", ["--model", "baseNN", "--n-draws", "0"], "n_draws must be positive, got 0"),
    ("explain", ["--model", "baseNN", "--batch-size", "0"], "batch_size must be positive, got 0"),
    ("explain", ["--model", "baseNN", "--seed", "-3"], "Invalid value for '--seed': -3 is not in the range"),
    ("analyze", ["--topk", "0"], "topk is a percentage of pixels in (0, 100], got 0"),
    ("analyze", ["--topk", "nan"], "topk is a percentage of pixels in (0, 100], got nan"),
    ("analyze", ["--epsilon", "inf"], "epsilon must be a finite number in [0, inf], got inf"),
    ("analyze", ["--name", "../evil"], "analysis name '../evil' cannot name an output file"),
    ("plot", ["--topk", "0"], "topk is a percentage of pixels in (0, 100], got 0"),
    ("pipeline", ["--draws", "0"], "draws must be positive, got 0"),
    ("pipeline", ["--n-inputs", "0"], "n_inputs must be positive, got 0"),
    ("pipeline", ["--epsilon", "inf"], "epsilon must be a finite positive number, got inf"),
    ("pipeline", ["--epsilon", "nan"], "epsilon must be a finite positive number, got nan"),
    ("pipeline", ["--epsilon", "2"], "epsilon must be <= 1 in the linf norm"),
    ("pipeline", ["--steps", "0"], "steps must be positive, got 0"),
    ("pipeline", ["--topk", "101"], "topk is a percentage of pixels in (0, 100], got 101"),
    ("pipeline", ["--seed", "-1"], "Invalid value for '--seed': -1 is not in the range"),
    ("pipeline", ["--n-inputs", "100000"], "n_inputs=100000 needs"),
]


@pytest.mark.parametrize("command, args, message", BAD_VALUES,
                         ids=[f"{c}{'_'.join(a[2:] if a[0] == '--model' else a)}" for c, a, _ in BAD_VALUES])
def test_bad_value_is_one_line_before_any_file(command, args, message, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(COMMANDS[command], [*args, "--out", str(out)])
    line = _error_line(result)
    assert message in line, line
    assert _files(out) == [] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_zero_is_never_the_default_in_the_library():
    """``x or default`` read 0 as "the default"; now 0 is an error wherever ``None`` is the default."""
    net = build(ARCH).eval()
    post = deterministic(net)
    x, y = torch.rand(5, *ARCH.in_shape), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        chunks(10, 0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        draw_probabilities(net, x, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be positive, got 0"):
        mean_grad_gradient(DrawSet(post, 1), chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be positive, got 0"):
        evaluate(net, x, x, y, chunk_size=0)
    with pytest.raises(ValueError, match="n_draws must be positive, got 0"):
        post.resolve_n_draws(0)  # a deterministic model too: 0 is not "one draw"
    with pytest.raises(ValueError, match="n_draws must be positive, got 0"):
        explain_posterior(post, x, LRP(), n_draws=0)
    with pytest.raises(ValueError, match="steps must be positive, got 0"):
        robustness_table(post, Data(x, y, torch.arange(5), "t", "test"), epsilons={"linf": (0.1,)}, steps=(0,))
    with pytest.raises(ValueError, match="linf norm"):
        robustness_table(post, Data(x, y, torch.arange(5), "t", "test"), epsilons={"linf": (2.0,)}, steps=(1,))


@pytest.mark.parametrize("settings, message", [
    ({"draws": [0]}, "draws must be positive, got 0"),
    ({"draws": [2.5]}, "draws must be an integer >= 1, got 2.5"),
    ({"n_inputs": 0}, "n_inputs must be positive, got 0"),
    ({"epsilon": float("inf")}, "epsilon must be a finite positive number, got inf"),
    ({"epsilon": 1.5}, "epsilon must be <= 1 in the linf norm"),
    ({"topk": float("nan")}, "topk"),
    ({"seed": -1}, "seed must be non-negative"),
    ({"n_inputs": 10**5}, "n_inputs=100000 needs"),
])
def test_experiment_checks_every_stage_before_training(settings, message, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=re.escape(message)):
        Experiment("tiny", out=out, **settings)
    assert not out.exists()


def test_experiment_checks_a_custom_preset(tmp_path):
    from dataclasses import replace

    from bayesrobust.presets import get_preset
    tiny = get_preset("tiny")
    with pytest.raises(ValueError, match="lr must be a finite positive number, got nan"):
        Experiment(replace(tiny, base=replace(tiny.base, lr=float("nan"))), out=tmp_path / "o")
    with pytest.raises(ValueError, match="adv_ratio must be in"):
        Experiment(replace(tiny, adv=replace(tiny.adv, adv_ratio=2.0)), out=tmp_path / "o")
    with pytest.raises(ValueError, match="preset name '../up' cannot name an output file"):
        Experiment(replace(tiny, name="../up"), out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


# -- NaN and ±inf images: every public attack and explanation function ------------------------------------
BAD_PIXELS = [(float("nan"), "1 NaN and 0 infinite pixel"), (float("inf"), "0 NaN and 1 infinite pixel"),
              (float("-inf"), "0 NaN and 1 infinite pixel"), (1.5, r"pixels in \[0, 1\].*\[0.*, 1.5\]"),
              (-0.25, r"pixels in \[0, 1\]")]


def _bad_images(value: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand((4, *ARCH.in_shape), generator=g)
    bad = clean.clone()
    bad[2, 0, 1, 3] = value  # a single pixel
    return clean, bad, torch.tensor([0, 1, 2, 0])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = build(ARCH).eval()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    svi = Posterior(ARCH, "svi", params, {k: torch.full_like(v, 0.1) for k, v in params.items()})
    return net, deterministic(net), svi


@pytest.mark.parametrize("value, match", BAD_PIXELS)
def test_attacks_refuse_bad_pixels(tiny, value, match):
    net, det, svi = tiny
    clean, bad, y = _bad_images(value)
    calls = {
        "FGSM()": lambda: FGSM(epsilon=0.1)(net, bad, y),
        "PGD-L2()": lambda: PGD(norm="l2", epsilon=0.5, steps=2)(net, bad, y),
        "PGD.run": lambda: PGD(epsilon=0.1, steps=2).run(module_gradient(net), bad, y),
        "PosteriorAverage": lambda: PosteriorAverage(FGSM(epsilon=0.1), n_draws=2)(svi, bad, y),
        "PosteriorAverage mean_image": lambda: PosteriorAverage(PGD(epsilon=0.1, steps=1), mode="mean_image",
                                                                n_draws=2)(svi, bad, y),
        "run_attack": lambda: run_attack(svi, Data(bad, y, torch.arange(4), "t", "test"), FGSM(epsilon=0.1),
                                         n_draws=2),
        "robustness_table": lambda: robustness_table(det, Data(bad, y, torch.arange(4), "t", "test"),
                                                     epsilons={"linf": (0.1,)}, steps=(1,)),
        "evaluate x": lambda: evaluate(net, bad, clean, y),
        "evaluate x_adv": lambda: evaluate(svi, clean, bad, y, n_draws=2),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=match):
            call()
            pytest.fail(f"{name} accepted a pixel {value}")


def _attack_dataset(x: torch.Tensor, x_adv: torch.Tensor) -> xr.Dataset:
    dims = ("image", "channel", "height", "width")
    return xr.Dataset({"x": (dims, x.numpy()), "x_adv": (dims, x_adv.numpy())},
                      coords={"image": np.arange(x.shape[0])}, attrs={"n_draws": 1})


@pytest.mark.parametrize("value, match", BAD_PIXELS)
def test_explanations_refuse_bad_pixels(tiny, value, match):
    net, det, svi = tiny
    clean, bad, _ = _bad_images(value)

    def lrp_call():
        lrp = LRP("epsilon")
        with lrp.attached(net):
            lrp(net, bad, [0, 2])

    calls = {
        "explain_posterior LRP": lambda: explain_posterior(svi, bad, LRP("gamma"), n_draws=2),
        "explain_posterior Captum": lambda: explain_posterior(det, bad, CaptumMethod("saliency")),
        "explain_attack x": lambda: explain_attack(det, _attack_dataset(bad, clean), [LRP()]),
        "explain_attack x_adv": lambda: explain_attack(svi, _attack_dataset(clean, bad), [LRP()], n_draws=2),
        "LRP()": lrp_call,
        "layer_relevance": lambda: layer_relevance(net, bad, [0]),
        "CaptumMethod()": lambda: CaptumMethod("ig", n_steps=3)(net, bad, [2]),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=match):
            call()
            pytest.fail(f"{name} accepted a pixel {value}")


def test_explain_attack_names_the_bad_image_variable(tiny):
    _, det, _ = tiny
    clean, bad, _ = _bad_images(float("nan"))
    with pytest.raises(ValueError, match="adversarial images x_adv holds 1 NaN"):
        explain_attack(det, _attack_dataset(clean, bad), [LRP()])


# -- commands reading stored files: attack runs with a NaN pixel, crafted attributes --------------------
@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """An (untrained) quick baseNN, attacked with FGSM on 10 test images and explained with LRP-epsilon."""
    root = save_untrained_quick_models(tmp_path_factory.mktemp("work") / "out", svi_scale=0.05)
    for command, args in (("attack", ["--model", "baseNN", "--n-inputs", "10"]),
                          ("explain", ["--model", "baseNN", "--no-progress"])):
        result = CliRunner().invoke(COMMANDS[command], [*args, "--out", str(root)])
        assert result.exit_code == 0, result.output + repr(result.exception)
    return root


RUN = "baseNN_fgsm_linf_eps0.2_S1"


def _rewrite(path: Path, change) -> None:
    ds = xr.load_dataset(path, engine="h5netcdf")
    change(ds)
    store.write_netcdf(ds, path)


def test_explain_refuses_an_attack_file_with_a_nan_pixel(out, tmp_path):
    work = tmp_path / "out"
    shutil.copytree(out, work)
    shutil.rmtree(work / "explanations")

    def poison(ds):
        ds["x_adv"][3, 0, 14, 14] = np.nan
    _rewrite(work / "attacks" / "quick" / f"{RUN}.nc", poison)
    result = CliRunner().invoke(COMMANDS["explain"], ["--model", "baseNN", "--no-progress", "--out", str(work)])
    line = _error_line(result)
    assert "x_adv holds 1 NaN and 0 infinite pixel(s)" in line, line
    assert not (work / "explanations").exists()


def test_analyze_never_writes_outside_out_for_a_crafted_attribute(out, tmp_path):
    work = tmp_path / "deep" / "er" / "out"
    shutil.copytree(out, work)

    def craft(ds):
        ds.attrs["attack"] = "../../evil"
    attack_file = work / "attacks" / "quick" / f"{RUN}.nc"
    _rewrite(attack_file, craft)

    def consistent(ds):  # a crafted set: the explanation names the crafted attack file's content hash
        ds.attrs["attack_sha256"] = store.file_hash(attack_file)
    _rewrite(work / "explanations" / "quick" / f"{RUN}_lrp.nc", consistent)
    before = {p for p in tmp_path.rglob("*")}
    result = CliRunner().invoke(COMMANDS["analyze"], ["--out", str(work)])
    line = _error_line(result)
    assert "'quick_../../evil_linf_eps0.2_top20' cannot name an output file" in line, line
    assert "--name" in line
    assert {p for p in tmp_path.rglob("*")} - before == set()  # nothing new anywhere, inside out or not
    # the library refuses such names wherever a path is made
    ds = xr.Dataset(attrs=store.provenance("analysis", {}, topk=20))
    for name in ("../../evil", "a/b", ".hidden", "", "x y"):
        with pytest.raises(ValueError, match="cannot name an output file"):
            stability.write(ds, work, name)
    with pytest.raises(ValueError, match="cannot name an output file"):
        paths.attack_path(work, "..", "run")
    with pytest.raises(ValueError, match="lies outside the output folder"):
        paths.inside(work, work / "analysis" / ".." / ".." / "x.nc")
    # with a name of its own the analysis is written inside out
    result = CliRunner().invoke(COMMANDS["analyze"], ["--out", str(work), "--name", "mine"])
    assert result.exit_code == 0, result.output
    assert (work / "analysis" / "mine.nc").is_file()


def test_explanation_link_attribute_is_checked(out, tmp_path):
    work = tmp_path / "out"
    shutil.copytree(out, work)

    def craft(ds):
        ds.attrs["attack_run"] = ".."
    _rewrite(work / "explanations" / "quick" / f"{RUN}_lrp.nc", craft)
    line = _error_line(CliRunner().invoke(COMMANDS["analyze"], ["--out", str(work)]))
    assert "names attack run '..' in its 'attack_run' attribute, which is not a run name" in line, line


# -- --out: a file, below a file, not writable --------------------------------------------------------------
@pytest.mark.parametrize("command, args", [
    ("train", ["--model", "baseNN"]), ("attack", ["--model", "baseNN"]), ("table", ["--model", "baseNN"]),
    ("explain", ["--model", "baseNN"]), ("analyze", []), ("plot", []), ("pipeline", []),
])
def test_out_below_a_file_is_one_line(command, args, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(COMMANDS[command], [*args, "--out", str(blocker / "sub" / "out")])
    line = _error_line(result)
    assert "lies below" in line and "which is a file" in line, line
    assert blocker.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["file"]


def _refuse_writes(monkeypatch):
    def refuse(folder):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(paths, "probe_writable", refuse)


def test_unwritable_out_is_one_line_before_the_work(out, tmp_path, monkeypatch):
    """The writability probe creates and removes a file (``os.access`` says yes to root on a read-only mount);
    here it is made to fail, as on a read-only folder, and every stage stops before computing."""
    _refuse_writes(monkeypatch)
    import bayesrobust.adversarial as adversarial
    monkeypatch.setattr(adversarial, "run_attack", lambda *a, **k: pytest.fail("attacked an unwritable out"))
    result = CliRunner().invoke(COMMANDS["attack"], ["--model", "baseNN", "--n-inputs", "10", "--epsilon", "0.1",
                                                     "--out", str(out)])
    line = _error_line(result)
    assert f"output folder '{out / 'attacks' / 'quick'}' is not writable: Permission denied" in line, line
    assert not (out / "attacks" / "quick" / "baseNN_fgsm_linf_eps0.1_S1.nc").exists()
    for command, args in (("explain", ["--model", "baseNN", "--force", "--no-progress"]), ("analyze", []),
                          ("pipeline", ["--preset", "tiny"])):
        line = _error_line(CliRunner().invoke(COMMANDS[command], [*args, "--out", str(out)]))
        assert "is not writable: Permission denied" in line, (command, line)
    with pytest.raises(paths.OutputError, match="is not writable"):
        Experiment("tiny", out=tmp_path / "new")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into a chmod-read-only folder; the probe's failure is tested above")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(paths.OutputError, match="is not writable"):
            paths.prepare_out(folder)
    finally:
        folder.chmod(0o700)


def test_probe_leaves_nothing_behind(tmp_path):
    assert paths.prepare_out(tmp_path / "a" / "b", "attacks", "quick") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b" / "attacks" / "quick").is_dir()
    assert _files(tmp_path) == []


# -- corrupt data files ------------------------------------------------------------------------------------
def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_root(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
    assert len(datasets.load("mnist", "test", tmp_path / "data")) == 20  # the good copy loads
    return tmp_path / "data"


def test_truncated_gz_names_the_file(mnist_root, tmp_path):
    path = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:4000])  # a truncated download: a few KB of the archive
    with pytest.raises(CorruptDataError, match=re.escape(f"data file {path} is corrupt or truncated")):
        datasets.load("mnist", "test", mnist_root)
    out = tmp_path / "out"
    result = CliRunner().invoke(COMMANDS["train"], ["--model", "baseNN", "--dataset", "mnist", "--data-root",
                                                    str(mnist_root), "--out", str(out)])
    line = _error_line(result)
    assert str(path) in line and "corrupt or truncated" in line, line
    assert _files(out) == []


def test_short_or_garbled_idx_names_the_file(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(_idx(np.arange(20) % 10)[:-5]))  # complete archive, short content
    with pytest.raises(CorruptDataError, match=re.escape(f"data file {labels} holds 23 bytes but its header")):
        datasets.load("mnist", "test", mnist_root)
    labels.write_bytes(gzip.compress(b"<html>not found</html>"))
    with pytest.raises(CorruptDataError, match=re.escape(f"data file {labels} is not an idx file")):
        datasets.load("mnist", "test", mnist_root)


def test_corrupt_npz_names_the_file(tmp_path):
    path = tmp_path / "cifar10" / "test_300.npz"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptDataError, match=re.escape(f"data file {path} is corrupt or truncated")):
        datasets.load("cifar10_test300", "test", tmp_path)


def test_corrupt_cifar_batch_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"\x80\x04 truncated pickle")
    with pytest.raises(CorruptDataError, match=re.escape(str(folder / "test_batch"))):
        datasets.load("cifar10", "test", tmp_path)


# -- checkpoints naming an absurd architecture or not matching their weights ------------------------------
def _checkpoint(folder: Path, kind: str = "svi", **arch) -> Path:
    torch.manual_seed(0)
    net = build(ARCH)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    if kind == "svi":
        post = Posterior(ARCH, "svi", params, {k: torch.full_like(v, 0.1) for k, v in params.items()})
    else:
        post = Posterior(ARCH, "hmc", {k: v.expand(2, 3, *v.shape).clone() for k, v in params.items()})
    post.save(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["arch"].update(arch)
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("arch, message", [
    ({"hidden": 10**9}, "hidden size must be at most 65,536, got 1,000,000,000"),
    ({"hidden": 0}, "hidden size must be positive, got 0"),
    ({"in_shape": [1, 10**6, 10**6]}, "in_shape (1, 1000000, 1000000) is out of range"),
    ({"in_shape": [1, 4]}, "in_shape must be three sizes"),
    ({"n_classes": -3}, "n_classes must be an integer in [1, 100000], got -3"),
    ({"name": "transformer"}, "unknown architecture 'transformer'"),
    ({"hidden": "many"}, "not an architecture config"),
    ({"hidden": 60_000, "in_shape": [3, 512, 512]}, "parameters, more than 1,000,000,000"),
])
def test_absurd_architecture_is_refused_before_reading_weights(arch, message, tmp_path, monkeypatch):
    folder = _checkpoint(tmp_path / "m", **arch)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("read the weights of an absurd checkpoint"))
    with pytest.raises(ValueError) as err:
        Posterior.load(folder)
    text = str(err.value)
    assert message in text and f"checkpoint {folder} refused" in text and "\n" not in text, text


@pytest.mark.parametrize("kind, arch, message", [
    ("svi", {"hidden": 5}, "parameter '1.weight' has shape (4, 16) but architecture fc2 (hidden 5"),
    ("svi", {"n_classes": 4}, "parameter '5.weight' has shape (3, 4)"),
    ("svi", {"name": "linear"}, "unexpected parameter(s) 3.bias, 3.weight, 5.bias, 5.weight"),
    ("hmc", {"hidden": 6}, "expects (chain, sample, 6, 16)"),
])
def test_weights_that_do_not_match_the_architecture_are_refused(kind, arch, message, tmp_path):
    folder = _checkpoint(tmp_path / "m", kind, **arch)
    with pytest.raises(ValueError) as err:
        Posterior.load(folder)
    text = str(err.value)
    assert message in text and "\n" not in text, text
    assert Posterior.load(_checkpoint(tmp_path / "good", kind)).arch == ARCH  # untouched: loads


def test_absurd_checkpoint_is_one_line_on_the_command_line(out, tmp_path):
    work = tmp_path / "out"
    shutil.copytree(out, work)
    config = work / "models" / "quick" / "baseNN" / "config.json"
    meta = json.loads(config.read_text())
    meta["arch"]["hidden"] = 10**9
    config.write_text(json.dumps(meta))
    for command, args in (("attack", ["--epsilon", "0.1"]), ("explain", ["--force", "--no-progress"])):
        line = _error_line(CliRunner().invoke(COMMANDS[command], ["--model", "baseNN", *args, "--out", str(work)]))
        assert "refused: hidden size must be at most 65,536, got 1,000,000,000" in line, line


def test_check_arch_accepts_the_presets():
    from bayesrobust.presets import PRESETS
    for preset in PRESETS.values():
        check_arch(preset.arch)
