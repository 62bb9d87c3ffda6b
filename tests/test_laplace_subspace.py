"""experiments/laplace_subspace_ggn.py: its exact last-layer GGN on the kept directions against a naive sum of
Kronecker products (the diagnostic of docs/method.md §13.2 rests on it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "laplace_subspace_ggn.py"


def _script():
    spec = importlib.util.spec_from_file_location("laplace_subspace_ggn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exact_ggn_is_the_sum_of_kronecker_products_class_major():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(11, 3, generator=gen, dtype=torch.float64)
    logits = 3 * torch.randn(11, 4, generator=gen, dtype=torch.float64)
    naive = torch.zeros(12, 12, dtype=torch.float64)
    for zn, fn in zip(z, logits):
        p = fn.softmax(-1)
        naive += torch.kron(torch.diag(p) - torch.outer(p, p), torch.outer(zn, zn))  # index c·k + i
    got = _script().exact_ggn(z, logits, batch=4)  # several batches
    torch.testing.assert_close(got, naive, rtol=1e-5, atol=1e-6)  # float32 products, float64 sums
