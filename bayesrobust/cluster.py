"""Running a sweep's work units on dask.distributed (docs/method.md §12).

:func:`run_units` submits every :class:`~bayesrobust.grid.Unit` as one task whose dependencies are the
tasks of the units it needs, so dask runs them in the stages' order (train → attack → explain → control →
analyze → plot) on whatever workers are free. A task is a stage call (:mod:`bayesrobust.stages`) on settings and
paths; results travel as files under OUT (written atomically by :mod:`bayesrobust.store`), so a task that
is run twice — dask re-runs the task of a worker that died — writes the same files again, and a stage
whose result is up to date skips the work. Explanations are split by draws into further tasks
(:func:`dask_map`, :mod:`bayesrobust.explain.split`).

A task that raises stops its own branch only: the units that need it are not run, all others are; the
outcome lists both. :func:`local_cluster` starts the default cluster: one single-threaded worker process
per core (torch then uses one thread per worker: the cores are shared by processes, not threads).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grid import Unit

#: Environment of the worker processes: one thread for every numerical library (torch is set per task too).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@dataclass(frozen=True)
class UnitResult:
    """What a unit did: its stage's :class:`~bayesrobust.stages.Done` in short."""

    key: str
    path: str
    skipped: bool
    summary: str
    #: wall time of the task (its own work; the draw-split chunks of an explanation included)
    seconds: float = 0.0


@dataclass
class Outcome:
    """The end of a sweep: every unit's result, the units that raised (key → ``Type: message``) and those
    not run because a unit they need failed (key → the failed unit's key)."""

    done: dict[str, UnitResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_run

    def report(self) -> str:
        """A summary: counts, then each failure and why, and what it held back."""
        ran = sum(not r.skipped for r in self.done.values())
        lines = [f"{len(self.done)} unit(s) done ({ran} run, {len(self.done) - ran} up to date), "
                 f"{len(self.failed)} failed, {len(self.not_run)} not run"]
        for key, why in self.failed.items():
            held = [k for k, cause in self.not_run.items() if cause == key]
            lines.append(f"FAILED {key}: {why}" + (f" (so not run: {'; '.join(held)})" if held else ""))
        return "\n".join(lines)


#: dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``).
#: Setting it turns off glibc's adaptive mmap threshold, so every tensor above 128 KiB is mmap'ed, zero-filled
#: and unmapped again: the explanations ran 1.5–2× slower in a worker than in a plain process (bench_sweep).
#: ``None`` unsets it (dask's documented way), leaving glibc's defaults.
UNSET_NANNY_ENV = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def local_cluster(workers: int | None = None, dashboard_address: str = ":8787", **kwargs: Any):
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes (default: one per
    core), each with :data:`WORKER_ENV` and glibc's default allocator settings (:data:`UNSET_NANNY_ENV`)."""
    import dask
    from distributed import LocalCluster
    n = workers or os.cpu_count() or 1
    with dask.config.set(UNSET_NANNY_ENV):
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                            dashboard_address=dashboard_address, env=dict(WORKER_ENV), **kwargs)


def dask_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(item) ...]`` as tasks on the cluster of the calling task (its thread leaves the worker's pool
    while it waits, so its own worker runs chunks too)."""
    from distributed import worker_client
    with worker_client() as client:
        return client.gather(client.map(fn, list(items), pure=False))


def run_unit(unit: Unit, threads: int, *needed: UnitResult) -> UnitResult:
    """Run one unit's stage with ``threads`` torch threads (explain: on the attack file of its dependency,
    its draws split through :func:`dask_map` when ``draws_per_task`` asks for it)."""
    import logging
    import time

    import torch

    from . import stages
    start = time.perf_counter()
    torch.set_num_threads(threads)
    logging.getLogger("bayesrobust").setLevel(logging.INFO)  # for the client's forward_logging (cli.sweep)
    logging.getLogger(__name__).info("started: %s", unit.key)
    kwargs = dict(unit.kwargs)
    if unit.stage == "explain":
        kwargs["attack_run"] = Path(needed[0].path)
        if kwargs.get("draws_per_task"):
            kwargs["map_chunks"] = dask_map
    if unit.stage == "control":  # needs: its attack run, that run's explanation[, the other attack run]
        kwargs["attack_run"] = Path(needed[0].path)
        if len(needed) > 2:
            kwargs["other_run"] = Path(needed[2].path)
    if unit.stage in ("analyze", "plot") and needed and all(r.skipped for r in needed):
        current = _stored_analysis(unit) if unit.stage == "analyze" else _figures(unit, needed[0])
        if current is not None:
            return UnitResult(unit.key, str(current), True, f"{current} is up to date",
                              time.perf_counter() - start)
    done = getattr(stages, unit.stage)(**kwargs)
    return UnitResult(unit.key, str(done.path), bool(done.skipped), done.summary, time.perf_counter() - start)


def _stored_analysis(unit: Unit) -> Path | None:
    """The analysis file of an analyze unit if it holds the unit's models and topk and was computed from the
    very files now stored (:func:`bayesrobust.results.load_runs` checks their content hashes)."""
    from . import paths, results, store
    out, name = Path(unit.kwargs["out"]), unit.kwargs["name"]
    path = paths.analysis_path(out, name)
    if not path.is_file():
        return None
    try:
        with store.open_result(path, "analysis") as ds:
            if ds.model.values.tolist() != unit.label.split(",") or \
                    float(ds.attrs.get("topk", -1)) != float(unit.kwargs["topk"]):
                return None
            results.load_runs(out, ds, name)
    except (ValueError, OSError):  # stale, damaged, other runs: analyse again
        return None
    return path


def _figures(unit: Unit, analysis: UnitResult) -> Path | None:
    """The figures folder if it holds figures of the (unchanged) analysis newer than its file."""
    from . import paths
    folder, name = paths.figures_dir(unit.kwargs["out"]), unit.kwargs["analyses"][0]
    made = Path(analysis.path).stat().st_mtime if Path(analysis.path).is_file() else float("inf")
    pngs = list(folder.glob(f"{name}_*.png")) if folder.is_dir() else []
    return folder if pngs and all(p.stat().st_mtime >= made for p in pngs) else None


def run_units(client: Any, units: Sequence[Unit], *, threads: int = 1,
              progress: Callable[[int, int, str], Any] | None = None) -> Outcome:
    """Run ``units`` on the dask ``client``; wait for all of them. ``progress(done, total, message)`` after
    each (message: ``done``/``up to date``/``failed`` and the unit)."""
    from distributed import as_completed
    futures: dict[str, Any] = {}
    for unit in units:
        futures[unit.key] = client.submit(run_unit, unit, threads, *(futures[k] for k in unit.needs),
                                          key=_task_key(unit), pure=False, retries=0)
    outcome = Outcome()
    by_future = {f.key: k for k, f in futures.items()}
    failed_roots: dict[str, str] = {}
    for n, future in enumerate(as_completed(list(futures.values())), 1):
        key = by_future[future.key]
        if future.status == "finished":
            result = outcome.done[key] = future.result()
            said = f"{'up to date' if result.skipped else 'done'}: {key}"
        else:
            err = future.exception()
            failed_roots[key] = f"{type(err).__name__}: {err}"
            said = f"failed: {key}"
        if progress is not None:
            progress(n, len(futures), said)
    for unit in units:  # in dependency order: a unit failed itself unless something it needs failed
        if unit.key not in failed_roots:
            continue
        cause = next((outcome.not_run.get(k, k) for k in unit.needs if k in failed_roots), None)
        if cause is None:
            outcome.failed[unit.key] = " ".join(failed_roots[unit.key].split())
        else:
            outcome.not_run[unit.key] = cause
    return outcome


def _task_key(unit: Unit) -> str:
    """A readable, unique dask key (shown on the dashboard): the unit's key with a token for reruns."""
    import uuid
    return f"{unit.stage}-{'_'.join(unit.key.split()[2:]) or unit.key}-{uuid.uuid4().hex[:8]}"


def write_timings(outcome: Outcome, units: Iterable[Unit], path: str | Path) -> Path:
    """Write one CSV row per unit — ``key, stage, status, seconds, path`` (status: ``run``, ``up to date``,
    ``failed`` or ``not run``; seconds: the task's wall time, empty where it did not finish) — in the units'
    order, atomically, so a sweep's stage times can be read after it (bench_study reads one experiment's)."""
    import csv
    import io

    from .store import write_text_atomic
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["key", "stage", "status", "seconds", "path"])
    for unit in units:
        result = outcome.done.get(unit.key)
        if result is not None:
            writer.writerow([unit.key, unit.stage, "up to date" if result.skipped else "run",
                             f"{result.seconds:.2f}", result.path])
        else:
            writer.writerow([unit.key, unit.stage, "failed" if unit.key in outcome.failed else "not run", "", ""])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text.getvalue())


def headlines(outcome: Outcome, units: Iterable[Unit]) -> list[str]:
    """The headline numbers (:func:`bayesrobust.experiment.headline`) of every analysis the sweep holds."""
    from . import store
    from .experiment import headline
    lines = []
    for unit in units:
        result = outcome.done.get(unit.key)
        if unit.stage == "analyze" and result is not None:
            with store.open_result(result.path, "analysis") as ds:
                lines.append(f"{Path(unit.kwargs['out']) / unit.kwargs['name']}:\n{headline(ds.load())}")
    return lines
