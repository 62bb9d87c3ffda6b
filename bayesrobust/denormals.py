"""Flush denormal floats to zero while a model trains on the CPU (docs/method.md §3.8).

Late in training a confident classifier's cross-entropy gradients fall below float32's smallest normal number
(≈ 1.2e-38). x86 CPUs compute with such *denormal* numbers in microcode: measured here, a 512×1024 by
1024×1024 matmul whose left factor is half denormal took 90 times as long, and the Adam epochs of the
fashion_mnist_fc2 baseNN grew from 5 s to 14 s by epoch 40 (experiments/benchmarks/bench_denormals.py).
Flushing them to zero (the FTZ and DAZ bits of the MXCSR register) changes no training result that float32 can
tell apart: a per-image gradient below 1e-38 vanishes in a batch sum of normal ones anyway.

Why this module exists: ``torch.set_flush_denormal`` sets the register of the calling thread only, and the
OpenMP threads that run torch's matmuls copy it only when they are created. So :func:`flush_denormals` sets it
inside one OpenMP parallel region of the library torch itself runs on (``libgomp``), i.e. on every thread of
the calling thread's team, and sets it back to IEEE handling when training ends. Attacks, explanations and
evaluation keep IEEE denormals: a denormal input gradient still has a sign FGSM uses (flushing it changed 2
of 500 FGSM images of a 15-epoch Fashion-MNIST baseNN).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch

ALL_THREADS = "flushed on all threads"
CALLING_THREAD = "flushed on the calling thread only"
IEEE = "IEEE (not flushed)"


@cache
def _openmp() -> ctypes.CDLL | None:
    """torch's own OpenMP runtime if it is GNU's (Linux wheels ship ``torch/lib/libgomp.so.1``), else None."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    for path in sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*")):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        if hasattr(lib, "GOMP_parallel"):
            return lib
    return None


def set_flush(on: bool) -> str:
    """Set (``on``) or clear the flush-to-zero of denormals on the calling thread and its OpenMP team.

    Returns which threads it reached: :data:`ALL_THREADS`, :data:`CALLING_THREAD` (no GNU OpenMP runtime
    found: torch's own call only) or :data:`IEEE` (``on`` is false, or the CPU cannot flush).
    """
    if not torch.set_flush_denormal(on):  # the calling thread first; False: no SSE3 (e.g. not x86)
        return IEEE
    gomp = _openmp()
    if gomp is None:
        return CALLING_THREAD if on else IEEE

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def each_thread(_: int | None) -> None:
        torch.set_flush_denormal(on)

    # GOMP_parallel(fn, data, num_threads, flags): the entry point GCC compiles "#pragma omp parallel" to
    gomp.GOMP_parallel(each_thread, None, ctypes.c_uint(torch.get_num_threads()), ctypes.c_uint(0))
    return ALL_THREADS if on else IEEE


@contextmanager
def flush_denormals(device: str | torch.device = "cpu", enabled: bool = True) -> Iterator[str]:
    """Flush denormals to zero on every torch CPU thread inside the block; IEEE handling again after it.

    Yields the scope reached (:func:`set_flush`; :data:`IEEE` on a GPU, where denormals cost nothing, or when
    not ``enabled``). Not re-entrant across threads: use it around one thread's training.
    """
    if not enabled or torch.device(device).type != "cpu":
        yield IEEE
        return
    scope = set_flush(True)
    try:
        yield scope
    finally:
        set_flush(False)
