"""Every new inference route end to end on the tiny preset: ``train`` → ``attack`` → ``explain``, then
``diagnose`` and ``evaluate`` (real Fashion-MNIST as the out-of-distribution set)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from bayesrobust import store
from bayesrobust.cli import COMMANDS
from bayesrobust.models.posterior import Posterior

ROUTES = ("sghmc", "sgld", "laplace", "ensemble")
pytestmark = pytest.mark.threads(1)  # tiny networks: one thread is faster


def _run(command, args):
    result = CliRunner().invoke(COMMANDS[command], args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """A tiny baseNN and every new fullBNN route, each attacked with FGSM on 6 images with 2 draws."""
    root = tmp_path_factory.mktemp("results")
    _run("train", ["--model", "baseNN", "--preset", "tiny", "--no-progress", "--out", str(root)])
    shorter = {"sghmc": ["--epochs", "1", "--burnin", "0"], "sgld": ["--epochs", "1", "--burnin", "0"],
               "ensemble": ["--epochs", "1"], "laplace": []}  # laplace: around the baseNN above
    for inference in ROUTES:
        _run("train", ["--model", "fullBNN", "--preset", "tiny", "--inference", inference, "--no-progress",
                       *shorter[inference], "--out", str(root)])
        _run("attack", ["--model", "fullBNN", "--preset", "tiny", "--inference", inference, "--attack", "fgsm",
                        "--n-inputs", "6", "--n-draws", "2", "--out", str(root)])
    return root


@pytest.mark.parametrize("inference", ROUTES)
def test_route_trains_attacks_and_explains(out, inference):
    folder = out / "models" / "tiny" / f"fullBNN_{inference}"
    post = Posterior.load(folder)
    assert post.kind == inference and post.config["inference"] == inference
    if inference == "laplace":  # around the stored baseNN: the same MAP
        base = Posterior.load(out / "models" / "tiny" / "baseNN")
        assert all(np.array_equal(post.params[k], base.params[k]) for k in base.params)
        assert post.config["laplace"]["names"] == ["5.weight", "5.bias"]
    else:  # stored samples: (chain, sample) of the preset's chains x samples, or K members x 1
        assert post.max_draws == (2 if inference == "ensemble" else 8)
        assert "function_diagnostics" in post.config
    run = f"fullBNN_{inference}_fgsm_linf_eps0.05_S2_mean_grad"
    with xr.open_dataset(out / "attacks" / "tiny" / f"{run}.nc") as attack:
        chains, samples = post.draw_coords([0, 1])
        np.testing.assert_array_equal(attack["chain"].values, chains)
        np.testing.assert_array_equal(attack["sample"].values, samples)
    output = _run("explain", ["--model", "fullBNN", "--preset", "tiny", "--inference", inference, "--attack-run",
                              run, "--rule", "epsilon", "--layers", "0", "--no-progress", "--out", str(out)])
    assert "S=2 draw(s)" in output
    with xr.open_dataset(out / "explanations" / "tiny" / f"{run}_lrp.nc") as ds:
        store.validate(ds, "explanation")
        assert np.isfinite(ds["relevance"].values).all()


def test_diagnose_shows_stored_and_computes_new(out):
    output = _run("diagnose", ["--preset", "tiny", "--inference", "sghmc", "--out", str(out)])
    assert "stored diagnostics" in output and "probe logits" in output and "weight space" in output
    output = _run("diagnose", ["--preset", "tiny", "--inference", "sghmc", "--n-images", "50", "--out", str(out)])
    written = out / "models" / "tiny" / "fullBNN_sghmc" / "function_diagnostics.json"
    assert json.loads(written.read_text())["settings"]["n_images"] == 50 and "written to" in output
    result = CliRunner().invoke(COMMANDS["diagnose"], ["--model", "baseNN", "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 1 and "no draws to diagnose" in result.output


def test_evaluate_every_model_with_ood(out, shared_root):
    output = _run("evaluate", ["--preset", "tiny", "--n-images", "100", "--data-root", str(shared_root),
                               "--out", str(out)])
    assert "AUROC(H)" in output and "fullBNN_laplace" in output
    files = list((out / "evaluation" / "tiny").glob("evaluation_*.nc"))
    assert len(files) == 1 and files[0].with_suffix(".png").is_file()
    with xr.open_dataset(files[0]) as ds:
        store.validate(ds, "evaluation")
        assert list(ds["model"].values) == ["baseNN", *(f"fullBNN_{i}" for i in sorted(ROUTES))]
        assert ds.attrs["kind"] == "evaluation" and store.config_of(ds)["ood"] == "fashion_mnist"
        assert ((ds["ood_auroc_entropy"] > 0.5) & (ds["ood_auroc_entropy"] <= 1)).all()
        assert float(ds["mutual_information"].sel(model="baseNN")) == 0
        assert (ds["bin_count"].sum("bin") == 100).all()
    again = _run("evaluate", ["--preset", "tiny", "--n-images", "100", "--data-root", str(shared_root),
                              "--out", str(out)])
    assert "up to date" in again


def test_low_rank_kfac_laplace_trains_attacks_and_explains(tmp_path):
    """``--laplace-structure kron_lowrank`` end to end, with ``--laplace-rank`` and ``--laplace-refit-steps``:
    its rank, refit and fitted λ are stored, and its draws go
    through attack and explain like any posterior's (the output layer's maps: only it differs by draw)."""
    root = str(tmp_path)
    _run("train", ["--model", "baseNN", "--preset", "tiny", "--no-progress", "--out", root])
    _run("train", ["--model", "fullBNN", "--preset", "tiny", "--inference", "laplace", "--laplace-structure",
                   "kron_lowrank", "--laplace-rank", "8", "--laplace-refit-steps", "3", "--no-progress", "--out", root])
    post = Posterior.load(tmp_path / "models" / "tiny" / "fullBNN_laplace")
    info = post.config["laplace"]
    assert info["structure"] == "kron_lowrank" and info["rank"] == 8 and info["prior_precision"][0] > 0
    assert info["refit_steps"] == 3 and info["refit_shift"] > 0  # the refit moved the last layer
    _run("attack", ["--model", "fullBNN", "--preset", "tiny", "--inference", "laplace", "--attack", "fgsm",
                    "--n-inputs", "6", "--n-draws", "2", "--out", root])
    run = "fullBNN_laplace_fgsm_linf_eps0.05_S2_mean_grad"
    _run("explain", ["--model", "fullBNN", "--preset", "tiny", "--inference", "laplace", "--attack-run", run,
                     "--rule", "epsilon", "--layers", "2", "--no-progress", "--out", root])
    with xr.open_dataset(tmp_path / "explanations" / "tiny" / f"{run}_lrp.nc") as ds:
        store.validate(ds, "explanation")
        assert np.isfinite(ds["relevance"].values).all()
        assert ds["relevance_std"].values.max() > 0  # the two draws' maps differ
