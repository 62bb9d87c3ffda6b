"""The fidelity ladder driver end to end — the sweep experiments/sweeps/fidelity_ladder.toml on a 2-worker
dask cluster, QUICK mode on the `tiny` preset, 10 images: its two ends — every switch on the reference's
setting, every switch correct — and one middle step (which copies the first step's fullBNN) run with the
switches recorded in the results, PGD-40 and two S (1 and 10, set per step from the command line) at both
ends, the controls in every step, and the report shows every step. (All steps of `QUICK=1` take minutes
more; the middle steps are the same sweep with other switch values.)"""

import json
import os
import subprocess
from pathlib import Path

import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
# step -> (SVI likelihood scaling, posterior mode of the fullBNN attack, the gamma rule)
SWITCHES = {"0_reference": ("reference", "mean_sign", "gamma_quadratic"),
            "1_likelihood_scaled": ("full", "mean_sign", "gamma_quadratic"),
            "2_attack_mean_grad": ("reference", "mean_grad", "gamma_quadratic"),
            "3_gamma_textbook": ("reference", "mean_sign", "gamma"),
            "4_correct": ("full", "mean_grad", "gamma")}


def test_quick_ladder_records_every_switch_and_reports_every_step(tmp_path):
    env = {**os.environ, "QUICK": "1", "QUICK_PRESET": "tiny", "OUT": str(tmp_path),
           "STEPS": "0_reference 2_attack_mean_grad 4_correct"}
    proc = subprocess.run(["bash", str(ROOT / "shell" / "exec_fidelity_ladder.sh"), "--set", "n_inputs=10",
                           "--set", "0_reference_ends.draws=[1, 10]", "--set", "4_correct_ends.draws=[1, 10]",
                           "--dashboard", ":0", "--no-progress"],
                          cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    base = tmp_path / "tiny"
    assert sorted(p.name for p in base.iterdir()) == ["0_reference", "2_attack_mean_grad", "4_correct"]
    for step in ("0_reference", "2_attack_mean_grad", "4_correct"):
        scaling, mode, gamma = SWITCHES[step]
        folder = base / step
        model = json.loads((folder / "models" / "tiny" / "fullBNN_svi" / "config.json").read_text())
        assert model["config"]["preset"]["svi"]["likelihood_scaling"] == scaling, step
        attacks = sorted((folder / "attacks" / "tiny").glob("fullBNN_*fgsm*.nc"))
        assert len(attacks) == 1, attacks
        with xr.open_dataset(attacks[0]) as attack:
            assert attack.attrs["posterior_mode"] == mode, step
        with xr.open_dataset(folder / "analysis" / "tiny_fgsm_top20.nc") as ana:
            assert sorted(ana.rule.values.tolist()) == sorted(["epsilon", gamma, "alpha1beta0"]), step
            assert {"diff_median", "diff_ci_low", "diff_ci_high"} <= set(ana.data_vars)
            # the controls run by default in every step (docs/method.md §9.8)
            assert {"cross_diff_median", "random_diff_median", "perturbation_l2"} <= set(ana.data_vars), step
    # baseNN/advNN do not depend on the switches: the same weights in every step
    weights = {(base / s / "models" / "tiny" / "baseNN" / "weights.pt").read_bytes()
               for s in ("0_reference", "4_correct")}
    assert len(weights) == 1
    # fullBNN depends on the likelihood scaling only: step 2 copies step 0's (same scaling; the copy keeps the
    # config with its training time, which a second training would not), step 4 trains its own
    bayes = {s: [(base / s / "models" / "tiny" / "fullBNN_svi" / f).read_bytes() for f in ("weights.pt", "config.json")]
             for s in SWITCHES if (base / s).is_dir()}
    assert bayes["2_attack_mean_grad"] == bayes["0_reference"]
    assert bayes["4_correct"][0] != bayes["0_reference"][0]
    assert "sweep fidelity_ladder.toml" in proc.stdout + proc.stderr and "0 failed, 0 not run" in proc.stdout
    # the workers' own progress reaches the terminal; dask's INFO chatter does not
    assert f"bayesrobust.cluster: started: train {base / '0_reference'} tiny baseNN" in proc.stderr
    assert "bayesrobust.inference.svi: SVI epoch 1/" in proc.stderr
    assert "distributed.scheduler" not in proc.stderr
    for end in ("0_reference", "4_correct"):  # PGD-40 with several S at the two ends
        with xr.open_dataset(base / end / "analysis" / "tiny_pgd_top20.nc") as pgd:
            assert [m for m in pgd.model.values.tolist() if m.startswith("fullBNN")] == \
                ["fullBNN", "fullBNN_S10"]  # S = 1 is named without _S1
    report = (tmp_path / "report.html").read_text()
    for step in ("0_reference", "4_correct"):
        assert f"tiny/{step}/tiny_fgsm_top20" in report
    assert (tmp_path / "report_files" / "differences.png").is_file()
    assert "random sign, same ‖δ‖₂" in (tmp_path / "report.md").read_text()  # the controls table
