"""Denormal floats are flushed to zero on every torch thread while a model trains, and only then
(bayesrobust.denormals, docs/method.md §3.8)."""

import numpy as np
import pytest
import torch

from bayesrobust import denormals

TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32


def _identity_product() -> torch.Tensor:
    """An all-denormal 512x1024 matrix times the identity: IEEE keeps every entry, a flush zeroes the rows of
    each thread that flushes. The matrix is written as bits (≈ 1e-39), so it is denormal whatever the mode of
    the thread that makes it (a float conversion under a flush would give zeros)."""
    a = torch.from_numpy(np.full((512, 1024), 0x000AE398, dtype=np.uint32).view(np.float32))
    return a @ torch.eye(1024)


@pytest.fixture
def flushing_cpu():
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")


@pytest.mark.threads(2)
def test_the_flush_reaches_every_matmul_thread_and_ends_with_the_block(flushing_cpu):
    ieee = _identity_product()
    assert (ieee.numpy() != 0).all() and ieee.abs().max().item() < TINY
    with denormals.flush_denormals("cpu") as scope:
        flushed = _identity_product()
    assert scope == denormals.ALL_THREADS
    assert (flushed.numpy() == 0).all()  # every row, whichever of the two threads computed it (read by numpy
    # once IEEE handling is back: a denormal compared while the flush is on reads as zero)
    assert torch.equal(_identity_product(), ieee)  # IEEE again after the block
    with pytest.raises(RuntimeError, match="training failed"), denormals.flush_denormals("cpu"):
        raise RuntimeError("training failed")
    assert torch.equal(_identity_product(), ieee)  # and after a block that raised


def test_no_flush_on_a_gpu_device_or_when_disabled(flushing_cpu):
    ieee = _identity_product()
    for device, enabled in (("cuda:0", True), ("cpu", False)):
        with denormals.flush_denormals(device, enabled=enabled) as scope:
            assert scope == denormals.IEEE
            assert torch.equal(_identity_product(), ieee)


def test_a_trained_model_records_that_its_fit_flushed_and_its_evaluation_did_not(tmp_path, flushing_cpu,
                                                                                   monkeypatch):
    from bayesrobust import stages
    from bayesrobust.models import draws
    from bayesrobust.models.posterior import Posterior
    seen = []
    accuracy = draws.predictive_accuracy

    def recording_accuracy(*args, **kwargs):  # the test accuracy is computed with IEEE numbers again
        seen.append(_identity_product())
        return accuracy(*args, **kwargs)

    monkeypatch.setattr(draws, "predictive_accuracy", recording_accuracy)
    done = stages.train("tiny", "baseNN", out=tmp_path)
    assert Posterior.load(done.path).config["training_denormals"] == denormals.ALL_THREADS
    assert len(seen) == 1 and (seen[0].numpy() != 0).all()
