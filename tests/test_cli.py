"""The command group: one `bayesrobust` group with every stage, `python -m bayesrobust.X` aliases of the same
commands, and the same defaults everywhere (--preset quick, --out $BAYESROBUST_OUT or ./results)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bayesrobust import stages
from bayesrobust.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
ALIASES = {"train": "train", "attack": "attack", "explain": "explain", "analyze": "analyze", "plot": "plot",
           "pipeline": "pipeline", "robustness_table": "table", "faithfulness": "faithfulness", "report": "report",
           "sweep": "sweep", "diagnose": "diagnose", "evaluate": "evaluate"}


def test_group_has_every_stage_and_aliases_are_the_same_commands():
    import importlib
    assert set(COMMANDS) == {"train", "attack", "explain", "analyze", "plot", "pipeline", "table", "faithfulness",
                             "report", "sweep", "diagnose", "evaluate"}
    for alias, command in ALIASES.items():
        name = f"bayesrobust.{alias}" if alias != "explain" else "bayesrobust.explain.__main__"
        module = importlib.import_module(name)
        assert module.main is COMMANDS[command], alias
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_no_module_pair_differs_by_one_letter():
    names = {p.stem for p in (ROOT / "bayesrobust").iterdir() if p.suffix == ".py" or p.is_dir()} - {"__pycache__"}
    for a in names:
        for b in names:
            if a < b and (a + "s" == b or b + "s" == a or a.rstrip("e") + "ing" == b or b.rstrip("e") + "ing" == a):
                raise AssertionError(f"modules {a} and {b} differ by a letter")


@pytest.mark.parametrize("command, args", [
    ("train", ["--model", "fullBNN"]),
    ("attack", ["--model", "baseNN"]),
    ("table", ["--model", "baseNN"]),
    ("explain", ["--model", "baseNN"]),
])
def test_preset_and_out_default_the_same_way(command, args, monkeypatch, tmp_path):
    """Every stage command gets preset 'quick' and out ./results, or $BAYESROBUST_OUT when it is set."""
    seen = []
    name = {"table": "table"}.get(command, command)
    monkeypatch.setattr(stages, name, lambda preset, model, *a, **kw: seen.append((preset, kw["out"])) or
                        stages.Done(Path("x"), True, "ok"))
    monkeypatch.delenv("BAYESROBUST_OUT", raising=False)
    runner = CliRunner()
    result = runner.invoke(COMMANDS[command], args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(COMMANDS[command], args, env={"BAYESROBUST_OUT": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert seen == [("quick", Path("results")), ("quick", tmp_path)]


def test_analyze_defaults_to_the_quick_preset_under_results(monkeypatch):
    seen = []
    monkeypatch.setattr(stages, "analyze", lambda out, preset, **kw: seen.append((out, preset)) or 1 / 0)
    monkeypatch.delenv("BAYESROBUST_OUT", raising=False)
    CliRunner().invoke(COMMANDS["analyze"], [])
    assert seen == [(Path("results"), "quick")]


def test_bad_value_is_one_line_error_before_work(tmp_path):
    result = CliRunner().invoke(COMMANDS["train"], ["--model", "fullBNN", "--epochs", "-1", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: epochs must be non-negative, got -1" in result.output
    assert not (tmp_path / "models").exists()
    result = CliRunner().invoke(COMMANDS["attack"], ["--model", "baseNN", "--epsilon", "-0.1", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "epsilon" in result.output and "-0.1" in result.output
    out_file = tmp_path / "a_file"
    out_file.write_text("")
    result = CliRunner().invoke(COMMANDS["attack"], ["--model", "baseNN", "--out", str(out_file)])
    assert result.exit_code != 0 and "a_file" in result.output


def test_the_readme_command_trains_in_an_empty_folder(tmp_path):
    """`python -m bayesrobust.train --model fullBNN`, typed exactly like that in an empty folder, trains the
    quick preset's fullBNN (SVI) under ./results; typed again, it finds it up to date. Also through the
    console script, for baseNN."""
    env = {k: v for k, v in os.environ.items() if k != "BAYESROBUST_OUT"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "bayesrobust.train", "--model", "fullBNN"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = tmp_path / "results" / "models" / "quick" / "fullBNN_svi"
    assert (model / "weights.pt").is_file() and (model / "config.json").is_file()
    accuracy = float(proc.stdout.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.9, proc.stdout  # 30 SVI epochs on mnist5k: about 0.97
    again = subprocess.run([sys.executable, "-m", "bayesrobust.train", "--model", "fullBNN"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "is up to date" in again.stdout
    script = Path(sys.executable).with_name("bayesrobust")
    if script.exists():  # installed by shell/setup_env.sh (pip install -e .)
        proc = subprocess.run([str(script), "train", "--model", "baseNN", "--epochs", "1"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (tmp_path / "results" / "models" / "quick" / "baseNN" / "weights.pt").is_file()
