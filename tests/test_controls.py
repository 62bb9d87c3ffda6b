"""The controls of docs/method.md §9.8 on the `tiny` preset (10 images, S = 4): the cross-attack and random-sign
variables of the analysis against explaining the swapped / perturbed inputs directly, the random-sign norm
against the adversarial norm, the perturbation norms against the attack files, and bad input refused early."""

import numpy as np
import pytest
import torch
import xarray as xr

from bayesrobust import Experiment, controls, metrics, stages, store
from bayesrobust.control_figures import controls_figure, perturbation_figure
from bayesrobust.explain.explanation import explain_attack, make_explainers
from bayesrobust.inference import load_model
from bayesrobust.presets import get_preset

RULES = ["epsilon", "gamma"]
TOPK = 20


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("controls")
    e = Experiment("tiny", out=out, models=["baseNN", "fullBNN"], draws=[4], rules=RULES, n_inputs=10,
                   controls=["cross", "random"])
    e.train()
    runs = e.attack_runs()
    e.explain(runs)
    written = e.run_controls(runs)
    return e, runs, written, e.analyze()


def _attack(path):
    with store.open_result(path, "attack") as ds:
        return ds.load()


def _direct(e, model, attack, x_new, n_draws):
    """Explain ``x_new`` as the adversarial input of a hand-made copy of ``attack``: (input, rule, layer, image...)."""
    posterior = load_model(e.out, get_preset("tiny"), model, "svi" if model == "fullBNN" else None)
    swapped = attack.copy()
    swapped["x_adv"] = (("image", "channel", "height", "width"), x_new)
    return explain_attack(posterior, swapped, make_explainers("lrp", RULES), layers="all", n_draws=n_draws,
                          seed=0)["relevance"]


def test_cross_variables_equal_explaining_the_swapped_inputs_directly(done):
    e, (det_run, bay_run), _, ds = done
    det, bay = _attack(det_run), _attack(bay_run)
    images = ds.image.values
    det, bay = det.sel(image=images), bay.sel(image=images)
    comparison = "fullBNN_S4-baseNN"
    own = ds.lrp_robustness
    for model, attack, other, n_draws, side, own_model, run, other_run in (
            ("fullBNN", bay, det, 4, "compared", "fullBNN_S4", bay_run, det_run),
            ("baseNN", det, bay, 1, "reference", "baseNN", det_run, bay_run)):
        rel = _direct(e, model, attack, other["x_adv"].transpose("image", "channel", "height", "width").values,
                      n_draws)
        expected = metrics.lrp_robustness(rel.sel(input="clean"), rel.sel(input="adversarial"), TOPK)
        got = ds.cross_lrp_robustness.sel(comparison=comparison, explained=side)
        np.testing.assert_allclose(got.transpose("rule", "layer", "image").values,
                                   expected.transpose("rule", "layer", "image").values, atol=1e-12)
        # the stored control maps are the direct maps of the swapped input
        name = controls.control_name(run.stem, "cross", other_run.stem)
        stored = xr.open_dataset(controls.control_path(e.out, "tiny", name)).load()
        np.testing.assert_allclose(stored.relevance.sel(image=images).values,
                                   rel.sel(input="adversarial").transpose(*stored.relevance.dims).values,
                                   rtol=1e-5, atol=1e-6)
        assert own.sel(model=own_model).notnull().all()
    # paired differences on the same x̃: Det's attack, then the Bayesian model's
    cross = ds.cross_lrp_robustness.sel(comparison=comparison)
    on_det = cross.sel(explained="compared") - own.sel(model="baseNN")
    on_bay = own.sel(model="fullBNN_S4") - cross.sel(explained="reference")
    np.testing.assert_allclose(ds.cross_diff.sel(comparison=comparison, attacked_by="reference").values,
                               on_det.transpose("rule", "layer", "image").values)
    np.testing.assert_allclose(ds.cross_diff.sel(comparison=comparison, attacked_by="compared").values,
                               on_bay.transpose("rule", "layer", "image").values)
    median = ds.cross_diff_median.sel(comparison=comparison, attacked_by="reference")
    np.testing.assert_allclose(median.values, on_det.median("image").transpose("rule", "layer").values)
    assert (ds.cross_diff_ci_low <= ds.cross_diff_median + 1e-12).all()
    assert (ds.cross_diff_median <= ds.cross_diff_ci_high + 1e-12).all()


def test_random_sign_control_against_a_direct_computation(done):
    e, runs, _, ds = done
    for model, run, n_draws, name in (("baseNN", runs[0], 1, "baseNN"), ("fullBNN", runs[1], 4, "fullBNN_S4")):
        attack = _attack(run).sel(image=ds.image.values)
        x = torch.from_numpy(attack.x.transpose("image", "channel", "height", "width").values)
        x_adv = torch.from_numpy(attack.x_adv.transpose("image", "channel", "height", "width").values)
        x_random, achieved = controls.random_sign_perturbation(x, x_adv, seed=0)
        stored = xr.open_dataset(controls.control_path(e.out, "tiny", f"{run.stem}_random")).load()
        np.testing.assert_array_equal(stored.x_control.sel(image=ds.image.values).values, x_random.numpy())
        np.testing.assert_allclose(ds.random_l2.sel(model=name).values, achieved.numpy())
        rel = _direct(e, model, attack, x_random.numpy(), n_draws)
        expected = metrics.lrp_robustness(rel.sel(input="clean"), rel.sel(input="adversarial"), TOPK)
        np.testing.assert_allclose(ds.random_lrp_robustness.sel(model=name).values,
                                   expected.transpose("rule", "layer", "image").values, atol=1e-12)
        # ‖x̃ − x‖₂ of the own attack, and the clipped random norm never above it
        target = np.linalg.norm((x_adv.double() - x.double()).flatten(1).numpy(), axis=1)
        np.testing.assert_allclose(ds.perturbation_l2.sel(model=name).values, target, rtol=1e-12)
        assert (ds.random_l2.sel(model=name).values <= target + 1e-9).all()
    rnd = ds.random_lrp_robustness
    np.testing.assert_allclose(ds.random_diff.sel(comparison="fullBNN_S4-baseNN").values,
                               (rnd.sel(model="fullBNN_S4") - rnd.sel(model="baseNN")).values)


def test_random_sign_norm_equals_the_adversarial_norm_where_nothing_is_clipped():
    g = torch.Generator().manual_seed(1)
    x = 0.2 + 0.6 * torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64)  # far from 0 and 1
    x_adv = (x + 0.05 * torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)).clamp(0, 1)
    x_random, achieved = controls.random_sign_perturbation(x, x_adv, seed=3)
    target = (x_adv - x).flatten(1).norm(dim=1)
    np.testing.assert_allclose(achieved.numpy(), target.numpy(), rtol=1e-12)
    delta = (x_random - x).flatten(1)
    np.testing.assert_allclose(delta.abs().numpy(), (target / 8).unsqueeze(1).expand_as(delta).numpy(),
                               rtol=1e-10)  # |δ| = ‖x̃ − x‖₂ / √d at every pixel
    again, _ = controls.random_sign_perturbation(x, x_adv, seed=3)
    other, _ = controls.random_sign_perturbation(x, x_adv, seed=4)
    assert torch.equal(again, x_random) and not torch.equal(other, x_random)
    # at the pixel range's edge the clip shrinks the norm, never grows it, and keeps [0, 1]
    edge = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    clipped, norm = controls.random_sign_perturbation(edge, edge + 0.1, seed=0)
    assert (norm < 0.8 - 1e-6).all() and clipped.min() >= 0 and clipped.max() <= 1


def test_controls_are_skipped_when_up_to_date_and_drawn(done):
    e, runs, written, ds = done
    assert len(written) == 4 and all(p.is_file() for p in written)
    again = [stages.control("tiny", "baseNN", "random", runs[0], out=e.out)]
    assert again[0].skipped
    assert ds.attrs["controls"] == "cross,random"
    for fig in (controls_figure(ds), perturbation_figure(ds)):
        assert len(fig.axes) == len(RULES)


def test_bad_controls_are_refused_before_any_work(done, tmp_path):
    e, runs, _, _ = done
    with pytest.raises(ValueError, match="unknown control 'bogus'"):
        Experiment("tiny", out=tmp_path / "new", controls=["bogus"])
    with pytest.raises(ValueError, match="unknown control"):
        stages.control("tiny", "baseNN", "bogus", runs[0], out=e.out)
    with pytest.raises(ValueError, match="needs other attack run"):
        stages.control("tiny", "baseNN", "cross", runs[0], out=e.out)
    with pytest.raises(FileNotFoundError, match="no attack run"):
        stages.control("tiny", "baseNN", "cross", runs[0], other_run="nothing_here", out=e.out)
    bay = _attack(runs[1])
    with pytest.raises(ValueError, match="lacks test images"):
        controls.control_inputs("cross", bay, bay.isel(image=slice(0, 3)))


def test_a_control_of_another_version_of_its_inputs_is_left_out(done):
    from bayesrobust import results
    e, _, _, ds = done
    found = results.find_runs(e.out, "tiny", models=["baseNN", "fullBNN_S4"])
    found[0].attack_sha256 = "0" * 64  # baseNN's attack "redone" since its controls were computed
    redone = controls.attach(ds.drop_vars([v for v in ds.data_vars if v.startswith(("random", "cross"))]),
                             e.out, "tiny", found)
    assert redone.random_lrp_robustness.sel(model="baseNN").isnull().all()
    np.testing.assert_array_equal(redone.random_lrp_robustness.sel(model="fullBNN_S4").values,
                                  ds.random_lrp_robustness.sel(model="fullBNN_S4").values)
    assert "cross_lrp_robustness" not in redone  # both directions involve baseNN's attack: none usable
    assert redone.attrs["controls"] == "random"


def test_published_controls_numbers_are_the_analysis_values(done):
    from bayesrobust import results_report
    e, _, _, ds = done
    table = results_report.control_numbers(e.out)
    row = table[(table.condition == "cross: on Det's x̃") & (table.rule == "gamma")
                & (table.layer == int(ds.layer[-1]))].iloc[0]
    at = {"comparison": "fullBNN_S4-baseNN", "attacked_by": "reference", "rule": "gamma", "layer": ds.layer[-1]}
    assert row.comparison == "fullBNN_S4-baseNN"
    assert (row["median"], row.ci_low, row.ci_high) == tuple(
        float(ds[f"cross_diff_{p}"].sel(at)) for p in ("median", "ci_low", "ci_high"))
    assert set(table.condition) == {"own attack", "cross: on Det's x̃", "cross: on model's x̃",
                                    "random sign, same ‖δ‖₂"}
