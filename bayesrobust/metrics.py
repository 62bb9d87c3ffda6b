"""Stability metrics of explanations: pure functions, vectorised over images (docs/method.md §6.1-§6.3).

Every map function compares heatmaps ``h`` image by image. A *map* is the trailing part of an array:

- ``numpy.ndarray``: the last ``map_dims`` axes (default 3, i.e. ``(..., C, H, W)``; pass ``map_dims=1`` for
  flat maps ``(..., d)``). Leading axes are broadcast between the two arguments of a comparison.
- ``xarray.DataArray``: the dimensions ``channel``, ``height``, ``width`` that the array has (or the names
  given as ``map_dims``); every other dimension (``image``, ``rule``, ``layer``, ...) is kept, aligned and
  broadcast by name (:func:`xarray.apply_ufunc`), so the result is labelled like the input minus the map.
  Dask-backed arrays stay lazy.

Both arguments of a comparison must be of the same kind (both arrays or both DataArrays). A map of
``d = C·H·W`` values is always flattened in C order (channel slowest, width fastest); "flat index" below means
the index in that order.

Top-k selection (docs/method.md §6.1)
--------------------------
:func:`topk_indices` takes ``n = ⌊d·k/200⌋`` most positive and ``n`` most negative entries of the signed map.
Ties are broken deterministically:

1. the ``n`` most positive entries are the first ``n`` of a stable sort by decreasing value, so among equal
   values the lower flat index is taken first;
2. the ``n`` most negative entries are the first ``n`` of a stable sort by increasing value *among the entries
   not taken in step 1* (again lower flat index first), so the two halves never share an entry and the
   selection always has exactly ``2n`` entries (possible because ``k <= 100`` gives ``2n <= d``).

Step 2's exclusion matters only when equal values straddle both ends (e.g. a constant map). "Most positive"
means largest: if a map has fewer than ``n`` positive entries, the largest non-positive ones fill the half,
exactly as a sort of the signed map does.

``k`` is read as the decimal number written (``Fraction(repr(k))``), so ``⌊d·k/200⌋`` has no binary
rounding error (``d = 1000, k = 64.6`` gives 323, not 322).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NamedTuple, TypeVar

import numpy as np
import xarray as xr
from scipy import stats

__all__ = [
    "MAP_DIMS", "TestResult", "topk_count", "topk_indices", "topk_mask", "lrp_robustness",
    "topk_intersection", "kendall_tau", "spearman_rho", "cosine_similarity", "l1_distance", "l2_distance",
    "paired_difference", "mann_whitney_less", "spearman_with", "median_ci", "wilcoxon_signed_rank",
    "fdr_bh", "centre_of_mass_shift", "relative_input_stability", "relative_output_stability",
    "local_lipschitz_ratio", "max_sensitivity",
]

#: Dimensions of one map in a DataArray, flattened in this order.
MAP_DIMS = ("channel", "height", "width")

Maps = TypeVar("Maps", np.ndarray, xr.DataArray)
MapDims = int | Sequence[str] | None


class TestResult(NamedTuple):
    """A test statistic and its p-value (NaN when the test is undefined)."""

    statistic: float
    pvalue: float


# ---------------------------------------------------------------------------------------------------------
# Plumbing: flatten the maps of numpy arrays or DataArrays and call a function on (..., d) arrays.


def _map_dims_of(da: xr.DataArray, map_dims: MapDims) -> tuple[str, ...]:
    if map_dims is None:
        dims = tuple(d for d in MAP_DIMS if d in da.dims)
        if not dims:
            raise ValueError(f"DataArray with dims {da.dims} has none of the map dims {MAP_DIMS}; "
                             "pass map_dims=(names...)")
        return dims
    if isinstance(map_dims, int):
        _check_ndim(da.ndim, map_dims)
        return tuple(da.dims[-map_dims:])
    dims = (map_dims,) if isinstance(map_dims, str) else tuple(map_dims)
    missing = [d for d in dims if d not in da.dims]
    if missing:
        raise ValueError(f"map dims {missing} not in DataArray dims {da.dims}")
    return dims


def _check_ndim(ndim: int, map_dims: int) -> None:
    if isinstance(map_dims, bool) or not isinstance(map_dims, int) or map_dims < 1:
        raise ValueError(f"map_dims must be a positive int for numpy arrays, got {map_dims!r}")
    if ndim < map_dims:
        raise ValueError(f"array with {ndim} dims cannot hold maps of {map_dims} dims")


def _flat(x: np.ndarray, n_map: int) -> np.ndarray:
    """``x`` with its last ``n_map`` axes flattened into one, as float (ints become float64)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        if not (np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
            raise TypeError(f"heatmaps must be real numbers, got dtype {x.dtype}")
        x = x.astype(np.float64)
    return x.reshape(x.shape[: x.ndim - n_map] + (-1,))


def _apply(func: Callable[..., np.ndarray], arrays: Sequence[Maps], map_dims: MapDims, out: str,
           dtype=float, out_size: Callable[[int], int] | None = None) -> Maps:
    """Call ``func`` on flattened maps ``(..., d)`` of ``arrays``.

    ``out`` says what ``func`` returns: ``'scalar'`` → ``(...)``; ``'map'`` → ``(..., d)``, reshaped back to
    the map shape; ``'topk'`` → ``(..., out_size(d))``, on a new dimension ``topk``.
    """
    kinds = {isinstance(a, xr.DataArray) for a in arrays}
    if kinds == {True}:
        dims = _map_dims_of(arrays[0], map_dims)
        for a in arrays[1:]:
            if set(dims) - set(a.dims):
                raise ValueError(f"map dims {dims} not all in DataArray dims {a.dims}")
        sizes = [arrays[0].sizes[d] for d in dims]
        for a in arrays[1:]:
            if [a.sizes[d] for d in dims] != sizes:
                raise ValueError(f"maps differ in shape: {dict(zip(dims, sizes))} vs "
                                 f"{ {d: a.sizes[d] for d in dims} }")

        def core(*xs: np.ndarray) -> np.ndarray:
            res = func(*(_flat(x, len(dims)) for x in xs))
            return res.reshape(res.shape[:-1] + tuple(sizes)) if out == "map" else res

        out_dims = {"scalar": [], "map": list(dims), "topk": ["topk"]}[out]
        kwargs = {}
        if out == "topk":
            kwargs["output_sizes"] = {"topk": out_size(math.prod(sizes))}
        return xr.apply_ufunc(core, *arrays, input_core_dims=[list(dims)] * len(arrays),
                              output_core_dims=[out_dims], dask="parallelized", output_dtypes=[dtype],
                              dask_gufunc_kwargs=dict(allow_rechunk=True, **kwargs))
    if kinds != {False}:
        raise TypeError("pass either numpy arrays or xarray DataArrays, not a mix")
    n_map = 3 if map_dims is None else map_dims
    xs = [np.asarray(a) for a in arrays]
    for x in xs:
        _check_ndim(x.ndim, n_map)
    map_shape = xs[0].shape[xs[0].ndim - n_map:]
    for x in xs[1:]:
        if x.shape[x.ndim - n_map:] != map_shape:
            raise ValueError(f"maps differ in shape: {map_shape} vs {x.shape[x.ndim - n_map:]}")
    lead = np.broadcast_shapes(*(x.shape[: x.ndim - n_map] for x in xs))
    flats = [np.broadcast_to(_flat(x, n_map), lead + (math.prod(map_shape),)) for x in xs]
    res = func(*flats)
    return res.reshape(lead + map_shape) if out == "map" else res


# ---------------------------------------------------------------------------------------------------------
# Top-k selection and LRP robustness (docs/method.md §6.1, §6.2).


def topk_count(d: int, k_percent: float, per_side: bool = True) -> int:
    """How many entries a top-``k_percent`` selection of a map of ``d`` values takes.

    Parameters
    ----------
    d
        Number of values of one map (``C·H·W``).
    k_percent
        The percentage ``k``, in ``(0, 100]``.
    per_side
        ``True`` (default): ``⌊d·k/200⌋``, the size of each half of :func:`topk_indices`. ``False``:
        ``⌊d·k/100⌋``, the size of a one-sided selection (:func:`topk_intersection`).

    Returns
    -------
    int
        The count, at least 1.

    Raises
    ------
    ValueError
        ``k_percent`` not a number in ``(0, 100]``, or so small that the count is 0 (the message says the
        smallest ``k`` that selects one entry).
    """
    if isinstance(k_percent, bool) or not isinstance(k_percent, (int, float, np.integer, np.floating)):
        raise ValueError(f"k_percent must be a number in (0, 100], got {k_percent!r}")
    if not 0 < k_percent <= 100:  # also rejects NaN
        raise ValueError(f"k_percent must be in (0, 100], got {k_percent!r}")
    denom = 200 if per_side else 100
    n = math.floor(Fraction(repr(float(k_percent))) * d / denom)
    if n == 0:
        raise ValueError(f"k_percent={k_percent!r} selects no entry of a map of {d} values "
                         f"(⌊{d}·k/{denom}⌋ = 0); the smallest k selecting one is {denom / d:.6g}")
    return n


def _top_desc(h: np.ndarray, n: int) -> np.ndarray:
    """Flat indices ``(..., n)`` of the ``n`` largest values, decreasing, equal values by lower index."""
    return np.argsort(np.negative(h), axis=-1, kind="stable")[..., :n]


def _check_finite(*hs: np.ndarray) -> None:
    for h in hs:
        if np.isnan(h).any():
            raise ValueError("heatmap contains NaN; a top-k selection of it is undefined")


def _topk_flat(h: np.ndarray, k_percent: float) -> np.ndarray:
    _check_finite(h)
    n = topk_count(h.shape[-1], k_percent)
    pos = _top_desc(h, n)
    taken = np.zeros(h.shape, dtype=bool)
    np.put_along_axis(taken, pos, True, axis=-1)
    # The first n entries not taken by `pos` in increasing order lie within its first 2n (<= d) entries.
    asc = np.argsort(h, axis=-1, kind="stable")[..., : 2 * n]
    free = ~np.take_along_axis(taken, asc, axis=-1)
    chosen = free & (np.cumsum(free, axis=-1) <= n)
    neg = np.take_along_axis(asc, np.argsort(~chosen, axis=-1, kind="stable")[..., :n], axis=-1)
    return np.concatenate([pos, neg], axis=-1)


def topk_indices(h: Maps, k_percent: float, *, map_dims: MapDims = None) -> Maps:
    """Flat indices of the top-``k_percent`` selection of each signed heatmap (docs/method.md §6.1).

    With ``d`` values per map and ``n = ⌊d·k/200⌋``, the selection is the ``n`` most positive entries
    followed by the ``n`` most negative ones; tie-breaking as in the module docstring.

    Parameters
    ----------
    h
        Heatmaps, ``(..., C, H, W)`` (numpy; see ``map_dims``) or a DataArray with map dims.
    k_percent
        ``k`` in ``(0, 100]`` (reference: 20 or 30).
    map_dims
        Which dims form one map (module docstring); default: the last 3 axes, or the DataArray's
        ``channel``/``height``/``width``.

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        Integer flat indices (C order over the map), shape ``(..., 2n)``: ``[..., :n]`` by decreasing value,
        ``[..., n:]`` by increasing value. A DataArray gets the new dimension ``topk``.

    Raises
    ------
    ValueError
        Bad ``k_percent`` or ``n = 0`` (:func:`topk_count`), NaN in ``h``, or bad ``map_dims``.
    """
    return _apply(lambda x: _topk_flat(x, k_percent), [h], map_dims, "topk", dtype=np.int64,
                  out_size=lambda d: 2 * topk_count(d, k_percent))


def _mask_flat(h: np.ndarray, k_percent: float) -> np.ndarray:
    mask = np.zeros(h.shape, dtype=bool)
    np.put_along_axis(mask, _topk_flat(h, k_percent), True, axis=-1)
    return mask


def topk_mask(h: Maps, k_percent: float, *, map_dims: MapDims = None) -> Maps:
    """Boolean mask of the top-``k_percent`` selection S(h) of :func:`topk_indices`, shaped like ``h``.

    Each map has exactly ``2·⌊d·k/200⌋`` ``True`` entries. Parameters and errors as :func:`topk_indices`.
    """
    return _apply(lambda x: _mask_flat(x, k_percent), [h], map_dims, "map", dtype=bool)


def lrp_robustness(h_clean: Maps, h_adv: Maps, k_percent: float, *, map_dims: MapDims = None) -> Maps:
    """LRP robustness of each image: ``|S(h(x)) ∩ S(h(x̃))| / |S(h(x))|`` (Carbone et al. 2021, docs/method.md §6.2).

    ``S`` is the top-``k_percent`` selection of :func:`topk_indices` (``2·⌊d·k/200⌋`` entries: most positive
    and most negative). The intersection is of pixel positions: a pixel among the most positive of one map
    and the most negative of the other counts as shared, as in the definition.

    Parameters
    ----------
    h_clean, h_adv
        Heatmaps of the clean and the adversarial inputs, same map shape, leading dims broadcast.
    k_percent
        ``k`` in ``(0, 100]``; ``k = 100`` selects every entry (robustness 1).
    map_dims
        As :func:`topk_indices`.

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        Values in ``[0, 1]`` with the map dims removed.
    """
    def func(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        shared = (_mask_flat(a, k_percent) & _mask_flat(b, k_percent)).sum(axis=-1)
        return shared / (2 * topk_count(a.shape[-1], k_percent))
    return _apply(func, [h_clean, h_adv], map_dims, "scalar")


def topk_intersection(h1: Maps, h2: Maps, k_percent: float, *, map_dims: MapDims = None) -> Maps:
    """Top-k intersection of the positive attributions (Ghorbani et al. 2019; seed 002).

    The fraction of the ``n = ⌊d·k/100⌋`` largest entries of ``h1`` that are also among the ``n`` largest of
    ``h2`` (one-sided, unlike :func:`lrp_robustness`). Equal values: lower flat index first. The largest
    entries of the signed map are the top-k of its positive part whenever it has ``n`` positive entries;
    otherwise non-positive entries are ranked by value rather than tied at zero.

    Parameters
    ----------
    h1, h2
        Heatmaps, same map shape.
    k_percent
        ``k`` in ``(0, 100]`` of the ``d`` values per map (seed 002 fixes a count, e.g. 1000 of 3072 pixels,
        i.e. ``k ≈ 32.6``).
    map_dims
        As :func:`topk_indices`.

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        Values in ``[0, 1]``, map dims removed.

    Raises
    ------
    ValueError
        Bad ``k_percent``, ``⌊d·k/100⌋ = 0``, or NaN in a map.
    """
    def func(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        _check_finite(a, b)
        n = topk_count(a.shape[-1], k_percent, per_side=False)
        ma = np.zeros(a.shape, dtype=bool)
        np.put_along_axis(ma, _top_desc(a, n), True, axis=-1)
        return np.take_along_axis(ma, _top_desc(b, n), axis=-1).sum(axis=-1) / n
    return _apply(func, [h1, h2], map_dims, "scalar")


# ---------------------------------------------------------------------------------------------------------
# Rank correlations between maps.


def _runs(sorted_keys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by ``sorted_keys`` (each (R, d)): the dense rank of each sorted entry (0, 1, ...)
    and, per row, the number of pairs of entries equal in every key (``Σ_groups t(t − 1)/2``)."""
    rows, d = sorted_keys[0].shape
    same = np.ones((rows, max(d - 1, 0)), dtype=bool)
    for s in sorted_keys:
        same &= s[:, 1:] == s[:, :-1]
    new = np.concatenate([np.ones((rows, min(d, 1)), dtype=bool), ~same], axis=-1)
    idx = np.arange(d)
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=-1)
    return np.cumsum(new, axis=-1) - 1, (idx - start).sum(axis=-1)


def _dense_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense integer ranks (0, 1, ...) of each row of ``x`` (R, d) and its number of tied pairs."""
    order = np.argsort(x, axis=-1, kind="stable")
    dense, ties = _runs([np.take_along_axis(x, order, axis=-1)])
    ranks = np.empty_like(dense)
    np.put_along_axis(ranks, order, dense, axis=-1)
    return ranks, ties


def _inversions(y: np.ndarray, base: int = 8) -> np.ndarray:
    """Per row of non-negative ints ``y`` (R, d), the number of pairs ``i < j`` with ``y[i] > y[j]``.

    Blocks of ``base`` entries count their inversions pairwise; then a bottom-up merge sort, vectorised
    over rows and blocks: at width ``w`` each right half counts the entries of its sorted left half that
    exceed it (one ``searchsorted`` over all blocks, made globally sorted by a per-block offset).
    O(R·d·(base + log²d)).
    """
    rows, d = y.shape
    size = 1 << max(d - 1, 0).bit_length()
    top = int(y.max(initial=0)) + 1
    a = np.full((rows, size), top, dtype=np.int64)  # padding at the end, larger than all: no inversions
    a[:, :d] = y
    base = min(base, size)
    blocks = a.reshape(rows, -1, base)
    upper = np.triu_indices(base, 1)
    total = np.zeros(rows, dtype=np.int64)
    chunk = max(1, (1 << 22) // (size * base))  # bounds the (chunk, size/base, pairs) temporary
    for s in range(0, rows, chunk):
        b = blocks[s:s + chunk]
        total[s:s + chunk] = (b[..., upper[0]] > b[..., upper[1]]).sum(axis=(-1, -2))
    a = np.sort(blocks, axis=-1).reshape(rows, size)
    w = base
    while w < size:
        pairs = a.reshape(-1, 2, w)  # (rows·size/2w, 2, w), both halves sorted
        groups = pairs.shape[0]
        offset = (np.arange(groups, dtype=np.int64) * (top + 1))[:, None]
        left = (pairs[:, 0] + offset).ravel()
        starts = (np.arange(groups) * w)[:, None]
        not_greater = np.searchsorted(left, pairs[:, 1] + offset, side="right") - starts
        total += (w - not_greater).reshape(rows, -1).sum(axis=-1)
        a = np.sort(a.reshape(rows, -1, 2 * w), axis=-1, kind="stable").reshape(rows, size)
        w *= 2
    return total


def _kendall_flat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    lead = x.shape[:-1]
    d = x.shape[-1]
    x = x.reshape(-1, d)
    y = y.reshape(-1, d)
    nan = np.isnan(x).any(axis=-1) | np.isnan(y).any(axis=-1)
    rx, xtie = _dense_ranks(np.where(nan[:, None], 0, x))
    ry, ytie = _dense_ranks(np.where(nan[:, None], 0, y))
    order = np.lexsort((ry, rx), axis=-1)  # by x, equal x by y: pairs tied in x are never inversions
    ry_sorted = np.take_along_axis(ry, order, axis=-1)
    _, ntie = _runs([np.take_along_axis(rx, order, axis=-1), ry_sorted])
    discordant = _inversions(ry_sorted)
    tot = d * (d - 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (tot - xtie - ytie + ntie - 2 * discordant) / np.sqrt((tot - xtie) * (tot - ytie))
    tau = np.where(nan, np.nan, np.clip(tau, -1.0, 1.0))
    return tau.reshape(lead)


def kendall_tau(h1: Maps, h2: Maps, *, map_dims: MapDims = None) -> Maps:
    """Kendall's τ-b between the values of two maps, per image (seed 002; as ``scipy.stats.kendalltau``).

    ``τ_b = (n_c − n_d) / sqrt((n₀ − n₁)(n₀ − n₂))`` over the ``n₀ = d(d−1)/2`` pairs of pixels, with ``n₁``,
    ``n₂`` the pairs tied in ``h1``, ``h2``. Computed in O(d log²d) per image by counting inversions
    (Knight 1966), vectorised over images.

    Parameters
    ----------
    h1, h2
        Heatmaps, same map shape, leading dims broadcast.
    map_dims
        As :func:`topk_indices`.

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        τ-b in ``[−1, 1]``, map dims removed; NaN where a map is constant or holds NaN (as scipy).
    """
    return _apply(_kendall_flat, [h1, h2], map_dims, "scalar")


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    return np.clip(r, -1.0, 1.0)


def _spearman_flat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    nan = np.isnan(x).any(axis=-1) | np.isnan(y).any(axis=-1)
    rx = stats.rankdata(np.where(nan[..., None], 0, x), axis=-1)  # average ranks for ties
    ry = stats.rankdata(np.where(nan[..., None], 0, y), axis=-1)
    return np.where(nan, np.nan, _pearson_rows(rx, ry))


def spearman_rho(h1: Maps, h2: Maps, *, map_dims: MapDims = None) -> Maps:
    """Spearman's ρ between the values of two maps, per image (as ``scipy.stats.spearmanr``).

    The Pearson correlation of the average ranks (ties share the mean of their ranks). Parameters and
    returns as :func:`kendall_tau`: ρ in ``[−1, 1]``, map dims removed, NaN where a map is constant or holds
    NaN.
    """
    return _apply(_spearman_flat, [h1, h2], map_dims, "scalar")


# ---------------------------------------------------------------------------------------------------------
# Geometric similarities.


def cosine_similarity(h1: Maps, h2: Maps, *, map_dims: MapDims = None) -> Maps:
    """Cosine similarity ``⟨h1, h2⟩ / (‖h1‖₂ ‖h2‖₂)`` of the flattened maps, per image (seed 002).

    Returns NaN where a map is all zeros. Parameters as :func:`kendall_tau`.
    """
    def func(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return _apply(func, [h1, h2], map_dims, "scalar")


def l1_distance(h1: Maps, h2: Maps, *, map_dims: MapDims = None) -> Maps:
    """L1 distance ``Σ |h1 − h2|`` over the map, per image. Parameters as :func:`kendall_tau`."""
    return _apply(lambda a, b: np.abs(a - b).sum(axis=-1), [h1, h2], map_dims, "scalar")


def l2_distance(h1: Maps, h2: Maps, *, map_dims: MapDims = None) -> Maps:
    """L2 (Euclidean) distance ``‖h1 − h2‖₂`` over the map, per image. Parameters as :func:`kendall_tau`."""
    return _apply(lambda a, b: np.linalg.norm(a - b, axis=-1), [h1, h2], map_dims, "scalar")


# ---------------------------------------------------------------------------------------------------------
# Explanation-robustness ratios at an adversarial point (docs/method.md §11.4). Arrays (N, ...) with the
# image first; every norm is the L2 norm of the whole flattened entry, as Quantus does.

#: Added where a denominator entry is 0 (Quantus' ``eps_min``).
EPS_MIN = 1e-6


def _rows(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def _relative_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """‖(a − b) / a‖₂ per row, with ``EPS_MIN`` in place of a zero entry of ``a``."""
    return np.linalg.norm((a - b) / (a + (a == 0) * EPS_MIN), axis=1)


def centre_of_mass_shift(h1, h2) -> np.ndarray:
    """Distance in pixels between the centres of mass of |h1| and |h2|, maps (N, H, W) → (N,) (Ghorbani
    et al. 2019). An all-zero map has its centre at the origin."""
    def centre(h: np.ndarray) -> np.ndarray:
        w = np.abs(np.asarray(h, dtype=np.float64))
        w = w / np.maximum(w.sum(axis=(-2, -1), keepdims=True), 1e-300)
        return np.stack([(w.sum(-1) * np.arange(w.shape[-2])).sum(-1),
                         (w.sum(-2) * np.arange(w.shape[-1])).sum(-1)], axis=-1)
    return np.linalg.norm(centre(h1) - centre(h2), axis=-1)


def relative_input_stability(e, e_adv, x, x_adv) -> np.ndarray:
    """RIS = ‖(e − e′)/e‖₂ / max(‖(x − x′)/x‖₂, ε) per image (Agarwal et al. 2022, arXiv:2203.06877), with
    Quantus' guards (ε = :data:`EPS_MIN` for a zero entry or a zero denominator). Larger: less stable."""
    den = _relative_change(_rows(x), _rows(x_adv))
    return _relative_change(_rows(e), _rows(e_adv)) / (den + (den == 0) * EPS_MIN)


def relative_output_stability(e, e_adv, logits, logits_adv) -> np.ndarray:
    """ROS = ‖(e − e′)/e‖₂ / max(‖h − h′‖₂, ε) per image, h the logits (N, classes) (Agarwal et al. 2022;
    the output change is absolute, as in Quantus), guards as :func:`relative_input_stability`."""
    den = np.linalg.norm(_rows(logits) - _rows(logits_adv), axis=1)
    return _relative_change(_rows(e), _rows(e_adv)) / (den + (den == 0) * EPS_MIN)


def local_lipschitz_ratio(e, e_adv, x, x_adv) -> np.ndarray:
    """‖e − e′‖₂ / ‖x − x′‖₂ per image (Alvarez-Melis & Jaakkola 2018) at the given point x′ (no search);
    NaN where x′ = x."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.linalg.norm(_rows(e) - _rows(e_adv), axis=1) / np.linalg.norm(_rows(x) - _rows(x_adv), axis=1)


def max_sensitivity(explain: Callable[[np.ndarray], np.ndarray], x, *, radius: float = 0.02,
                    n_samples: int = 10, seed: int = 0, e=None) -> np.ndarray:
    """Noise-based max-sensitivity (Yeh et al. 2019, arXiv:1901.09392): max over ``n_samples`` uniform
    perturbations δ ∈ [−r, r]^d (clipped to [0, 1]) of ‖e(x + δ) − e(x)‖₂ / ‖e(x)‖₂, per image.

    ``explain`` maps a batch (N, ...) to maps (N, ...) and is called once per sample on the whole batch
    (plus once for ``e`` unless given). Noise comes from ``numpy.random.default_rng(seed)``.
    """
    x = np.asarray(x)
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be > 0 and finite, got {radius!r}")
    base = _rows(explain(x) if e is None else e)
    rng = np.random.default_rng(seed)
    scale = np.maximum(np.linalg.norm(base, axis=1), EPS_MIN)
    worst = np.full(x.shape[0], -np.inf)
    for _ in range(n_samples):
        noisy = np.clip(x + rng.uniform(-radius, radius, x.shape), 0, 1).astype(x.dtype)
        worst = np.maximum(worst, np.linalg.norm(_rows(explain(noisy)) - base, axis=1) / scale)
    return worst


# ---------------------------------------------------------------------------------------------------------
# Per-image statistics for the analysis.


def paired_difference(a: Maps, b: Maps, *, dim: str = "image") -> Maps:
    """``a − b`` image by image, refusing to pair different images.

    Parameters
    ----------
    a, b
        Per-image values (e.g. LRP robustness of two models). numpy arrays must have the same shape;
        DataArrays must have identical ``dim`` coordinates (other dims are broadcast by name).
    dim
        The image dimension of DataArrays.

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        The differences (NaN where either value is NaN).

    Raises
    ------
    ValueError
        Shapes differ, or the DataArrays hold different images (or in another order).
    TypeError
        A numpy array paired with a DataArray.
    """
    if isinstance(a, xr.DataArray) and isinstance(b, xr.DataArray):
        if dim in a.dims or dim in b.dims:
            if dim not in a.indexes or dim not in b.indexes or not a.indexes[dim].equals(b.indexes[dim]):
                raise ValueError(f"paired values must cover the same {dim!r} coordinate in the same order")
        return a - b
    if isinstance(a, xr.DataArray) or isinstance(b, xr.DataArray):
        raise TypeError("pass either numpy arrays or xarray DataArrays, not a mix")
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same shape, got {a.shape} and {b.shape}")
    return a - b


def _finite_1d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[~np.isnan(x)]


def mann_whitney_less(a, b) -> TestResult:
    """One-sided Mann–Whitney U test that ``a`` is stochastically less than ``b`` (docs/method.md §6.4).

    ``scipy.stats.mannwhitneyu(a, b, alternative='less')`` (tie-corrected; exact or asymptotic p as scipy
    chooses) after dropping NaN; the samples are independent, so they may differ in size.

    Parameters
    ----------
    a, b
        Sample values (any shape, flattened; numpy, DataArray or sequence).

    Returns
    -------
    TestResult
        ``U`` of ``a`` and the p-value; both NaN if a sample is empty after dropping NaN.
    """
    a, b = _finite_1d(a), _finite_1d(b)
    if a.size == 0 or b.size == 0:
        return TestResult(np.nan, np.nan)
    res = stats.mannwhitneyu(a, b, alternative="less")
    return TestResult(float(res.statistic), float(res.pvalue))


def spearman_with(a, b) -> TestResult:
    """Spearman's ρ and its two-sided p-value between two per-image vectors, NaN-safe.

    Pairs where either value is NaN are dropped. Fewer than 3 pairs left, or a constant vector, give NaN
    (where scipy would warn).

    Parameters
    ----------
    a, b
        Paired values, same number of elements (flattened).

    Returns
    -------
    TestResult
        ``(rho, pvalue)``.

    Raises
    ------
    ValueError
        ``a`` and ``b`` differ in size.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman_with needs paired values, got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return TestResult(np.nan, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.spearmanr(a, b)
    return TestResult(float(res.statistic), float(res.pvalue))


#: Bootstrap resamples of :func:`median_ci` (percentile CI; its Monte Carlo error on a 95% bound is well below
#: the spacing of LRP robustness values at 500 images).
BOOTSTRAP_RESAMPLES = 2000


class MedianCI(NamedTuple):
    """A median and the bounds of its confidence interval (NaN when undefined)."""

    median: float
    low: float
    high: float


def median_ci(values, confidence: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
              ) -> MedianCI:
    """Median of per-image values and its bootstrap confidence interval over images (docs/method.md §6.4).

    Applied to paired differences (one value per image, model minus reference) this is the *paired*
    bootstrap: resampling images keeps each image's pair together. ``scipy.stats.bootstrap``, percentile
    method (BCa is unstable for the median of the many tied values LRP robustness takes), ``n_resamples``
    resamples from ``numpy.random.default_rng(seed)``, so the interval is reproducible. NaN are dropped; fewer
    than 2 values give NaN bounds; identical values give a zero-width interval.
    """
    v = _finite_1d(values)
    if v.size == 0:
        return MedianCI(np.nan, np.nan, np.nan)
    median = float(np.median(v))
    if v.size < 2:
        return MedianCI(median, np.nan, np.nan)
    if np.all(v == v[0]):
        return MedianCI(median, median, median)
    res = stats.bootstrap((v,), np.median, n_resamples=n_resamples, confidence_level=confidence,
                          method="percentile", vectorized=True, axis=-1, rng=np.random.default_rng(seed))
    return MedianCI(median, float(res.confidence_interval.low), float(res.confidence_interval.high))


def wilcoxon_signed_rank(differences) -> TestResult:
    """Two-sided Wilcoxon signed-rank test that paired differences are symmetric about 0.

    ``scipy.stats.wilcoxon`` (zero differences dropped, ``zero_method='wilcox'``; exact or normal
    approximation as scipy chooses) after dropping NaN. The paired counterpart of the paper's unpaired
    Mann–Whitney test: every model is explained on the same images. NaN when no difference is non-zero.
    """
    d = _finite_1d(differences)
    d = d[d != 0]
    if d.size == 0:
        return TestResult(np.nan, np.nan)
    res = stats.wilcoxon(d)
    return TestResult(float(res.statistic), float(res.pvalue))


def fdr_bh(pvalues) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values of one family of tests (``scipy.stats.false_discovery_control``),
    same shape as ``pvalues``; NaN entries stay NaN and are not counted in the family."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = ~np.isnan(p)
    if finite.any():
        out[finite] = stats.false_discovery_control(p[finite], method="bh")
    return out
