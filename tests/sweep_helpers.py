"""A dask worker plugin for the sweep tests (a module of its own: the workers import it by name)."""

from __future__ import annotations

import os
import signal

from distributed.diagnostics.plugin import WorkerPlugin


class KillWorkerOnce(WorkerPlugin):
    """Kill the worker process (SIGKILL, no clean-up) when a task whose key starts with ``prefix`` starts
    executing — once: the worker that creates the ``marker`` file dies, every later one carries on."""

    name = "kill-worker-once"

    def __init__(self, marker: str, prefix: str):
        self.marker, self.prefix = marker, prefix

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing" and str(key).startswith(self.prefix):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
