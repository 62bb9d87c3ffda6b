"""Smoke tests of ``python -m bayesrobust.explain``: tiny models, attack runs of 6 images, 3 draws."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from helpers import save_untrained_quick_models

from bayesrobust import attack as attack_cli
from bayesrobust import store
from bayesrobust.explain.__main__ import main as explain_main

BNN_RUN = "fullBNN_svi_fgsm_linf_eps0.2_S3_mean_grad"
DET_RUN = "baseNN_fgsm_linf_eps0.2_S1"


pytestmark = pytest.mark.threads(1)  # tiny networks: one thread is faster


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """A quick (untrained) baseNN and SVI fullBNN, each attacked with FGSM on 6 test images."""
    root = save_untrained_quick_models(tmp_path_factory.mktemp("results"), svi_scale=0.05)
    for model, draws in (("fullBNN", "3"), ("baseNN", "1")):
        _run(attack_cli.main, ["--model", model, "--preset", "quick", "--attack", "fgsm", "--n-inputs", "6",
                               "--n-draws", draws, "--out", str(root)])
    return root


def _run(main, args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _fail(args):
    result = CliRunner().invoke(explain_main, args)
    assert result.exit_code != 0
    return result.output


def test_explain_fullbnn_rules_with_draws(out):
    output = _run(explain_main, ["--model", "fullBNN", "--preset", "quick", "--attack-run", BNN_RUN, "--rule",
                                 "epsilon", "--rule", "gamma", "--layers", "all", "--keep-draws", "--no-progress",
                                 "--out", str(out)])
    assert "S=3 draw(s)" in output and "written to" in output
    folder = out / "explanations" / "quick"
    with xr.open_dataset(folder / f"{BNN_RUN}_lrp.nc") as ds:
        store.validate(ds, "explanation")
        assert dict(ds["relevance"].sizes) == {"input": 2, "rule": 2, "layer": 3, "image": 6, "channel": 1,
                                               "height": 28, "width": 28}
        assert ds.attrs["attack_run"] == BNN_RUN and ds.attrs["n_draws"] == 3
        assert store.config_of(ds)["model"] == "fullBNN"
        with xr.open_dataset(out / "attacks" / "quick" / f"{BNN_RUN}.nc") as attack:
            np.testing.assert_array_equal(ds["image"].values, attack["image"].values)
        draws = xr.open_zarr(folder / f"{BNN_RUN}_lrp_draws.zarr")["relevance_draws"]
        assert draws.sizes["draw"] == 3
        np.testing.assert_allclose(draws.mean("draw").values, ds["relevance"].values, rtol=1e-5, atol=1e-7)
    again = ["--model", "fullBNN", "--preset", "quick", "--attack-run", BNN_RUN, "--rule", "epsilon", "--rule",
             "gamma", "--no-progress", "--out", str(out)]
    assert "is up to date (same settings and attack run); --force redoes it" in _run(explain_main, again)
    assert "written to" in _run(explain_main, [*again, "--layers", "-1"])  # other settings: recomputed
    with xr.open_dataset(out / "attacks" / "quick" / f"{BNN_RUN}.nc") as attack:
        redone = attack.load().assign_attrs(created="2030-01-01T00:00:00+00:00")
    store.write_netcdf(redone, out / "attacks" / "quick" / f"{BNN_RUN}.nc", "attack")
    assert "written to" in _run(explain_main, [*again, "--layers", "-1"])  # the attack was redone: recomputed


def test_explain_basenn_with_a_captum_method(out):
    path = out / "attacks" / "quick" / f"{DET_RUN}.nc"
    _run(explain_main, ["--model", "baseNN", "--preset", "quick", "--attack-run", str(path), "--method",
                        "smoothgrad", "--layers", "0,-1", "--no-progress", "--out", str(out)])
    with xr.open_dataset(out / "explanations" / "quick" / f"{DET_RUN}_smoothgrad.nc") as ds:
        assert list(ds["rule"].values) == ["smoothgrad"] and list(ds["layer"].values) == [0, 2]
        assert ds.sizes["draw"] == 1 and float(ds["relevance_std"].max()) == 0.0


def test_clear_errors(out):
    base = ["--preset", "quick", "--out", str(out), "--no-progress"]
    msg = _fail(["--model", "fullBNN", "--attack-run", BNN_RUN, "--rule", "zplus", *base])
    assert "'zplus' is not one of 'epsilon', 'gamma', 'alpha1beta0'" in msg
    msg = _fail(["--model", "fullBNN", "--attack-run", BNN_RUN, "--method", "lime", *base])
    assert "'lime' is not one of 'lrp', 'ig', 'gradshap', 'saliency', 'smoothgrad', 'gradcam'" in msg
    msg = _fail(["--model", "fullBNN", "--attack-run", BNN_RUN, "--layers", "5", "--force", *base])
    assert "layer 5 out of range; this conv network has layers 0 (0), 1 (3), 2 (7)" in msg
    msg = _fail(["--model", "fullBNN", "--attack-run", BNN_RUN, "--layers", "last", "--force", *base])
    assert "--layers takes 'all' or layer indices" in msg
    msg = _fail(["--model", "fullBNN", "--attack-run", DET_RUN, *base])
    assert "attack run was made with model='baseNN' but the model to explain has model='fullBNN'" in msg
    msg = _fail(["--model", "baseNN", "--attack-run", "nope", *base])
    assert "no attack run 'nope'" in msg and DET_RUN in msg and BNN_RUN in msg
    msg = _fail(["--model", "baseNN", "--attack-run", DET_RUN, "--method", "ig", "--rule", "gamma", *base])
    assert "rules and composites choose LRP rules; they do not apply to method 'ig'" in msg
