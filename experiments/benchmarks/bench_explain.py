"""Benchmark of layer-wise LRP per posterior draw (issue 4): prints its figures, it is not a test.

For the paper's ``fc2`` and ``conv`` architectures (h = 512), S = 100 draws of a random SVI-kind posterior
(a fresh network plus small scales), N = 500 embedded MNIST test images, all 3 learnable layers and one rule
(ε), it times :func:`bayesrobust.explain.explain_posterior` and compares it with

(a) a per-image, per-draw, per-layer Python loop like the reference code's (a fresh network per draw, the
    Zennit composite registered around every single-image explanation), timed on a small subset and
    extrapolated linearly to N images × S draws (it says so);
(b) the GFLOP/s of a large float32 ``torch.matmul`` measured in the same run, with the same threads, just
    before and after each timing (their mean).

FLOPs are the *necessary* ones: the forward pass (2 × multiply-adds of every Linear/Conv) plus, for each
explained layer l, one product with the transposed weights of every layer at or below l (the relevance
pass to the pixels; for LRP-ε that is the whole backward cost). Zennit's stock ``Epsilon`` hook executes
three such products per layer (the engine's plain gradient, a recomputed forward and the modified
gradient); ``epsilon`` here runs as gradient × input (:class:`bayesrobust.explain.rules.GradientEpsilon`),
which executes one. Both are timed.

(c) The peak resident memory of the ``--keep-draws`` path (:func:`bayesrobust.explain.explain_attack` with
    ``draws_path``: clean + adversarial images, every draw streamed to zarr), measured in a fresh child
    process (``ru_maxrss``), next to the same process doing nothing but the imports.

The machine is shared: the load average is printed, and every figure (the matmul's too) drops when other
processes run. On a loaded 2-core machine one thread is often faster than two (``--threads 1``).

Run from the repository root::

    .venv/bin/python experiments/benchmarks/bench_explain.py             # the issue's setting
    .venv/bin/python experiments/benchmarks/bench_explain.py --quick     # a fast check that it runs
    .venv/bin/python experiments/benchmarks/bench_explain.py --study-size --threads 2  # (e) one model, study size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bayesrobust.data import balanced_subset, load  # noqa: E402
from bayesrobust.explain import LRP, explain_attack, explain_posterior, make_explainers  # noqa: E402
from bayesrobust.explain.layers import argmax_seed, capture_outputs  # noqa: E402
from bayesrobust.explain.rules import uniform_composite  # noqa: E402
from bayesrobust.models.architectures import ArchConfig, build  # noqa: E402
from bayesrobust.models.posterior import Posterior  # noqa: E402


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, float]:
    """Best ``(wall, cpu)`` seconds of ``repeat`` calls; CPU time is this process's, all threads."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def matmul_gflops(n: int = 4096, repeat: int = 5) -> tuple[float, float]:
    """``(per wall second, per CPU second)`` GFLOP/s of a float32 n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    wall, cpu = timed(lambda: a @ b, repeat)
    return 2 * n ** 3 / wall / 1e9, 2 * n ** 3 / cpu / 1e9


def layer_macs(net: nn.Module, in_shape: tuple[int, ...]) -> list[float]:
    """Multiply-adds of one image through each Linear/Conv2d module, in forward order."""
    macs: list[float] = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)
        else:
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs.append(k * output[0].numel())
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        net(torch.zeros(1, *in_shape))
    for h in handles:
        h.remove()
    return macs


def lrp_flops(net: nn.Module, in_shape: tuple[int, ...]) -> float:
    """Necessary FLOPs of one image, all layers: forward + for each layer l a Wᵀ product per layer ≤ l."""
    macs = layer_macs(net, in_shape)
    backward = sum(sum(macs[:k + 1]) for k in range(len(macs)))
    return 2.0 * (sum(macs) + backward)


def random_posterior(name: str, hidden: int, scale: float = 0.01) -> Posterior:
    torch.manual_seed(0)
    net = build(ArchConfig(name, hidden))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    return Posterior(net.arch, "svi", params, {k: torch.full_like(v, scale) for k, v in params.items()}, seed=1)


def reference_loop(posterior: Posterior, x: torch.Tensor, n_draws: int) -> None:
    """Like the reference code: per draw a fresh network; per image and per layer the composite registered
    around a forward and a backward pass of that single image (stock Zennit Epsilon); maps averaged."""
    from zennit.rules import Epsilon
    n_layers = len(posterior.network(0).layers)
    total = torch.zeros((n_layers, *x.shape))
    for j in range(n_draws):
        net = posterior.network(j)
        for i in range(x.shape[0]):
            for layer in range(n_layers):
                with uniform_composite(Epsilon(epsilon=0.1)).context(net):
                    xi = x[i:i + 1].clone().requires_grad_(True)
                    with capture_outputs(net, [layer]) as outputs:
                        net(xi)
                    seed, _ = argmax_seed(outputs[layer])
                    total[layer, i] += torch.autograd.grad(outputs[layer], xi, seed)[0][0]
    total / n_draws


def keep_draws_child(arch: str, hidden: int, n_images: int, n_draws: int, idle: bool) -> None:
    """Run in a fresh process: explain_attack with draws_path; print a JSON line with the peak RSS."""
    start = time.perf_counter()
    out: dict[str, float] = {}
    if not idle:
        import xarray as xr
        data = balanced_subset(load("mnist5k", "test"), n_images, seed=0)
        x = data.x.numpy()
        noise = np.sign(np.random.default_rng(0).standard_normal(x.shape)).astype(np.float32)
        pixel = ("image", "channel", "height", "width")
        attack = xr.Dataset({"x": (pixel, x), "x_adv": (pixel, np.clip(x + 0.2 * noise, 0, 1))},
                            coords={"image": data.index.numpy()}, attrs={"n_draws": n_draws})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "draws.zarr"
            explain_attack(random_posterior(arch, hidden), attack, make_explainers("lrp", ["epsilon"]),
                           draws_path=path)
            out["store_mib"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
        out["maps_mib"] = 2 * 3 * n_draws * x.size * 4 / 2**20
    out["seconds"] = time.perf_counter() - start
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args, "--threads", str(torch.get_num_threads())]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def fused_flops(hidden: int) -> float:
    """Weight-product FLOPs per image·draw of the fused pass on the conv net (3 rules, 3 layers): forward
    ``w`` and ``[w⁺; w⁻]`` (twice the inputs), and for the last layer's seed the backward products below it
    (``w`` for ε and γ, ``|w|`` for γ, ``[w⁺ | w⁻]`` for z⁺: five per layer); the seeds' first steps and the
    last layer's (10-unit) products are left out as negligible."""
    conv1 = 2 * 24 * 24 * 16 * 1 * 25
    conv2 = 2 * 8 * 8 * hidden * 16 * 25
    return 3 * (conv1 + conv2) + 5 * (conv1 + conv2)


def compare_rules(hidden: int, n_images: int, n_draws: int) -> None:
    """(d) The three paper rules on the conv net: one rule at a time through hooks (ours for ε and γ, Zennit's
    for z⁺), Zennit's stock hooks, and the fused pass of all three (same numbers, tested); seconds per
    image·draw (all 3 layers), speed-ups, and the fused pass's product throughput against the matmul peak."""
    from zennit.rules import Epsilon, Gamma, ZPlus

    from bayesrobust.explain.fused import FusedLRP
    posterior = random_posterior("conv", hidden)
    x = balanced_subset(load("mnist5k", "test"), n_images, seed=0).x
    print(f"(d) rules on conv h={hidden}: N={n_images} images, S={n_draws} draws, 3 layers; "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    peak = matmul_gflops()[0]
    unit = n_images * n_draws
    hooks = stock_total = 0.0
    for name, ours, stock in (("epsilon", LRP("epsilon"), LRP(Epsilon(epsilon=0.1))),
                              ("gamma", LRP("gamma"), LRP(Gamma(gamma=0.1, stabilizer=1e-6))),
                              ("alpha1beta0", LRP("alpha1beta0"), LRP(ZPlus(stabilizer=1e-6)))):
        t_ours = timed(lambda lrp=ours: explain_posterior(posterior, x, lrp, n_draws=n_draws))[0]
        if name == "alpha1beta0":      # our hook is Zennit's ZPlus (docs/method.md §5.2)
            stock_total, hooks = stock_total + t_ours, hooks + t_ours
            print(f"    {name:12s} hooks {1e3 * t_ours / unit:6.2f} ms per image·draw (Zennit's ZPlus)")
            continue
        t_stock = timed(lambda lrp=stock: explain_posterior(posterior, x, lrp, n_draws=n_draws))[0]
        hooks, stock_total = hooks + t_ours, stock_total + t_stock
        print(f"    {name:12s} hooks {1e3 * t_ours / unit:6.2f} ms, Zennit's stock hook {1e3 * t_stock / unit:6.2f} ms "
              f"per image·draw: {t_stock / t_ours:.2f}x")
    fused = FusedLRP([LRP("epsilon"), LRP("gamma"), LRP("alpha1beta0")])
    t_fused = timed(lambda: explain_posterior(posterior, x, fused, n_draws=n_draws))[0]
    after = matmul_gflops()[0]
    rate = fused_flops(hidden) * unit / t_fused / 1e9
    print(f"    all three, one rule at a time {1e3 * hooks / unit:6.2f} ms (Zennit's stock hooks "
          f"{1e3 * stock_total / unit:.2f} ms); fused {1e3 * t_fused / unit:6.2f} ms per image·draw: "
          f"{hooks / t_fused:.2f}x (vs stock {stock_total / t_fused:.2f}x)")
    print(f"    fused weight products {fused_flops(hidden) / 1e6:.0f} MFLOP per image·draw: {rate:.0f} GFLOP/s, "
          f"{100 * rate / ((peak + after) / 2):.0f}% of float32 matmul ({peak:.0f} / {after:.0f} GFLOP/s before / "
          f"after); load average now {os.getloadavg()[0]:.1f}")


def study_size(hidden: int, n_images: int, n_draws: int) -> None:
    """(e) One model's explanations at the study's size (issue 14's goal: under 5 minutes): the fused pass of
    the three rules at the three layers on ``n_images`` images (the study: 500 clean + 500 adversarial) with
    ``n_draws`` draws of a conv posterior of random weights (its cost is that of a trained one), one process."""
    from bayesrobust.explain.fused import FusedLRP
    posterior = random_posterior("conv", hidden)
    x = load("mnist5k", "test").x[:n_images]  # its 1,000 test images
    fused = FusedLRP([LRP("epsilon"), LRP("gamma"), LRP("alpha1beta0")])
    seconds = timed(lambda: explain_posterior(posterior, x, fused, n_draws=n_draws))[0]
    print(f"(e) study size, conv h={hidden}: {n_images} images x S={n_draws} x 3 rules x 3 layers in {seconds:.0f} s "
          f"({1e3 * seconds / (n_images * n_draws):.2f} ms per image·draw), {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that the script runs")
    parser.add_argument("--archs", default="fc2,conv")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rules", action="store_true",
                        help="only the rules: hooks, Zennit's stock hooks and the fused pass of the three")
    parser.add_argument("--study-size", action="store_true",
                        help="only one model's explanations at the study's size (1,000 images, S = 100, 3 rules)")
    parser.add_argument("--child", nargs=5, metavar=("ARCH", "HIDDEN", "N", "S", "IDLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        arch, hidden, n, s, idle = args.child
        keep_draws_child(arch, int(hidden), int(n), int(s), idle == "1")
        return
    if args.study_size:
        study_size(64 if args.quick else 512, 20 if args.quick else 1000, 2 if args.quick else 100)
        return
    if args.rules:
        compare_rules(64 if args.quick else 512, 20 if args.quick else 100, 2 if args.quick else 10)
        return
    hidden, n_images, n_draws = (64, 50, 10) if args.quick else (512, 500, 100)
    ref_images, ref_draws = (2, 2) if args.quick else (5, 2)
    stock_draws = 3 if args.quick else 10

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} (other processes on the machine slow every figure down; ratios are given "
          f"per wall second and per CPU second of this process, the latter less sensitive to the load)")
    x = balanced_subset(load("mnist5k", "test"), n_images, seed=0).x
    print(f"setting: h={hidden}, N={n_images} images, S={n_draws} draws, 3 layers, rule epsilon (0.1)\n")

    for name in args.archs.split(","):
        posterior = random_posterior(name, hidden)
        per_image = lrp_flops(posterior.network(0), (1, 28, 28))
        total = per_image * n_images * n_draws
        print(f"== {name} (h={hidden}): {per_image / 1e6:.2f} MFLOP per image and draw for all 3 layers; "
              f"N x S = {total / 1e9:.0f} GFLOP")
        peak = matmul_gflops(2048 if args.quick else 4096)
        wall, cpu = timed(lambda posterior=posterior: explain_posterior(posterior, x, LRP("epsilon"), n_draws=n_draws))
        after = matmul_gflops(2048 if args.quick else 4096)
        peak = ((peak[0] + after[0]) / 2, (peak[1] + after[1]) / 2)
        print(f"  (b) torch.matmul float32 just before and after: {peak[0]:.0f} GFLOP/s per wall second, "
              f"{peak[1]:.0f} per CPU second")
        print(f"  explain_posterior: {wall:.2f} s wall ({1e3 * wall / n_draws:.0f} ms per draw), {cpu:.2f} s CPU; "
              f"{total / wall / 1e9:.0f} GFLOP/s = {100 * total / wall / 1e9 / peak[0]:.0f}% of matmul per wall "
              f"second, {100 * total / cpu / 1e9 / peak[1]:.0f}% per CPU second")
        from zennit.rules import Epsilon
        stock = timed(lambda posterior=posterior: explain_posterior(posterior, x, LRP(Epsilon(epsilon=0.1)),
                                                                 n_draws=stock_draws))
        stock = tuple(v * n_draws / stock_draws for v in stock)
        print(f"  same loop with Zennit's stock Epsilon hook (timed on S={stock_draws}, extrapolated): "
              f"{stock[0]:.2f} s wall, {stock[1]:.2f} s CPU; {total / stock[1] / 1e9:.0f} GFLOP per CPU second")

        ref = timed(lambda posterior=posterior: reference_loop(posterior, x[:ref_images], ref_draws))
        scale = n_images * n_draws / (ref_images * ref_draws)
        print(f"  (a) reference-style loop, timed on {ref_images} images x {ref_draws} draws (x 3 layers) and "
              f"extrapolated x{scale:.0f}: {1e3 * ref[0] / (ref_images * ref_draws * 3):.1f} ms per "
              f"image.draw.layer -> {ref[0] * scale:.0f} s wall, {ref[1] * scale:.0f} s CPU; speed-up "
              f"{ref[0] * scale / wall:.0f}x (wall), {ref[1] * scale / cpu:.0f}x (CPU)\n")

    print("(c) keep-draws path (explain_attack -> zarr, clean + adversarial, 3 layers), fresh process each:")
    idle = run_child("fc2", str(hidden), str(n_images), str(n_draws), "1")
    print(f"  imports only: peak RSS {idle['peak_mib']:.0f} MiB")
    for name in args.archs.split(","):
        r = run_child(name, str(hidden), str(n_images), str(n_draws), "0")
        print(f"  {name}: {2 * n_images} maps x S={n_draws} = {r['maps_mib']:.0f} MiB of float32 maps, "
              f"zarr store {r['store_mib']:.0f} MiB, {r['seconds']:.1f} s; peak RSS {r['peak_mib']:.0f} MiB "
              f"({r['peak_mib'] / 1024:.2f} GiB)")


if __name__ == "__main__":
    main()
