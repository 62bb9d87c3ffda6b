"""End to end: the reproduction driver, resume, the analysis notebook.

CI runs the layers driver in its QUICK mode on the `tiny` preset (fc2 h=16, a few epochs, 30 images,
S in {5, 10, 20}): the same sequence of commands as `QUICK=1 shell/exec_layers_robustness.sh` with the
`quick` preset, reduced so the suite stays fast.
"""

import os
import subprocess
from pathlib import Path

import pytest
import xarray as xr
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    env = {**os.environ, "QUICK": "1", "QUICK_PRESET": "tiny", "OUT": str(out)}
    proc = subprocess.run(["bash", str(ROOT / "shell" / "exec_layers_robustness.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_layers_driver_runs_every_stage(tiny_results):
    out, stdout = tiny_results
    assert sorted(p.name for p in (out / "models" / "tiny").iterdir()) == ["advNN", "baseNN", "fullBNN_svi"]
    attacks = sorted(p.name for p in (out / "attacks" / "tiny").glob("*.nc"))
    assert len(attacks) == 5  # baseNN, advNN, fullBNN with S = 5, 10, 20
    ana = xr.open_dataset(out / "analysis" / "tiny_fgsm_top20.nc")
    assert list(ana.model.values) == ["baseNN", "advNN", "fullBNN_S5", "fullBNN_S10", "fullBNN_S20"]
    assert list(ana.rule.values) == ["epsilon"] and ana.sizes["layer"] == 3 and ana.sizes["image"] == 30
    assert ((ana.lrp_robustness >= 0) & (ana.lrp_robustness <= 1)).all()
    figures = {p.name for p in (out / "figures").glob("*.png")}
    for fig in ("fig1", "fig3", "fig4", "fig5", "fig6"):
        assert any(fig in name for name in figures), (fig, figures)
    assert "Headline (last layer" in stdout and "fullBNN_S20-baseNN" in stdout


def test_rerun_skips_finished_stages(tiny_results):
    from bayesrobust.pipeline import main
    out, _ = tiny_results
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.nc")}
    result = CliRunner().invoke(main, ["--preset", "tiny", "--rule", "epsilon", "--draws", "5", "--draws", "10",
                                       "--draws", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("up to date") >= 3 + 5 + 5  # models, attacks, explanations
    for path in before:
        if "analysis" not in path.parts:
            assert path.stat().st_mtime_ns == before[path], path


def test_notebook_reproduces_the_headline(tiny_results):
    import nbclient
    import nbformat
    out, _ = tiny_results
    nb = nbformat.read(ROOT / "experiments" / "analysis.ipynb", as_version=4)
    os.environ["BAYESROBUST_RESULTS"] = str(out)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT / "experiments")}}).execute()
    finally:
        del os.environ["BAYESROBUST_RESULTS"]
    outputs = "".join(str(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "median_difference" in outputs and "image/png" in outputs


def test_experiment_from_python_returns_the_analysis(tiny_results):
    """The library entry point: the whole experiment in a few lines, every stage skipped when up to date, the
    analysis Dataset returned (equal to the stored one)."""
    from bayesrobust import Experiment
    out, _ = tiny_results
    said = []
    analysis = Experiment("tiny", out=out, rules=["epsilon"], draws=[5, 10, 20], report=said.append).run()
    assert sum("up to date" in s for s in said) == 3 + 5 + 5
    with xr.open_dataset(out / "analysis" / "tiny_fgsm_top20.nc") as stored:
        xr.testing.assert_allclose(analysis.lrp_robustness, stored.lrp_robustness)
    assert list(analysis.model.values) == ["baseNN", "advNN", "fullBNN_S5", "fullBNN_S10", "fullBNN_S20"]


@pytest.mark.parametrize("settings, message", [
    ({"rules": ["epsilon", "nope"]}, "unknown LRP rule 'nope'"),
    ({"draws": [5, 0]}, "draws must be positive, got 0"),
    ({"topk": 0}, r"topk is a percentage of pixels in \(0, 100\], got 0"),
    ({"attack": "fgsm", "norm": "l2"}, "FGSM is an Linf attack"),
    ({"epsilon": float("nan")}, "epsilon must be a finite positive number, got nan"),
    ({"epsilon": float("inf")}, "epsilon must be a finite positive number, got inf"),
    ({"inference": "vi"}, "unknown inference 'vi'"),
    ({"mode": "mean"}, "unknown posterior mode 'mean'"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"inference": "hmc", "draws": [21]}, r"draws=21 but the HMC posterior of preset 'tiny' has only 20 draws"),
    ({"warmup": 5}, "warmup=5 does not apply to a fullBNN trained by svi"),  # tiny's fullBNN is SVI: not ignored
    ({"inference": "sghmc", "epochs": 2, "burnin": 2}, r"burnin \(2 epochs\) must be less than epochs \(2\)"),
])
def test_experiment_checks_every_stage_before_any_work(tmp_path, settings, message):
    from bayesrobust import Experiment
    with pytest.raises(ValueError, match=message):
        Experiment("tiny", out=tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()
