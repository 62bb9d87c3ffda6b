"""What R-hat reads for chains of the same exact posterior (docs/method.md §13.4): independent standard normal
draws for many quantities at once, summarised like ``function_diagnostics`` (median, 99th percentile and
maximum of the rank-normalised split R-hat over quantities). A maximum over thousands of images exceeds 1.1
by chance at small sample sizes; the median does not. ``diagnose`` uses 500 held-out images by default.
Printed, not a test.

    .venv/bin/python experiments/rhat_null.py
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bayesrobust.convergence import _rhat_ess  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    for chains, samples, n in [(2, 50, 500), (2, 50, 10000), (4, 25, 10000), (2, 100, 10000), (4, 50, 10000)]:
        rhat, _ = _rhat_ess(rng.standard_normal((chains, samples, n)))
        print(f"{chains} chains x {samples:3d} samples, {n:5d} quantities: median {np.median(rhat):.3f}, "
              f"99th percentile {np.quantile(rhat, 0.99):.3f}, max {rhat.max():.3f}, share above 1.1 "
              f"{np.mean(rhat > 1.1):.4f}")


if __name__ == "__main__":
    main()
