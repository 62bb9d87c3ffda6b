"""Shared fixtures: the embedded data (loaded once), Pyro's global state cleared for every test."""

from pathlib import Path

import pyro
import pytest
import torch

from bayesrobust import data as datasets

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _clean_pyro():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def mnist5k_train():
    return datasets.load("mnist5k", "train")


@pytest.fixture(scope="session")
def mnist5k_test():
    return datasets.load("mnist5k", "test")


#: What the real-data tests read under SHARED (see its README.md).
SHARED_FILES = ("MNIST/raw", "FashionMNIST/raw", "cifar10/test_300.npz")


@pytest.fixture(scope="session")
def shared_root():
    """The real datasets beside the repository (``<repo>/../shared/datasets``). CI runs in a fresh clone with
    ``shared/`` next to it, so missing data is a failure, not a skip: the real loaders must be tested."""
    missing = [f for f in SHARED_FILES if not (SHARED / f).exists()]
    if missing:
        pytest.fail(f"real datasets missing: looked for {', '.join(missing)} in {SHARED} (the folder "
                    f"shared/datasets beside the repository); the loader tests need them", pytrace=False)
    return SHARED


@pytest.fixture(autouse=True)
def _threads(request):
    """Two torch threads (the machine's cores), or as many as a ``@pytest.mark.threads(n)`` asks for:
    tiny networks run faster on one thread (no thread start-up, no contention). Restored afterwards."""
    marker = request.node.get_closest_marker("threads")
    before = torch.get_num_threads()
    torch.set_num_threads(marker.args[0] if marker else 2)
    yield
    torch.set_num_threads(before)
