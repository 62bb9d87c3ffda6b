"""Benchmark of RISE and the insertion/deletion curves per posterior draw (issue 11): prints its figures, it is
not a test.

Setting (the issue's): the ``quick`` preset's conv net (h = 32), S = 20 draws of a random SVI-kind posterior
(a fresh network plus small scales: the speed does not depend on trained weights), N = 500 embedded MNIST
test images,

(a) RISE with 2,000 masks (:class:`bayesrobust.explain.rise.RISE` through
    :func:`bayesrobust.explain.explain_posterior`): N × masks × S forward passes;
(b) deletion and insertion curves with 50 steps (:func:`bayesrobust.faithfulness_metrics.perturbation_curves`),
    of each draw's map on its network: 2 × (steps + 1) × N × S forward passes;
(c) a plain forward pass of the same batch size, the ceiling of (a) and (b) on this machine: the network called
    on NCHW images, on channels-last images, and through :func:`bayesrobust.models.draws.output_pass`, which
    (a) and (b) use.

Measured alone (docs/method.md §10.7, 2026-12-03) with the issue's S = 20 at ``62c4ef9``: RISE 720 s, 51% of a
116 GFLOP/s peak; curves 49%; ``output_pass`` 52%, the network on channels-last images 40%. With ``--draws 2``
at ``62c4ef9``: RISE 49%, curves 49%, ``output_pass`` 55% (peak 133 GFLOP/s); before ``output_pass``
(``182551c``): RISE 34%, curves 28%. Runs of the same work vary by up to 2x between processes.

Each is reported as forward passes, seconds and GFLOP/s, and as a share of the GFLOP/s of a large float32
``torch.matmul`` measured in the same run, with the same threads, just before and after (their mean). FLOPs are
2 × multiply-adds of every Conv/Linear per image (activations and pooling not counted). Forward passes are
counted by a hook on the network's first layer, so they are the ones that really ran.

The machine is shared: the load average is printed; every figure (the matmul's too) drops when other
processes run.

Run from the repository root::

    .venv/bin/python experiments/benchmarks/bench_faithfulness.py            # the issue's setting
    .venv/bin/python experiments/benchmarks/bench_faithfulness.py --small    # a fast check that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bayesrobust.data import balanced_subset, load  # noqa: E402
from bayesrobust.explain import explain_posterior  # noqa: E402
from bayesrobust.explain.bayesian import posterior_draws  # noqa: E402
from bayesrobust.explain.rise import RISE  # noqa: E402
from bayesrobust.faithfulness_metrics import CURVES, FORWARD_BATCH, baseline_images, perturbation_curves  # noqa: E402,E501
from bayesrobust.models.architectures import ArchConfig, build  # noqa: E402
from bayesrobust.models.draws import output_pass  # noqa: E402
from bayesrobust.models.posterior import Posterior  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_gflops(n: int = 4096, repeat: int = 5) -> float:
    """GFLOP/s of a float32 n x n matmul (best of ``repeat``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n ** 3 / min(timed(lambda: a @ b) for _ in range(repeat)) / 1e9


def forward_flops(net: nn.Module, in_shape: tuple[int, ...]) -> float:
    """2 × multiply-adds of one image through every Conv2d/Linear."""
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.weight[0].numel()
            macs.append(output[0].numel() * k)
        elif isinstance(module, nn.Linear):
            macs.append(module.weight.numel())
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(torch.zeros((1, *in_shape)))
    for h in handles:
        h.remove()
    return 2.0 * sum(macs)


def random_posterior(hidden: int, scale: float = 0.01) -> Posterior:
    torch.manual_seed(0)
    net = build(ArchConfig("conv", hidden))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    return Posterior(net.arch, "svi", params, {k: torch.full_like(v, scale) for k, v in params.items()}, seed=1)


class Counter:
    """Counts the images through a network: a forward pre-hook on its first Conv/Linear module, which every
    forward pass runs, whatever calls the network's modules (:func:`~bayesrobust.models.draws.output_pass`
    does not call the network itself)."""

    def __init__(self, net: nn.Module):
        self.images = 0
        first = next(m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        self.handle = first.register_forward_pre_hook(self)

    def __call__(self, module, inputs):
        self.images += inputs[0].shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=500)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--masks", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=32, help="conv width h (the quick preset's: 32)")
    parser.add_argument("--forward-batch", type=int, default=FORWARD_BATCH,
                        help=f"images per forward pass (default the library's, {FORWARD_BATCH})")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--small", action="store_true", help="20 images, 2 draws, 200 masks: check that it runs")
    args = parser.parse_args()
    if args.small:
        args.n_images, args.draws, args.masks = 20, 2, 200
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    data = balanced_subset(load("mnist5k", "test"), args.n_images, seed=0)
    x = data.x
    posterior = random_posterior(args.hidden)
    draws = posterior_draws(posterior, args.draws)
    per_image = forward_flops(posterior.network(0), tuple(x.shape[1:]))
    print(f"conv h={args.hidden}: {per_image / 1e6:.2f} MFLOP per forward image; N={len(x)}, S={len(draws)}, "
          f"forward batch {args.forward_batch}")
    peaks = [matmul_gflops(1024 if args.small else 4096)]
    counter = Counter(draws.net)

    def report(what: str, seconds: float, images: int) -> None:
        rate = images * per_image / seconds / 1e9
        peak = sum(peaks) / len(peaks)
        print(f"{what}: {images:,} forward images in {seconds:.2f} s = {images / seconds:,.0f} images/s, "
              f"{rate:.1f} GFLOP/s = {100 * rate / peak:.0f}% of the matmul peak ({peak:.0f} GFLOP/s)")

    # (a) RISE per draw, batched over masks and images
    rise = RISE(n_masks=args.masks, forward_batch=args.forward_batch)
    before = counter.images
    t_rise = timed(lambda: explain_posterior(draws, x, rise, layers=[-1], batch_size=len(x)))
    rise_images = counter.images - before
    # (b) insertion and deletion of each draw's map (the RISE maps stand in for any method's)
    maps = torch.rand_like(x)
    target = torch.zeros(len(x), dtype=torch.int64)
    bases = {c: baseline_images(x, "blur" if c == "insertion" else "zero") for c in CURVES}

    def curves() -> None:
        for _ in draws:
            perturbation_curves(draws.net, x, maps, target, steps=args.steps, baselines=bases,
                                forward_batch=args.forward_batch)
    before = counter.images
    t_curves = timed(curves)
    curve_images = counter.images - before
    # (c) the same number of plain forward passes of the same batch size
    batch = torch.rand((args.forward_batch, *x.shape[1:]))
    reps = max(1, rise_images // args.forward_batch // max(1, len(draws)))

    def plain(run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> None:
        with torch.no_grad():
            for _ in range(reps):
                run(images)
    plain_runs = {}
    for layout, run, images in (("NCHW", draws.net, batch),
                                ("channels-last", draws.net, batch.contiguous(memory_format=torch.channels_last)),
                                ("output_pass", output_pass(draws.net), batch)):
        before = counter.images
        seconds = timed(lambda run=run, images=images: plain(run, images))
        plain_runs[layout] = (seconds, counter.images - before)
    peaks.append(matmul_gflops(1024 if args.small else 4096))
    counter.handle.remove()

    expected_rise = len(x) * args.masks * len(draws) + len(x) * len(draws)
    expected_curves = 2 * (args.steps + 1) * len(x) * len(draws)
    print(f"(a) RISE, {args.masks} masks (expected {expected_rise:,} forward images incl. one clean pass per draw)")
    report("    RISE", t_rise, rise_images)
    print(f"(b) insertion + deletion, {args.steps} steps (expected {expected_curves:,} forward images)")
    report("    curves", t_curves, curve_images)
    print("(c) plain forward passes of the same batch size (the ceiling)")
    for layout, (seconds, images) in plain_runs.items():
        report(f"    forward, {layout}", seconds, images)
    print(f"load average now {os.getloadavg()[0]:.2f}; goal: >= 50% of the matmul peak for (a) and (b)")


if __name__ == "__main__":
    main()
