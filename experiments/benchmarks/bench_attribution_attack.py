"""Benchmark of the attribution attack on a posterior (issue 10): prints its figures, it is not a test.

The quick preset's conv net (h = 32), S posterior draws of an SVI-kind posterior (a fresh network plus small
scales: the cost does not depend on the weights' values), N class-balanced mnist5k test images, IFIA top-k on
saliency maps with the β-softplus surrogate. It prints

(a) the time per attack step with S draws (all draws in one vmapped call per image chunk), split into the
    map (forward + first backward with ``create_graph``), the second-order backward (the gradient of the
    objective through the map), and the label check (a forward);
(b) the same step with one draw, and the ratio  t(S draws) / (S × t(one draw))  — the goal is ≤ 1.10;
(c) a full attack of a few steps through :class:`~bayesrobust.adversarial.manipulation.IFIA` as a check that
    the instrumented step is what the attack runs.

Run from the repository root, alone on the machine::

    .venv/bin/python experiments/benchmarks/bench_attribution_attack.py              # S = 20, N = 500
    .venv/bin/python experiments/benchmarks/bench_attribution_attack.py --small      # a fast check that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bayesrobust.adversarial.manipulation import IFIA, normalised, topk_mask  # noqa: E402
from bayesrobust.data import balanced_subset, load  # noqa: E402
from bayesrobust.models.architectures import build  # noqa: E402
from bayesrobust.models.draws import DrawSet, chunks  # noqa: E402
from bayesrobust.models.posterior import Posterior  # noqa: E402
from bayesrobust.presets import get_preset  # noqa: E402


def posterior(scale: float = 0.01) -> Posterior:
    torch.manual_seed(0)
    net = build(get_preset("quick").arch)
    locs = {k: v.detach().clone() for k, v in net.named_parameters()}
    return Posterior(net.arch, "svi", locs, {k: torch.full_like(v, scale) for k, v in locs.items()})


def timed_steps(attack: IFIA, draws: DrawSet, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds per attack step (all chunks), by part, the median of ``repeats`` steps."""
    maps = attack.map_model(draws)
    label = maps.predict(x)
    clean = maps.maps(x, label)
    parts: dict[str, list[float]] = {"map": [], "second_order_backward": [], "label_check": []}
    for _ in range(repeats):
        t = dict.fromkeys(parts, 0.0)
        for sl in chunks(x.shape[0], maps.chunk_size):
            region = topk_mask(clean[sl], attack.k).to(x.dtype)
            xg = x[sl].detach().requires_grad_(True)
            start = time.perf_counter()
            with torch.enable_grad():
                e = maps.maps(xg, label[sl], create_graph=True, smooth=True)
                value = -(normalised(e) * region).flatten(1).sum(1)
                middle = time.perf_counter()
                grad, = torch.autograd.grad(value.sum(), xg)
            end = time.perf_counter()
            proposal = attack.project(xg.detach() + attack.step_size * grad.sign(), x[sl])
            maps.predict(proposal)
            t["map"] += middle - start
            t["second_order_backward"] += end - middle
            t["label_check"] += time.perf_counter() - end
        for k in parts:
            parts[k].append(t[k])
    return {k: sorted(v)[len(v) // 2] for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--n-images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--small", action="store_true", help="S = 3, 20 images, 1 repeat: checks that it runs")
    args = parser.parse_args()
    if args.small:
        args.draws, args.n_images, args.repeats = 3, 20, 1
    data = balanced_subset(load("mnist5k", "test"), args.n_images, seed=0)
    x = data.x
    post = posterior()
    attack = IFIA(variant="topk", method="saliency", k=200, epsilon=0.3, steps=2, step_size=0.01, beta=10.0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; quick conv net, N={len(x)} images, "
          f"IFIA top-k (k=200) on saliency, beta=10")
    many = timed_steps(attack, DrawSet(post, args.draws), x, args.repeats)
    one = timed_steps(attack, DrawSet(post, 1), x, args.repeats)
    total, total_one = sum(many.values()), sum(one.values())
    print(f"\nS={args.draws}: {total:.3f} s per step")
    for k, v in many.items():
        print(f"  {k:<24s} {v:8.3f} s  ({100 * v / total:5.1f} %)")
    print(f"S=1: {total_one:.3f} s per step (map {one['map']:.3f}, second-order backward "
          f"{one['second_order_backward']:.3f}, label check {one['label_check']:.3f})")
    ratio = total / (args.draws * total_one)
    print(f"t(S={args.draws}) / ({args.draws} x t(S=1)) = {ratio:.3f}  (goal <= 1.10: "
          f"{'met' if ratio <= 1.10 else 'NOT met'})")
    start = time.perf_counter()
    x_adv = attack(DrawSet(post, args.draws), x)
    full = time.perf_counter() - start
    print(f"\nfull IFIA, {attack.steps} steps (+ clean map, final evaluation): {full:.2f} s, "
          f"{full / (attack.steps + 1):.3f} s per step; max |x_adv - x| = {float((x_adv - x).abs().max()):.3f}")


if __name__ == "__main__":
    main()
