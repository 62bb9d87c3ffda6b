"""``bayesrobust sweep FILE`` (also ``python -m bayesrobust.sweep``): an experiment grid on dask.distributed.

Reads a sweep file (:mod:`bayesrobust.grid`; the paper's are ``experiments/sweeps/*.toml``), checks every
experiment of the grid before any work, and runs its units (:mod:`bayesrobust.cluster`) on an embedded
``LocalCluster`` (one single-threaded worker process per core, or ``--workers N``) or on a running cluster
(``--scheduler ADDRESS``). Prints the dashboard address, one progress bar (units done / total), the units'
own progress lines as the workers log them (training epochs, stages), each unit's outcome, the headline of
every analysis, and a summary; writes every unit's status and wall time to ``OUT/timings/NAME-STAMP.csv``;
exit status 1 if any unit failed.

Example (the QUICK layers-robustness sweep; minutes on 2 CPU cores)::

    bayesrobust sweep experiments/sweeps/layers_robustness.toml --quick
"""

from __future__ import annotations

import logging
import time

import click

from . import options


def _overrides(_ctx, _param, values):
    from ..grid import SweepError, parse_override
    try:
        return dict(parse_override(v) for v in values)
    except SweepError as err:
        raise click.BadParameter(str(err)) from None


@click.command(cls=options.Command, context_settings=options.CONTEXT)
@click.argument("sweep_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Apply the file's [quick] table (the drivers' QUICK=1).")
@click.option("--set", "overrides", multiple=True, callback=_overrides, metavar="KEY=VALUE",
              help="Replace a grid axis or setting, e.g. --set preset=tiny --set draws=5,10, or a step's "
                   "(--set 5_ensemble.members=10) (repeatable).")
@click.option("--step", "steps", multiple=True, metavar="NAME",
              help="Run only this step of a file with [steps] (a name or shell pattern; repeatable).")
@click.option("--skip-step", "skip_steps", multiple=True, metavar="NAME",
              help="Leave out the steps matching this name or shell pattern (repeatable), e.g. '*_ends'.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Worker processes of the embedded cluster (default: one per CPU core).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Use a running dask scheduler (e.g. tcp://host:8786) instead of an embedded cluster.")
@click.option("--torch-threads", type=click.IntRange(1), default=1, show_default=True,
              help="torch threads per task (the embedded cluster has one thread per worker).")
@click.option("--dashboard", default=":8787", show_default=True,
              help="Address of the embedded cluster's dashboard (':0' picks a free port).")
@options.out_option
@options.force_option
@options.progress_option
@options.verbose_option
@options.friendly_errors
def main(sweep_file, quick, overrides, steps, skip_steps, workers, scheduler, torch_threads, dashboard, out, force,
         progress, verbose):
    """Run the experiment grid of sweep FILE on dask.distributed, results under OUT."""
    from .. import cluster, grid, paths
    options.setup_logging(verbose)
    if scheduler is not None and workers is not None:
        raise click.UsageError("--workers sizes the embedded cluster; with --scheduler the cluster is yours")
    start = time.perf_counter()
    sweep = grid.load(sweep_file, quick=quick, overrides=overrides, steps=steps, skip_steps=skip_steps)
    units = grid.units(sweep, sweep.experiments(out, force=force))  # every point checked before any work
    outcome = run(units, scheduler=scheduler, workers=workers, threads=torch_threads, dashboard=dashboard,
                  progress=progress, verbose=verbose)
    for line in cluster.headlines(outcome, units):
        click.echo("\n" + line)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    timings = cluster.write_timings(outcome, units, paths.resolve_out(out) / "timings" / f"{sweep.name}-{stamp}.csv")
    click.echo(f"\nsweep {sweep.name} in {time.perf_counter() - start:.0f} s: {outcome.report()}\n"
               f"unit times: {timings}", err=not outcome.ok)
    if not outcome.ok:
        raise click.exceptions.Exit(1)


def run(units, *, scheduler=None, workers=None, threads=1, dashboard=":8787", progress=True, verbose=False):
    """Start (or connect to) the cluster, run ``units`` with one progress bar, return the Outcome."""
    from contextlib import ExitStack

    from distributed import Client
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .. import cluster

    def quiet_dask() -> None:  # the scheduler's, nannies' and workers' own INFO lines would bury the bar
        if not verbose:
            for name in [n for n in logging.root.manager.loggerDict if n.startswith("distributed")]:
                logging.getLogger(name).setLevel(logging.WARNING)

    quiet_dask()  # importing distributed set its loggers to INFO: again before the cluster starts
    with ExitStack() as stack:
        if scheduler is None:
            local = stack.enter_context(cluster.local_cluster(
                workers, dashboard, silence_logs=logging.DEBUG if verbose else logging.ERROR))
            client = stack.enter_context(Client(local))
        else:
            client = stack.enter_context(Client(scheduler))
        quiet_dask()  # and the loggers the cluster made (closing messages included)
        # the units' own progress (epochs, chains, stages) from the workers, printed above the bar
        client.forward_logging("bayesrobust", level=logging.INFO)
        n = len(client.scheduler_info().get("workers", {}))
        click.echo(f"dask: {n} worker(s) at {client.scheduler.address}; dashboard {client.dashboard_link}")
        stack.enter_context(logging_redirect_tqdm())
        bar = stack.enter_context(tqdm(total=len(units), unit="unit", desc="sweep", disable=not progress))

        def advance(done, total, message):
            bar.write(message)
            bar.update(done - bar.n)

        outcome = cluster.run_units(client, units, threads=threads, progress=advance)
        return outcome
