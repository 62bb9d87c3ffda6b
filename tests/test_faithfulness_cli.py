"""The faithfulness command end to end: `QUICK=1 shell/exec_faithfulness.sh` on the `tiny` preset (train, FGSM,
explain, analyse, then the faithfulness checks of every model next to its LRP robustness), reduced to three
methods, 10 images and 10 steps so the suite stays fast; and its refusal of bad input before any work."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_faithfulness(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    env = {**os.environ, "QUICK": "1", "QUICK_PRESET": "tiny", "OUT": str(out), "DRAWS": "3", "RULES": "epsilon"}
    args = ["--n-inputs", "10", "--steps", "10", "--rise-masks", "100", "--randomisation-inputs", "6",
            "--method", "epsilon", "--method", "saliency", "--method", "rise"]
    proc = subprocess.run(["bash", str(ROOT / "shell" / "exec_faithfulness.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_driver_writes_the_side_by_side_table(tiny_faithfulness):
    out, stdout = tiny_faithfulness
    folder = out / "faithfulness" / "tiny"
    table = xr.open_dataset(folder / "side_by_side.nc")
    assert list(table.model.values) == ["baseNN", "advNN", "fullBNN_svi"]
    assert list(table.rule.values) == ["epsilon", "saliency", "rise"]
    # the pipeline's analysis explained the epsilon rule only: robustness there, none for the others
    assert np.isfinite(table.lrp_robustness.sel(rule="epsilon")).all()
    assert np.isnan(table.lrp_robustness.sel(rule=["saliency", "rise"])).all()
    ana = xr.open_dataset(out / "analysis" / "tiny_fgsm_top20.nc")
    np.testing.assert_allclose(table.lrp_robustness.sel(model="fullBNN_svi", rule="epsilon"),
                               ana.lrp_robustness.sel(model="fullBNN_S3", rule="epsilon").isel(layer=-1).median())
    assert ((table.deletion_auc >= 0) & (table.deletion_auc <= 1)).all()
    assert (np.abs(table.randomisation_rho) <= 1).all()
    for name in ("side_by_side.png", "curves_baseNN.png", "curves_fullBNN_svi.png"):
        assert (folder / name).stat().st_size > 0
    assert "Stable and faithful, side by side" in stdout and "fullBNN_svi" in stdout


def test_per_draw_and_mean_map_results(tiny_faithfulness):
    out, _ = tiny_faithfulness
    folder = out / "faithfulness" / "tiny"
    det = xr.open_dataset(folder / "baseNN.nc")
    bay = xr.open_dataset(folder / "fullBNN_svi.nc")
    assert det.sizes["draw"] == 1 and bay.sizes["draw"] == 3 and bay.sizes["image"] == 10
    assert bay.sizes["fraction"] == 11 and bay.attrs["deletion_baseline"] == "zero"
    # one draw: the mean map is that draw's map
    np.testing.assert_array_equal(det.deletion_auc.sel(map="mean"), det.deletion_auc.sel(map="draw"))
    assert np.isnan(det.mean_vs_draw_p).all() and np.isfinite(bay.mean_vs_draw_p).all()
    # the curves start at the clean confidence (deletion) and end there (insertion)
    conf = bay.confidence.broadcast_like(bay.deletion_auc)
    np.testing.assert_allclose(bay.deletion_curve.isel(fraction=0), conf, rtol=1e-5)
    np.testing.assert_allclose(bay.insertion_curve.isel(fraction=-1), conf, rtol=1e-5)
    np.testing.assert_allclose(bay.deletion_auc_normalised, bay.deletion_auc / conf, rtol=1e-6)
    assert list(bay.randomised.values) == ["5", "3", "1"]     # fc2: logits first, then down
    rho = bay.randomisation_rho.sel(rule="saliency")
    assert np.isfinite(rho.isel(image=slice(0, 6))).all() and np.isnan(rho.isel(image=slice(6, None))).all()


def test_rerun_reuses_the_results_and_rebuilds_the_table(tiny_faithfulness):
    from bayesrobust.faithfulness import main
    out, _ = tiny_faithfulness
    folder = out / "faithfulness" / "tiny"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.nc")}
    args = ["--preset", "tiny", "--out", str(out), "--n-draws", "3", "--n-inputs", "10", "--steps", "10",
            "--rise-masks", "100", "--randomisation-inputs", "6", "--method", "epsilon", "--method", "saliency",
            "--method", "rise"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("is up to date") == 3
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.nc")}
    assert all(after[name] == before[name] for name in before if name != "side_by_side.nc")
    assert after["side_by_side.nc"] != before["side_by_side.nc"]


def test_bad_input_is_refused_before_any_work(tmp_path):
    from bayesrobust.faithfulness import main
    result = CliRunner().invoke(main, ["--preset", "tiny", "--out", str(tmp_path), "--steps", "0"])
    assert result.exit_code != 0 and "steps" in result.output
    result = CliRunner().invoke(main, ["--preset", "tiny", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no trained model" in result.output and "bayesrobust.train" in result.output
    assert not (tmp_path / "faithfulness").exists()
