"""Explanations split across workers by draws (docs/method.md §12.3).

A posterior's S draws are cut into chunks of consecutive draws; each chunk is explained where
``map_chunks`` sends it (a dask worker in a sweep, this process by default) and returns one
:class:`~bayesrobust.explain.bayesian.DrawReducer` per explainer (count, mean, M2, sign counts) and the
units its draws explained. The reducers are merged exactly with the parallel Welford update
(:meth:`DrawReducer.merge`), so the summary Dataset equals the one-process :func:`explain_attack` to float
rounding. Draw ``j`` is the same network and the same seed (``(seed, j)``) in whatever chunk it falls.

A chunk is described by paths and settings (:class:`DrawChunk`), never by a pickled model: the worker
reads the checkpoint and the attack file itself. With a draws store, each chunk writes its own draws'
region of ``relevance_draws`` into the temporary zarr store (one zarr chunk per draw, so no two workers
write the same chunk; a re-run chunk writes the same values again), and the store is renamed into place
only after every chunk and the summary are written.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .. import store
from ..checks import count
from ..models.draws import DrawSet
from ..models.posterior import Posterior
from .bayesian import DrawReducer, Explainer
from .explanation import (
    INPUTS,
    _create_draws_store,
    _split_inputs,
    _summary_dataset,
    _text,
    attack_images,
    checked_inputs,
)
from .fused import explain_each
from .layers import layer_names, resolve_layers

#: ``(function, chunks) → results in the same order``: the builtin ``map`` runs them here, one after the other.
ChunkMap = Callable[[Callable[[Any], Any], Sequence[Any]], Iterable[Any]]


def chunk_bounds(n_draws: int, per_task: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: draws ``0..n_draws-1`` in consecutive chunks of at most ``per_task`` draws,
    as even as possible (S=100, 30 per task → 4 chunks of 25)."""
    count("n_draws", n_draws, allow_none=False)
    count("draws_per_task", per_task, allow_none=False)
    k = -(-n_draws // per_task)
    edges = [round(i * n_draws / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


@dataclass(frozen=True)
class DrawChunk:
    """What one worker explains: draws ``start..stop-1`` of the model in ``model_dir`` on the images of the
    attack file ``attack_path``, with every explainer (their settings only), into ``draws_store`` if given."""

    model_dir: str
    attack_path: str
    explainers: tuple[Explainer, ...]
    layers: tuple[int, ...]
    start: int
    stop: int
    batch_size: int | None
    seed: int
    device: str
    draws_store: str | None = None


@dataclass
class ChunkResult:
    """A chunk's moments, one reducer per explainer, and its units (stop−start, L, 2N)."""

    start: int
    reducers: list[DrawReducer]
    units: torch.Tensor


def explain_chunk(chunk: DrawChunk) -> ChunkResult:
    """Explain one chunk of draws (clean and adversarial images together, as :func:`explain_attack`)."""
    posterior = Posterior.load(chunk.model_dir)
    with store.open_result(chunk.attack_path, "attack") as attack:
        x, x_adv = attack_images(attack)
    n_images = x.shape[0]
    dtype = next(iter(posterior.params.values())).dtype
    draws = DrawSet(posterior, chunk.stop, device=chunk.device, dtype=dtype, start=chunk.start)
    both = torch.cat([x, x_adv])
    array = None
    if chunk.draws_store is not None:
        import zarr
        array = zarr.open_array(str(Path(chunk.draws_store) / "relevance_draws"), mode="r+").with_config(
            {"write_empty_chunks": True})
    def write(r: int, j: int, maps: torch.Tensor, _units: torch.Tensor) -> None:
        array[:, r, :, j] = _split_inputs(maps, n_images)

    results = explain_each(draws, both, chunk.explainers, layers=list(chunk.layers), batch_size=chunk.batch_size,
                           seed=chunk.seed, on_draw=write if array is not None else None)
    return ChunkResult(chunk.start, [reducer for _, reducer in results], results[0][0].units)


def explain_split(posterior: Posterior, attack: xr.Dataset, explainers: Sequence[Explainer], *,
                  model_dir: str | Path, attack_path: str | Path, draws_per_task: int,
                  map_chunks: ChunkMap = map, layers: Sequence[int] | str | None = None,
                  n_draws: int | None = None, batch_size: int | None = None, seed: int = 0,
                  draws_path: str | Path | None = None, config: Mapping[str, Any] | None = None,
                  attack_run: str = "", expected: Mapping[str, Any] | None = None, device: str = "cpu",
                  extra_attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """:func:`~bayesrobust.explain.explanation.explain_attack` with the draws cut into chunks of at most
    ``draws_per_task`` draws, each explained by ``map_chunks`` (:func:`explain_chunk` on a :class:`DrawChunk`)
    and merged exactly. ``posterior`` and ``attack`` are the contents of ``model_dir`` and ``attack_path``
    (read here for the checks and the coordinates; the chunks read the files themselves). Same arguments
    and result as ``explain_attack`` otherwise (``n_draws`` defaults to the attack's)."""
    x, _, n_draws = checked_inputs(posterior, attack, explainers, n_draws, batch_size, expected)
    names = [e.name for e in explainers]
    n_images, image_shape = x.shape[0], tuple(x.shape[1:])
    s = posterior.resolve_n_draws(n_draws)
    net = posterior.network(0)
    idx = resolve_layers(net, layers)
    bounds = chunk_bounds(s, draws_per_task)
    chain, sample = posterior.draw_coords(tuple(range(s)))  # the coordinates DrawSet.coords gives
    draw_coords = {"draw": np.arange(s, dtype=np.int64), "chain": ("draw", np.asarray(chain, dtype=np.int64)),
                   "sample": ("draw", np.asarray(sample, dtype=np.int64))}
    coords = {"input": _text(INPUTS), "rule": _text(names), "layer": idx,
              "layer_name": ("layer", _text(layer_names(net, idx))),
              "image": attack["image"].values, **draw_coords, "channel": np.arange(image_shape[0]),
              "height": np.arange(image_shape[1]), "width": np.arange(image_shape[2])}
    settings = {"explainers": [e.config() for e in explainers], "layers": idx, "n_draws": s,
                "batch_size": batch_size, "seed": seed}
    cfg = dict(config or {})
    cfg.setdefault("explanation", settings)
    attrs = store.provenance("explanation", cfg, method=explainers[0].config()["method"], rules=names,
                             layers=idx, n_draws=s, posterior_kind=posterior.kind, attack_run=str(attack_run),
                             attack_config=attack.attrs.get("config", ""),
                             attack_created=attack.attrs.get("created", ""),
                             draws_store=Path(draws_path).name if draws_path is not None else "",
                             **dict(extra_attrs or {}))

    def run(tmp: Path | None) -> xr.Dataset:
        chunks = [DrawChunk(str(model_dir), str(attack_path), tuple(explainers), tuple(idx), a, b, batch_size,
                            seed, str(device), None if tmp is None else str(tmp)) for a, b in bounds]
        results = sorted(map_chunks(explain_chunk, chunks), key=lambda c: c.start)
        summary = {name: np.empty((len(INPUTS), len(explainers), len(idx), n_images, *image_shape), np.float32)
                   for name in ("relevance", "relevance_std", "relevance_sign_agreement")}
        for r in range(len(explainers)):
            merged = DrawReducer()
            for result in results:
                merged.merge(result.reducers[r])
            for name, value in zip(summary, merged.result()):
                summary[name][:, r] = _split_inputs(value, n_images)
        units = torch.cat([c.units for c in results])
        units = units.reshape(s, len(idx), len(INPUTS), n_images).permute(2, 1, 0, 3).numpy()
        return _summary_dataset(summary, units, coords, attack, attrs)

    if draws_path is None:
        return run(None)
    with store.atomic_zarr(draws_path) as tmp:
        _create_draws_store(tmp, coords, (len(INPUTS), len(explainers), len(idx), s, n_images, *image_shape))
        ds = run(Path(tmp))
        store.validate(ds)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            ds.assign_attrs({store.ALL_CHUNKS_ATTR: 1}).to_zarr(tmp, mode="a", write_empty_chunks=True)
    return ds
