"""Stored results that cannot lie (issue 13): every result records the content hash of what it was computed
from, so a stale explanation or analysis is an error naming the files and the command that redoes it; a
damaged result is reported as such (one line: the file and its redo command), never skipped, never up to
date; ``--force`` redoes a stage whatever state its old result is in; a copied output folder stays up to
date; results get normal permissions; a model save killed between its renames loses nothing.

Everything runs on the ``tiny`` preset (fc2 h=16) with 10 images: one trained baseNN (module fixture),
copied into each test's own folder.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from bayesrobust import cli, paths, results, stages, store
from bayesrobust.models import posterior as posterior_module
from bayesrobust.models.posterior import Posterior

pytestmark = pytest.mark.threads(1)  # tiny networks: one thread is faster

PRESET = "tiny"
IMAGES = 10
PGD = {"attack": "pgd", "steps": 3, "n_inputs": IMAGES}
PGD_RUN = "baseNN_pgd_linf_eps0.05_steps3_S1"
FGSM_RUN = "baseNN_fgsm_linf_eps0.05_S1"
MODULES = {"train": "train", "attack": "attack", "explain": "explain", "analyze": "analyze",
           "robustness_table": "table"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """An output folder with a trained tiny baseNN, its FGSM attack run and the run's explanation (with
    every draw's maps in a zarr store)."""
    out = tmp_path_factory.mktemp("trained") / "out"
    stages.train(PRESET, "baseNN", out=out)
    stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES)
    stages.explain(PRESET, "baseNN", out=out, keep_draws=True)
    return out


@pytest.fixture
def out(trained, tmp_path) -> Path:
    """This test's own copy of :func:`trained`."""
    return Path(shutil.copytree(trained, tmp_path / "out"))


def run_command(command: str) -> str:
    """Run a command of an error message (``python -m bayesrobust.X ...``) through the CLI group."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("bayesrobust."), command
    result = CliRunner().invoke(cli.main, [MODULES[argv[2].split(".", 1)[1]], *argv[3:]])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def quoted_command(message: str) -> str:
    """The last command quoted in backticks in an error message."""
    return message.split("`")[-2]


def one_line_cli_error(command: str, args: list[str]) -> str:
    result = CliRunner().invoke(cli.main, [command, *args])
    assert result.exit_code == 1, result.output + repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# -- stale results ------------------------------------------------------------------------------------------
def test_explanation_of_a_redone_attack_is_an_error(out):
    """The issue's repro: attack PGD, explain it, attack again with another seed, analyze. Before, the
    analysis mixed the new softmax robustness with the old LRP robustness; now it is an error naming the
    explanation and the attack run, whose command redoes the explanation."""
    stages.attack(PRESET, "baseNN", out=out, **PGD)
    explanation = stages.explain(PRESET, "baseNN", PGD_RUN, out=out).path
    stages.analyze(out, PRESET, attack="pgd")  # consistent: fine
    redone = stages.attack(PRESET, "baseNN", out=out, seed=1, **PGD)
    assert not redone.skipped
    with pytest.raises(store.StaleResultError) as err:
        stages.analyze(out, PRESET, attack="pgd")
    message = str(err.value)
    assert f"explanation {explanation}" in message and str(redone.path) in message
    assert "attack was redone" in message
    command = quoted_command(message)
    assert command.startswith("python -m bayesrobust.explain --model baseNN --preset tiny --attack-run "
                              f"{PGD_RUN}") and command.endswith("--force")
    line = one_line_cli_error("analyze", ["--out", str(out), "--preset", PRESET, "--attack", "pgd"])
    assert str(explanation) in line and PGD_RUN in line
    # the explain stage sees the redone attack by its content, and the command in the message redoes it
    assert "written to" in run_command(command)
    ds = stages.analyze(out, PRESET, attack="pgd").details["dataset"]
    with xr.open_dataset(redone.path) as attack:
        np.testing.assert_array_equal(ds.softmax_robustness.sel(model="baseNN").values,
                                      attack.softmax_robustness.values)


def test_explain_is_redone_after_its_attack(out):
    """The explain stage's up-to-date check compares the attack file's content hash, not its time."""
    again = stages.explain(PRESET, "baseNN", out=out, keep_draws=True)
    assert again.skipped
    with xr.open_dataset(again.path) as ds:
        assert ds.attrs["attack_sha256"] == store.file_hash(paths.attack_path(out, PRESET, FGSM_RUN))
        assert ds.attrs["model_sha256"] == store.file_hash(paths.model_dir(out, PRESET, "baseNN") / "weights.pt")
    assert not stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES, seed=1).skipped
    assert not stages.explain(PRESET, "baseNN", out=out, keep_draws=True).skipped


def test_retrained_model_makes_its_attack_stale(out):
    """Same config, other weights: the attack is no longer up to date, and explaining the old attack run with
    the new model is an error whose command redoes the attack."""
    directory = paths.model_dir(out, PRESET, "baseNN")
    model = Posterior.load(directory)
    model.params = {k: v + 0.01 for k, v in model.params.items()}
    model.save(directory)
    with pytest.raises(store.StaleResultError, match="another version of the model") as err:
        stages.explain(PRESET, "baseNN", out=out, force=True)
    command = quoted_command(str(err.value))
    assert str(paths.attack_path(out, PRESET, FGSM_RUN)) in str(err.value)
    assert command == ("python -m bayesrobust.attack --model baseNN --preset tiny --attack fgsm --norm linf "
                       f"--epsilon 0.05 --n-inputs {IMAGES} --out {out} --force")
    assert not stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES).skipped  # the hash alone tells
    assert not stages.explain(PRESET, "baseNN", out=out).skipped
    assert stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES).skipped


def test_explanation_of_an_older_version_is_checked_by_the_attack_time(out):
    """An explanation written before the hashes (it records the attack's ``created`` time only) is still
    checked against its attack run."""
    path = paths.explanation_path(out, PRESET, FGSM_RUN, "lrp")
    with xr.open_dataset(path) as ds:
        old = ds.load()
    del old.attrs["attack_sha256"]
    store.write_netcdf(old, path, "explanation")
    stages.analyze(out, PRESET)  # same attack time: fine
    store.write_netcdf(old.assign_attrs(attack_created="2020-01-01T00:00:00+00:00"), path, "explanation")
    with pytest.raises(store.StaleResultError, match=f"explanation {path} was computed from another version"):
        stages.analyze(out, PRESET)


def test_plot_checks_the_runs_it_reloads(out):
    """plot reloads an analysis' runs: an explanation of a redone attack, or a file redone after the
    analysis, is an error (not a figure left out)."""
    stages.analyze(out, PRESET, name="a")
    fig3 = {"figures": ["fig3"], "analyses": ["a"], "formats": ["png"], "dpi": 30}
    assert stages.plot(out, **fig3).details["written"]
    stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES, seed=1)
    for figures in (["fig3"], []):  # also when drawing every figure the results allow
        with pytest.raises(store.StaleResultError, match="attack was redone"):
            stages.plot(out, **{**fig3, "figures": figures})
    stages.explain(PRESET, "baseNN", out=out)
    with pytest.raises(store.StaleResultError, match="redone after the analysis a was computed") as err:
        stages.plot(out, **fig3)
    command = quoted_command(str(err.value))
    assert command.startswith("python -m bayesrobust.analyze") and "--name a" in command
    run_command(command)
    assert stages.plot(out, **fig3).details["written"]


def test_copied_or_moved_output_folder_stays_up_to_date(out, tmp_path):
    stages.analyze(out, PRESET, name="a")
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    moved = copy.rename(tmp_path / "moved")
    for folder in (out, moved):
        assert stages.train(PRESET, "baseNN", out=folder).skipped
        assert stages.attack(PRESET, "baseNN", out=folder, n_inputs=IMAGES).skipped
        assert stages.explain(PRESET, "baseNN", out=folder, keep_draws=True).skipped
        with store.open_result(paths.analysis_path(folder, "a"), "analysis") as analysis:
            assert set(results.load_runs(folder, analysis)) == {"baseNN"}
    shutil.rmtree(out)
    assert stages.explain(PRESET, "baseNN", out=moved, keep_draws=True).skipped


# -- damaged results -----------------------------------------------------------------------------------------
def damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
        return
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a result\n" * 20, "empty": b""}[how])


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "missing"])  # missing: half a checkpoint
@pytest.mark.parametrize("name", ["weights.pt", "config.json"])
def test_damaged_model(out, name, how):
    path = paths.model_dir(out, PRESET, "baseNN") / name
    damage(path, how)
    for stage in (lambda: stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES),  # the next stage
                  lambda: stages.train(PRESET, "baseNN", out=out)):  # and the stage itself: not up to date
        with pytest.raises(store.CorruptResultError) as err:
            stage()
        message = str(err.value)
        assert message.startswith(f"{path} is unreadable (") and "\n" not in message
        assert quoted_command(message) == (f"python -m bayesrobust.train --model baseNN --preset tiny --out {out} "
                                           "--force")
    line = one_line_cli_error("attack", ["--model", "baseNN", "--preset", PRESET, "--out", str(out)])
    assert f"Error: {path} is unreadable" in line
    assert not stages.train(PRESET, "baseNN", out=out, force=True).skipped
    assert not stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES).skipped  # a new model's attack


def test_file_in_place_of_a_model_folder(out):
    directory = paths.model_dir(out, PRESET, "baseNN")
    shutil.rmtree(directory)
    directory.write_bytes(b"garbage")
    for stage in (lambda: stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES),
                  lambda: stages.train(PRESET, "baseNN", out=out)):
        with pytest.raises(store.CorruptResultError, match=f"{directory} is unreadable .*a file where a model"):
            stage()
    assert not stages.train(PRESET, "baseNN", out=out, force=True).skipped
    assert [p.name for p in directory.parent.iterdir()] == ["baseNN"] and directory.is_dir()


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_attack(out, how):
    path = paths.attack_path(out, PRESET, FGSM_RUN)
    damage(path, how)
    for stage in (lambda: stages.explain(PRESET, "baseNN", FGSM_RUN, out=out),
                  lambda: stages.analyze(out, PRESET),
                  lambda: stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES)):
        with pytest.raises(store.CorruptResultError) as err:
            stage()
        assert str(err.value).startswith(f"{path} is unreadable (") and "\n" not in str(err.value)
        assert quoted_command(str(err.value)) == ("python -m bayesrobust.attack --model baseNN --preset tiny "
                                                  f"--attack fgsm --norm linf --epsilon 0.05 --out {out} --force")
    one_line_cli_error("explain", ["--model", "baseNN", "--preset", PRESET, "--out", str(out), "--no-progress"])
    assert not stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES, force=True).skipped
    assert not stages.explain(PRESET, "baseNN", out=out).skipped


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_explanation(out, how):
    path = paths.explanation_path(out, PRESET, FGSM_RUN, "lrp")
    damage(path, how)
    for stage in (lambda: stages.analyze(out, PRESET),
                  lambda: stages.explain(PRESET, "baseNN", out=out, keep_draws=True)):
        with pytest.raises(store.CorruptResultError) as err:
            stage()
        assert str(err.value).startswith(f"{path} is unreadable (") and "\n" not in str(err.value)
        assert quoted_command(str(err.value)) == ("python -m bayesrobust.explain --model baseNN --preset tiny "
                                                  f"--attack-run {FGSM_RUN} --out {out} --force")
    one_line_cli_error("analyze", ["--out", str(out), "--preset", PRESET])
    assert not stages.explain(PRESET, "baseNN", out=out, keep_draws=True, force=True).skipped
    stages.analyze(out, PRESET)


def test_damaged_robustness_table(out):
    table = {"epsilons": {"linf": (0.05,)}, "steps": (1,), "n_inputs": IMAGES, "out": out}
    path = stages.table(PRESET, "baseNN", **table).path
    damage(path, "garbage")
    for stage in (lambda: stages.table(PRESET, "baseNN", **table), lambda: stages.plot(out)):
        with pytest.raises(store.CorruptResultError) as err:
            stage()
        assert quoted_command(str(err.value)) == ("python -m bayesrobust.robustness_table --model baseNN --preset "
                                                  f"tiny --out {out} --force")
    assert not stages.table(PRESET, "baseNN", force=True, **table).skipped


@pytest.mark.parametrize("how", ["missing_chunk", "no_metadata", "a_file"])
def test_damaged_draws_store(out, how):
    path = paths.explanation_draws_path(out, PRESET, FGSM_RUN, "lrp")
    if how == "missing_chunk":
        chunk = next(p for p in sorted((path / "relevance_draws").rglob("*")) if p.is_file() and p.name != "zarr.json")
        chunk.unlink()
    elif how == "no_metadata":
        (path / "zarr.json").unlink()
    else:
        shutil.rmtree(path)
        path.write_bytes(b"garbage")
    with pytest.raises(store.CorruptResultError) as err:
        stages.explain(PRESET, "baseNN", out=out, keep_draws=True)
    message = str(err.value)
    assert message.startswith(f"{path} is unreadable (") and "\n" not in message
    assert quoted_command(message) == ("python -m bayesrobust.explain --model baseNN --preset tiny --attack-run "
                                       f"{FGSM_RUN} --keep-draws --out {out} --force")
    with pytest.raises(store.CorruptResultError):
        store.open_result(path)
    assert not stages.explain(PRESET, "baseNN", out=out, keep_draws=True, force=True).skipped
    with store.open_result(path, "explanation") as ds:
        assert not np.isnan(ds["relevance_draws"].values).any()


def test_zarr_chunk_check_knows_skipped_fill_chunks(tmp_path):
    """zarr skips chunks equal to the fill value unless told otherwise: in a store that does not say it wrote
    every chunk only ``relevance_draws`` is checked; in one that does, a missing chunk of any array is damage."""
    ds = xr.Dataset({"i": ("x", np.zeros(3, dtype=np.int64)), "relevance_draws": ("x", np.ones(3))})
    ds.to_zarr(tmp_path / "old.zarr", mode="w")  # "i" is all fill value: no chunk stored
    store._check_zarr_chunks(tmp_path / "old.zarr")
    ds.assign_attrs({store.ALL_CHUNKS_ATTR: 1}).to_zarr(tmp_path / "new.zarr", mode="w")
    with pytest.raises(store.CorruptResultError, match="array 'i' has 1 of 1 chunks missing"):
        store._check_zarr_chunks(tmp_path / "new.zarr")


# -- files and folders ---------------------------------------------------------------------------------------
@pytest.fixture
def umask():
    """``umask(mask)`` sets the process umask and returns the previous one; restored after the test."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_results_get_normal_permissions(trained, tmp_path, umask, mask):
    process = umask(mask)
    out = tmp_path / "out"
    model = Posterior.load(paths.model_dir(trained, PRESET, "baseNN"))
    directory = model.save(paths.model_dir(out, PRESET, "baseNN"))
    with xr.open_dataset(paths.explanation_path(trained, PRESET, FGSM_RUN, "lrp")) as ds:
        explanation = ds.load()
    nc = store.write_netcdf(explanation, out / "x.nc", "explanation")
    with store.atomic_zarr(out / "x.zarr") as tmp:
        xr.Dataset({"a": ("x", np.arange(3.0))}).to_zarr(tmp, mode="w")
    from matplotlib.figure import Figure
    (png,) = stages.save_figure(Figure(figsize=(1, 1)), out / "figures" / "f", ["png"], dpi=10)
    files, folders = 0o666 & ~mask, 0o777 & ~mask
    assert _mode(directory) == folders and _mode(out / "x.zarr") == folders
    for path in (directory / "weights.pt", directory / "config.json", nc, png):
        assert _mode(path) == files, path
    # and what the stages wrote in the module fixture, under the process' umask
    for path in (paths.attack_path(trained, PRESET, FGSM_RUN), paths.explanation_path(trained, PRESET, FGSM_RUN, "lrp"),
                 paths.model_dir(trained, PRESET, "baseNN") / "weights.pt"):
        assert _mode(path) == 0o666 & ~process, path
    for path in (paths.model_dir(trained, PRESET, "baseNN"), paths.explanation_draws_path(trained, PRESET, FGSM_RUN,
                                                                                             "lrp")):
        assert _mode(path) == 0o777 & ~process, path


def test_model_save_killed_between_its_renames(out, monkeypatch):
    """A kill after the old model was moved aside and before the new one was moved in (injected: the second
    ``os.replace`` fails and the clean-up never runs, as in a killed process) keeps the old model loadable;
    the next save removes the leftovers."""
    directory = paths.model_dir(out, PRESET, "baseNN")
    before = Posterior.load(directory)
    changed = Posterior(before.arch, before.kind, {k: v + 1 for k, v in before.params.items()},
                        buffers=before.buffers, config=before.config)
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)
    monkeypatch.setattr(posterior_module.os, "replace", replace)
    monkeypatch.setattr(posterior_module.shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(KeyboardInterrupt):
        changed.save(directory)
    monkeypatch.undo()
    assert not directory.exists()
    left = sorted(p.name for p in directory.parent.iterdir())
    assert ".baseNN.old" in left and any(n.startswith(".baseNN.") and n.endswith(".tmp") for n in left)
    # the next stage finds the previous model
    loaded = Posterior.load(directory)
    for k, v in before.params.items():
        torch.testing.assert_close(loaded.params[k], v)
    assert stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES).skipped
    # the next save (the train stage) leaves no hidden leftovers
    assert not stages.train(PRESET, "baseNN", out=out, force=True).skipped
    assert [p.name for p in directory.parent.iterdir()] == ["baseNN"]


def test_leftovers_of_a_killed_run_are_cleaned_by_the_next_run(out):
    """Hidden temporary files and folders next to a result are removed by the next run of its stage, even
    one that finds the result up to date."""
    attack = paths.attack_path(out, PRESET, FGSM_RUN)
    draws = paths.explanation_draws_path(out, PRESET, FGSM_RUN, "lrp")
    model = paths.model_dir(out, PRESET, "baseNN")
    made = [attack.with_name(f".{attack.name}.dead.tmp"), draws.with_name(f".{draws.name}.dead.tmp"),
            draws.with_name(f".{draws.name}.old"), model.with_name(f".{model.name}.dead.tmp"),
            model.with_name(f".{model.name}.k2j4x9")]  # mkdtemp's name in earlier versions
    for path in made:
        path.mkdir() if "zarr" in path.name or "baseNN." in path.name else path.write_bytes(b"half")
    assert stages.train(PRESET, "baseNN", out=out).skipped
    assert stages.attack(PRESET, "baseNN", out=out, n_inputs=IMAGES).skipped
    assert stages.explain(PRESET, "baseNN", out=out, keep_draws=True).skipped
    assert not [p for p in made if p.exists()]
