"""The attack result in the store: round trip, validation, atomic writes."""

from __future__ import annotations

import pytest
import torch
import xarray as xr

from bayesrobust import store
from bayesrobust.adversarial import FGSM, robustness_table, run_attack
from bayesrobust.data import balanced_subset, load
from bayesrobust.models.architectures import ArchConfig, build
from bayesrobust.models.posterior import Posterior


@pytest.fixture(scope="module")
def result() -> xr.Dataset:
    torch.manual_seed(0)
    net = build(ArchConfig("fc2", 8))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    posterior = Posterior(net.arch, "svi", params, {k: torch.full_like(v, 0.1) for k, v in params.items()})
    data = balanced_subset(load("mnist5k", "test"), 20, seed=0)
    return run_attack(posterior, data, FGSM(epsilon=0.2), n_draws=3, model_name="fullBNN",
                      config={"preset": "test", "nested": {"a": [1, 2]}})


def test_round_trip(result, tmp_path):
    path = store.write_netcdf(result, tmp_path / "attacks" / "fgsm.nc")
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), result)
        assert back.success.dtype == bool
        assert store.config_of(back) == {"preset": "test", "nested": {"a": [1, 2]}}
    store.open_result(path, "attack")


def test_attributes(result):
    for name in ("model", "inference", "attack", "norm", "epsilon", "steps", "step_size", "posterior_mode",
                 "n_draws", "seed", "versions", "git_revision", "created", "config"):
        assert name in result.attrs, name
    assert result.attrs["attack"] == "fgsm" and result.attrs["steps"] == 1


@pytest.mark.parametrize("missing", ["x_adv", "draw_pred", "softmax_robustness"])
def test_validate_names_missing_variable(result, missing):
    with pytest.raises(ValueError, match=f"attack result is missing variable '{missing}'"):
        store.validate(result.drop_vars(missing))


def test_interrupted_write_leaves_nothing(result, tmp_path, monkeypatch):
    def broken(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt("interrupted")
    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(KeyboardInterrupt, match="^interrupted$"):  # re-raised as it was, not wrapped
        store.write_netcdf(result, tmp_path / "attacks" / "fgsm.nc")
    assert list((tmp_path / "attacks").iterdir()) == []


def test_table_round_trip(tmp_path):
    torch.manual_seed(0)
    from bayesrobust.models.posterior import deterministic
    data = balanced_subset(load("mnist5k", "test"), 10, seed=0)
    ds = robustness_table(deterministic(build(ArchConfig("fc2", 8))), data, epsilons={"linf": (0.1,)},
                          steps=(1,))
    path = store.write_netcdf(ds, tmp_path / "table.nc")
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), ds)


def test_git_revision_says_when_tracked_files_changed(tmp_path):
    """The stamp's revision is the checkout's HEAD; ``+dirty`` once a tracked file differs from it (staged or
    not), not for an untracked file; ``unknown`` outside a checkout."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    assert store._git_revision(tmp_path) == "unknown"
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    assert store._git_revision(tmp_path) == head
    (tmp_path / "results.nc").write_text("untracked")
    assert store._git_revision(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert store._git_revision(tmp_path) == head + "+dirty"
    git("add", "a.py")
    assert store._git_revision(tmp_path) == head + "+dirty"
    git("commit", "-q", "-m", "second")
    assert store._git_revision(tmp_path) == git("rev-parse", "HEAD") != head
