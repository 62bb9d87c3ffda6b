"""Fuzz every sub-command's parser: seeded random combinations of its real options (``command.params``) with
valid and invalid values (wrong choices, non-numbers, negative, zero, huge, NaN and infinite numbers, empty
strings, paths to nowhere, a file where a folder belongs, names too long for the file system), unknown
options, missing required options and stray arguments.

Every run must end with status 2 (click's usage error) or 1 (a user error), the output's last line a
one-line ``Error: ...`` (status 0 only for ``--help``); never a traceback, never the bug note of
:mod:`bayesrobust.errors`. No run does real work: ``--out`` is an empty temporary folder and the entry point
after a stage's checks (training, loading the model, reading stored results, running the pipeline) is
replaced by a sentinel that raises a user error. The generator knows which values are valid, so it also
checks that the sentinel is reached for every fully valid combination and never for an invalid one (the
stage checks its input before any work), and that click rejects what it should (status 2) and the stage the
rest (status 1). Values whose validity depends on the machine or on stored results are only checked for a
clean exit. ``BAYESROBUST_FUZZ_SEED=N`` runs another seed.
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bayesrobust import data as datasets
from bayesrobust import experiment, faithfulness_report, inference, results, results_report, stages
from bayesrobust.cli import COMMANDS, main
from bayesrobust.cli import sweep as cli_sweep
from bayesrobust.errors import BUG_NOTE, UserError
from bayesrobust.presets import APPLIES_TO, PRESETS

SEED = int(os.environ.get("BAYESROBUST_FUZZ_SEED", 13))  # another seed explores other combinations
RUNS_PER_COMMAND = 120
#: What a value (and a whole combination, the worst of its values) must do: reach the sentinel; either way;
#: be rejected by the stage before it (exit 1); be rejected by click while parsing (a usage error, exit 2).
OK, ANY, BAD, USAGE = 0, 1, 2, 3


class Sentinel(UserError):
    """Raised where real work would start: the input passed every check of its stage."""


@dataclass
class Case:
    command: str
    args: list[str] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=dict)  # option name -> tier of its value
    values: dict[str, object] = field(default_factory=dict)  # option name -> the value(s) given
    extra: int = OK  # tier of the unknown options, stray arguments and missing required options
    help: bool = False

    @property
    def tier(self) -> int:
        return max([self.extra, *self.tiers.values()])


# -- values -------------------------------------------------------------------------------------------------
TOO_LONG = "x" * 300  # a file name longer than any file system takes (ENAMETOOLONG)
NOT_A_NUMBER = ["abc", "", "1,5", "--", "0x1z"]
INTS = {
    "positive": ([1, 2, 5, 64], [0, -1, -7], [10**12]),
    "nonneg": ([0, 1, 3], [-1, -20], [10**12]),
}
FLOATS = {
    "positive": ([0.5, 0.01, 2.0], [0, -0.5, "nan", "-inf"], ["inf", "1e300"]),
    "nonneg": ([0, 0.1, 0.3], [-0.1, "nan", "-inf"], ["inf", 5]),
    "topk": ([1, 20, 100, 0.5], [0, -5, 100.5, "nan", "inf", "-inf"], []),
    "ratio": ([0, 0.5, 1], [-0.1, 1.5, "nan", "inf"], []),
    "radius": ([0.5, 0.01], [0, -0.5, "nan", "-inf"], ["inf", 2.0, "1e300"]),  # Linf ε <= 1; L2 unbounded
    "any": ([], [], [0.2, -1, "nan", "inf", 0]),
    "friction": ([0.1, 0.5, 1], [0, -0.1, 1.5, "nan", "inf"], []),
}
#: Semantics of the numeric options: (command or '*', option name) -> kind above (default 'positive').
NUMERIC = {
    ("train", "epochs"): "nonneg", ("train", "warmup"): "nonneg", ("train", "adv_ratio"): "ratio",
    ("*", "topk"): "topk", ("attack", "epsilon"): "nonneg", ("pipeline", "epsilon"): "radius",
    ("train", "adv_epsilon"): "radius",
    ("analyze", "epsilon"): "any",
    ("faithfulness", "threshold"): "ratio",
    ("attack", "gamma"): "nonneg",  # manipulate's weight of the output term: 0 moves the map alone
    ("train", "friction"): "friction", ("train", "burnin"): "nonneg",
}


def _numeric(command: str, param: click.Option) -> list[tuple[str, int]]:
    kind = NUMERIC.get((command, param.name)) or NUMERIC.get(("*", param.name)) or "positive"
    is_int = isinstance(param.type, click.types.IntParamType)
    ok, bad, either = (INTS if is_int else FLOATS)[kind]
    out = [(str(v), OK) for v in ok] + [(str(v), BAD) for v in bad] + [(str(v), ANY) for v in either]
    not_numbers = NOT_A_NUMBER + (["1.5", "nan", "1e3"] if is_int else ["1/2"])
    return out + [(v, USAGE) for v in not_numbers]


def _strings(command: str, name: str, tmp: Path) -> list[tuple[str, int]]:
    if name == "device":
        return [("cpu", OK), ("gpu", BAD), ("", BAD), ("cuda:x", BAD), ("CPU", BAD), ("cpu\nx", BAD), ("cuda", ANY),
                ("cuda:1", ANY)]
    if name == "attack_run":
        return [(str(tmp / "run.nc"), OK), ("nope", BAD), ("", BAD), (str(tmp / "nowhere" / "run.nc"), BAD),
                (TOO_LONG, BAD), ("a\nb", BAD)]
    if name == "layers":
        return [("all", OK), ("0", OK), ("0,1", OK), ("-1", OK), ("0 1", OK), ("", OK), ("x", BAD),
                ("1.5", BAD), ("all,0", BAD), ("99", ANY)]
    if name in ("linf_eps", "l2_eps"):
        return [("8/255", OK), ("0.1,0.2", OK), ("", OK), ("0.5", OK), ("abc", BAD), ("1/0", BAD), ("nan", BAD),
                ("-0.1", BAD), ("0", BAD), ("0.1,,x", BAD), ("1e9", ANY)]
    if name == "overrides":  # sweep --set KEY=VALUE: a grid axis or setting of the sweep file
        return [("preset=tiny", OK), ("draws=5,10", OK), ("topk=10", OK), ("keep_draws=true", OK),
                ("bogus=1", BAD), ("preset=nope", BAD), ("draws=0", BAD), ("keep_draws=1", BAD), ("x", USAGE),
                ("=1", USAGE)]
    if name == "steps":  # sweep --step NAME: a step of the file (its steps are a and b) or a shell pattern
        return [("a", OK), ("*", OK), ("[ab]", OK), ("c", BAD), ("", BAD), ("a\nb", BAD)]
    if name == "skip_steps":  # sweep --skip-step NAME: leaving out every step is an error
        return [("a", OK), ("c", OK), ("", OK), ("*", BAD)]
    if command == "evaluate" and name == "models":  # evaluate --model: a model tag, checked before any model is read
        return [("baseNN", OK), ("fullBNN_sghmc", OK), ("fullBNN", BAD), ("nope", BAD), ("", BAD), ("a/b", BAD),
                ("a\nb", BAD)]
    if name == "controls":  # pipeline --controls: comma-separated control names, checked by the Experiment
        return [("cross", OK), ("random", OK), ("cross,random", OK), ("", OK), ("bogus", BAD), ("cross,x", BAD),
                ("a\nb", BAD)]
    if name == "name":  # analyze --name becomes a file name: a safe name or nothing
        return [("mine", OK), ("a.b-c_1", OK), ("", BAD), ("a/b", BAD), ("../x", BAD), (".hidden", BAD),
                ("a\nb", BAD)]
    # free text that selects among the stored results (analyze --method/--name, plot --rule/--layer/...): checked
    # against them, so after the sentinel
    return [("epsilon", OK), ("", OK), ("nope", OK), ("0", OK), ("a/b", OK), ("a\nb", OK)]


def _paths(name: str, tmp: Path) -> list[tuple[str, int]]:
    if name == "out":
        return [(str(tmp / "out"), OK), (str(tmp / "new" / "deeper"), OK), (str(tmp / "a\nb"), OK),
                (str(tmp / "a_file"), USAGE),
                (str(tmp / "a_file" / "below"), ANY), ("", ANY), (str(tmp / TOO_LONG), ANY)]
    if name == "to":  # report --to: a folder to publish into (created), never a file
        return [(str(tmp / "published"), OK), (str(tmp / "new" / "deeper"), OK), (str(tmp / "a_file"), USAGE)]
    # --data-root: only read by the stages after their checks, and not at all for the embedded mnist5k
    return [(str(tmp / "nowhere"), OK), (str(tmp / "a_file"), OK), (str(tmp), OK), (str(tmp / TOO_LONG), ANY)]


def _option_values(command: str, param: click.Option, tmp: Path) -> list[tuple[str, int]]:
    if isinstance(param.type, click.Choice):
        valid = [(str(c), OK) for c in param.type.choices]
        if command == "pipeline" and param.name == "preset":  # the Experiment checks the preset's data exist
            valid = [(str(c), OK if PRESETS[str(c)].dataset == "mnist5k" else ANY) for c in param.type.choices]
        wrong = [("bogus", USAGE), ("", USAGE)] + [(str(c).upper(), USAGE) for c in param.type.choices[:1]
                                                if str(c).upper() != str(c)]
        return valid + wrong
    if isinstance(param.type, click.types.IntRange):  # seeds, plot --dpi: click checks the range
        low, high = param.type.min, param.type.max
        inside = [low, low + 1, 300] + ([high] if high is not None else [])
        outside = [low - 1, -1] + ([high + 1, 2**64, 10**30] if high is not None else [])
        return [(str(v), OK) for v in inside] + [(str(v), USAGE) for v in outside + ["abc", "", "1.5"]]
    if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
        return _numeric(command, param)
    if isinstance(param.type, click.Path):
        return _paths(param.name, tmp)
    return _strings(command, param.name, tmp)


def make_case(rng: random.Random, command: str, tmp: Path) -> Case:
    """A random command line for ``command``: each option with probability 0.35, with a random value.

    Three kinds of case: only valid values (so that fully valid combinations are common, not one in a
    hundred); valid values but for one option with a value click accepts and the stage must reject (a single
    fault, so that no other bad value hides it); anything, including unknown options, stray arguments and a
    required option left out."""
    cmd = COMMANDS[command]
    case = Case(command)
    mode = rng.choices(["valid", "one_fault", "anything"], weights=[3, 4, 3])[0]
    options = [p for p in cmd.params if isinstance(p, click.Option) and p.name != "help"]
    picked: dict[str, tuple[click.Option, list[tuple[str, int]]]] = {}
    for param in options:
        # explain needs --attack-run here: the empty --out has no attack run to default to
        wanted = param.required or (mode != "anything" and param.name == "attack_run")
        if param.required and mode == "anything" and rng.random() < 0.15:
            case.extra = USAGE  # a required option left out
            continue
        if not wanted and rng.random() > 0.35:
            continue
        if param.is_flag:
            picked[param.name] = (param, [(rng.choice(param.opts + param.secondary_opts), OK)])
            continue
        pool = _option_values(command, param, tmp)
        if mode != "anything":
            pool = [(v, t) for v, t in pool if t == OK] or pool
        n = rng.randint(1, 2) if param.multiple and param.name != "layers" else 1
        picked[param.name] = (param, [rng.choice(pool) for _ in range(n)])
    if mode == "one_fault":
        faulty = [p for p in options if not p.is_flag
                  and any(t in (BAD, ANY) for _, t in _option_values(command, p, tmp))]
        param = rng.choice(faulty)
        pool = [(v, t) for v, t in _option_values(command, param, tmp) if t in (BAD, ANY)]
        picked[param.name] = (param, [rng.choice(pool)])
    for name, (param, picks) in picked.items():
        if param.is_flag:
            case.args.append(picks[0][0])
            case.values[name] = picks[0][0] not in param.secondary_opts
        else:
            for value, _ in picks:
                case.args += [rng.choice(param.opts), value]
            case.values[name] = [v for v, _ in picks] if param.multiple else picks[0][0]
        case.tiers[name] = max(t for _, t in picks)
    if command == "sweep":  # its one argument: a valid sweep file (the test writes it)
        case.args.insert(0, str(tmp / "sweep.toml"))
    if mode == "anything" and rng.random() < 0.1:
        case.args.insert(rng.randint(0, len(case.args)), "--bogus-option")
        case.extra = USAGE
    if mode == "anything" and rng.random() < 0.05:
        case.args.append("stray")
        case.extra = USAGE
    if rng.random() < 0.02:
        case.args.insert(rng.randint(0, len(case.args)), rng.choice(["-h", "--help"]))
        case.help = True
    _combinations(case)
    return case


def _combinations(case: Case) -> None:
    """Rules that involve several options (the stage checks them before work, or ignores an option)."""
    c, t = case.command, case.tiers
    attack = case.values.get("attack_name", "fgsm")
    norm = case.values.get("norm", "linf")
    if c in ("attack", "pipeline") and attack == "fgsm" and norm == "l2":
        t["fgsm_l2"] = BAD
    if c == "report" and "command" in case.values and "to" not in case.values:
        t["command_without_to"] = USAGE  # --command is only written into a published report
    if c == "report" and case.values.get("publish_figures", "all") != "all" and "to" not in case.values:
        t["publish_figures_without_to"] = USAGE  # --publish-figures chooses what --to publishes
    if c in ("attack", "pipeline") and case.values.get("loss", "ce") == "margin":
        if attack in ("ifia", "manipulate"):
            t["loss_for_attribution_attack"] = BAD  # the attribution attacks have their own objective
        elif case.values.get("posterior_mode", "mean_grad") == "predictive":
            t["margin_predictive"] = BAD  # the predictive mode is the cross-entropy of the predictive
    if c == "attack" and attack != "pgd":  # FGSM ignores the PGD settings
        for name in ("steps", "step_size"):
            if t.get(name) == BAD:
                t[name] = ANY
    if c == "train":
        preset = PRESETS.get(str(case.values.get("preset", "quick")))
        model = case.values.get("model")
        if model == "advNN" and preset is not None:
            adv_attack = case.values.get("adv_attack", preset.adv.attack)
            adv_norm = case.values.get("adv_norm", preset.adv.norm)
            if adv_attack == "fgsm" and adv_norm == "l2":
                t["fgsm_l2"] = BAD
        dataset = case.values.get("dataset", preset.dataset if preset else None)
        if dataset != "mnist5k" and max(t.values(), default=OK) == OK:
            t["dataset_on_disk"] = ANY  # needs --data-root with the real files
    if c == "pipeline":  # a sampled posterior has chains x samples draws (ensemble: --members), no more
        preset = PRESETS.get(str(case.values.get("preset", "quick")))

        def number(name, default):
            try:
                return int(case.values.get(name, default))
            except (TypeError, ValueError):
                return default
        draws = [number_ for d in case.values.get("draws", []) if (number_ := _int(d)) is not None]
        if preset is not None and draws:
            inf = case.values.get("inference", preset.inference)
            grids = {"hmc": (number("chains", preset.hmc.chains), preset.hmc.samples),
                     "sghmc": (preset.sgmcmc.chains, preset.sgmcmc.samples),
                     "sgld": (preset.sgmcmc.chains, preset.sgmcmc.samples),
                     "ensemble": (number("members", preset.ensemble.members), 1)}
            if inf in grids and max(draws) > grids[inf][0] * grids[inf][1]:
                t["draws_available"] = BAD
    if c in ("train", "pipeline"):  # a training setting the model does not train with is refused, not ignored
        preset = PRESETS.get(str(case.values.get("preset", "quick")))
        model = str(case.values.get("model", "fullBNN")) if c == "train" else "fullBNN"
        route = {"baseNN": "base", "artNN": "base", "advNN": "adv", "artBNN": "svi"}.get(model)
        if model == "fullBNN" and preset is not None:
            route = case.values.get("inference", preset.inference)
        for name in case.values:
            if route is not None and name in APPLIES_TO and route not in APPLIES_TO[name]:
                t[f"{name}_does_not_apply"] = BAD
    if case.values.get("model") == "artBNN" and case.values.get("inference", "svi") != "svi":
        t["art_bnn_svi_only"] = BAD  # the ART term is added to the SVI objective only
    if c == "table" and case.values.get("kind", "robustness") == "attribution":
        t["no_attribution_runs"] = BAD  # the empty --out has no attribution-attack run to tabulate
    elif c == "table" and "model" not in case.values:
        t["model_required"] = USAGE  # a robustness table names its model
    if c == "table":
        linf, l2 = case.values.get("linf_eps", "8/255"), case.values.get("l2_eps", "0.25")
        if linf == "" and l2 == "":
            t["no_epsilon"] = BAD
    if c == "sweep" and ("steps" in case.values or "skip_steps" in case.values):  # steps a and b of sweep.toml
        import fnmatch
        chosen = [step for step in "ab" if (not case.values.get("steps") or any(
            fnmatch.fnmatchcase(step, p) for p in case.values["steps"])) and not any(
            fnmatch.fnmatchcase(step, p) for p in case.values.get("skip_steps", []))]
        if not chosen:
            t["no_step_left"] = BAD
    if c == "sweep" and "scheduler" in case.values and "workers" in case.values:
        t["scheduler_workers"] = USAGE  # --workers sizes the embedded cluster only
    if c == "explain":
        if "attack_run" not in case.values:
            t["attack_run"] = BAD  # the empty --out has no attack run to default to
        if case.values.get("method", "lrp") != "lrp" and (case.values.get("rules") or "composite" in case.values):
            t["method_rules"] = BAD


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


# -- the test -----------------------------------------------------------------------------------------------
@pytest.fixture
def sentinels(monkeypatch):
    """Replace the entry points of real work by a sentinel; returns the list of the ones reached."""
    reached: list[str] = []

    def stop(name):
        def entry(*args, **kwargs):
            reached.append(name)
            raise Sentinel(f"fuzz sentinel: reached {name}")
        return entry
    monkeypatch.setattr(inference, "train_model", stop("train_model"))
    monkeypatch.setattr(inference, "load_model", stop("load_model"))
    monkeypatch.setattr(results, "analyse_stored", stop("analyse_stored"))
    monkeypatch.setattr(results, "find_analyses", stop("find_analyses"))
    monkeypatch.setattr(results, "find_tables", stop("find_tables"))
    monkeypatch.setattr(experiment.Experiment, "run", stop("Experiment.run"))
    monkeypatch.setattr(faithfulness_report, "trained_models", stop("trained_models"))
    monkeypatch.setattr(results_report, "write_report", stop("write_report"))
    monkeypatch.setattr(cli_sweep, "run", stop("sweep.run"))  # where the cluster would start
    monkeypatch.setattr(stages, "trained_models", stop("trained_models"))  # evaluate without --model
    # train reads the test split before training: once is enough
    monkeypatch.setattr(datasets, "load", functools.lru_cache(maxsize=None)(datasets.load))
    monkeypatch.delenv("BAYESROBUST_OUT", raising=False)
    return reached


def check(case: Case, result, reached: list[str]) -> str | None:
    """What is wrong with ``result`` of ``case`` (None: nothing)."""
    output = result.output
    lines = output.strip().splitlines()
    if "Traceback" in output or BUG_NOTE in output:
        return "traceback or bug note"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"exception {result.exception!r}"
    if case.help and result.exit_code == 0:  # -h may also be taken as an option's value, or come too late
        return None if "Usage:" in output and not reached else "--help did not just print help"
    if result.exit_code == 0:
        return "exit 0 although every stage entry point stops with a sentinel"
    if result.exit_code not in (1, 2) or not lines or not lines[-1].startswith("Error: "):
        return f"exit {result.exit_code} without a one-line 'Error: ...' at the end"
    if case.help:
        return None
    if case.tier == OK and not reached:
        return f"valid input rejected: {lines[-1]}"
    if case.tier >= BAD and reached:
        return "invalid input reached the stage's work"
    if case.tier in (BAD, USAGE) and result.exit_code != {BAD: 1, USAGE: 2}[case.tier]:
        return f"exit {result.exit_code}, expected {'a user error (1)' if case.tier == BAD else 'a usage error (2)'}"
    return None


def test_fuzz_every_command(sentinels, tmp_path):
    rng = random.Random(SEED)
    runner = CliRunner()
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "run.nc").write_text("")
    (tmp_path / "sweep.toml").write_text('[grid]\npreset = "tiny"\nmodels = ["baseNN", "fullBNN"]\n'
                                         '[steps.a]\nmode = "mean_sign"\n[steps.b]\nrules = ["gamma"]\n')
    problems = []
    seen = {OK: 0, ANY: 0, BAD: 0, USAGE: 0}
    with runner.isolated_filesystem(temp_dir=tmp_path):
        for command in COMMANDS:
            for _ in range(RUNS_PER_COMMAND):
                case = make_case(rng, command, tmp_path)
                env = {"BAYESROBUST_OUT": None}
                if "out" not in case.values and rng.random() < 0.2:  # the output folder from the environment
                    env["BAYESROBUST_OUT"], case.tiers["out_env"] = rng.choice(_paths("out", tmp_path))
                elif "out" not in case.values:  # not ./results in the isolated folder: a fixed empty one
                    case.args += ["--out", str(tmp_path / "out")]
                sentinels.clear()
                result = runner.invoke(main, [command, *case.args], env=env)
                seen[case.tier] += 1
                problem = check(case, result, sentinels)
                if problem:
                    problems.append(f"{problem}\n  {env} bayesrobust {command} {' '.join(map(repr, case.args))}\n  "
                                    + "\n  ".join(result.output.strip().splitlines()[-4:]))
    written = sorted(str(p) for p in (tmp_path / "out").rglob("*") if not p.is_dir())
    assert not written, f"the fuzz did real work: {written}"  # (stages create their empty folders first)
    assert min(seen[OK], seen[BAD], seen[USAGE]) > 100, seen  # every side of every check is exercised
    assert not problems, f"{len(problems)} of {len(COMMANDS) * RUNS_PER_COMMAND} runs:\n" + "\n".join(problems[:25])


def test_fuzz_the_group(sentinels):
    """The group itself: unknown commands, --version, --help, nothing."""
    runner = CliRunner()
    for args, code in [(["bogus"], 2), (["--bogus"], 2), ([""], 2), (["--version"], 0), (["--help"], 0),
                       (["-h"], 0)]:
        result = runner.invoke(main, args)
        assert result.exit_code == code, (args, result.output)
        assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
        if code:
            assert result.output.strip().splitlines()[-1].startswith("Error: "), result.output
    assert not sentinels
