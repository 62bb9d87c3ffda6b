"""Quality bars of the scalable posteriors (docs/method.md §13), measured through the library's own stages.

Parts (``--part``, default all):

``sghmc``
    fc2-512 SGHMC on full MNIST (preset ``mnist_fc2``, 2 chains x 50 samples = 100 draws) and its baseNN: test
    accuracy, NLL, ECE of the posterior predictive against baseNN's, function-space R-hat, wall time.
    Bars: accuracy >= 98 %, NLL and ECE <= baseNN's, 100 draws from >= 2 chains in < 30 min, R-hat < 1.1.
``laplace``
    Last-layer Laplace around the ``mnist_conv`` baseNN, the preset's structure (KFAC with a rank-1,000 input
    factor; ``--laplace-structure diag`` for the diagonal; ``--laplace-refit-steps N`` refits the last layer
    by evidence iterations): fit time (bar < 5 min) and NLL against baseNN's on
    all 10,000 test images with 64 draws (the features are computed once, each draw applies its own last
    layer); also the NLL with the fitted prior precision multiplied by 10, 100 and 1000 (how far the
    marginal-likelihood choice is from the best).
``diagnostics``
    R-hat and bulk/tail ESS of every parameter of NUTS samples the size of ``mnist_fc2``'s (2 chains x 50
    samples x 669,706 weights; AR(1) draws, no training): the vectorised ``hmc.diagnostics`` against ArviZ's
    per-parameter loop, timed on 2,000 parameters and extrapolated.
``evaluate``
    The ``evaluate`` table on MNIST (preset ``mnist_fc2``) for baseNN, advNN, SVI, SGHMC, Laplace and the
    ensemble, with OOD AUROC on Fashion-MNIST.

Every model is trained (or found up to date) under ``--out`` with ``bayesrobust.stages.train``, so a part run
after another reuses its models. ``--small`` runs the same code on the ``tiny`` preset (mnist5k, seconds) to
check the script. Example (alone on the machine)::

    .venv/bin/python experiments/benchmarks/bench_posteriors.py --part sghmc --data-root ../shared/datasets \\
        --out results_bench
"""

from __future__ import annotations

import argparse
import logging
import time

from bayesrobust import stages
from bayesrobust.inference import load_model
from bayesrobust.presets import Preset, get_preset, override_training


def train(preset: str | Preset, model: str, inference: str | None, args: argparse.Namespace,
          eval_draws: int | None = None) -> tuple[float, str]:
    """Train (or find) a model; its wall time (0 when up to date) and the stage's summary."""
    start = time.perf_counter()
    done = stages.train(preset, model, inference=inference, out=args.out, data_root=args.data_root,
                        progress=args.progress, eval_draws=eval_draws)
    seconds = 0.0 if done.skipped else time.perf_counter() - start
    print(done.summary, flush=True)
    return seconds, done.summary


def metrics(preset: str, tags: list[str], args: argparse.Namespace, ood: str = "none", n_images: int | None = None,
            n_draws: int | None = None):
    done = stages.evaluate(preset, tags, out=args.out, data_root=args.data_root, ood=ood, force=args.force,
                           n_images=n_images, n_draws=n_draws)
    print(done.summary, flush=True)
    from bayesrobust import store
    with store.open_result(done.path, "evaluation") as ds:
        return ds.load()


def part_sghmc(args: argparse.Namespace) -> None:
    preset = "tiny" if args.small else "mnist_fc2"
    train(preset, "baseNN", None, args)
    sampled = override_training(get_preset(preset), "fullBNN", "sghmc", precondition=args.precondition)
    seconds, _ = train(sampled, "fullBNN", "sghmc", args)
    post = load_model(args.out, sampled, "fullBNN", "sghmc")
    fd = post.config["function_diagnostics"]
    ds = metrics(preset, ["baseNN", "fullBNN_sghmc"], args)
    base, bnn = ds.sel(model="baseNN"), ds.sel(model="fullBNN_sghmc")
    print(f"\nSGHMC {preset} (preconditioner: {sampled.sgmcmc.precondition}): {post.max_draws} draws from "
          f"{fd['chains']} chains; training wall time "
          f"{post.config['train_seconds'] / 60:.1f} min{' (this run)' if seconds else ' (stored)'}\n"
          f"  accuracy {float(bnn.accuracy):.4f} (bar >= 0.98; baseNN {float(base.accuracy):.4f})\n"
          f"  NLL {float(bnn.nll):.4f} (baseNN {float(base.nll):.4f})   ECE {float(bnn.ece):.4f} "
          f"(baseNN {float(base.ece):.4f})\n"
          f"  function-space R-hat: log-prob max {fd['logprob_rhat_max']:.3f}, probe-logit max "
          f"{fd['probe_logit_rhat_max']:.3f} (bar < 1.1); weight-space max {fd['weight_rhat_max']:.3f}; "
          f"chain disagreement {fd['disagreement_mean']:.4f}", flush=True)


def part_laplace(args: argparse.Namespace) -> None:
    preset = "tiny" if args.small else "mnist_conv"
    train(preset, "baseNN", None, args)
    # mnist_conv's last layer reads 25,088 features: the preset's structure is the low-rank KFAC
    trained = override_training(get_preset(preset), "fullBNN", "laplace", laplace_structure=args.laplace_structure,
                                laplace_refit_steps=args.laplace_refit_steps)
    train(trained, "fullBNN", "laplace", args, eval_draws=4 if args.small else 20)
    post = load_model(args.out, trained, "fullBNN", "laplace")
    info = post.config["laplace"]
    n_images = 200 if args.small else None  # None: the whole test set
    ds = metrics(preset, ["baseNN", "fullBNN_laplace"], args, n_images=n_images, n_draws=64)
    rank = f", rank {info['rank']} holding {info['captured']:.1%} of trace(A)" if "rank" in info else ""
    if info.get("refits"):
        rank += f", last layer refit in {info['refits']} evidence steps (moved {info['refit_shift']:.1%})"
    print(f"\nLaplace {preset} ({info['subset']}, {info['structure']}{rank}, {info['n_params']:,} weights): fitted "
          f"in {info['fit_seconds']:.1f} s (bar < 300 s), prior precision {info['prior_precision']}\n"
          f"  NLL {float(ds.nll.sel(model='fullBNN_laplace')):.4f} vs baseNN {float(ds.nll.sel(model='baseNN')):.4f}"
          f"   accuracy {float(ds.accuracy.sel(model='fullBNN_laplace')):.4f} vs "
          f"{float(ds.accuracy.sel(model='baseNN')):.4f}", flush=True)
    if info["structure"] in ("diag", "kron_lowrank"):
        prior_precision_sensitivity(post, preset, args, n_images=n_images, base_nll=float(ds.nll.sel(model='baseNN')),
                                    fitted_nll=float(ds.nll.sel(model='fullBNN_laplace')))


def prior_precision_sensitivity(post, preset: str, args: argparse.Namespace, n_images: int | None, base_nll: float,
                                fitted_nll: float, factors: tuple[float, ...] = (10, 100, 1000),
                                n_draws: int = 64) -> None:
    """Test NLL of the Laplace posterior with its prior precision λ (fitted by marginal likelihood) multiplied
    by ``factors``, the GGN and the MAP unchanged. Diagonal: draw scale (H + λ')^(-1/2), H recovered from the
    stored scale (H = scale⁻² − λ); low-rank KFAC: λ' in place of λ. A diagnostic of the marginal-likelihood
    fit, not a way to choose λ (these are test images). The images and draws are those of the ``evaluate``
    stage that gave ``base_nll`` and ``fitted_nll`` (``balanced_subset(test, n_images, seed=0)``, or the whole
    test set for ``None``; draws 0…n_draws−1)."""
    import copy
    from dataclasses import replace

    from bayesrobust.data import balanced_subset, load
    from bayesrobust.models.draws import draw_probabilities
    from bayesrobust.uncertainty import nll

    preset_ = get_preset(preset)
    test = load(preset_.dataset, "test", args.data_root)
    test = test if n_images is None else balanced_subset(test, n_images, seed=0)
    lam = post.config["laplace"]["prior_precision"][0]
    print(f"  prior precision sensitivity ({len(test.y)} test images, {n_draws} draws): "
          f"baseNN NLL {base_nll:.4f}\n    λ = 1 x {lam:.4g} (fitted): NLL {fitted_nll:.4f}", flush=True)
    for factor in factors:
        if post.config["laplace"]["structure"] == "diag":
            ggn = (post.extra["laplace.scale"].double() ** -2 - lam).clamp_min(0)
            changed = replace(post, extra={**post.extra, "laplace.scale": (ggn + factor * lam).rsqrt().float()})
        else:
            config = copy.deepcopy(post.config)
            config["laplace"]["prior_precision"] = [factor * lam]
            changed = replace(post, config=config)
        probs = draw_probabilities(changed, test.x, n_draws=n_draws)[0]
        print(f"    λ = {factor:g} x {lam:.4g}: NLL {nll(probs, test.y):.4f}", flush=True)


def part_evaluate(args: argparse.Namespace) -> None:
    preset = "tiny" if args.small else "mnist_fc2"
    runs = [("baseNN", None), ("advNN", None), ("fullBNN", "svi"), ("fullBNN", "sghmc"), ("fullBNN", "laplace"),
            ("fullBNN", "ensemble")]
    for model, inference in runs:
        train(preset, model, inference, args)
    tags = [model if inference is None else f"{model}_{inference}" for model, inference in runs]
    metrics(preset, tags, args, ood="auto" if args.data_root else "none")


def part_diagnostics(args: argparse.Namespace) -> None:
    import numpy as np
    from arviz_base import from_dict
    from arviz_stats import ess, rhat

    from bayesrobust.inference.hmc import diagnostics
    n = 20_000 if args.small else 669_706
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((2, 50, n)).astype(np.float32)
    for t in range(1, 50):  # AR(1) chains
        draws[:, t] = 0.5 * draws[:, t - 1] + 0.87 * draws[:, t]
    start = time.perf_counter()
    found = diagnostics({"w": draws}, [0, 0])
    ours = time.perf_counter() - start
    tree = from_dict({"posterior": {"w": draws[:, :, :2000]}})
    start = time.perf_counter()
    rhat(tree), ess(tree, method="bulk"), ess(tree, method="tail")
    theirs = (time.perf_counter() - start) * n / 2000
    print(f"diagnostics of {n:,} parameters (2 chains x 50 samples): {ours:.1f} s vectorised, ArviZ "
          f"{theirs:.0f} s extrapolated from 2,000 ({theirs / ours:.0f}x); max R-hat {found['rhat_max']:.3f}, "
          f"min bulk ESS {found['ess_bulk_min']:.1f}, min tail ESS {found['ess_tail_min']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["sghmc", "laplace", "diagnostics", "evaluate", "all"], default="all")
    parser.add_argument("--out", default="results_bench")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--small", action="store_true", help="the tiny preset (seconds): checks the script")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--laplace-structure", default=None, help="laplace part: the Laplace structure (default: "
                        "the preset's)")
    parser.add_argument("--laplace-refit-steps", type=int, default=None, help="laplace part: most evidence "
                        "iterations refitting the last layer (kron_lowrank; default: the preset's)")
    parser.add_argument("--precondition", default=None, help="sghmc part: none or adapted (default: the preset's)")
    parser.add_argument("--force", action="store_true", help="recompute the evaluation tables")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("bayesrobust.inference.laplace_lowrank").setLevel(logging.INFO)  # the refit's progress
    parts = (("sghmc", part_sghmc), ("laplace", part_laplace), ("diagnostics", part_diagnostics),
             ("evaluate", part_evaluate))
    for name, part in parts:
        if args.part in (name, "all"):
            part(args)


if __name__ == "__main__":
    main()
