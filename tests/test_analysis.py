"""The analysis of synthetic attack/explanation Datasets with known top-k overlap gives the known robustness."""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from bayesrobust import metrics, stability, store

IMAGES = [7, 3, 42, 11, 5]
RULES = ["epsilon", "gamma"]
LAYERS = [0, 1]
# Known LRP robustness per (model, image) at top-20% of a 1×2×5 map (one most positive + one most negative
# pixel): 1 = both kept, 0.5 = the maximum moved, 0 = both moved. Layer 1 of every model is fully robust.
KNOWN = {("baseNN", 1): [0.0, 0.5, 0.0, 0.5, 0.0], ("advNN", 1): [0.5, 0.5, 0.0, 1.0, 0.5],
         ("fullBNN", 10): [1.0, 0.5, 1.0, 1.0, 0.5], ("fullBNN", 50): [1.0, 1.0, 1.0, 1.0, 0.5]}
SUCCESS = {("baseNN", 1): [1, 0, 1, 0, 0], ("advNN", 1): [0, 0, 1, 0, 0], ("fullBNN", 10): [0, 0, 0, 0, 1],
           ("fullBNN", 50): [0, 0, 0, 0, 0]}


def _maps(robustness: float) -> tuple[np.ndarray, np.ndarray]:
    clean = np.arange(10.0)[::-1] - 4.5          # maximum at pixel 0, minimum at pixel 9
    adv = clean.copy()
    if robustness < 1:
        adv[[0, 4]] = adv[[4, 0]]                # the maximum moves to pixel 4
    if robustness < 0.5:
        adv[[9, 5]] = adv[[5, 9]]                # the minimum moves to pixel 5
    return clean.reshape(1, 2, 5), adv.reshape(1, 2, 5)


def _run(model, n_draws, order=None, images=IMAGES, label_shift=0):
    order = list(range(len(images))) if order is None else order
    rob = np.array(KNOWN[model, n_draws])[order]
    success = np.array(SUCCESS[model, n_draws], bool)[order]
    img = np.array(images)[order]
    rel = np.zeros((2, len(RULES), len(LAYERS), len(img), 1, 2, 5))
    for i, r in enumerate(rob):
        rel[0, :, :, i], rel[1, :, 0, i] = _maps(r)
        rel[1, :, 1, i] = rel[0, :, 1, i]
    expl = xr.Dataset({"relevance": (("input", "rule", "layer", "image", "channel", "height", "width"), rel)},
                      coords={"input": ["clean", "adversarial"], "rule": RULES, "layer": LAYERS, "image": img})
    label = img % 10 + label_shift
    attack = xr.Dataset(
        {"label": ("image", label), "pred": ("image", label), "pred_adv": ("image", np.where(success, 0, label)),
         "success": ("image", success), "failed": ("image", ~success),
         "softmax_robustness": ("image", 1 - rob / 2 + 0.01 * np.arange(len(img)))},
        coords={"image": img}, attrs=store.provenance("attack", {"model": model}, model=model, n_draws=n_draws))
    return stability.Run(model, n_draws, attack, expl)


@pytest.fixture(scope="module")
def runs():
    return [_run("baseNN", 1), _run("advNN", 1, order=[4, 2, 0, 1, 3]), _run("fullBNN", 10),
            _run("fullBNN", 50, order=[1, 0, 2, 3, 4])]


@pytest.fixture(scope="module")
def ds(runs):
    return stability.analyse(runs, topk=20)


def test_known_robustness(ds):
    assert list(ds.model.values) == ["baseNN", "advNN", "fullBNN_S10", "fullBNN_S50"]
    assert list(ds.role.values) == ["Det", "Adv", "Bay", "Bay"] and list(ds.n_draws.values) == [1, 1, 10, 50]
    assert list(ds.image.values) == IMAGES  # the reference model's order; other runs realigned by index
    for (model, s), rob in KNOWN.items():
        got = ds.lrp_robustness.sel(model=stability.model_name(model, s))
        np.testing.assert_array_equal(got.sel(layer=0).transpose("rule", "image").values, [rob, rob])
        np.testing.assert_array_equal(got.sel(layer=1).values, 1.0)
        np.testing.assert_array_equal(ds.success.sel(model=stability.model_name(model, s)).values,
                                      np.array(SUCCESS[model, s], bool))
    assert ds.lrp_robustness.dims == ("model", "rule", "layer", "image")
    np.testing.assert_allclose(ds.softmax_robustness.sel(model="baseNN"), 1 - np.array(KNOWN["baseNN", 1]) / 2
                               + 0.01 * np.arange(5))


def test_paired_differences(ds):
    assert list(ds.comparison.values) == ["advNN-baseNN", "fullBNN_S10-baseNN", "fullBNN_S50-baseNN"]
    assert list(ds.compared.values) == ["advNN", "fullBNN_S10", "fullBNN_S50"]
    det = np.array(KNOWN["baseNN", 1])
    for (model, s), rob in KNOWN.items():
        if model != "baseNN":
            diff = ds.lrp_robustness_diff.sel(comparison=f"{stability.model_name(model, s)}-baseNN", layer=0)
            np.testing.assert_array_equal(diff.values, [np.array(rob) - det] * 2)
    np.testing.assert_array_equal(ds.lrp_robustness_diff.sel(layer=1).values, 0.0)


def test_mann_whitney_and_spearman(ds):
    det = np.array(KNOWN["baseNN", 1])
    bay = np.array(KNOWN["fullBNN", 50])
    ref = stats.mannwhitneyu(det, bay, alternative="less")
    got = ds.sel(comparison="fullBNN_S50-baseNN", subset="all", rule="gamma", layer=0)
    assert float(got.mannwhitney_p) == pytest.approx(ref.pvalue) and ref.pvalue < 0.05
    assert float(got.mannwhitney_u) == pytest.approx(ref.statistic)
    # successful attacks: baseNN's images 7, 42 against fullBNN_S10's image 5
    succ = ds.sel(comparison="fullBNN_S10-baseNN", subset="successful", rule="epsilon", layer=0)
    assert float(succ.mannwhitney_p) == pytest.approx(
        stats.mannwhitneyu([0.0, 0.0], [0.5], alternative="less").pvalue)
    rho = ds.spearman_rho.sel(model="advNN", subset="all", rule="epsilon", layer=0)
    soft = ds.softmax_robustness.sel(model="advNN").values
    lrp = ds.lrp_robustness.sel(model="advNN", rule="epsilon", layer=0).values
    assert float(rho) == pytest.approx(stats.spearmanr(lrp, soft).statistic)
    failed = ds.failed.sel(model="advNN").values
    assert float(ds.spearman_rho.sel(model="advNN", subset="failed", rule="epsilon", layer=0)) == pytest.approx(
        metrics.spearman_with(lrp[failed], soft[failed]).statistic)
    # layer 1 is constant: no correlation defined
    assert np.isnan(ds.spearman_rho.sel(layer=1)).all()


def test_paired_confidence_intervals_and_wilcoxon(ds):
    """The stored CI and Wilcoxon values are those of the per-image paired differences of the subset (the
    images in it for both models), and the adjusted p-values are Benjamini-Hochberg over one subset's family."""
    for comparison in ds.comparison.values:
        model, ref = str(ds.compared.sel(comparison=comparison).values), "baseNN"
        for subset in ("all", "successful"):
            if subset == "all":
                keep = np.ones(ds.sizes["image"], bool)
            else:
                keep = ds.success.sel(model=model).values.astype(bool) & ds.success.sel(model=ref).values.astype(bool)
            at = ds.sel(comparison=comparison, subset=subset, rule="gamma", layer=0)
            d = ds.lrp_robustness_diff.sel(comparison=comparison, rule="gamma", layer=0).values[keep]
            ci = metrics.median_ci(d)
            np.testing.assert_array_equal([float(at.diff_median), float(at.diff_ci_low), float(at.diff_ci_high)],
                                          list(ci))
            wx = metrics.wilcoxon_signed_rank(d)
            np.testing.assert_array_equal([float(at.wilcoxon_stat), float(at.wilcoxon_p)], list(wx))
    family = ds.wilcoxon_p.sel(subset="all").values
    np.testing.assert_array_equal(ds.wilcoxon_p_adjusted.sel(subset="all").values, metrics.fdr_bh(family))
    all_ = ds.sel(subset="all", layer=0, rule="gamma", comparison="fullBNN_S50-baseNN")
    assert float(all_.diff_ci_low) <= float(all_.diff_median) <= float(all_.diff_ci_high)


def test_attrs_and_round_trip(ds, tmp_path):
    assert ds.attrs["kind"] == "analysis" and ds.attrs["topk"] == 20
    cfg = store.config_of(ds)
    assert cfg["topk"] == 20 and [r["model"] for r in cfg["runs"]][2] == "fullBNN_S10"
    path = stability.write(ds, tmp_path)
    assert path == tmp_path / "analysis" / "analysis_top20.nc"
    back = store.open_result(path, "analysis")
    xr.testing.assert_allclose(back.lrp_robustness.load(), ds.lrp_robustness)
    assert back.success.dtype == bool


def test_missing_rule_is_nan(runs):
    partial = runs[1]._replace(explanation=runs[1].explanation.sel(rule=["epsilon"]))
    ds = stability.analyse([runs[0], partial], topk=20)
    assert np.isnan(ds.lrp_robustness.sel(model="advNN", rule="gamma")).all()
    assert np.isnan(ds.mannwhitney_p.sel(rule="gamma")).all()


def test_errors(runs):
    with pytest.raises(ValueError, match="deterministic reference 'baseNN'"):
        stability.analyse(runs[1:])
    with pytest.raises(ValueError, match="share a model name"):
        stability.analyse(runs + [runs[2]])
    other = _run("advNN", 1, images=[7, 3, 42, 11, 6])
    with pytest.raises(ValueError, match="other images"):
        stability.analyse([runs[0], other])
    with pytest.raises(ValueError, match="other labels"):
        stability.analyse([runs[0], _run("advNN", 1, label_shift=1)])
    with pytest.raises(ValueError, match="lacks variable.*softmax_robustness"):
        stability.analyse([runs[0]._replace(attack=runs[0].attack.drop_vars("softmax_robustness"))])
    with pytest.raises(ValueError, match="input = 'clean' and 'adversarial'"):
        stability.analyse([runs[0]._replace(explanation=runs[0].explanation.sel(input=["clean"]))])
    with pytest.raises(ValueError, match="k_percent"):
        stability.analyse(runs, topk=0)


def test_reference_only_and_lazy_relevance(runs):
    det = runs[0]._replace(explanation=runs[0].explanation.chunk(image=2))
    ds = stability.analyse([det], topk=20)
    assert ds.sizes["comparison"] == 0 and ds.lrp_robustness_diff.dims[0] == "comparison"
    np.testing.assert_array_equal(ds.lrp_robustness.sel(model="baseNN", layer=0, rule="gamma"),
                                  KNOWN["baseNN", 1])
