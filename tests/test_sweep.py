"""Sweeps on dask.distributed (docs/method.md §12): a 2-worker LocalCluster runs a tiny grid (tiny preset, 10
images, baseNN and fullBNN with S = 4 split into 2 tasks of 2 draws) and gives the serial run's results;
a worker killed mid-sweep changes nothing; a re-run skips every unit; a failing unit stops its own branch;
the draw-split explanation (with --keep-draws) equals the one-process one; bad sweep files are one-line
errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from bayesrobust import cluster, grid, stages, store
from bayesrobust.explain.bayesian import DrawReducer
from bayesrobust.models.posterior import Posterior
from bayesrobust.presets import get_preset, override_training

TINY = """
[grid]
preset = "tiny"
models = ["baseNN", "fullBNN"]
draws = [4]
rules = ["epsilon"]
[settings]
n_inputs = 10
draws_per_task = 2
"""


@pytest.fixture(scope="module")
def client():
    from distributed import Client
    with cluster.local_cluster(2, dashboard_address=None) as local, Client(local) as c:
        yield c


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The same experiment run one stage after the other in this process (Experiment.run), one thread
    like each worker."""
    from bayesrobust import Experiment
    out = tmp_path_factory.mktemp("serial")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        e = Experiment("tiny", out, models=["baseNN", "fullBNN"], draws=[4], rules=["epsilon"], n_inputs=10)
        e.train()
        e.explain(e.attack_runs())
        e.analyze()
        stages.plot(out, analyses=[e.analysis_name], preset="tiny", formats=["png"])  # as sweep_units
    finally:
        torch.set_num_threads(before)
    return out


def sweep_units(out: Path) -> list[grid.Unit]:
    """The tiny sweep's units (figures as PNG only: the PDFs double the slowest stage of a tiny run)."""
    sweep = grid.parse(TINY, "tiny.toml")
    return [grid.with_kwargs(u, formats=["png"]) if u.stage == "plot" else u
            for u in grid.units(sweep, sweep.experiments(out))]


def read_timings(path: Path) -> list[dict[str, str]]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_results(a: Path, b: Path) -> None:
    """Every model, attack, explanation and analysis under ``a`` equals its counterpart under ``b``: bit for
    bit, except the merged draw statistics of split explanations (float rounding of the parallel merge)."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.nc"))
    assert sorted(p.relative_to(b) for p in b.rglob("*.nc")) == files and len(files) == 5  # 2 attacks, 2 expl.
    for name in files:
        with store.open_result(a / name) as x, store.open_result(b / name) as y:
            if x.attrs["kind"] == "explanation":
                xr.testing.assert_allclose(x.load(), y.load(), rtol=1e-5, atol=1e-7)
                xr.testing.assert_equal(x.unit, y.unit)
            else:
                xr.testing.assert_equal(x.load(), y.load())
    for model in ("baseNN", "fullBNN_svi"):
        p, q = (Posterior.load(root / "models" / "tiny" / model) for root in (a, b))
        for k in p.params:
            assert torch.equal(p.params[k], q.params[k]), (model, k)
    assert {f.name for f in (b / "figures").glob("*.png")} == {f.name for f in (a / "figures").glob("*.png")}


def test_sweep_on_two_workers_equals_the_serial_run_and_reruns_skip(client, serial, tmp_path):
    units = sweep_units(tmp_path)
    assert [u.stage for u in units] == ["train"] * 2 + ["attack", "explain"] * 2 + ["analyze", "plot"]
    seen = []
    outcome = cluster.run_units(client, units, progress=lambda n, total, said: seen.append((n, total)))
    assert outcome.ok, outcome.report()
    assert seen[-1] == (8, 8) and not any(r.skipped for r in outcome.done.values())
    assert_same_results(serial, tmp_path)
    rows = read_timings(cluster.write_timings(outcome, units, tmp_path / "timings" / "tiny.csv"))
    assert [(r["key"], r["stage"], r["status"]) for r in rows] == [(u.key, u.stage, "run") for u in units]
    assert all(float(r["seconds"]) > 0 and Path(r["path"]).exists() for r in rows)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = cluster.run_units(client, sweep_units(tmp_path))
    assert again.ok and len(again.done) == 8 and all(r.skipped for r in again.done.values()), again.report()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_killed_worker_changes_nothing(client, serial, tmp_path):
    """A worker process is killed (SIGKILL) as it starts explaining a chunk of draws; dask re-runs its tasks
    on the other worker (and the nanny restarts it) and the results are the serial run's."""
    from sweep_helpers import KillWorkerOnce
    marker = tmp_path / "killed"
    client.register_plugin(KillWorkerOnce(str(marker), "explain_chunk"))
    try:
        outcome = cluster.run_units(client, sweep_units(tmp_path / "out"))
    finally:
        client.unregister_worker_plugin(KillWorkerOnce.name)
    assert marker.exists(), "no worker was killed"
    assert outcome.ok, outcome.report()
    assert_same_results(serial, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]  # no temporary left over


def test_a_failing_unit_stops_its_own_branch_only(client, serial, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(serial, out)
    units = [grid.with_kwargs(u, layers=[99]) if u.stage == "explain" and "fullBNN" in u.key else u
             for u in sweep_units(out)]
    outcome = cluster.run_units(client, units)
    assert not outcome.ok
    [(failed, why)] = outcome.failed.items()
    assert failed.startswith("explain") and "fullBNN_S4" in failed and "99" in why
    assert sorted(k.split()[0] for k in outcome.not_run) == ["analyze", "plot"]
    assert all(v == failed for v in outcome.not_run.values())
    assert len(outcome.done) == 5 and all(r.skipped for r in outcome.done.values())  # the baseNN branch ran
    assert f"FAILED {failed}: ValueError" in outcome.report()
    status = {r["key"]: (r["status"], r["seconds"]) for r in read_timings(
        cluster.write_timings(outcome, units, tmp_path / "timings.csv"))}
    assert status[failed] == ("failed", "") and {status[k] for k in outcome.not_run} == {("not run", "")}
    assert sum(s == "up to date" for s, _ in status.values()) == 5 and len(status) == len(units)


@pytest.mark.threads(1)  # as the workers: then every draw's maps are the same bits
def test_draw_split_explanation_equals_one_process(client, serial, tmp_path):
    """S = 4 draws in 4 chunks on the workers, with every draw's maps in the zarr store (each chunk writes
    its region): the same summary, units and per-draw maps as one process. The two rules run as one fused
    pass (bayesrobust.explain.fused), whose per-rule moments each chunk returns."""
    for name in ("models", "attacks"):
        shutil.copytree(serial / name, tmp_path / "split" / name)
        shutil.copytree(serial / name, tmp_path / "one" / name)
    run = next((serial / "attacks" / "tiny").glob("fullBNN*.nc"))
    settings = dict(rules=["epsilon", "gamma"], keep_draws=True, n_draws=4)
    one = stages.explain("tiny", "fullBNN", run.name[:-3], out=tmp_path / "one", **settings)

    def on_workers(fn, items):
        return client.gather(client.map(fn, items, pure=False))
    split = stages.explain("tiny", "fullBNN", run.name[:-3], out=tmp_path / "split", draws_per_task=1,
                           map_chunks=on_workers, **settings)
    with store.open_result(one.path) as a, store.open_result(split.path) as b:
        xr.testing.assert_allclose(a.load(), b.load(), rtol=1e-5, atol=1e-7)
        xr.testing.assert_equal(a.unit, b.unit)
        assert float(np.abs(a.relevance_std).max()) > 0  # the draws differ: the merge has work to do
    zarr_one, zarr_split = (Path(str(p.path)[:-3] + "_draws.zarr") for p in (one, split))
    with xr.open_zarr(zarr_one) as a, xr.open_zarr(zarr_split) as b:
        xr.testing.assert_equal(a.relevance_draws.load(), b.relevance_draws.load())
        xr.testing.assert_allclose(a.relevance.load(), b.relevance.load(), rtol=1e-5, atol=1e-7)


def test_workers_run_with_one_thread_and_glibc_default_malloc(client):
    """dask's nanny default MALLOC_TRIM_THRESHOLD_ (65536) slowed explanations 1.5-2x in a worker; the
    embedded cluster unsets it, and every numerical library has one thread."""
    def worker_env():
        import os

        import torch
        return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    assert set(client.run(worker_env).values()) == {(None, "1", 1)}


def test_parallel_welford_merge_is_exact():
    """Chunks of draws merged with DrawReducer.merge give NumPy's mean, std (ddof=0) and sign agreement of all
    draws, and the one-pass reducer's result, whatever the cut."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(11, 3, 5, 4, generator=gen, dtype=torch.float64) + 0.3
    maps[:, 0, 0] = 0  # exact zeros: sign 0 everywhere
    one = DrawReducer()
    for m in maps:
        one.add(m)
    for cut in ([0, 11], [0, 1, 11], [0, 4, 5, 9, 11]):
        merged = DrawReducer()
        for a, b in zip(cut[:-1], cut[1:]):
            part = DrawReducer()
            for m in maps[a:b]:
                part.add(m)
            merged.merge(part)
        mean, std, agree = merged.result()
        x = maps.numpy()
        np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(std.numpy(), x.std(0), rtol=1e-12, atol=1e-14)
        expected = (np.sign(x) == np.sign(x.mean(0))).mean(0)
        np.testing.assert_array_equal(agree.numpy(), expected)
        for u, v in zip(merged.result(), one.result()):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("text, message", [
    ("[grid]\npreset = 'tiny'\ndraw = [4]\n", "tiny.toml [grid]: unknown key 'draw'; expected one of preset"),
    ("[grid]\npreset = 'nope'\n", "tiny.toml: preset has the value 'nope'; expected one of"),
    ("[grid]\npreset = 'tiny'\ndraws = [4, 0]\n", "tiny.toml: draws has the value 0; expected a positive integer"),
    ("[grid]\npreset = 'tiny'\ndraws = ['4']\n", "tiny.toml [grid]: draws has the value '4'; expected an integer"),
    ("[grid]\npreset = 'tiny'\nrules = ['epsilon', 'bogus']\n", "rules has the value 'bogus'; expected one of"),
    ("[grid]\npreset = 'tiny'\n[settings]\nkeep_draws = 1\n", "keep_draws = 1; expected true or false"),
    ("[grid]\npreset = 'tiny'\n[quick]\nbogus = 1\n", "tiny.toml [quick]: unknown key 'bogus'"),
    ("[grid]\npreset = 'tiny'\n[settings]\ncontrols = ['crosss']\n", "controls has the value 'crosss'; expected"),
    ("[grid]\npreset = 'tiny'\n[steps.a]\nbogus = 1\n", "tiny.toml [steps.a]: unknown key 'bogus'"),
    ("[grid]\npreset = 'tiny'\n[steps.a]\ndata_root = 'x'\n", "tiny.toml [steps.a]: unknown key 'data_root'"),
    ("[grid]\npreset = 'tiny'\n[steps.a]\nmode = 3\n", "tiny.toml [steps.a]: mode = 3; expected a string"),
    ("[grid]\npreset = 'tiny'\n[steps.a]\nrules = ['no']\n", "[steps.a]: rules has the value 'no'; expected one of"),
    ("[grid]\npreset = 'tiny'\n[steps.a]\nfolder = '../b'\n", "[steps.a]: step folder '../b' cannot name an output"),
    ("[grid]\npreset = 'tiny'\n[steps.a]\nfor_inference = 'mcmc'\n", "for_inference has the value 'mcmc'; expected"),
    ("[grid]\npreset = 'tiny'\n[steps.a.quick]\nfolder = 'b'\n", "tiny.toml [steps.a.quick]: unknown key 'folder'"),
    ("[grid]\npreset = 'tiny'\nmodels = ['baseNN']\n[steps.a]\nmode = 'mean_sign'\n[steps.b]\nfolder = 'a'\n",
     "step 'b' would redo `attack"),
    ("[grid]\npreset = 'tiny'\n[tables]\n", "tiny.toml: unknown key 'tables'; expected one of description"),
    ("[grid]\nmodels = ['baseNN']\n", "the axis 'preset' is missing"),
    ("[grid\npreset = 'tiny'\n", "tiny.toml: not a valid TOML file"),
    ("[grid]\npreset = 'tiny'\nmodels = ['fullBNN']\n", "point preset=tiny, attack=fgsm, seed=0: the analysis "
                                                       "compares against baseNN"),
])
def test_a_malformed_sweep_file_is_a_one_line_error(tmp_path, text, message):
    from bayesrobust.cli import main
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not (tmp_path / "out" / "models").exists()


def test_set_overrides_and_quick_tables():
    sweep = grid.load("experiments/sweeps/layers_robustness.toml", quick=True,
                        overrides=dict([grid.parse_override("preset=tiny"), grid.parse_override("draws=5,10")]))
    assert sweep.grid["preset"] == ("tiny",) and sweep.grid["draws"] == (5, 10)
    assert sweep.settings["draws_per_task"] == 10 and "data_root" not in sweep.settings
    paper = grid.load("experiments/sweeps/layers_robustness.toml")
    assert len(paper.points()) == 4 and paper.grid["draws"] == (10, 50, 100)
    with pytest.raises(grid.SweepError, match="--set 'preset': expected KEY=VALUE"):
        grid.parse_override("preset")


def test_the_ladder_sweep_runs_every_step_and_trains_each_model_once(tmp_path):
    """experiments/sweeps/fidelity_ladder.toml (QUICK): the steps' switches reach their experiments (those of
    another inference left out), the PGD ends share their step's folder, and every model is trained once per
    distinct training setting, the other steps copying it after that unit."""
    ladder = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True)
    found = {point["step"]: e for point, e in ladder.experiments(tmp_path)}
    assert list(found) == ["0_reference", "1_likelihood_scaled", "2_attack_mean_grad", "3_gamma_textbook",
                           "4_correct", "0_reference_ends", "4_correct_ends", "5_ensemble", "6_prior_scale"]
    ref, ends = found["0_reference"], found["0_reference_ends"]
    assert (ref.likelihood_scaling, ref.mode, ref.hmc_scheme, ref.chains) == ("reference", "mean_sign", None, None)
    assert tuple(ref.rules) == ("epsilon", "gamma_quadratic", "alpha1beta0") and ref.controls == ("cross", "random")
    assert ref.out == ends.out == tmp_path / "quick" / "0_reference" and tuple(ref.draws) == (10,)
    assert (ends.attack, ends.steps, tuple(ends.draws)) == ("pgd", 40, (1, 2, 5, 10))
    assert (found["5_ensemble"].inference, found["5_ensemble"].members) == ("ensemble", 10)
    units = grid.units(ladder, ladder.experiments(tmp_path))
    trained = {u.key.split()[1].split("/")[-1] + " " + u.key.split()[-1]: u for u in units if u.stage == "train"}
    assert [k for k, u in trained.items() if not u.needs] == [
        "0_reference baseNN", "0_reference advNN", "0_reference fullBNN_svi", "1_likelihood_scaled fullBNN_svi",
        "5_ensemble fullBNN_ensemble", "6_prior_scale fullBNN_svi"]
    assert trained["4_correct fullBNN_svi"].needs == (trained["1_likelihood_scaled fullBNN_svi"].key,)
    assert trained["2_attack_mean_grad fullBNN_svi"].kwargs["reuse_from"][0] == tmp_path / "quick" / "0_reference"
    # random: one per attack run (7 FGSM steps x 3 runs, 2 ends x 6 runs); cross: both ways per non-baseNN run
    assert sum(u.stage == "control" for u in units) == (7 * 3 + 2 * 6) + 2 * (7 * 2 + 2 * 5)
    # a NUTS preset: the HMC scheme is step 1's switch, and the SVI likelihood scaling is left out
    nuts = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, overrides={"preset": "quick_fc2"},
                     steps=["0_*", "1_*", "4_correct"])
    found = {point["step"]: e for point, e in nuts.experiments(tmp_path / "nuts")}
    assert list(found) == ["0_reference", "1_hmc_full_data", "4_correct", "0_reference_ends"]
    assert (found["0_reference"].hmc_scheme, found["0_reference"].chains, found["0_reference"].likelihood_scaling) \
        == ("subsets", 15, None)
    trained = [u for u in grid.units(nuts, nuts.experiments(tmp_path / "nuts")) if u.stage == "train"]
    assert [u.key.split()[1].split("/")[-1] for u in trained if "fullBNN" in u.key and not u.needs] == \
        ["0_reference", "1_hmc_full_data"]  # 4_correct has step 1's NUTS settings
    # a NUTS size this CPU can sample: warmup / samples / n_train for every step or one, dropped for SVI
    small = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["0_reference", "1_hmc*"],
                      overrides={"preset": "quick_fc2", "warmup": 3, "samples": 5, "n_train": 300,
                                 "0_reference.samples": 7})
    found = {point["step"]: e for point, e in small.experiments(tmp_path / "small")}
    assert [(e.warmup, e.samples, e.n_train) for e in found.values()] == [(3, 7, 300), (3, 5, 300)]
    trained = {u.key.split()[1].split("/")[-1]: u for u in grid.units(small, small.experiments(tmp_path / "small"))
               if u.stage == "train" and "fullBNN" in u.key}
    overrides = trained["1_hmc_full_data"].kwargs["overrides"]
    hmc = override_training(get_preset("quick_fc2"), "fullBNN", "hmc", **overrides).hmc
    assert (hmc.warmup, hmc.samples, hmc.n_train, hmc.scheme) == (3, 5, 300, "full")
    svi = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                    overrides={"samples": 5, "warmup": 3})
    assert [(e.warmup, e.samples) for _, e in svi.experiments(tmp_path / "svi")] == [(None, None)]
    # an SGHMC fullBNN: chains / samples set for the whole sweep reach it, also in step 0, whose own chains (the
    # reference's 15 subset chains) are for NUTS only; without them, the preset's
    sg = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["0_reference", "4_correct"],
                   overrides={"inference": "sghmc", "chains": 1, "samples": 3, "draws": 3, "temperature": 0.01})
    assert [(e.chains, e.samples, e.temperature) for _, e in sg.experiments(tmp_path / "sg")] == [(1, 3, 0.01)] * 2
    trained = [u for u in grid.units(sg, sg.experiments(tmp_path / "sg")) if u.stage == "train" and "fullBNN" in u.key]
    sgmcmc = override_training(get_preset("quick"), "fullBNN", "sghmc", **trained[0].kwargs["overrides"]).sgmcmc
    assert (sgmcmc.chains, sgmcmc.samples, sgmcmc.temperature) == (1, 3, 0.01)
    with pytest.raises(grid.SweepError, match="temperature must be positive, got 0"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                  overrides={"inference": "sghmc", "temperature": 0}).experiments(tmp_path / "cold")
    # the optimiser of an ensemble's members reaches their training; an SVI fullBNN has none, so it is left out
    ens = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                    overrides={"inference": "ensemble", "members": 2, "draws": 2, "optimizer": "sgd",
                               "momentum": 0.9, "lr": 0.05})
    trained = [u for u in grid.units(ens, ens.experiments(tmp_path / "ens")) if u.stage == "train" and
               "fullBNN" in u.key]
    base = override_training(get_preset("quick"), "fullBNN", "ensemble", **trained[0].kwargs["overrides"]).base
    assert (base.optimizer, base.momentum, base.lr) == ("sgd", 0.9, 0.05)
    svi = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                    overrides={"optimizer": "sgd"})
    assert [e.optimizer for _, e in svi.experiments(tmp_path / "svi_sgd")] == [None]
    with pytest.raises(grid.SweepError, match="unknown optimizer 'adamw'; expected one of adam, sgd"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                  overrides={"inference": "ensemble", "optimizer": "adamw"}).experiments(tmp_path / "bad")
    plain = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["0_reference"],
                      overrides={"inference": "sghmc"})
    assert [(e.chains, e.samples) for _, e in plain.experiments(tmp_path / "plain")] == [(None, None)]
    with pytest.raises(grid.SweepError, match="warmup has the value -1; expected an integer >= 0"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", overrides={"warmup": -1})
    # the fullBNN's training length: epochs (not NUTS) and the SGHMC/SGLD burn-in, dropped where they do not apply
    for inference, wanted in (("sghmc", (4, 2)), ("svi", (4, None))):
        sized = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                          overrides={"inference": inference, "epochs": 4, "burnin": 2})
        experiments = sized.experiments(tmp_path / inference)
        assert [(e.epochs, e.burnin) for _, e in experiments] == [wanted]
        unit = next(u for u in grid.units(sized, experiments) if u.stage == "train" and "fullBNN" in u.key)
        p = override_training(get_preset("quick"), "fullBNN", inference, **unit.kwargs["overrides"])
        assert (p.sgmcmc.epochs, p.sgmcmc.burnin) == ((4, 2) if inference == "sghmc" else (6, 3))
        assert p.svi.epochs == (4 if inference == "svi" else 30)
    # the SGHMC/SGLD preconditioner: set for SGHMC, left out for SVI, a bad value named before any work
    for inference, wanted in (("sghmc", "adapted"), ("svi", None)):
        pre = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                        overrides={"inference": inference, "precondition": "adapted"})
        experiments = pre.experiments(tmp_path / f"pre_{inference}")
        assert [e.precondition for _, e in experiments] == [wanted]
        unit = next(u for u in grid.units(pre, experiments) if u.stage == "train" and "fullBNN" in u.key)
        p = override_training(get_preset("quick"), "fullBNN", inference, **unit.kwargs["overrides"])
        assert p.sgmcmc.precondition == ("adapted" if inference == "sghmc" else "none")
    with pytest.raises(grid.SweepError, match="diagonal"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                  overrides={"inference": "sghmc", "precondition": "diagonal"}).experiments(tmp_path / "bad_pre")
    # the fullBNN's step size and the preconditioner's cap (the plain fashion_mnist_fc2 sampler took lr 0.1)
    for inference, lr, cap in (("sghmc", 0.02, 100.0), ("svi", 0.02, None), ("hmc", None, None)):
        sized = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                          overrides={"preset": "quick_fc2" if inference == "hmc" else "quick", "inference": inference,
                                     "lr": 0.02, "max_precondition": 100})
        experiments = sized.experiments(tmp_path / f"lr_{inference}")
        assert [(e.lr, e.max_precondition) for _, e in experiments] == [(lr, cap)]
        unit = next(u for u in grid.units(sized, experiments) if u.stage == "train" and "fullBNN" in u.key)
        p = override_training(get_preset("quick"), "fullBNN", inference, **unit.kwargs["overrides"])
        assert (p.sgmcmc.lr, p.sgmcmc.max_precondition) == ((0.02, 100.0) if inference == "sghmc" else (0.1, 1000.0))
        assert p.svi.lr == (0.02 if inference == "svi" else 1e-2)
    for key, value, expected in (("lr", 0, "a finite positive number"), ("max_precondition", 0.5, ">= 1")):
        with pytest.raises(grid.SweepError, match=f"{key}.*{expected}"):
            grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                      overrides={"inference": "sghmc", key: value})
    nuts_sized = grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["1_hmc*"],
                           overrides={"preset": "quick_fc2", "epochs": 4, "burnin": 2})
    assert {(e.epochs, e.burnin) for _, e in nuts_sized.experiments(tmp_path / "nuts_sized")} == {(None, None)}
    with pytest.raises(grid.SweepError, match="burnin \\(6 epochs\\) must be less than epochs \\(4\\)"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["4_correct"],
                  overrides={"inference": "sghmc", "epochs": 4, "burnin": 6}).experiments(tmp_path / "bad")
    with pytest.raises(grid.SweepError, match="epochs has the value -1; expected an integer >= 0"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", overrides={"epochs": -1})
    with pytest.raises(grid.SweepError, match="draws=10 but the HMC posterior of preset 'quick_fc2' has only 4"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["1_hmc*"],
                  overrides={"preset": "quick_fc2", "samples": 2}).experiments(tmp_path / "few")
    with pytest.raises(grid.SweepError, match="none of the steps 1_hmc_full_data applies to the presets' fullBNN "
                                              "inference \\(quick: svi\\)"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", quick=True, steps=["1_hmc*"]).experiments(tmp_path)
    with pytest.raises(grid.SweepError, match="no step matches '7_more'; the steps are 0_reference, "):
        grid.load("experiments/sweeps/fidelity_ladder.toml", steps=["7_more"])
    with pytest.raises(grid.SweepError, match="--set 9_x.members: no step '9_x'"):
        grid.load("experiments/sweeps/fidelity_ladder.toml", overrides={"9_x.members": 3})


def test_train_copies_a_model_trained_with_the_same_settings(tmp_path):
    """reuse_from: the stored model of another folder is copied byte for byte when its settings and seed are
    this training's, and ignored otherwise."""
    first = stages.train("tiny", "baseNN", out=tmp_path / "a")
    copied = stages.train("tiny", "baseNN", out=tmp_path / "b", reuse_from=[tmp_path / "a"])
    assert copied.skipped and "copied from" in copied.summary
    for name in ("weights.pt", "config.json"):
        assert (first.path / name).read_bytes() == (copied.path / name).read_bytes()
    other = stages.train("tiny", "baseNN", out=tmp_path / "c", seed=1, reuse_from=[tmp_path / "a"])
    assert not other.skipped
    assert (other.path / "weights.pt").read_bytes() != (first.path / "weights.pt").read_bytes()
