"""The attribution attack, ART training and the attribution table end to end, through the QUICK driver.

CI runs ``QUICK=1 shell/exec_attribution.sh`` on the ``tiny`` preset with one training epoch and two model
kinds (baseNN and artBNN: the deterministic baseline and ART inside SVI), 10 images and 5 attack steps: the
same commands as the quick run, smaller.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from bayesrobust.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def driver_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("attribution")
    env = {**os.environ, "QUICK": "1", "QUICK_PRESET": "tiny", "OUT": str(out), "MODELS": "baseNN artBNN",
           "EPOCHS": "1", "N_INPUTS": "10", "STEPS": "5"}
    proc = subprocess.run(["bash", str(ROOT / "shell" / "exec_attribution.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_driver_writes_runs_table_and_figure(driver_run):
    out, stdout = driver_run
    runs = sorted((out / "attributions" / "tiny").glob("*_ifia_*.nc"))
    assert [r.name.split("_")[0] for r in runs] == ["artBNN", "baseNN"]
    for path in runs:
        with xr.open_dataset(path) as ds:
            assert ds.attrs["kind"] == "attribution_attack"
            assert (ds["pred_adv"] == ds["pred"]).all()  # every label kept
            assert float(abs(ds["x_adv"] - ds["x"]).max()) <= ds.attrs["epsilon"] + 1e-6
            assert ds.sizes["image"] == 10 and ds["map"].dims == ("image", "height", "width")
            assert np.isfinite(ds["kendall_tau"]).all() and (ds["topk_intersection"] <= 1).all()
            assert ds.attrs["n_draws"] == (5 if ds.attrs["model"] == "artBNN" else 1)
            assert 0 <= ds.attrs["pgd_accuracy"] <= ds.attrs["natural_accuracy"] + 1e-9
    with xr.open_dataset(out / "attributions" / "tiny" / "attribution_table.nc") as table:
        assert list(table["model"].values) == ["baseNN", "artBNN"]
    assert (out / "figures" / "attribution_tiny.png").stat().st_size > 10_000
    header = next(line for line in stdout.splitlines() if "topk_intersection" in line)
    assert header.split() == ["model", "S", "method", "attack", "natural_accuracy", "pgd_accuracy",
                              "topk_intersection", "kendall_tau"]


def test_rerun_skips_and_table_filters(driver_run):
    out, _ = driver_run
    runner = CliRunner()
    again = runner.invoke(main, ["attack", "--model", "baseNN", "--preset", "tiny", "--attack", "ifia",
                                 "--method", "saliency", "--n-draws", "5", "--n-inputs", "10", "--steps", "5",
                                 "--out", str(out)])
    assert again.exit_code == 0 and "up to date" in again.output
    none = runner.invoke(main, ["table", "--kind", "attribution", "--preset", "tiny", "--method", "grad_input",
                                "--out", str(out)])
    assert none.exit_code == 1 and "no attribution-attack run" in none.output


@pytest.mark.parametrize("args, message", [
    (["table", "--preset", "tiny"], "Missing option '--model'"),
    (["attack", "--model", "baseNN", "--attack", "ifia", "--epsilon", "-1"], "epsilon"),
    (["attack", "--model", "baseNN", "--attack", "ifia", "--k", "0"], "k"),
    (["train", "--model", "artBNN", "--inference", "hmc"], "artBNN is trained by SVI"),
])
def test_bad_options_are_one_line_errors(args, message, tmp_path):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path)])
    assert result.exit_code in (1, 2) and message in result.output, result.output
