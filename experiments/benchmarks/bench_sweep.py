"""Benchmark of `bayesrobust sweep` on dask.distributed (issue 12): prints its figures, it is not a test.

(a) The QUICK layers-robustness sweep (``experiments/sweeps/layers_robustness.toml --quick``: quick preset,
    baseNN/advNN/fullBNN, FGSM, S in {5, 10, 20}, every stage) from scratch on a LocalCluster of 1 and of 2
    single-threaded workers: wall time (cluster start excluded, workers warmed up) and the speed-up (goal ≥ 1.6×).
(b) One explanation with S = 100 draws (the quick fullBNN of (a), its 100 images clean + adversarial, the
    epsilon rule at every layer): one process with one torch thread against the draws split into 2 tasks of
    50 on the 2-worker cluster, merged (goal ≥ 1.7×); the two results are compared (max |difference|).
(c) The projected wall time of the full paper grid (the three paper sweep files) on 1, 8 and 64 workers:
    each unit's cost is the measured cost of its QUICK counterpart (same stage and model, from (a) with 1
    worker) scaled by the work it does — training by epochs × training images (NUTS: iterations × chains ×
    images, against a tiny NUTS run timed here: it assumes as many leapfrog steps per iteration, and the
    network cost per image of full-batch gradients, timed at 1,000 and at the tiny run's 200 images), attacks
    and explanations by images × S (× rules) — and by the network's measured cost per image (a timed
    forward + backward pass of both presets' networks); explanations are split into chunks of the file's
    ``draws_per_task``; then the task graph is list-scheduled (each ready task to the first free worker,
    longest first). The paper datasets must be in ``--data-root`` for the grid to be built (without the
    full CIFAR-10 its sweep is left out, and said so). A rough projection: the longest tasks are printed.

The machine is shared: the load average is printed; figures drop when other processes run.

Run from the repository root::

    .venv/bin/python experiments/benchmarks/bench_sweep.py            # the issue's setting (about 15 min on 2 cores)
    .venv/bin/python experiments/benchmarks/bench_sweep.py --small    # tiny preset, S = 20: a check that it runs
    .venv/bin/python experiments/benchmarks/bench_sweep.py --split-only --split-preset mnist_conv  # (b) at paper
        # size: 500 images, 3 rules, S = 100 (trains mnist_conv's fullBNN first, ~15 min; ~45 min in all)
"""

from __future__ import annotations

import argparse
import functools
import heapq
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bayesrobust import cluster, grid, stages  # noqa: E402
from bayesrobust.explain.split import chunk_bounds  # noqa: E402
from bayesrobust.presets import get_preset  # noqa: E402

SWEEPS = ROOT / "experiments" / "sweeps"


def run_sweep(workers: int, out: Path, overrides: dict) -> tuple[float, cluster.Outcome]:
    """The QUICK layers sweep from scratch on ``workers`` workers: (seconds, outcome)."""
    from distributed import Client
    sweep = grid.load(SWEEPS / "layers_robustness.toml", quick=True, overrides=overrides)
    units = grid.units(sweep, sweep.experiments(out))
    with cluster.local_cluster(workers, dashboard_address=None) as local, Client(local) as client:
        client.run(_warm)  # imports done on every worker before the clock starts
        start = time.perf_counter()
        outcome = cluster.run_units(client, units)
        seconds = time.perf_counter() - start
    if not outcome.ok:
        raise SystemExit(outcome.report())
    return seconds, outcome


def _warm() -> None:
    import bayesrobust.explain.lrp  # noqa: F401
    import bayesrobust.inference  # noqa: F401
    import bayesrobust.stages  # noqa: F401


def split_explanation(out: Path, preset: str, draws: int, n_inputs: int | None = None,
                      rules: tuple[str, ...] = ("epsilon",), data_root: str | None = None) -> None:
    """(b): one process (1 thread) vs 2 workers, S = ``draws`` (``n_inputs`` images, default the preset's)."""
    import torch
    import xarray as xr
    from distributed import Client

    from bayesrobust import store
    torch.set_num_threads(1)
    if not (out / "models" / preset / "fullBNN_svi").is_dir():
        stages.train(preset, "fullBNN", out=out, data_root=data_root)
    attack = stages.attack(preset, "fullBNN", out=out, n_draws=draws, n_inputs=n_inputs, data_root=data_root)
    settings = dict(rules=list(rules), n_draws=draws, force=True)
    start = time.perf_counter()
    one = stages.explain(preset, "fullBNN", attack.path, out=out, **settings)
    t_one = time.perf_counter() - start
    with store.open_result(one.path) as ds:
        reference = ds.load()
    with cluster.local_cluster(2, dashboard_address=None) as local, Client(local) as client:
        client.run(_warm)
        start = time.perf_counter()
        future = client.submit(_explain_split, preset, str(attack.path), str(out), settings, draws // 2, pure=False)
        path = future.result()
        t_split = time.perf_counter() - start
    with store.open_result(path) as ds:
        diff = float(abs(ds.relevance - reference.relevance).max())
        xr.testing.assert_equal(ds.unit, reference.unit)
    print(f"(b) explanation of S={draws} draws ({preset}, {reference.sizes['image']} images x 2, "
          f"{reference.sizes['layer']} layers, rules {', '.join(rules)})")
    print(f"    one process, 1 thread: {t_one:7.1f} s")
    print(f"    2 workers, 2 tasks:    {t_split:7.1f} s   speed-up {t_one / t_split:.2f}x (goal >= 1.7x); "
          f"max |relevance difference| {diff:.2e}")


def _explain_split(preset: str, attack: str, out: str, settings: dict, per_task: int) -> str:
    import torch
    torch.set_num_threads(1)
    done = stages.explain(preset, "fullBNN", attack, out=out, draws_per_task=per_task,
                          map_chunks=cluster.dask_map, **settings)
    return str(done.path)


@functools.cache
def net_cost(preset: str, batch: int = 64) -> float:
    """Seconds per image of a forward + backward pass of the preset's network (``batch`` images, 1 thread)."""
    import torch

    from bayesrobust.models.architectures import build
    torch.set_num_threads(1)
    p = get_preset(preset)
    net = build(p.arch)
    x = torch.rand(batch, *p.arch.in_shape, requires_grad=True)
    for _ in range(2):
        net(x).sum().backward()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0 or reps < 3:
        net(x).sum().backward()
        reps += 1
    return (time.perf_counter() - start) / reps / batch


@functools.cache
def train_images(dataset: str, data_root: str | None) -> int:
    from bayesrobust.data import load
    return len(load(dataset, "train", data_root))


def work(unit: grid.Unit, preset, rules: int) -> float:
    """The work of a unit in the scale of (c): training epochs × images (NUTS: iterations × chains × images
    — as many leapfrog steps per iteration as the timed tiny run took —), or images × S (× rules)."""
    model = unit.kwargs.get("model")
    if unit.stage == "train":
        n = train_images(preset.dataset, unit.kwargs.get("data_root") and str(unit.kwargs["data_root"]))
        if model == "fullBNN":
            if unit.kwargs.get("inference") == "hmc":
                return float((preset.hmc.warmup + preset.hmc.samples) * preset.hmc.chains
                             * min(preset.hmc.n_train or n, n))
            return float(preset.svi.epochs * n)
        optim = preset.base if model == "baseNN" else preset.adv_optim
        return float(optim.epochs * n)
    n_inputs = unit.kwargs.get("n_inputs") or preset.n_inputs
    s = unit.kwargs.get("n_draws") or 1
    if unit.stage == "attack":
        return float(n_inputs * s)
    if unit.stage == "explain":
        return float(n_inputs * s * rules)
    return 1.0


def project(outcome: cluster.Outcome, quick_units: list[grid.Unit], data_root: str, workers=(1, 8, 64)) -> None:
    """(c): the paper grid's wall time on each number of workers."""
    quick = get_preset(quick_units[0].kwargs["preset"].name)
    costs_per_image = {}
    measured = {}  # (stage, model) -> seconds per unit of work at the quick preset's network cost
    for u in quick_units:
        r = outcome.done[u.key]
        rules = len(u.kwargs.get("rules", ())) or 1
        measured.setdefault((u.stage, u.kwargs.get("model")), []).append(r.seconds / work(u, quick, rules))
    measured = {k: sum(v) / len(v) for k, v in measured.items()}
    costs_per_image[quick.name] = net_cost(quick.name)
    # NUTS is not in the QUICK sweep: one tiny NUTS training is timed here (fc2 h=16, 20 iterations, 2 chains)
    tiny = get_preset("tiny")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        hmc = grid.Unit("train", "train", {"preset": tiny, "model": "fullBNN", "inference": "hmc"})
        stages.train(tiny, "fullBNN", inference="hmc", out=tmp)
        measured[("train_hmc", "fullBNN")] = (time.perf_counter() - start) / work(hmc, tiny, 1)
    grids = []
    with tempfile.TemporaryDirectory() as tmp:  # one OUT for all: a model shared by two grids is trained once
        for name in ("layers_robustness", "rules_robustness", "cifar"):
            sweep = grid.load(SWEEPS / f"{name}.toml", overrides={"data_root": data_root})
            try:
                grids.append((name, sweep, grid.units(sweep, sweep.experiments(tmp))))
            except grid.SweepError as err:
                print(f"    (left out {name}: {err})")
    tasks, seen = [], set()  # (key, seconds, needs)
    for _name, sweep, units in grids:
        per_task = sweep.settings.get("draws_per_task")
        for u in units:
            p = u.kwargs["preset"] if u.stage in ("train", "attack", "explain") else get_preset(u.kwargs["preset"])
            if p.name not in costs_per_image:
                costs_per_image[p.name] = net_cost(p.name)
            rules = len(u.kwargs.get("rules", ())) or 1
            stage = "train_hmc" if u.stage == "train" and u.kwargs.get("inference") == "hmc" else u.stage
            if stage == "train_hmc":  # full-batch gradients: per-image costs at large batches
                scale = net_cost(p.name, 1000) / net_cost("tiny", tiny.hmc.n_train)
            elif u.stage in ("train", "attack", "explain"):
                scale = costs_per_image[p.name] / costs_per_image[quick.name]
            else:
                scale = 1.0
            seconds = measured[(stage, u.kwargs.get("model"))] * work(u, p, rules) * scale
            s = u.kwargs.get("n_draws") or 1
            key, needs = u.key, list(u.needs)
            if key in seen:
                continue
            seen.add(key)
            if u.stage == "explain" and per_task and s > per_task:
                chunks = [b - a for a, b in chunk_bounds(s, per_task)]
                for i, c in enumerate(chunks):
                    tasks.append((f"{key}#{i}", seconds * c / s, needs))
                tasks.append((key, 0.0, [f"{key}#{i}" for i in range(len(chunks))]))
            else:
                tasks.append((key, seconds, needs))
    total = sum(t[1] for t in tasks)
    print(f"(c) the paper grid ({', '.join(g[0] for g in grids)}): {len(tasks)} tasks, "
          f"{total / 3600:.1f} CPU-hours (projected from the QUICK units' measured costs)")
    for w in workers:
        print(f"    {w:3d} worker(s): {schedule(tasks, w) / 3600:8.2f} h")
    longest = sorted(tasks, key=lambda t: -t[1])[:3]
    print("    longest tasks (a lower bound of the wall time on any number of workers): "
          + "; ".join(f"{' '.join(k.split()[2:])} ({k.split()[0]}) {c / 3600:.2f} h" for k, c, _ in longest))


def schedule(tasks: list[tuple[str, float, list[str]]], workers: int) -> float:
    """Makespan of list scheduling: a ready task (its needs finished) starts on the first free worker; among
    ready tasks the longest first."""
    cost = {k: c for k, c, _ in tasks}
    needs = {k: n for k, _, n in tasks}
    children: dict[str, list[str]] = {}
    for k, n in needs.items():
        for d in n:
            children.setdefault(d, []).append(k)
    waiting = {k: len(n) for k, n in needs.items()}
    ready_at = {k: 0.0 for k in needs}
    ready = [(-cost[k], k) for k, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    free = [0.0] * workers
    heapq.heapify(free)
    running: list[tuple[float, str]] = []
    end = 0.0
    while ready or running:
        while ready and free:
            _, k = heapq.heappop(ready)
            start = max(heapq.heappop(free), ready_at[k])
            heapq.heappush(running, (start + cost[k], k))
        finish, k = heapq.heappop(running)
        end = max(end, finish)
        heapq.heappush(free, finish)
        for c in children.get(k, ()):
            ready_at[c] = max(ready_at[c], finish)
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (-cost[c], c))
    return end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny preset and S = 20: checks the script runs")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--keep", help="keep the results in this folder (default: a temporary one)")
    parser.add_argument("--split-only", action="store_true",
                        help="only (b), on --split-images images with the three paper rules")
    parser.add_argument("--split-images", type=int, default=500)
    parser.add_argument("--split-preset", default="quick",
                        help="preset of (b) with --split-only (mnist_conv: the paper's; its fullBNN is trained "
                             "unless --keep DIR already holds DIR/split/models/PRESET/fullBNN_svi)")
    args = parser.parse_args()
    overrides = {"preset": "tiny"} if args.small else {}
    draws = 20 if args.small else 100
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench_sweep_"))
    if args.split_only:
        try:
            preset = overrides.get("preset", args.split_preset)
            split_explanation(base / "split", preset, draws, args.split_images, ("epsilon", "gamma", "alpha1beta0"),
                              args.data_root)
        finally:
            if args.keep is None:
                shutil.rmtree(base, ignore_errors=True)
        return
    try:
        t1, outcome = run_sweep(1, base / "w1", overrides)
        t2, _ = run_sweep(2, base / "w2", overrides)
        sweep = grid.load(SWEEPS / "layers_robustness.toml", quick=True, overrides=overrides)
        units = grid.units(sweep, sweep.experiments(base / "w1"))
        print(f"(a) QUICK layers-robustness sweep ({sweep.grid['preset'][0]}, {len(units)} units)")
        print(f"    1 worker:  {t1:7.1f} s\n    2 workers: {t2:7.1f} s   speed-up {t1 / t2:.2f}x (goal >= 1.6x)")
        split_explanation(base / "w1", sweep.grid["preset"][0], draws)
        print(f"    (load average now {os.getloadavg()[0]:.2f})")
        project(outcome, units, args.data_root)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
