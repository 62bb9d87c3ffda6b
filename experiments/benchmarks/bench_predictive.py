"""The posterior predictive through DrawSet (the one path to draws, channels_last with 50-image chunks for conv
nets, each pass through ``output_pass``: the pool before the activation, pooled as two strided maxima)
against a per-draw loop of fresh NCHW networks in batches of 500 (what the training-time accuracy used
before DrawSet). Same draws, same numbers; prints the time of each and their ratio. Not a test.

    .venv/bin/python experiments/benchmarks/bench_predictive.py                 # mnist_conv net, 10 draws, 2,000 images
    .venv/bin/python experiments/benchmarks/bench_predictive.py --draws 100 --images 10000   # the paper's setting
"""

from __future__ import annotations

import argparse
import time

import torch

from bayesrobust.models.architectures import build
from bayesrobust.models.draws import draw_probabilities
from bayesrobust.models.posterior import Posterior
from bayesrobust.presets import get_preset


def nchw_loop(posterior: Posterior, x: torch.Tensor, n_draws: int, batch: int = 500) -> torch.Tensor:
    """Per-draw softmax (S, N, classes) with a new NCHW network per draw, batches of ``batch`` images."""
    out = torch.empty(n_draws, x.shape[0], posterior.arch.n_classes)
    with torch.no_grad():
        for j in range(n_draws):
            net = posterior.network(j)
            for start in range(0, x.shape[0], batch):
                out[j, start:start + batch] = torch.softmax(net(x[start:start + batch]), dim=-1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist_conv", help="whose architecture (default: the paper's conv)")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    arch = get_preset(args.preset).arch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.preset} architecture {arch.name} "
          f"h={arch.hidden}, SVI posterior, {args.draws} draws x {args.images} images")
    torch.manual_seed(0)
    params = {k: v.detach().clone() for k, v in build(arch).named_parameters()}
    posterior = Posterior(arch, "svi", params, {k: torch.full_like(v, 0.01) for k, v in params.items()})
    x = torch.rand(args.images, *arch.in_shape)
    start = time.perf_counter()
    ref = nchw_loop(posterior, x, args.draws)
    loop = time.perf_counter() - start
    start = time.perf_counter()
    (ours,) = draw_probabilities(posterior, x, n_draws=args.draws)
    fast = time.perf_counter() - start
    diff = float((ours - ref).abs().max())
    print(f"per-draw NCHW loop: {loop:.1f} s; DrawSet: {fast:.1f} s; speed-up {loop / fast:.1f}x; "
          f"max |difference| of the probabilities {diff:.1e}")


if __name__ == "__main__":
    main()
