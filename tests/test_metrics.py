"""Metrics against hand-computed examples, scipy, and their own per-image loop."""

import math
import warnings

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from bayesrobust import metrics as m

PAIRWISE = [m.lrp_robustness, m.topk_intersection, m.kendall_tau, m.spearman_rho, m.cosine_similarity,
            m.l1_distance, m.l2_distance]


def _pairwise(func, a, b, **kw):
    if func in (m.lrp_robustness, m.topk_intersection):
        return func(a, b, 20, **kw)
    return func(a, b, **kw)


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 5, 3, 4, 4))  # (rule, image, channel, height, width)
    return h, h + rng.normal(scale=0.7, size=h.shape)


# ---- top-k selection: hand-computed ------------------------------------------------------------------


@pytest.mark.parametrize("h, k, expected", [
    ([3, 1, 1, 2, -1, -1], 67, [0, 3, 4, 5]),        # n = ⌊6·67/200⌋ = 2
    ([3, 1, 1, 2, -1, -1], 50, [0, 4]),              # n = 1; equal -1 at 4 and 5: lower index first
    ([1, 5, 5, 0, -2], 40, [1, 4]),                  # equal maxima at 1 and 2: lower index first
    ([0, 0, 0, 0], 100, [0, 1, 2, 3]),               # constant map: positives 0, 1; negatives the rest
    ([0, 0, 0, 0, 0], 40, [0, 1]),                   # ties straddle both ends: halves stay disjoint
    ([2, 1, -5, 0.5], 100, [0, 1, 2, 3]),            # k = 100: everything, positive half by value
    ([-1, -2, -3, -4], 50, [0, 3]),                  # no positive entry: the largest fill the half
])
def test_topk_indices_hand(h, k, expected):
    np.testing.assert_array_equal(m.topk_indices(np.array(h, float), k, map_dims=1), expected)


def test_topk_indices_order_within_halves():
    h = np.array([0.1, 0.9, -0.5, 0.7, -0.8, 0.0, -0.2, 0.3])  # d = 8, k = 75 → n = 3
    np.testing.assert_array_equal(m.topk_indices(h, 75, map_dims=1), [1, 3, 7, 4, 2, 6])


def test_topk_count_edges():
    assert m.topk_count(10, 20) == 1            # smallest k selecting one entry per side
    assert m.topk_count(10, 100) == 5
    assert m.topk_count(784, 20) == 78
    assert m.topk_count(784, 0.26) == 1
    assert m.topk_count(1000, 64.6) == 323      # float arithmetic would say 322
    assert m.topk_count(10, 10, per_side=False) == 1


@pytest.mark.parametrize("k", [0, -5, 100.5, float("nan"), "20", True, None])
def test_invalid_k(k):
    with pytest.raises(ValueError, match="k_percent"):
        m.topk_indices(np.arange(10.0), k, map_dims=1)


def test_k_selecting_nothing():
    with pytest.raises(ValueError, match=r"k_percent=19.9 selects no entry.*smallest k selecting one is 20"):
        m.topk_mask(np.arange(10.0), 19.9, map_dims=1)
    with pytest.raises(ValueError, match="selects no entry"):
        m.topk_intersection(np.arange(10.0), np.arange(10.0), 9, map_dims=1)


def test_topk_mask_shape_and_count(maps):
    h, _ = maps
    mask = m.topk_mask(h, 30)
    assert mask.shape == h.shape and mask.dtype == bool
    n = m.topk_count(48, 30)
    assert (mask.sum(axis=(-3, -2, -1)) == 2 * n).all()
    flat = h.reshape(2, 5, -1)
    sel = np.where(mask.reshape(2, 5, -1), flat, np.nan)
    rest = np.where(mask.reshape(2, 5, -1), np.nan, flat)
    # every unselected value lies between the selected negative and positive halves
    assert (np.sort(sel)[..., n - 1] <= np.nanmin(rest, axis=-1)).all()
    assert (np.sort(sel)[..., n] >= np.nanmax(rest, axis=-1)).all()


def test_topk_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        m.topk_mask(np.array([1.0, np.nan, 0.0, 2.0]), 100, map_dims=1)


# ---- LRP robustness and top-k intersection -----------------------------------------------------------


def test_lrp_robustness_hand():
    h1 = np.array([5, 4, 0, 0, -3, -4.0])    # S = {0, 1} ∪ {5, 4}
    h2 = np.array([5, 0, 4, 0, -4, -3.0])    # S = {0, 2} ∪ {4, 5}
    assert m.lrp_robustness(h1, h2, 67, map_dims=1) == 0.75
    assert m.lrp_robustness(h1, -h1, 67, map_dims=1) == 1.0  # positions, not signs (docs/method.md §6.2)


def test_lrp_robustness_identical_and_disjoint(maps):
    h, g = maps
    np.testing.assert_array_equal(m.lrp_robustness(h, h, 20), 1.0)
    a = np.array([5, 4, -3, -4, 0, 0, 0, 0.0])
    b = np.array([0, 0, 0, 0, 5, 4, -3, -4.0])
    assert m.lrp_robustness(a, b, 50, map_dims=1) == 0.0
    np.testing.assert_array_equal(m.lrp_robustness(h, g, 100), 1.0)  # k = 100 selects everything


def test_topk_intersection_hand():
    h1 = np.array([4, 3, 2, 1, 0.0])
    h2 = np.array([0, 3, 4, 1, 2.0])
    assert m.topk_intersection(h1, h2, 40, map_dims=1) == 0.5     # {0, 1} vs {2, 1}
    assert m.topk_intersection(h1, h2, 100, map_dims=1) == 1.0
    assert m.topk_intersection(h1, h2, 20, map_dims=1) == 0.0     # {0} vs {2}


# ---- rank correlations -------------------------------------------------------------------------------


def test_rank_correlations_hand():
    x, y = np.array([1, 2, 3.0]), np.array([1, 3, 2.0])
    assert m.kendall_tau(x, y, map_dims=1) == pytest.approx(1 / 3)
    assert m.spearman_rho(x, y, map_dims=1) == pytest.approx(0.5)
    x, y = np.array([1, 1, 2.0]), np.array([1, 2, 3.0])   # one pair tied in x: τ_b = 2 / √(2·3)
    assert m.kendall_tau(x, y, map_dims=1) == pytest.approx(2 / math.sqrt(6))


def _scipy_loop(func, a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([func(u, v).statistic for u, v in zip(a, b)])


@pytest.mark.parametrize("d", [1, 2, 7, 16, 33, 200])
@pytest.mark.parametrize("tied", [False, True])
def test_rank_correlations_match_scipy(d, tied):
    rng = np.random.default_rng(d)
    if tied:
        a = rng.integers(-2, 3, size=(40, d)).astype(float)
        b = rng.integers(0, 3, size=(40, d)).astype(float)
        a[0], b[1] = 1.0, 0.0                    # constant rows: NaN, as scipy
    else:
        a = rng.normal(size=(40, d))
        b = a + rng.normal(size=(40, d))
    a[2, 0] = np.nan
    np.testing.assert_allclose(m.kendall_tau(a, b, map_dims=1), _scipy_loop(stats.kendalltau, a, b),
                               atol=1e-12)
    np.testing.assert_allclose(m.spearman_rho(a, b, map_dims=1), _scipy_loop(stats.spearmanr, a, b),
                               atol=1e-12)


# ---- vectorised == per-image loop; geometry ----------------------------------------------------------


@pytest.mark.parametrize("func", PAIRWISE)
def test_vectorised_equals_loop(func, maps):
    h, g = maps
    out = _pairwise(func, h, g)
    assert out.shape == (2, 5)
    loop = np.array([[_pairwise(func, h[r, i], g[r, i]) for i in range(5)] for r in range(2)])
    np.testing.assert_allclose(out, loop, rtol=1e-12)


def test_topk_vectorised_equals_loop(maps):
    h, _ = maps
    idx = m.topk_indices(h, 20)
    for r in range(2):
        for i in range(5):
            np.testing.assert_array_equal(idx[r, i], m.topk_indices(h[r, i], 20))


def test_leading_dims_broadcast(maps):
    h, g = maps
    np.testing.assert_allclose(m.l2_distance(h[:1], g), m.l2_distance(np.repeat(h[:1], 2, axis=0), g))


def test_geometry_hand():
    a, b = np.array([3.0, 0, 4]), np.array([0.0, 4, 3])
    assert m.l1_distance(a, b, map_dims=1) == 8
    assert m.l2_distance(a, b, map_dims=1) == pytest.approx(math.sqrt(26))
    assert m.cosine_similarity(a, b, map_dims=1) == pytest.approx(12 / 25)
    assert np.isnan(m.cosine_similarity(a, np.zeros(3), map_dims=1))


def test_bad_shapes_and_mixed_inputs(maps):
    h, g = maps
    with pytest.raises(ValueError, match="maps differ in shape"):
        m.l1_distance(h, g[..., :3])
    with pytest.raises(ValueError, match="cannot hold maps"):
        m.l1_distance(np.zeros(4), np.zeros(4))
    with pytest.raises(TypeError, match="not a mix"):
        m.l1_distance(xr.DataArray(h[0, 0], dims=m.MAP_DIMS), h[0, 0])


# ---- DataArrays ---------------------------------------------------------------------------------------


def _da(h):
    return xr.DataArray(h, dims=("rule", "image") + m.MAP_DIMS,
                        coords={"rule": ["epsilon", "gamma"], "image": [10, 11, 12, 13, 14]})


@pytest.mark.parametrize("func", PAIRWISE)
def test_dataarray_keeps_image_dims(func, maps):
    h, g = maps
    out = _pairwise(func, _da(h), _da(g))
    assert out.dims == ("rule", "image")
    assert list(out.image.values) == [10, 11, 12, 13, 14]
    np.testing.assert_allclose(out.values, _pairwise(func, h, g), rtol=1e-12)
    # alignment by name: a transposed argument gives the same values
    again = _pairwise(func, _da(h), _da(g).transpose("image", "height", "channel", "width", "rule"))
    np.testing.assert_allclose(again.transpose(*out.dims).values, out.values, rtol=1e-12)


def test_dataarray_mask_and_indices(maps):
    h, _ = maps
    mask = m.topk_mask(_da(h), 20)
    assert mask.dims == _da(h).dims and mask.dtype == bool
    np.testing.assert_array_equal(mask.values, m.topk_mask(h, 20))
    idx = m.topk_indices(_da(h), 20)
    assert idx.dims == ("rule", "image", "topk") and idx.sizes["topk"] == 2 * m.topk_count(48, 20)


def test_dataarray_lazy_dask(maps):
    h, g = maps
    out = m.lrp_robustness(_da(h).chunk(image=2), _da(g).chunk(image=2), 20)
    assert out.chunks is not None
    np.testing.assert_array_equal(out.compute().values, m.lrp_robustness(h, g, 20))
    mask = m.topk_mask(_da(h).chunk(image=2), 20)
    np.testing.assert_array_equal(mask.compute().values, m.topk_mask(h, 20))


def test_dataarray_map_dims(maps):
    h, g = maps
    flat = xr.DataArray(h.reshape(2, 5, -1), dims=("rule", "image", "pixel"))
    out = m.kendall_tau(flat, flat * 2, map_dims=["pixel"])
    np.testing.assert_allclose(out.values, 1.0)
    with pytest.raises(ValueError, match="none of the map dims"):
        m.kendall_tau(flat, flat)
    with pytest.raises(ValueError, match=r"map dims \['px'\] not in"):
        m.kendall_tau(flat, flat, map_dims=["px"])


# ---- per-image statistics -----------------------------------------------------------------------------


def test_paired_difference():
    a = xr.DataArray([0.5, 0.7], dims="image", coords={"image": [3, 8]})
    b = xr.DataArray([0.25, 0.5], dims="image", coords={"image": [3, 8]})
    np.testing.assert_allclose(m.paired_difference(a, b).values, [0.25, 0.2])
    with pytest.raises(ValueError, match="same 'image' coordinate"):
        m.paired_difference(a, b.assign_coords(image=[8, 3]))
    with pytest.raises(ValueError, match="same shape"):
        m.paired_difference(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="not a mix"):
        m.paired_difference(a, np.zeros(2))


def test_mann_whitney_less():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.normal(0.8, size=25)
    ref = stats.mannwhitneyu(a, b, alternative="less")
    res = m.mann_whitney_less(np.append(a, np.nan), b)
    assert res == pytest.approx((ref.statistic, ref.pvalue))
    assert res.pvalue < 0.05 < m.mann_whitney_less(b, a).pvalue
    assert np.isnan(m.mann_whitney_less([np.nan], b).pvalue)


def test_spearman_with():
    a = np.array([1, 2, 3, 4, np.nan, 6.0])
    b = np.array([2, 1, 4, 3, 5, np.nan])
    ref = stats.spearmanr([1, 2, 3, 4], [2, 1, 4, 3])
    assert m.spearman_with(a, b) == pytest.approx((ref.statistic, ref.pvalue))
    assert np.isnan(m.spearman_with([1, 1, 1, 1], [1, 2, 3, 4]).statistic)
    assert np.isnan(m.spearman_with([1, 2], [1, 2]).pvalue)
    with pytest.raises(ValueError, match="paired values"):
        m.spearman_with([1, 2, 3], [1, 2])


# -- confidence intervals and paired tests -------------------------------------------------------------------
def test_median_ci_is_scipys_percentile_bootstrap():
    values = np.random.default_rng(1).normal(0.1, 0.2, 300)
    ours = m.median_ci(values, seed=3)
    res = stats.bootstrap((values,), np.median, n_resamples=m.BOOTSTRAP_RESAMPLES, method="percentile",
                          rng=np.random.default_rng(3))
    assert ours.median == np.median(values)
    assert (ours.low, ours.high) == (res.confidence_interval.low, res.confidence_interval.high)
    assert ours.low < ours.median < ours.high
    assert m.median_ci(values, seed=3) == ours  # reproducible


def test_median_ci_covers_the_true_median_about_95_percent_of_the_time():
    """Coverage of the true median 0 over 200 independent samples of 101 values: 95% nominal; the 99.9%
    binomial range of the hit count is [181, 198] — percentile intervals of a median undercover a little."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        ci = m.median_ci(rng.standard_normal(101), n_resamples=500, seed=int(rng.integers(1 << 31)))
        hits += ci.low <= 0 <= ci.high
    assert 176 <= hits <= 199, hits


def test_median_ci_edge_cases():
    assert m.median_ci([0.2, 0.2, 0.2]) == (0.2, 0.2, 0.2)
    one = m.median_ci([np.nan, 0.5])
    assert one.median == 0.5 and np.isnan(one.low) and np.isnan(one.high)
    assert all(np.isnan(v) for v in m.median_ci([np.nan]))


def test_wilcoxon_hand_and_scipy():
    # five positive differences, no ties: W = 0 (sum of negative ranks), exact two-sided p = 2 / 2**5
    res = m.wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5, 0.0, np.nan])  # zero and NaN dropped
    assert res.statistic == 0 and res.pvalue == pytest.approx(2 / 32)
    d = np.random.default_rng(2).normal(0.05, 0.3, 80)
    assert tuple(m.wilcoxon_signed_rank(d)) == pytest.approx(tuple(stats.wilcoxon(d)))
    assert all(np.isnan(v) for v in m.wilcoxon_signed_rank([0.0, 0.0]))


def test_fdr_bh_hand():
    # sorted p (0.01, 0.02, 0.03, 0.5) of 4 tests: p_(i) * 4 / i, made monotone from the top
    adjusted = m.fdr_bh([0.03, np.nan, 0.01, 0.5, 0.02])
    np.testing.assert_allclose(adjusted, [0.04, np.nan, 0.04, 0.5, 0.04])
