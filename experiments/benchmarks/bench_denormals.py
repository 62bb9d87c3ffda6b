"""What denormal floats cost on this CPU, and what :func:`bayesrobust.denormals.flush_denormals` gives back.

1. One matmul (512x1024 by 1024x1024) with a normal left factor, and with one whose every other entry is
   denormal: under IEEE handling, with ``torch.set_flush_denormal(True)`` alone (the calling thread only) and
   inside ``flush_denormals`` (every thread of the team). The normal product is this run's matmul peak.
2. With ``--data-root``: train the fashion_mnist_fc2 baseNN (Adam, the preset's settings) for ``--epochs``
   epochs with IEEE numbers, then four more epochs alternately flushed and IEEE, and print each epoch's time
   (the same weights, so the flushed and IEEE epochs differ by the numbers only). Not a test.

    .venv/bin/python experiments/benchmarks/bench_denormals.py                      # the matmul, seconds
    .venv/bin/python experiments/benchmarks/bench_denormals.py --data-root ../shared/datasets --epochs 40
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from bayesrobust.denormals import flush_denormals, set_flush


def _matmul_ms(a: torch.Tensor, b: torch.Tensor, repeats: int = 10) -> float:
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - start) / repeats * 1e3


def matmuls() -> None:
    rng = np.random.default_rng(0)
    normal = torch.from_numpy(rng.standard_normal((512, 1024), dtype=np.float32))
    bits = rng.standard_normal((512, 1024), dtype=np.float32)
    bits[:, ::2] = np.full((512, 512), 0x000AE398, dtype=np.uint32).view(np.float32)  # ≈ 1e-39, as bits
    mixed = torch.from_numpy(bits)
    b = torch.from_numpy(rng.standard_normal((1024, 1024), dtype=np.float32))
    peak = _matmul_ms(normal, b)
    gflops = 2 * 512 * 1024 * 1024 / peak / 1e6
    print(f"matmul 512x1024 @ 1024x1024, normal numbers: {peak:.2f} ms ({gflops:.0f} GFLOP/s, this run's peak)")
    ieee = _matmul_ms(mixed, b)
    torch.set_flush_denormal(True)
    calling = _matmul_ms(mixed, b)
    torch.set_flush_denormal(False)
    with flush_denormals("cpu") as scope:
        flushed = _matmul_ms(mixed, b)
    for name, ms in (("IEEE", ieee), ("torch.set_flush_denormal (calling thread)", calling),
                     (f"flush_denormals ({scope})", flushed)):
        print(f"  half denormal, {name}: {ms:.2f} ms = {ms / peak:.1f}x the peak's time")


def training(data_root: str, epochs: int) -> None:
    from bayesrobust import data
    from bayesrobust.inference.deterministic import train_network
    from bayesrobust.presets import get_preset
    preset = get_preset("fashion_mnist_fc2")
    train = data.load(preset.dataset, "train", data_root)
    modes = [True, False, True, False]  # the four epochs after the IEEE ones

    def switch(epoch: int, _loss: float) -> None:  # runs after `epoch` (0-based): sets the next one's numbers
        k = epoch + 1 - epochs
        if 0 <= k < len(modes):
            set_flush(modes[k])
        elif k == len(modes):
            set_flush(False)

    cfg = replace(preset.base, epochs=epochs + len(modes))
    _, history = train_network(preset.arch, train, cfg, callback=switch)
    set_flush(False)
    sec = history.seconds
    print(f"fashion_mnist_fc2 baseNN (Adam lr {cfg.lr}, batch {cfg.batch_size}), {torch.get_num_threads()} threads; "
          f"IEEE epochs 1-{epochs}: first {sec[0]:.1f} s, median of the first five "
          f"{float(np.median(sec[:5])):.1f} s, last {sec[epochs - 1]:.1f} s (loss {history.loss[epochs - 1]:.4f})")
    for k, flush in enumerate(modes):
        print(f"  epoch {epochs + k + 1}: {'flushed' if flush else 'IEEE'} {sec[epochs + k]:.1f} s")
    flushed = np.mean([s for s, f in zip(sec[epochs:], modes) if f])
    ieee = np.mean([s for s, f in zip(sec[epochs:], modes) if not f])
    print(f"  mean epoch IEEE {ieee:.1f} s, flushed {flushed:.1f} s: {ieee / flushed:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="folder with FashionMNIST/ (part 2 runs only with it)")
    parser.add_argument("--epochs", type=int, default=40, help="IEEE epochs before the four compared ones")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    matmuls()
    if args.data_root is not None:
        training(args.data_root, args.epochs)


if __name__ == "__main__":
    main()
