"""Benchmark of the posterior-averaged attacks (issue 3): prints its figures, it is not a test.

For the paper's ``fc2`` and ``conv`` architectures (h = 512), S posterior draws of a random SVI-kind posterior
(a fresh network plus small scales) and N test images, it times the posterior-averaged FGSM and PGD-40
(mode ``mean_grad``) and compares them with

(a) the per-image, per-step, per-draw Python loop of the reference code (a network per draw, one image per
    forward/backward), timed on a small subset and extrapolated linearly to N images × S draws × steps
    (it says so);
(b) the GFLOP/s of a large float32 ``torch.matmul`` measured in the same run.

FLOPs are counted from the architecture: forward multiply-adds × 2, and the backward pass to the *input*
costs as much again (weight gradients are never computed), so one gradient is 2 × forward FLOPs; the figure
under the 3 × forward convention (forward + backward incl. weight gradients) is printed too.

Run from the repository root::

    .venv/bin/python experiments/benchmarks/bench_attacks.py            # the issue's setting
    .venv/bin/python experiments/benchmarks/bench_attacks.py --quick    # a fast check that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bayesrobust.adversarial import FGSM, PGD, PosteriorAverage  # noqa: E402
from bayesrobust.adversarial.posterior import mean_grad_gradient  # noqa: E402
from bayesrobust.data import balanced_subset, load  # noqa: E402
from bayesrobust.models.architectures import ArchConfig, build  # noqa: E402
from bayesrobust.models.draws import DrawSet  # noqa: E402
from bayesrobust.models.posterior import Posterior  # noqa: E402


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(n: int = 4096, repeat: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n ** 3 / timed(lambda: a @ b, repeat) / 1e9


def forward_flops(net: nn.Module, in_shape: tuple[int, ...]) -> float:
    """FLOPs (2 × multiply-adds) of one image's forward pass through the Linear and Conv2d layers."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * k * output[0].numel()
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        net(torch.zeros(1, *in_shape))
    for h in handles:
        h.remove()
    return total


def random_posterior(name: str, hidden: int, scale: float = 0.01) -> Posterior:
    torch.manual_seed(0)
    net = build(ArchConfig(name, hidden))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    scales = {k: torch.full_like(v, scale) for k, v in params.items()}
    return Posterior(net.arch, "svi", params, scales, seed=1)


def reference_loop(posterior: Posterior, x: torch.Tensor, y: torch.Tensor, n_draws: int, steps: int,
                   epsilon: float = 0.2, step_size: float = 0.01) -> torch.Tensor:
    """The loop structure of the reference code (``loss_gradient_sign`` and ``pgd_attack`` in its
    ``attacks/gradient_based.py``): per image, per step, per draw a network holding that draw and one
    single-image forward/backward (``loss.backward()``, so weight gradients too); the step averages the
    per-draw gradient signs. Cost grows as images × steps × draws."""
    out = []
    for i in range(x.shape[0]):
        xi, yi = x[i:i + 1], y[i:i + 1]
        x_adv = xi.clone()
        for _ in range(steps):
            signs = []
            for j in range(n_draws):
                net = posterior.network(j)
                xc = x_adv.clone().requires_grad_(True)
                net.zero_grad()
                F.cross_entropy(net(xc), yi).backward()
                signs.append(xc.grad.sign())
            x_adv = x_adv + step_size * torch.stack(signs).mean(0)
            x_adv = (xi + (x_adv - xi).clamp(-epsilon, epsilon)).clamp(0, 1)
        out.append(x_adv)
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that the script runs")
    parser.add_argument("--exhaustive", action="store_true",
                        help="time conv PGD-40 on all S draws instead of extrapolating from fewer")
    parser.add_argument("--archs", default="fc2,conv")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 gives steadier figures on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden, n_images, n_draws, steps = (64, 50, 10, 5) if args.quick else (512, 500, 100, 40)
    ref_images, ref_draws = (2, 2) if args.quick else (4, 5)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} (other processes on the machine slow every figure down)")
    peak = matmul_gflops(2048 if args.quick else 4096)
    print(f"(b) torch.matmul float32: {peak:.0f} GFLOP/s")
    data = balanced_subset(load("mnist5k", "test"), n_images, seed=0)
    x, y = data.x, data.y
    print(f"setting: h={hidden}, N={n_images} images, S={n_draws} draws, PGD-{steps}, mode mean_grad\n")

    for name in args.archs.split(","):
        posterior = random_posterior(name, hidden)
        fwd = forward_flops(posterior.network(0), (1, 28, 28))
        grad_flops = 2 * fwd * n_images * n_draws
        print(f"== {name} (h={hidden}): {fwd / 1e6:.2f} MFLOP forward per image; one gradient over "
              f"N x S = {grad_flops / 1e9:.1f} GFLOP (2 x forward)")

        start = time.perf_counter()
        draws = DrawSet(posterior, n_draws)
        t_draws = time.perf_counter() - start
        print(f"  materialising {n_draws} draws once (DrawSet): {t_draws:.2f} s")
        if name == "conv":
            for chunk in sorted({50, 100, n_images}):
                sub_draws = DrawSet(posterior, max(2, n_draws // 10))
                g = mean_grad_gradient(sub_draws, chunk)
                t = timed(lambda g=g: g(x, y)) * n_draws / len(sub_draws)
                print(f"  gradient, chunk_size={chunk} (channels_last), timed on S={len(sub_draws)}: "
                      f"{t:.2f} s per S={n_draws} ({grad_flops / t / 1e9:.0f} GFLOP/s)")

        fgsm = PosteriorAverage(FGSM(epsilon=0.2))
        t_fgsm = timed(lambda fgsm=fgsm, draws=draws: fgsm(draws, x, y), repeat=2 if name == "fc2" else 1)
        t_fgsm_total = t_fgsm + t_draws
        rate = grad_flops / t_fgsm / 1e9
        print(f"  FGSM: {t_fgsm:.2f} s with the draws ready, {t_fgsm_total:.2f} s with materialising them; "
              f"{rate:.0f} GFLOP/s = {100 * rate / peak:.0f}% of matmul "
              f"({100 * 1.5 * rate / peak:.0f}% under the 3 x forward convention)")

        pgd = PosteriorAverage(PGD(norm="linf", epsilon=0.2, steps=steps, step_size=0.01, random_start=False))
        pgd_draws = n_draws
        if name == "conv" and not args.exhaustive and not args.quick:
            pgd_draws = 10
        sub = DrawSet(posterior, pgd_draws) if pgd_draws != n_draws else draws  # materialising not timed
        t_pgd = timed(lambda pgd=pgd, sub=sub: pgd(sub, x, y)) * n_draws / pgd_draws
        note = "" if pgd_draws == n_draws else f" (timed on S={pgd_draws}, x{n_draws // pgd_draws} extrapolated)"
        print(f"  PGD-{steps}: {t_pgd:.1f} s{note}; {steps * grad_flops / t_pgd / 1e9:.0f} GFLOP/s")

        x_ref, y_ref = x[:ref_images], y[:ref_images]
        t_ref_fgsm = timed(partial(reference_loop, posterior, x_ref, y_ref, ref_draws, 1))
        t_ref_pgd = timed(partial(reference_loop, posterior, x_ref, y_ref, ref_draws, 2))
        per_call = t_ref_fgsm / (ref_images * ref_draws)
        ref_fgsm = per_call * n_images * n_draws
        ref_pgd = t_ref_pgd / (ref_images * ref_draws * 2) * n_images * n_draws * steps
        print(f"  (a) reference-style loop (per image, step, draw: a draw network + one single-image "
              f"forward/backward), timed on {ref_images} images x {ref_draws} draws x 1 and 2 steps and "
              f"extrapolated linearly: {1e3 * per_call:.1f} ms per image.draw.step")
        print(f"      FGSM {ref_fgsm:.0f} s -> speed-up {ref_fgsm / t_fgsm_total:.0f}x "
              f"(ours incl. materialising)")
        print(f"      PGD-{steps} {ref_pgd:.0f} s -> speed-up {ref_pgd / (t_pgd + t_draws):.0f}x "
              f"(ours incl. materialising)\n")


if __name__ == "__main__":
    main()
