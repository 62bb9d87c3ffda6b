"""The figures (bayesrobust.figures) and the analyze / plot commands on small synthetic results in the store format.

The synthetic results mimic a quick run: 3 models + a Bayesian net with two S, 3 LRP rules, 3 layers,
digit-like 28×28 images; the adversarial relevance is the clean one plus smooth noise, largest for the
deterministic net, so the Bayesian nets come out more robust (as in the paper).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from matplotlib.figure import Figure
from scipy import ndimage

from bayesrobust import analyze, figures, paths, plot, results, stability, store

PRESET = "quick"
IMAGES = np.array([12, 40, 57, 101, 230, 311, 402, 555, 678, 790, 812, 903, 944, 1020, 1111, 1234, 1300,
                   1402, 1500, 1618, 1700, 1800, 1901, 2020])
RULES = ["epsilon", "gamma", "alpha1beta0"]
LAYER_NAMES = ["conv1", "conv2", "fc"]
LAYER_LABELS = ["layer 0 (conv1)", "layer 1 (conv2)", "layer 2 (fc)"]
#: (label, S, noise of the adversarial relevance)
MODELS = [("baseNN", 1, 1.2), ("advNN", 1, 0.9), ("fullBNN", 10, 0.5), ("fullBNN", 50, 0.35)]
#: images (by position) on which the attack failed for every model, and one that succeeded for baseNN
FAILED_ALL = [3, 7, 8]
SUCCESS_DET = 1


def _digits(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 1, 28, 28) stroke images in [0, 1]."""
    yy, xx = np.mgrid[0:28, 0:28].astype(float)
    out = np.zeros((n, 1, 28, 28))
    for i in range(n):
        img = np.zeros((28, 28))
        for _ in range(3):
            (y0, x0), (y1, x1) = rng.uniform(6, 22, (2, 2))
            t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / ((y1 - y0) ** 2 + (x1 - x0) ** 2 + 1e-9),
                        0, 1)
            d = np.hypot(yy - (y0 + t * (y1 - y0)), xx - (x0 + t * (x1 - x0)))
            img = np.maximum(img, np.clip(1.8 - d, 0, 1))
        out[i, 0] = img
    return out


def _smooth(rng: np.random.Generator, shape: tuple, sigma: float = 1.5) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0,) * (len(shape) - 2) + (sigma, sigma))
    return noise / noise.std()


def _make_results(rng_seed=0, same_as_det=None):
    """Attack and explanation Datasets of MODELS (the real variables and attributes), by attack run name."""
    rng = np.random.default_rng(rng_seed)
    n = len(IMAGES)
    x = _digits(rng, n)
    labels = IMAGES % 10
    base = _smooth(rng, (len(RULES), len(LAYER_NAMES), n, 1, 28, 28), 2.0) * (0.3 + x) * 0.05
    det_adv_noise, made = None, {}
    for model, s, noise in MODELS:
        failed = rng.uniform(size=n) < 0.6
        failed[FAILED_ALL] = True
        failed[SUCCESS_DET] = model != "baseNN"
        success = ~failed
        misclassified = np.zeros(n, bool)
        misclassified[[0, 5]] = True  # neither successful nor failed
        failed &= ~misclassified
        success &= ~misclassified
        pred = np.where(misclassified, (labels + 1) % 10, labels)
        pred_adv = np.where(success, (labels + 3) % 10, pred)
        x_adv = np.clip(x + 0.2 * np.sign(rng.standard_normal(x.shape)), 0, 1)
        scale = rng.uniform(0.4, 1.6, n)
        adv_noise = _smooth(rng, base.shape) * 0.05 * noise * scale[:, None, None, None]
        if same_as_det == model:
            adv_noise = det_adv_noise
        if model == "baseNN":
            det_adv_noise = adv_noise
        relevance = np.stack([base, base + adv_noise]).astype(np.float32)
        soft = np.clip(1 - 0.3 * scale * (1 if s > 1 else rng.uniform(0, 1, n)) - 0.6 * success, 0, 1)
        probs = np.full((n, 10), 0.02)
        probs[np.arange(n), pred] = 0.82
        run = paths.attack_run_name(model, "svi", "fgsm", "linf", 0.2, s, "mean_grad")
        attrs = dict(model=model, n_draws=s, attack="fgsm", norm="linf", epsilon=0.2, posterior_mode="mean_grad")
        attack = xr.Dataset(
            {"x": (("image", "channel", "height", "width"), x.astype(np.float32)),
             "x_adv": (("image", "channel", "height", "width"), x_adv.astype(np.float32)),
             "label": ("image", labels), "pred": ("image", pred), "pred_adv": ("image", pred_adv),
             "success": ("image", success), "failed": ("image", failed), "softmax_robustness": ("image", soft),
             "probs": (("image", "class"), probs), "probs_adv": (("image", "class"), probs),
             "draw_pred": (("draw", "image"), np.tile(pred, (s, 1))),
             "draw_pred_adv": (("draw", "image"), np.tile(pred_adv, (s, 1)))},
            coords={"image": IMAGES, "class": np.arange(10), "draw": np.arange(s),
                    "chain": ("draw", np.full(s, -1)), "sample": ("draw", np.arange(s))},
            attrs=store.provenance("attack", attrs, **attrs))
        dims = ("input", "rule", "layer", "image", "channel", "height", "width")
        expl = xr.Dataset(
            {"relevance": (dims, relevance), "relevance_std": (dims, np.abs(relevance) * 0.1),
             "relevance_sign_agreement": (dims, np.ones_like(relevance))},
            coords={"input": ["clean", "adversarial"], "rule": RULES, "layer": np.arange(len(LAYER_NAMES)),
                    "layer_name": ("layer", LAYER_NAMES), "image": IMAGES},
            attrs=store.provenance("explanation", {"model": model}, model=model, n_draws=s, method="lrp",
                                   attack_run=run))
        made[run] = (attack, expl)
    return made


def _write_results(out, **kwargs):
    """Write the results of :func:`_make_results` under ``out`` in the store's file layout."""
    for run, (attack, expl) in _make_results(**kwargs).items():
        store.write_netcdf(attack, paths.attack_path(out, PRESET, run), "attack")
        path = paths.explanation_path(out, PRESET, run, "lrp")
        path.parent.mkdir(parents=True, exist_ok=True)
        expl.to_netcdf(path, engine="h5netcdf")


def _table(model, n_draws, clean, drop):
    eps = [8 / 255, 16 / 255, 0.25, 0.5, 1.0, 2.0]
    acc = np.full((2, len(eps), 2), np.nan)
    for s in range(2):  # steps 20 and 100: the longer attack lowers accuracy further
        acc[0, :2, s] = clean * np.exp(-drop * np.array([1, 2]) * (1 + 0.2 * s))
        acc[1, 2:, s] = clean * np.exp(-drop * np.array([0.25, 0.5, 1, 2]) * (1 + 0.2 * s))
    attrs = dict(model=model, n_draws=n_draws, attack="pgd")
    return xr.Dataset({"accuracy": (("norm", "epsilon", "steps"), acc), "clean_accuracy": ((), clean)},
                      coords={"norm": ["linf", "l2"], "epsilon": eps, "steps": [20, 100]},
                      attrs=store.provenance("robustness_table", attrs, **attrs))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    _write_results(root)
    for model, s, clean, drop in (("baseNN", 1, 0.97, 1.5), ("advNN", 1, 0.95, 0.6), ("fullBNN", 10, 0.96, 0.9)):
        store.write_netcdf(_table(model, s, clean, drop), root / "attacks" / PRESET / f"table_{model}_S{s}.nc")
    return root


@pytest.fixture(scope="module")
def ds(out):
    return results.analyse_stored(out, PRESET, 20)


@pytest.fixture(scope="module")
def runs(out, ds):
    return results.load_runs(out, ds)


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


# --------------------------------------------------------------------------------------------------------
# Discovery and the analysis of stored results


def test_discovery_by_attributes(out, ds):
    found = results.find_runs(out, PRESET)
    assert [f.name for f in found] == ["baseNN", "advNN", "fullBNN_S10", "fullBNN_S50"]
    assert list(ds.model.values) == ["baseNN", "advNN", "fullBNN_S10", "fullBNN_S50"]
    assert list(ds.layer_name.values) == LAYER_NAMES and ds.attrs["preset"] == PRESET
    assert results.analysis_name(ds) == "quick_fgsm_linf_eps0.2_top20"
    cfg = store.config_of(ds)
    assert cfg["runs"][0]["attack_path"] == f"attacks/{PRESET}/baseNN_fgsm_linf_eps0.2_S1.nc"
    # the Bayesian nets were made more robust: positive median Bay - Det at every layer
    assert (ds.lrp_robustness_diff.sel(comparison="fullBNN_S50-baseNN").median("image") > 0).all()
    with pytest.raises(FileNotFoundError, match="no explained attack run.*matches"):
        results.find_runs(out, PRESET, attack="pgd")


@pytest.mark.parametrize("link", ["path", "absolute", "none"])
def test_attack_link_variants(out, tmp_path, link):
    """The explanation names its attack run by a path (relative to OUT or absolute) or only by file name."""
    found = results.find_runs(out, PRESET, models=["baseNN"])[0]
    attack_path = paths.attack_path(tmp_path, PRESET, found.attack_path.stem)
    store.write_netcdf(found.attack.load(), attack_path, "attack")
    expl = found.explanations[0][1].load()
    expl.attrs["attack_run"] = {"path": str(attack_path.relative_to(tmp_path)), "absolute": str(attack_path),
                                "none": ""}[link]
    store.write_netcdf(expl, paths.explanation_path(tmp_path, PRESET, found.attack_path.stem, "lrp"))
    (again,) = results.find_runs(tmp_path)
    assert again.attack_path == attack_path.resolve() and again.name == "baseNN"


def test_ambiguous_runs(out, tmp_path):
    """Two attacks of one model, or models attacked differently, must be told apart with the filters."""
    def copy(found, epsilon, stem):
        attack = found.attack.load().assign_attrs(epsilon=epsilon)
        store.write_netcdf(attack, paths.attack_path(tmp_path, PRESET, stem), "attack")
        expl = found.explanations[0][1].load().assign_attrs(attack_run=stem)
        store.write_netcdf(expl, paths.explanation_path(tmp_path, PRESET, stem, "lrp"))
    base, adv = results.find_runs(out, PRESET, models=["baseNN", "advNN"])
    copy(base, 0.2, "base_a")
    copy(adv, 0.1, "adv_b")
    with pytest.raises(ValueError, match="attacked differently.*choose one attack"):
        results.find_runs(tmp_path)
    copy(base, 0.1, "base_b")
    with pytest.raises(ValueError, match="several attack runs of baseNN match"):
        results.find_runs(tmp_path)
    assert [f.attack_path.stem for f in results.find_runs(tmp_path, epsilon=0.1)] == ["base_b", "adv_b"]


def test_runs_attacked_on_two_losses_are_told_apart(out, tmp_path):
    """Runs stored before attacks recorded a loss attacked the cross-entropy; runs of the margin loss are kept
    apart from them, chosen with the loss filter, and name their analysis."""
    def copy(found, stem, loss):
        attack = found.attack.load()
        if loss is not None:
            attack = attack.assign_attrs(loss=loss)
        store.write_netcdf(attack, paths.attack_path(tmp_path, PRESET, stem), "attack")
        expl = found.explanations[0][1].load().assign_attrs(attack_run=stem)
        store.write_netcdf(expl, paths.explanation_path(tmp_path, PRESET, stem, "lrp"))
    base, adv = results.find_runs(out, PRESET, models=["baseNN", "advNN"])
    copy(base, "base_ce", None)
    copy(adv, "adv_margin", "margin")
    with pytest.raises(ValueError, match="attacked differently.*loss=margin.*--loss"):
        results.find_runs(tmp_path)
    copy(base, "base_margin", "margin")
    copy(adv, "adv_ce", "ce")
    assert [f.attack_path.stem for f in results.find_runs(tmp_path, loss="ce")] == ["base_ce", "adv_ce"]
    assert [f.attack_path.stem for f in results.find_runs(tmp_path, loss="margin")] == ["base_margin", "adv_margin"]
    ds = results.analyse_stored(tmp_path, PRESET, loss="margin")
    assert results.analysis_name(ds) == "quick_fgsm_linf_eps0.2_margin_top20"


def test_explanations_joined_along_rule(out, tmp_path):
    found = results.find_runs(out, PRESET, models=["baseNN"])[0]
    ds = found.explanations[0][1]
    split = [ds.sel(rule=[r]).assign_attrs(method=f"lrp_{r}") for r in RULES]
    joined = results.join_explanations(split)
    xr.testing.assert_equal(joined.relevance, ds.relevance)
    with pytest.raises(ValueError, match="same rule"):
        results.join_explanations([ds, ds])


# --------------------------------------------------------------------------------------------------------
# Selection rules


def test_select_image_rules(runs):
    det, bay = runs["baseNN"], runs["fullBNN_S50"]
    expected = min(int(IMAGES[i]) for i in range(len(IMAGES))
                   if det.attack.failed.values[i] and bay.attack.failed.values[i])
    assert figures.select_image([det.attack, bay.attack], "failed") == expected
    assert figures.select_image([det.attack], "successful") == IMAGES[SUCCESS_DET]
    assert figures.select_image([det.attack, bay.attack], "failed", images=IMAGES[FAILED_ALL[1:]]) == \
        IMAGES[FAILED_ALL[1]]
    with pytest.raises(ValueError, match="no explained image where the attack succeeded"):
        figures.select_image([det.attack], "successful", images=IMAGES[FAILED_ALL])
    with pytest.raises(ValueError, match="unknown outcome"):
        figures.select_image([det.attack], "won")


# --------------------------------------------------------------------------------------------------------
# The figures: panels and titles


def test_fig1_panels(runs):
    det, bay = runs["baseNN"], runs["fullBNN_S50"]
    fig = figures.fig1(det, bay, topk=30)
    image = figures.select_image([det.attack, bay.attack], "failed")
    assert len(fig.axes) == 7  # 2 x 3 panels + the shared colour bar
    assert [ax.get_title() for ax in fig.axes[:3]][1:] == ["R(x)", "R(x̃)"]
    assert f"Test image {image} " in fig._suptitle.get_text() and "layer 2 (fc)" in fig._suptitle.get_text()
    assert fig.axes[0].get_ylabel().startswith("Det") and fig.axes[3].get_ylabel().startswith("Bay (S=50)")
    # one colour scale, symmetric about 0, for all four maps
    limits = {ax.images[0].get_clim() for ax in fig.axes[:6] if ax.images and ax.images[0].get_cmap().name
              .startswith("RdBu")}
    assert len(limits) == 1 and limits.pop()[0] < 0
    chosen = figures.fig1(det, bay, image=int(IMAGES[FAILED_ALL[2]]), rule="gamma", layer=0)
    assert f"Test image {IMAGES[FAILED_ALL[2]]} " in chosen._suptitle.get_text()
    other = figures.fig1(det, bay, image=int(IMAGES[SUCCESS_DET]))  # the title says what the attacks did
    assert "Det: attack succeeded; Bay: attack failed" in other._suptitle.get_text()
    with pytest.raises(ValueError, match="no rule 'z'"):
        figures.fig1(det, bay, rule="z")


def test_fig3_panels(runs):
    fig = figures.fig3(runs["baseNN"])
    assert len(fig.axes) == 2 * 4 + 3  # (image + 3 layers) x (clean, adversarial) + a colour bar per layer
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[0] == "input" and [t.split("\n")[0] for t in titles[1:]] == LAYER_LABELS
    assert f"test image {IMAGES[SUCCESS_DET]} (label 0), attack succeeded" in fig._suptitle.get_text()


def test_fig4_panels(ds):
    fig = figures.fig4(ds)
    assert len(fig.axes) == 3 and [ax.get_title() for ax in fig.axes] == LAYER_LABELS
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["Adv − Det", "Bay (S=10) − Det", "Bay (S=50) − Det"]
    assert len(figures.fig4(ds, subset="failed", layers=[2]).axes) == 1
    wrapped = figures.fig4(ds, layers=[0, 1, 2, 2])  # more than three layers: rows of three panels
    assert len(wrapped.axes) == 6 and sum(ax.get_visible() for ax in wrapped.axes) == 4


def test_fig5_stars_from_p_values(ds):
    fig = figures.fig5(ds)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["LRP-ε", "LRP-γ", "LRP-α1β0"]
    p = ds.mannwhitney_p.sel(subset="all", layer=2).transpose("rule", "comparison").values.ravel()
    assert [t.get_text() for t in ax.texts] == [figures.significance_stars(v) for v in p]
    assert "*" in "".join(t.get_text() for t in ax.texts)
    two = figures.fig5({"MNIST": ds, "Fashion-MNIST": ds}, layer=0)
    assert [ax.get_title() for ax in two.axes] == ["MNIST, layer 0 (conv1)", "Fashion-MNIST, layer 0 (conv1)"]


def test_fig6_rho_in_legend(ds):
    fig = figures.fig6(ds)
    assert len(fig.axes) == 4 * 3  # a row per model, a column per layer
    assert [ax.get_title() for ax in fig.axes[:3]] == LAYER_LABELS
    bay = fig.axes[3 * 3]  # fullBNN_S50, layer 0
    rho = float(ds.spearman_rho.sel(model="fullBNN_S50", subset="all", rule="epsilon", layer=0))
    assert bay.get_ylabel().startswith("Bay (S=50)")
    assert [t.get_text() for t in bay.get_legend().get_texts()] == [f"ρ = {rho:.2f}"]
    assert len(figures.fig6(ds, models=["baseNN", "fullBNN_S50"], layers=["conv2"]).axes) == 2


def test_default_layers():
    many = xr.Dataset(coords={"layer": np.arange(20)})
    assert figures.default_layers(many) == [0, 4, 8, 11, 15, 19]
    assert figures.default_layers(many.isel(layer=slice(0, 6))) == list(range(6))


def test_colour_images(runs):
    """CIFAR-like 3-channel images are shown in colour; their maps are summed over channels."""
    det, bay = runs["baseNN"], runs["fullBNN_S10"]

    def rgb(run):
        attack = run.attack.drop_vars(["x", "x_adv", "channel"], errors="ignore").load()
        for v in ("x", "x_adv"):
            attack[v] = (run.attack[v].dims, np.repeat(run.attack[v].values, 3, axis=1))
        rel = run.explanation.relevance
        expl = xr.Dataset({"relevance": (rel.dims, np.repeat(rel.values, 3, axis=rel.dims.index("channel")))},
                          coords={k: rel.coords[k] for k in ("input", "rule", "layer", "layer_name", "image")})
        return run._replace(attack=attack, explanation=expl)
    fig = figures.fig1(rgb(det), rgb(bay))
    assert fig.axes[0].images[0].get_array().shape == (28, 28, 3)
    assert figures.fig3(rgb(det)).axes[1].images[0].get_array().shape == (28, 28)


def test_robustness_table_panels(out):
    tables = results.find_tables(out, PRESET)
    assert len(tables) == 3
    fig = figures.robustness_table(list(tables.values()))
    assert [ax.get_title() for ax in fig.axes] == ["PGD L∞", "PGD L2"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "8/255", "16/255"]
    assert len(fig.axes[0].lines) == 3 * 2  # a line per model and step count
    assert len(fig.legends[0].get_texts()) == 6
    # a step count keeps its line style when a model lacks the other step counts
    only100 = _table("fullBNN", 50, 0.9, 1.0).sel(steps=[100])
    fig = figures.robustness_table({"a": _table("baseNN", 1, 0.9, 1.0), "b": only100})
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].lines}
    assert styles["b, 100 steps"] == styles["a, 100 steps"] != styles["a, 20 steps"]


def test_significance_stars():
    assert [figures.significance_stars(p) for p in (1e-4, 5e-3, 0.04, 0.5, np.nan)] == \
        ["***", "**", "*", "n.s.", ""]


# --------------------------------------------------------------------------------------------------------
# Degenerate data


def test_degenerate_data():
    # the Bayesian nets explain exactly like baseNN: zero-variance differences (histograms, not KDEs);
    # advNN lacks two rules: NaN differences and p-values; an all-NaN map is an empty panel
    runs = [stability.Run(str(a.attrs["model"]), int(a.attrs["n_draws"]), a, e)
            for a, e in _make_results(same_as_det="fullBNN").values()]
    runs[1] = runs[1]._replace(explanation=runs[1].explanation.sel(rule=["epsilon"]))
    ds = stability.analyse(runs, 20)
    assert float(ds.lrp_robustness_diff.sel(comparison="fullBNN_S10-baseNN").std()) == 0
    fig = figures.fig4(ds, rule="gamma")
    assert any(ax.patches for ax in fig.axes)  # the histograms
    assert [t.get_text() for t in fig.legends[0].get_texts()][0] == "Adv − Det"
    fig = figures.fig5(ds)
    assert "no\ndata" in _texts(fig)
    # the outer join of the analysis sorted the rules; the figure keeps the paper's order
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["LRP-ε", "LRP-γ", "LRP-α1β0"]
    legends = [t.get_text() for ax in figures.fig6(ds, rule="gamma").axes for t in ax.get_legend().get_texts()]
    assert "ρ = n/a" in legends
    successful = figures.fig6(ds, subset="successful", layers=[0])
    assert [ax.get_ylabel().split("\n")[0] for ax in successful.axes] == ["Det", "Adv", "Bay (S=10)", "Bay (S=50)"]
    det = runs[0]
    nan_map = det.explanation.copy(deep=True)
    nan_map["relevance"][:] = np.nan
    fig = figures.fig3(det._replace(explanation=nan_map))
    assert "no map" in _texts(fig) and "LRP rob. nan" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="no Adv or Bay model"):
        figures.fig4(ds.sel(model=["baseNN"]).isel(comparison=[]))


# --------------------------------------------------------------------------------------------------------
# The commands


@pytest.fixture(scope="module")
def analysed(out):
    """The output of ``python -m bayesrobust.analyze`` on the synthetic results (written under ``out``)."""
    res = CliRunner().invoke(analyze.main, ["--out", str(out), "--topk", "20"])
    assert res.exit_code == 0, res.output
    return res


def test_analyze_cli(out, analysed):
    res = analysed
    assert "Median LRP robustness" in res.output and "Mann-Whitney p" in res.output
    assert "Spearman rho" in res.output and "fullBNN_S50-baseNN" in res.output and "conv2" in res.output
    assert (out / "analysis" / "quick_fgsm_linf_eps0.2_top20.nc").exists()
    back = store.open_result(out / "analysis" / "quick_fgsm_linf_eps0.2_top20.nc", "analysis")
    assert back.attrs["preset"] == PRESET


def test_analyze_cli_errors(tmp_path, out):
    runner = CliRunner()
    res = runner.invoke(analyze.main, ["--out", str(tmp_path)])
    assert res.exit_code == 1 and "run `python -m bayesrobust.attack" in res.output
    shutil.copytree(out / "attacks", tmp_path / "attacks")
    res = runner.invoke(analyze.main, ["--out", str(tmp_path)])
    assert res.exit_code == 1 and "run `python -m bayesrobust.explain" in res.output
    (tmp_path / "explanations" / PRESET).mkdir(parents=True)
    (tmp_path / "explanations" / PRESET / "x.nc").write_bytes(b"")  # unreadable: reported, not ignored
    res = runner.invoke(analyze.main, ["--out", str(tmp_path), "--preset", PRESET])
    assert res.exit_code == 1 and f"{tmp_path / 'explanations' / PRESET / 'x.nc'} is unreadable (empty" in res.output
    (tmp_path / "explanations" / PRESET / "x.nc").unlink()
    res = runner.invoke(analyze.main, ["--out", str(tmp_path), "--preset", PRESET])
    assert res.exit_code == 1 and "no explanations under" in res.output
    res = runner.invoke(analyze.main, ["--out", str(tmp_path), "--preset", "quick_fc2"])
    assert res.exit_code == 1 and "no attack results" in res.output and "python -m bayesrobust.attack" in res.output
    res = runner.invoke(analyze.main, ["--out", str(tmp_path), "--preset", "other"])
    assert res.exit_code == 2 and "'other' is not one of" in res.output
    res = runner.invoke(analyze.main, ["--out", str(out), "--attack", "pgd"])
    assert res.exit_code == 1 and "matches the filters" in res.output and "Traceback" not in res.output
    res = runner.invoke(analyze.main, ["--out", str(out), "--topk", "0"])
    assert res.exit_code == 1 and "topk is a percentage of pixels in (0, 100], got 0.0" in res.output


def test_plot_cli_all(out, analysed):
    res = CliRunner().invoke(plot.main, ["--out", str(out), "--format", "png", "--dpi", "40"])
    assert res.exit_code == 0, res.output
    stem = "quick_fgsm_linf_eps0.2_top20"
    for name in [f"{stem}_{f}" for f in ("fig1", "fig3", "fig4", "fig5", "fig6")] + ["robustness_table_quick"]:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
    res = CliRunner().invoke(plot.main, ["--out", str(out), "--figure", "fig5", "--layer", "conv1"])
    assert res.exit_code == 0, res.output
    assert (out / "figures" / f"{stem}_fig5.pdf").read_bytes()[:4] == b"%PDF"
    assert not list((out / "figures").glob(".*"))  # no temporary file left behind


def test_plot_cli_errors(tmp_path, out, analysed):
    runner = CliRunner()
    res = runner.invoke(plot.main, ["--out", str(out), "--figure", "fig2"])
    assert res.exit_code == 2 and "fig1" in res.output and "robustness_table" in res.output
    res = runner.invoke(plot.main, ["--out", str(tmp_path), "--figure", "fig4"])
    assert res.exit_code == 1 and "python -m bayesrobust.analyze" in res.output
    res = runner.invoke(plot.main, ["--out", str(out), "--figure", "fig4", "--analysis", "nope"])
    assert res.exit_code == 1 and "no analysis nope" in res.output
    res = runner.invoke(plot.main, ["--out", str(out), "--figure", "fig4", "--rule", "z"])
    assert res.exit_code == 1 and "no rule 'z'" in res.output


def test_plot_cli_missing_run_files(out, analysed, tmp_path):
    """Without --figure, a figure whose inputs are gone is skipped with the reason; asked for, it is an error."""
    copy = tmp_path / "out"
    shutil.copytree(out / "analysis", copy / "analysis")
    res = CliRunner().invoke(plot.main, ["--out", str(copy), "--format", "png", "--dpi", "30"])
    assert res.exit_code == 0, res.output
    assert "skipped quick_fgsm_linf_eps0.2_top20_fig1" in res.output and "is gone" in res.output
    assert (copy / "figures" / "quick_fgsm_linf_eps0.2_top20_fig5.png").exists()
    res = CliRunner().invoke(plot.main, ["--out", str(copy), "--figure", "fig3"])
    assert res.exit_code == 1 and "is gone" in res.output
