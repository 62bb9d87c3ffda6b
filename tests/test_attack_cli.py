"""Smoke tests of ``python -m bayesrobust.attack`` and ``python -m bayesrobust.robustness_table``."""

from __future__ import annotations

import pytest
import xarray as xr
from click.testing import CliRunner
from helpers import save_untrained_quick_models

from bayesrobust import attack as attack_cli
from bayesrobust import robustness_table as table_cli
from bayesrobust import store


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """An output folder holding an (untrained) quick baseNN and a quick SVI fullBNN."""
    return save_untrained_quick_models(tmp_path_factory.mktemp("results"), svi_scale=0.01)


def _run(main, args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_attack_fullbnn(out):
    output = _run(attack_cli.main, ["--model", "fullBNN", "--preset", "quick", "--attack", "pgd",
                                    "--norm", "l2", "--epsilon", "1", "--steps", "2", "--n-inputs", "10",
                                    "--n-draws", "3", "--posterior-mode", "predictive", "--out", str(out)])
    assert "clean accuracy" in output and "adversarial accuracy" in output and "success rate" in output
    path = out / "attacks" / "quick" / "fullBNN_svi_pgd_l2_eps1_steps2_S3_predictive.nc"
    with xr.open_dataset(path) as ds:
        store.validate(ds, "attack")
        assert ds.sizes == {"image": 10, "channel": 1, "height": 28, "width": 28, "class": 10, "draw": 3}
        assert ds.attrs["posterior_mode"] == "predictive" and ds.attrs["steps"] == 2
        assert store.config_of(ds)["preset"] == "quick"


def test_attack_basenn_fgsm(out):
    output = _run(attack_cli.main, ["--model", "baseNN", "--preset", "quick", "--attack", "fgsm",
                                    "--n-inputs", "10", "--out", str(out)])
    assert "written to" in output
    with xr.open_dataset(out / "attacks" / "quick" / "baseNN_fgsm_linf_eps0.2_S1.nc") as ds:
        assert ds.sizes["draw"] == 1 and ds.attrs["epsilon"] == 0.2


def test_attack_margin_loss_is_named_recorded_and_redone(out):
    """``--loss margin``: the run is named by its loss (beside the cross-entropy's run), records it, and the
    command that redoes it says it again."""
    from bayesrobust import redo
    _run(attack_cli.main, ["--model", "fullBNN", "--preset", "quick", "--attack", "pgd", "--steps", "2",
                           "--n-inputs", "10", "--n-draws", "2", "--loss", "margin", "--out", str(out)])
    path = out / "attacks" / "quick" / "fullBNN_svi_pgd_linf_eps0.2_steps2_margin_S2_mean_grad.nc"
    with xr.open_dataset(path) as ds:
        cfg = store.config_of(ds)
        assert ds.attrs["loss"] == "margin" and cfg["loss"] == "margin"
        assert float(abs(ds.x_adv - ds.x).max()) <= 0.2 + 1e-6
    command = redo.attack_command(out, cfg)
    assert "--loss margin" in command and "--attack pgd" in command


def test_a_run_stored_before_attacks_had_a_loss_is_still_up_to_date(out):
    """A run made before attacks recorded their loss (no ``loss`` in its config) attacked the cross-entropy: the
    same command finds it up to date instead of redoing it (and every explanation of it)."""
    import json

    from bayesrobust.stages import up_to_date
    args = ["--model", "baseNN", "--preset", "quick", "--attack", "fgsm", "--n-inputs", "10", "--out", str(out)]
    _run(attack_cli.main, args)
    path = out / "attacks" / "quick" / "baseNN_fgsm_linf_eps0.2_S1.nc"
    with xr.open_dataset(path) as ds:
        old = ds.load()
    config = json.loads(old.attrs["config"])
    del config["loss"], old.attrs["loss"]
    old.attrs["config"] = json.dumps(config)
    store.write_netcdf(old, path, "attack")
    assert "up to date" in _run(attack_cli.main, args)
    assert not up_to_date(config, {**config, "loss": "margin"})


def test_missing_model_names_train_command(tmp_path):
    result = CliRunner().invoke(attack_cli.main, ["--model", "advNN", "--preset", "quick", "--attack", "fgsm",
                                                  "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "python -m bayesrobust.train --model advNN --preset quick" in result.output


def test_fgsm_l2_is_an_error_before_work(out):
    result = CliRunner().invoke(attack_cli.main, ["--model", "baseNN", "--preset", "quick",
                                                  "--attack", "fgsm", "--norm", "l2", "--out", str(out)])
    assert result.exit_code == 1
    assert "Error: FGSM is an Linf attack, got norm 'l2'; use attack pgd for l2" in result.output


def test_robustness_table(out):
    output = _run(table_cli.main, ["--model", "fullBNN", "--preset", "quick", "--linf-eps", "8/255,0.1",
                                   "--l2-eps", "0.5", "--steps", "1", "--steps", "2", "--n-inputs", "10",
                                   "--n-draws", "2", "--out", str(out)])
    assert "PGD linf" in output and "PGD l2" in output
    with xr.open_dataset(out / "attacks" / "quick" / "fullBNN_svi_robustness_table_S2_mean_grad.nc") as ds:
        assert ds.accuracy.dims == ("norm", "epsilon", "steps") and ds.accuracy.shape == (2, 3, 2)


def test_bad_epsilon_list(out):
    result = CliRunner().invoke(table_cli.main, ["--model", "baseNN", "--preset", "quick",
                                                 "--linf-eps", "a/b", "--out", str(out)])
    assert result.exit_code == 1 and "cannot read epsilon 'a/b'" in result.output
