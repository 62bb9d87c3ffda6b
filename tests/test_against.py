"""Bay − Det against a setting that differs between analyses (``bayesrobust report --against KEY``)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
from click.testing import CliRunner
from test_analysis import _run

from bayesrobust import stability
from bayesrobust.against import _MISSING as MISSING
from bayesrobust.against import against_figure, against_rows, available_keys, series_names, setting_value
from bayesrobust.cli import main
from bayesrobust.results_report import REPORT_FILES, write_report
from bayesrobust.stages import format_ci

RUNS = [_run("baseNN", 1), _run("fullBNN", 10), _run("fullBNN", 50)]


def _analysis(lr: float, seed: int, on_det: float | None = None):
    """An analysis whose compared models record ``preset.base.lr`` (S = 10: ``lr``; S = 50: ten times it) and
    ``seed`` as the pipeline records them (a run per model coordinate, with its attack's model_config); with
    ``on_det``, a cross-attack control whose median is ``on_det`` + the S."""
    def run(model, label, n_draws, rate):
        return {"model": model, "label": label, "n_draws": n_draws,
                "attack": {"epsilon": 0.2, "n_draws": n_draws, "model": label,
                           "model_config": {"seed": seed, "test_accuracy": 0.9 + 0.01 * seed,
                                            "preset": {"base": {"lr": rate, "milestones": [3]}}}}}
    config = {"runs": [run("baseNN", "baseNN", 1, 0.001), run("fullBNN_S10", "fullBNN", 10, lr),
                       run("fullBNN_S50", "fullBNN", 50, 10 * lr)]}
    ds = stability.analyse(RUNS, topk=20, config=config)
    # the known robustness values sit at layer 0 (layer 1's maps do not change): moved to the last layer,
    # where the figure reads; an offset per seed makes the analyses' medians differ
    ds = ds.isel(layer=[1, 0]).assign_coords(layer=ds.layer.values)
    for part in ("median", "ci_low", "ci_high"):
        ds[f"diff_{part}"] = ds[f"diff_{part}"] + 0.1 * seed
    if on_det is not None:
        shape = (ds.sizes["comparison"], 2, ds.sizes["rule"], ds.sizes["layer"])
        value = on_det + np.asarray(ds.n_draws.sel(model=ds.compared).values, float)[:, None, None, None]
        for part, add in (("median", 0.0), ("ci_low", -0.1), ("ci_high", 0.1)):
            ds[f"cross_diff_{part}"] = (("comparison", "attacked_by", "rule", "layer"),
                                        np.broadcast_to(value + add, shape).copy())
        ds = ds.assign_coords(attacked_by=["reference", "compared"])
    return ds


@pytest.fixture(scope="module")
def analyses():
    return {"lr0.01_s0": _analysis(0.01, 0, on_det=0.5), "lr0.01_s1": _analysis(0.01, 1),
            "lr0.1_s0": _analysis(0.1, 0)}


def test_setting_value_reads_the_compared_models_config_then_its_attack(analyses):
    ds = analyses["lr0.01_s1"]
    assert setting_value(ds, "fullBNN_S10-baseNN", "preset.base.lr") == 0.01
    assert setting_value(ds, "fullBNN_S50-baseNN", "preset.base.lr") == pytest.approx(0.1)
    assert setting_value(ds, "fullBNN_S50-baseNN", "seed") == 1
    assert setting_value(ds, "fullBNN_S50-baseNN", "n_draws") == 50  # not in the model config: the attack's
    assert "preset.base.lr" in available_keys(ds) and "epsilon" in available_keys(ds)
    assert "preset.base" not in available_keys(ds)  # a group, not a value


def test_against_rows_hold_each_analysis_own_and_cross_numbers(analyses):
    rows = against_rows(analyses, "preset.base.lr")
    assert len(rows) == 3 * 2 * 2  # analyses × Bayesian comparisons × rules (advNN: no such run here)
    last = analyses["lr0.01_s0"].layer.values[-1]
    for (name, comparison, rule), row in rows.set_index(["analysis", "comparison", "rule"]).iterrows():
        at = analyses[name].sel(subset="all", comparison=comparison, rule=rule, layer=last)
        assert (row.own_median, row.own_ci_low, row.own_ci_high) == (
            float(at.diff_median), float(at.diff_ci_low), float(at.diff_ci_high))
        assert row.value == pytest.approx((10 if comparison.startswith("fullBNN_S50") else 1) *
                                          float(name.split("_")[0][2:]))
        n_draws = 10 if comparison.startswith("fullBNN_S10") else 50
        ds = analyses[name]
        assert row.success == float(ds.success.sel(model=f"fullBNN_S{n_draws}").mean())
        assert row.success_det == float(ds.success.sel(model="baseNN").mean())
        assert row.test_accuracy == pytest.approx(0.9 + 0.01 * int(name[-1]))
        if name == "lr0.01_s0":  # the control: median on Det's x̃ (attacked_by reference) = 0.5 + S
            assert row.on_det_median == 0.5 + n_draws and row.on_det_ci_low == 0.4 + n_draws
        else:
            assert np.isnan(row.on_det_median)


def test_against_rows_refuse_an_unknown_key_or_a_group(analyses):
    with pytest.raises(ValueError, match=r"'preset.base.learning_rate'.*known settings: .*preset\.base\.lr"):
        against_rows(analyses, "preset.base.learning_rate")
    with pytest.raises(ValueError, match=r"'preset.base' is a group \(lr, milestones\).*preset\.base\.lr"):
        against_rows(analyses, "preset.base")
    rows = against_rows(analyses, "preset.base.milestones")  # a list: one label
    assert set(rows.value) == {"[3]"}


def test_against_figure_joins_the_median_over_analyses_that_share_a_value(analyses):
    rows = against_rows(analyses, "preset.base.lr")
    fig = against_figure(rows, "preset.base.lr")
    try:
        ax = fig.axes[0]  # the first rule's panel
        assert ax.get_xscale() == "log"  # 0.01 … 1.0 spans a factor of 100
        rule = "epsilon"
        at = rows[(rows.rule == rule) & (rows.comparison == "fullBNN_S10-baseNN")]
        line = next(ln for ln in ax.get_lines() if ln.get_gid() == "median")  # the first series: S = 10
        np.testing.assert_allclose(line.get_xdata(), [0.01, 0.1])
        expect = [np.median(at[at.value == 0.01].own_median), float(at[at.value == 0.1].own_median.iloc[0])]
        np.testing.assert_allclose(line.get_ydata(), expect)
    finally:
        plt.close(fig)
    fig = against_figure(against_rows(analyses, "seed"), "seed")  # 0 and 1: a linear axis
    try:
        assert fig.axes[0].get_xscale() == "linear"
    finally:
        plt.close(fig)


def test_report_against_a_setting_and_its_error(analyses, tmp_path):
    for name, ds in analyses.items():
        stability.write(ds, tmp_path / "sweep" / name, name="quick_fgsm_top20")
    _, md_path = write_report(tmp_path / "sweep", title="sweep", against=["preset.base.lr"])
    md = md_path.read_text()
    assert "## Bay − Det against preset.base.lr" in md
    assert f"{REPORT_FILES}/against_preset_base_lr.png" in md
    assert (tmp_path / "sweep" / REPORT_FILES / "against_preset_base_lr.png").is_file()
    assert "differences.png" not in md  # the figure against the setting replaces the one point per analysis
    at = analyses["lr0.1_s0"].sel(subset="all", comparison="fullBNN_S50-baseNN", rule="gamma",
                                  layer=analyses["lr0.1_s0"].layer.values[-1])
    row = next(line for line in md.splitlines() if line.startswith("| lr0.1_s0/quick_fgsm_top20 | fullBNN_S50"))
    assert format_ci(float(at.diff_median), float(at.diff_ci_low), float(at.diff_ci_high)) in row
    assert "| 1.0 | 90.00% | " in row  # its lr, ten times 0.1, and its test accuracy
    bay, det = (float(analyses["lr0.1_s0"].success.sel(model=m).mean()) for m in ("fullBNN_S50", "baseNN"))
    assert bay != det and f"| {bay:.2f} / {det:.2f} |" in row
    assert "nan" not in md.split("## Analysis")[0]  # no control in this analysis: an empty cell
    fresh = tmp_path / "fresh"
    stability.write(analyses["lr0.1_s0"], fresh / "one", name="quick_fgsm_top20")
    result = CliRunner().invoke(main, ["report", "--out", str(fresh), "--against", "preset.lr"])
    assert result.exit_code == 1 and "'preset.lr'" in result.output and "preset.base.lr" in result.output
    assert not (fresh / "report.html").exists() and not (fresh / REPORT_FILES).exists()  # nothing drawn


def test_analyses_of_different_attacks_or_presets_are_separate_series(analyses):
    """A run folder holds its FGSM and its PGD analysis: at one value they are two series, not two seeds; so are
    two presets' analyses."""
    fgsm = analyses["lr0.1_s0"].assign_attrs(attack="fgsm", norm="linf", epsilon=0.2, topk=20.0)
    pgd = analyses["lr0.01_s1"].assign_attrs(attack="pgd", norm="linf", epsilon=0.2, topk=30.0)
    rows = against_rows({"a/fgsm": fgsm, "a/pgd": pgd}, "seed")
    assert set(rows.attack) == {"fgsm linf 0.2", "pgd linf 0.2 top30"}
    fig = against_figure(rows, "seed")
    try:
        labels = fig.axes[0].get_legend_handles_labels()[1]
        assert "fullBNN_S10-baseNN, pgd linf 0.2 top30, own attack" in labels
        assert "fullBNN_S10-baseNN, fgsm linf 0.2, own attack" in labels
        # each series' line joins only its own analyses: one value each, so no two-point line
        medians = [line for line in fig.axes[0].get_lines() if line.get_gid() == "median"]
        assert len(medians) == 4 and all(len(line.get_xdata()) == 1 for line in medians)
    finally:
        plt.close(fig)
    other = fgsm.assign_attrs(preset="fashion")  # the same attack on another preset: its own series too
    rows = against_rows({"a/fgsm": fgsm.assign_attrs(preset="mnist"), "b/fgsm": other}, "seed")
    assert set(series_names(rows)) == {"mnist, fullBNN_S10-baseNN", "mnist, fullBNN_S50-baseNN",
                                       "fashion, fullBNN_S10-baseNN", "fashion, fullBNN_S50-baseNN"}


def _trained_by(ds, inference: str, lr: float):
    """``ds`` with its fullBNNs recorded as trained by ``inference`` at step size ``lr`` (in the preset section
    that inference trains with, the other section holding a decoy), baseNN by Adam at 0.001."""
    config = json.loads(ds.attrs["config"])
    for run in config["runs"]:
        model_config = run["attack"]["model_config"]
        if run["model"] == "baseNN":
            model_config.update(model="baseNN", inference=None)
            continue
        section, decoy = ("sgmcmc", "base") if inference == "sghmc" else ("base", "sgmcmc")
        model_config.update(model="fullBNN", inference=inference)
        model_config["preset"] = {section: {"lr": lr}, decoy: {"lr": 123.0}, "inference": "svi"}
    return ds.assign_attrs(config=json.dumps(config))


def test_training_keys_read_the_section_each_model_trained_with(analyses):
    """``training.lr`` is the sampler's step for an SGHMC posterior and the members' step for a deep ensemble:
    a posterior's and a deterministic net's step sizes on one axis, as two series."""
    chain = _trained_by(analyses["lr0.01_s0"], "sghmc", 0.05)
    net = _trained_by(analyses["lr0.1_s0"], "ensemble", 0.2)
    assert setting_value(chain, "fullBNN_S10-baseNN", "training.lr") == 0.05
    assert setting_value(net, "fullBNN_S10-baseNN", "training.lr") == 0.2
    assert setting_value(net, "fullBNN_S10-baseNN", "training.momentum") is MISSING  # not recorded here
    assert {"training.lr", "preset.sgmcmc.lr"} <= set(available_keys(chain))
    rows = against_rows({"chain": chain, "net": net}, "training.lr")
    assert dict(zip(rows.analysis, rows.inference)) == {"chain": "sghmc", "net": "ensemble"}
    assert set(rows.value) == {0.05, 0.2}
    assert set(series_names(rows)) == {f"fullBNN_S{s}-baseNN ({i})" for s in (10, 50) for i in ("sghmc", "ensemble")}
    fig = against_figure(rows, "training.lr")
    try:
        medians = [line for line in fig.axes[0].get_lines() if line.get_gid() == "median"]
        assert len(medians) == 4 and all(len(line.get_xdata()) == 1 for line in medians)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match=r"'training.learning_rate'.*training\.lr"):
        against_rows({"chain": chain}, "training.learning_rate")
