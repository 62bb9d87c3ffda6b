"""The one rule for errors (bayesrobust.errors), for every command: a user error is one ``Error:`` line and
exit status 1; a bug says it is one (its type and message, the traceback with -v) and exits 70; Ctrl-C ends
with ``Aborted.`` and exit status 130; none of them shows a traceback unless asked."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from bayesrobust import errors, experiment, grid, results_report, stages
from bayesrobust.cli import COMMANDS, main
from bayesrobust.data import DataNotFoundError
from bayesrobust.errors import BUG_EXIT_CODE, BUG_NOTE, INTERRUPT_EXIT_CODE, DrawOutOfRangeError, UserError

#: The library call each command makes, and the arguments it needs.
STAGE = {"train": (stages, "train"), "attack": (stages, "attack"), "table": (stages, "table"),
         "explain": (stages, "explain"), "analyze": (stages, "analyze"), "plot": (stages, "plot"),
         "pipeline": (experiment.Experiment, "run"), "faithfulness": (stages, "faithfulness"),
         "report": (results_report, "write_report"), "sweep": (grid, "load"), "diagnose": (stages, "diagnose"),
         "evaluate": (stages, "evaluate")}
ARGS = {"train": ["--model", "baseNN"], "attack": ["--model", "baseNN"], "table": ["--model", "baseNN"],
        "explain": ["--model", "baseNN"], "analyze": [], "plot": [], "pipeline": [], "faithfulness": [], "report": [],
        "sweep": ["sweep.toml"], "diagnose": [], "evaluate": []}


def test_every_command_is_covered():
    assert set(STAGE) == set(COMMANDS) == set(ARGS)


def run(monkeypatch, tmp_path, command, error, *extra):
    """Run ``command`` with its stage replaced by one that raises ``error``."""
    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(*STAGE[command], fail)
    return CliRunner().invoke(main, [command, *ARGS[command], "--out", str(tmp_path), *extra])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bug_says_so_and_shows_the_traceback_with_verbose(command, monkeypatch, tmp_path):
    result = run(monkeypatch, tmp_path, command, KeyError("x"))
    assert result.exit_code == BUG_EXIT_CODE, result.output
    assert result.output.strip().splitlines() == [
        "KeyError: 'x'", f"{BUG_NOTE} (run the command again with -v for the full traceback)."]
    assert isinstance(result.exception, SystemExit)

    result = run(monkeypatch, tmp_path, command, KeyError("x"), "-v")
    assert result.exit_code == BUG_EXIT_CODE
    lines = result.output.strip().splitlines()
    assert "Traceback (most recent call last):" in lines and "in fail" in result.output
    assert lines[-2:] == ["KeyError: 'x'", f"{BUG_NOTE}."]


@pytest.mark.parametrize("error", [IndexError("list index out of range"), TypeError("unsupported operand"),
                                   AttributeError("'NoneType' object has no attribute 'x'"),
                                   RuntimeError("shape mismatch"), ZeroDivisionError("division by zero")])
def test_lookup_and_other_python_errors_are_bugs_not_bad_input(error, monkeypatch, tmp_path):
    result = run(monkeypatch, tmp_path, "train", error, "--verbose")
    assert result.exit_code == BUG_EXIT_CODE and not result.output.startswith("Error:")
    assert result.output.strip().splitlines()[-2:] == [f"{type(error).__name__}: {error}", f"{BUG_NOTE}."]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_user_error_is_one_line(command, monkeypatch, tmp_path):
    result = run(monkeypatch, tmp_path, command, ValueError("epsilon must be positive,\n  got -1"))
    assert result.exit_code == 1
    assert result.output == "Error: epsilon must be positive, got -1\n"
    result = run(monkeypatch, tmp_path, command, UserError("no attack run; run `bayesrobust attack` first"), "-v")
    assert result.exit_code == 1 and result.output == "Error: no attack run; run `bayesrobust attack` first\n"


@pytest.mark.parametrize("error, message", [
    (FileNotFoundError("no model under results/models/quick/baseNN; run `bayesrobust train` first"),
     "no model under results/models/quick/baseNN; run `bayesrobust train` first"),
    (DataNotFoundError("data root /nope does not exist (dataset 'mnist')"),
     "data root /nope does not exist (dataset 'mnist')"),
    (FileNotFoundError(2, "No such file or directory", "results/x.nc"), "No such file or directory: results/x.nc"),
    (PermissionError(13, "Permission denied", "/results/models"), "Permission denied: /results/models"),
    (NotADirectoryError(20, "Not a directory", "a_file/models"), "Not a directory: a_file/models"),
    (FileExistsError(17, "File exists", "a", None, "b"), "File exists: a -> b"),
    (DrawOutOfRangeError("draw 7 out of range: this HMC posterior has 6 samples"),
     "draw 7 out of range: this HMC posterior has 6 samples"),
])
def test_user_errors_name_the_file_or_value(error, message, monkeypatch, tmp_path):
    result = run(monkeypatch, tmp_path, "attack", error)
    assert result.exit_code == 1 and result.output == f"Error: {message}\n"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_ctrl_c_aborts_without_a_traceback(command, monkeypatch, tmp_path):
    for extra in ((), ("-v",)):
        result = run(monkeypatch, tmp_path, command, KeyboardInterrupt(), *extra)
        assert result.exit_code == INTERRUPT_EXIT_CODE
        assert result.output.strip().splitlines() == ["Aborted."]


def test_click_usage_errors_keep_status_2(tmp_path):
    result = CliRunner().invoke(main, ["train", "--model", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("Error: Invalid value")


def test_the_rule_in_one_place():
    assert errors.is_user_error(UserError("x")) and errors.is_user_error(DataNotFoundError("x"))
    assert not errors.is_user_error(KeyError("x")) and not errors.is_user_error(IndexError("x"))
    # an out-of-range draw is the caller's mistake, and stays an IndexError for code that caught one
    assert issubclass(DrawOutOfRangeError, UserError) and issubclass(DrawOutOfRangeError, IndexError)
    assert issubclass(UserError, ValueError)
    assert errors.user_message(ValueError()) == "ValueError"


def test_out_of_range_draws_are_user_errors():
    from bayesrobust.models.architectures import ArchConfig, build
    from bayesrobust.models.posterior import deterministic
    post = deterministic(build(ArchConfig("fc2", 4)))
    with pytest.raises(DrawOutOfRangeError, match="only draw 0"):
        post.draw_params(1)
    with pytest.raises(UserError, match=r"out of range: this deterministic posterior has 1 draw"):
        post.draw_coords([0, 3])


def test_unknown_composite_is_a_value_error_not_a_key_error():
    from bayesrobust.explain.rules import named_composite
    with pytest.raises(ValueError, match="unknown Zennit composite 'nope'"):
        named_composite("nope", torch.nn.Linear(2, 2))


def test_bad_training_overrides_are_rejected_before_work(tmp_path):
    """Found by the fuzz test: NaN passed the positivity checks, adv_ratio was not checked, and FGSM with
    L2 failed only once advNN training had started."""
    runner = CliRunner()
    for args, message in [(["--lr", "nan"], "lr must be a finite positive number, got nan"),
                          (["--prior-scale", "nan"], "prior_scale must be a finite positive number, got nan"),
                          (["--adv-ratio", "1.5"], "adv_ratio must be in [0, 1], got 1.5"),
                          (["--model", "advNN", "--adv-norm", "l2"], "FGSM is an Linf attack; got adv_norm 'l2'")]:
        model = [] if "--model" in args else ["--model", "baseNN"]
        result = runner.invoke(main, ["train", *model, *args, "--out", str(tmp_path)])
        assert result.exit_code == 1 and message in result.output.strip().splitlines()[-1], result.output
    result = runner.invoke(main, ["plot", "--topk", "-5", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "topk is a percentage of pixels in (0, 100], got -5" in result.output
    assert not (tmp_path / "models").exists()


def test_usage_errors_found_by_the_fuzz_test_are_one_line(tmp_path):
    """click listed a missing --model's choices one per line; seeds outside numpy's 0..2**32-1 failed (or
    overflowed torch's generator) only once work had started; a file name too long for the file system
    (an OSError, not a bug) was reported as a bug."""
    runner = CliRunner()
    result = runner.invoke(main, ["attack", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == \
        "Error: Missing option '--model'. Choose from: baseNN, advNN, fullBNN, artNN, artBNN."
    for option in ("--seed", "--inputs-seed"):
        for value in ("-1", str(2**32), str(2**64)):
            result = runner.invoke(main, ["table", "--model", "baseNN", option, value, "--out", str(tmp_path)])
            assert result.exit_code == 2 and "is not in the range 0<=x<=4294967295" in result.output, result.output
    long = tmp_path / ("x" * 300)
    result = runner.invoke(main, ["train", "--model", "baseNN", "--out", str(long)])
    assert result.exit_code == 1 and result.output.startswith("Error: File name too long: "), result.output


def test_a_stray_argument_with_a_line_break_is_still_one_error_line(tmp_path):
    """Found by the fuzz test: click printed the stray argument as it was, line break included."""
    result = CliRunner().invoke(main, ["plot", "--out", str(tmp_path), "a\nb"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == "Error: Got unexpected extra argument (a b)"
