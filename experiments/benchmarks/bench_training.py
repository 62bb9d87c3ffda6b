"""Training speed of the quick presets on this machine: seconds per epoch (baseNN, advNN, fullBNN SVI) and
NUTS seconds per iteration, with the accuracies reached. Prints its figures; not a test. Each fit runs with
denormal floats flushed, as ``bayesrobust train`` runs it (bayesrobust/denormals.py).

    .venv/bin/python experiments/benchmarks/bench_training.py            # quick preset, NUTS on quick_fc2
    .venv/bin/python experiments/benchmarks/bench_training.py --no-nuts  # skip the (slow) NUTS run
"""

from __future__ import annotations

import argparse
import time

import torch

from bayesrobust import data
from bayesrobust.denormals import flush_denormals
from bayesrobust.inference import train_model
from bayesrobust.models.draws import predictive_accuracy as accuracy
from bayesrobust.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--nuts-preset", default="quick_fc2")
    parser.add_argument("--no-nuts", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    p = get_preset(args.preset)
    test = data.load(p.dataset, "test")
    for model in ("baseNN", "advNN", "fullBNN"):
        start = time.perf_counter()
        with flush_denormals():
            post = train_model(p, model, "svi" if model == "fullBNN" else None)
        wall = time.perf_counter() - start
        per_epoch = post.extra["epoch_seconds"]
        acc = accuracy(post, test.x, test.y, p.eval_draws)
        print(f"{args.preset} {model:8s} {len(per_epoch)} epochs: {float(per_epoch.mean()):.2f} s/epoch "
              f"({wall:.1f} s in all), test accuracy {acc:.4f}"
              + (f" (posterior predictive, {p.eval_draws} draws)" if model == "fullBNN" else ""))
    if not args.no_nuts:
        q = get_preset(args.nuts_preset)
        start = time.perf_counter()
        with flush_denormals():
            post = train_model(q, "fullBNN", "hmc")
        wall = time.perf_counter() - start
        d = post.config["diagnostics"]
        acc = accuracy(post, test.x, test.y, None)
        print(f"{args.nuts_preset} NUTS: {q.hmc.chains} chains x ({q.hmc.warmup} warmup + {q.hmc.samples} samples) "
              f"on {q.hmc.n_train} images: {d['seconds_per_iteration']:.2f} s/iteration ({wall:.0f} s in all); "
              f"max R-hat {d['rhat_max']:.3f}, min bulk ESS {d['ess_bulk_min']:.1f}, "
              f"divergences {d['divergences']}; test accuracy {acc:.4f} ({post.max_draws} draws)")


if __name__ == "__main__":
    main()
