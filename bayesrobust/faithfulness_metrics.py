"""Do the maps point at what the model uses? Faithfulness and sanity checks, per posterior draw
(docs/method.md §10).

A map that never changes is perfectly stable and useless, so stability under attack (§6) is read next to:

**Insertion and deletion** (Petsiuk et al. 2018, arXiv 1806.07421). Pixels are ordered by relevance (summed
over channels, most relevant first; ties by position). Deletion replaces the first ``k/steps`` of them by
the *deletion baseline* (default: zero, a black pixel), insertion starts from the *insertion baseline*
(default: the image blurred by a Gaussian, kernel 11, σ = 5) and puts the first ``k/steps`` of the image's
pixels back, ``k = 0..steps``. The curve is the softmax probability of the explained class; its AUC is the
trapezoidal area over the fraction of pixels in [0, 1]. A faithful map gives a low deletion and a high
insertion AUC. Both follow the model's confidence (seed 003), so they are also given divided by the clean
confidence (the class's probability on the unperturbed image), and their Spearman correlation with that
confidence is reported per model.

**Localisation** (relevance mass inside the object; Arras et al. 2022, "CLEVR-XAI"): the share of the positive
relevance that lies on the foreground, here the image's own bright pixels (MNIST/Fashion-MNIST: pixel value
above ``threshold`` = 0.5 in any channel), and the pointing game (Zhang et al. 2018): whether the most
relevant pixel lies on the foreground.

**Cascading model-parameter randomisation** (Adebayo et al. 2018, "Sanity checks for saliency maps"): the
learnable layers are re-initialised from the top (logits) down, cumulatively, and the Spearman rank
correlation between the absolute maps of the trained and the randomised network is taken after each step.
A method whose maps keep a high correlation does not depend on what the network learnt: it fails the check.
The random weights are PyTorch's default initialisation (uniform in ±1/√fan_in, weights and biases), drawn
from ``seed`` and the layer index — the same random weights for every posterior draw.

**Per posterior draw.** Draw ``j``'s map explains draw ``j``'s own argmax class ``c_j``; its curves are taken
on network ``j`` and ``c_j``. The Bayesian (mean) map is scored on the same networks and classes, so each
(image, draw) gives a paired pair of AUCs; a one-sided Wilcoxon signed-rank test over images (AUCs averaged
over draws) asks whether the mean map is more faithful than a single draw's (deletion: lower, insertion:
higher). Everything is batched: all ``steps + 1`` perturbed copies of a chunk of images go through one
forward pass, the draws are those of one :class:`~bayesrobust.models.draws.DrawSet`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from scipy import stats

from .checks import check_images, count
from .models.architectures import Network, explained_layers
from .models.draws import FORWARD_PASS, DrawSet, output_pass

log = logging.getLogger(__name__)

BASELINES = ("zero", "blur")
CURVES = ("deletion", "insertion")
#: Gaussian blur of the "blur" baseline (Petsiuk et al.'s insertion baseline).
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0
#: Foreground threshold of the localisation metrics (pixel value in [0, 1]).
FOREGROUND_THRESHOLD = 0.5
#: Perturbed images per forward pass (the DrawSet speed policy's :data:`~bayesrobust.models.draws.FORWARD_PASS`).
FORWARD_BATCH = FORWARD_PASS


def check_baseline(name: str) -> str:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return name


def baseline_images(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The baseline of ``x`` (N, C, H, W): zeros, or ``x`` blurred (Gaussian, :data:`BLUR_KERNEL`, σ
    :data:`BLUR_SIGMA`, reflected borders)."""
    check_baseline(kind)
    if kind == "zero":
        return torch.zeros_like(x)
    from torchvision.transforms.functional import gaussian_blur
    k = min(BLUR_KERNEL, 2 * (min(x.shape[-2:]) // 2) - 1)  # odd and no larger than the image
    return gaussian_blur(x, [k, k], [BLUR_SIGMA, BLUR_SIGMA])


def pixel_relevance(maps: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) → (..., H·W): relevance per pixel, summed over channels."""
    return maps.sum(dim=-3).flatten(-2)


def fractions(steps: int) -> torch.Tensor:
    """The fractions of pixels ``k/steps``, ``k = 0..steps`` (float64)."""
    count("steps", steps, allow_none=False)
    return torch.arange(steps + 1, dtype=torch.float64) / steps


def first_pixels(relevance: torch.Tensor, steps: int) -> torch.Tensor:
    """(N, K = steps+1, H·W) bool: at step ``k`` the ``round(k·d/steps)`` most relevant pixels of each map.

    ``relevance`` (N, H·W); ties are broken by pixel position (stable sort), so the result is deterministic.
    """
    n, d = relevance.shape
    order = torch.argsort(relevance, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d, device=order.device).expand(n, d))
    counts = torch.round(fractions(steps) * d).to(rank.device).long()
    return rank[:, None, :] < counts[None, :, None]


def perturbation_curves(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, maps: torch.Tensor,
                        target: torch.Tensor, *, steps: int = 50, baselines: dict[str, torch.Tensor],
                        forward_batch: int = FORWARD_BATCH) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves of ``maps`` (N, C, H, W) for the classes ``target`` (N,).

    Parameters
    ----------
    net
        Images → logits (B, classes); a module runs through :func:`~bayesrobust.models.draws.output_pass`.
    x
        Images (N, C, H, W).
    baselines
        ``{'deletion': (N, C, H, W), 'insertion': (N, C, H, W)}`` (:func:`baseline_images`).

    Returns
    -------
    dict
        ``{'deletion': (N, steps+1), 'insertion': (N, steps+1)}``: the softmax probability of ``target``
        after each step (float64).
    """
    n, c, h, w = x.shape
    k = steps + 1
    per_chunk = max(1, forward_batch // k)
    run = output_pass(net) if isinstance(net, torch.nn.Module) else net    # same outputs, faster (§10.7)
    out = {name: torch.empty((n, k), dtype=torch.float64) for name in CURVES}
    for start in range(0, n, per_chunk):
        sl = slice(start, min(start + per_chunk, n))
        first = first_pixels(pixel_relevance(maps[sl]), steps).reshape(-1, k, 1, h, w)   # (m, K, 1, H, W)
        xi = x[sl, None]
        tgt = target[sl].to(x.device)
        for name in CURVES:
            base = baselines[name][sl, None]
            images = torch.where(first, base, xi) if name == "deletion" else torch.where(first, xi, base)
            with torch.no_grad():
                probs = torch.softmax(run(images.reshape(-1, c, h, w)), dim=-1).reshape(images.shape[0], k, -1)
            out[name][sl] = probs.gather(2, tgt[:, None, None].expand(-1, k, 1))[..., 0].double().cpu()
    return out


def auc(curves: torch.Tensor, steps: int) -> torch.Tensor:
    """Trapezoidal area under curves (..., steps+1) over the fraction of pixels in [0, 1]."""
    return torch.trapezoid(curves, fractions(steps).to(curves), dim=-1)


def foreground(x: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """(N, H·W) bool: pixels brighter than ``threshold`` in any channel (the object of an MNIST image)."""
    return (x.amax(dim=-3) > threshold).flatten(-2)


def relevance_share(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of the positive relevance of ``maps`` (..., C, H, W) on ``mask`` (..., H·W); NaN without positive
    relevance."""
    pos = pixel_relevance(maps).clamp_min(0).double()
    total = pos.sum(-1)
    inside = (pos * mask).sum(-1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.full_like(total, float("nan")))


def pointing_game(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Whether the most relevant pixel (first on ties) of each map lies on ``mask``: (...) bool."""
    top = pixel_relevance(maps).argmax(-1, keepdim=True)
    return mask.expand(*top.shape[:-1], mask.shape[-1]).gather(-1, top)[..., 0]


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman ρ between the absolute per-pixel maps ``a`` and ``b`` (..., C, H, W), per map (NaN for a
    constant map)."""
    from .metrics import spearman_rho
    pa = pixel_relevance(a).abs().double().cpu().numpy()
    pb = pixel_relevance(b).abs().double().cpu().numpy()
    return spearman_rho(pa, pb, map_dims=1)


# -- model-parameter randomisation ------------------------------------------------------------------------
def learnable_modules(net: Network) -> list[tuple[str, torch.nn.Module]]:
    """The learnable layers in forward order, ``(name, module)``."""
    return [(name, module) for name, module, _ in explained_layers(net)]


@torch.no_grad()
def randomise_layer(module: torch.nn.Module, seed: int, index: int) -> None:
    """Overwrite ``module``'s weight and bias in place with PyTorch's default initialisation, uniform in
    ±1/√fan_in, drawn from ``(seed, index)``."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0]))
    weight = module.weight
    bound = 1.0 / float(np.sqrt(weight[0].numel()))
    for p in (module.weight, module.bias):
        if p is not None:
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1).mul_(bound))


def cascading_randomisation(draws: DrawSet, x: torch.Tensor, explainer: Any, maps: torch.Tensor, *,
                            seed: int = 0, batch_size: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Maps of ``x`` after re-initialising the learnable layers from the top down, cumulatively, per draw.

    Parameters
    ----------
    draws
        The draws (their network ends holding the last draw's trained weights again).
    explainer
        An :class:`~bayesrobust.explain.bayesian.Explainer`; it explains the last layer.
    maps
        The trained maps (S, N, C, H, W) (only their shape and dtype are used).

    Returns
    -------
    randomised : torch.Tensor
        (S, L, N, C, H, W): after step ``l`` the top ``l + 1`` layers hold random weights.
    names : list of str
        The layer randomised at each step (the top layer first).
    """
    from .explain.bayesian import draw_seed, seeded
    from .models.draws import chunks
    net = draws.net
    layers = learnable_modules(net)
    top = len(net.layers) - 1
    names = [name for name, _ in reversed(layers)]
    out = maps.new_empty((len(draws), len(layers), *maps.shape[1:]))
    parts = chunks(x.shape[0], draws.chunk_size if batch_size is None else batch_size)
    with explainer.attached(net):
        for position in draws:
            saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
            try:
                for step, (index, (_, module)) in enumerate(zip(range(len(layers) - 1, -1, -1), reversed(layers))):
                    randomise_layer(module, seed, index)
                    with explainer.draw(net), seeded(draw_seed(seed, draws.indices[position])):
                        for part in parts:
                            out[position, step, part] = explainer(net, x[part], [top])[0][0]
            finally:
                with torch.no_grad():
                    for k, v in net.state_dict().items():
                        v.copy_(saved[k])
    return out, names


def draw_maps(draws: DrawSet, x: torch.Tensor, explainer: Any, *, seed: int = 0,
              batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every draw's last-layer maps ``(S, N, C, H, W)``, their units ``(S, N)`` and the mean map ``(N, C, H, W)``
    (:func:`~bayesrobust.explain.bayesian.explain_posterior`)."""
    from .explain.bayesian import explain_posterior
    s, n = len(draws), x.shape[0]
    per_draw = x.new_empty((s, *x.shape))
    units = torch.empty((s, n), dtype=torch.int64)

    def keep(j: int, maps: torch.Tensor, unit: torch.Tensor) -> None:
        position = draws.indices.index(j)
        per_draw[position] = maps[0]
        units[position] = unit[0]
    result = explain_posterior(draws, x, explainer, layers=[len(draws.net.layers) - 1], batch_size=batch_size,
                               seed=seed, on_draw=keep)
    return per_draw, units, result.mean[0]


# -- per model ---------------------------------------------------------------------------------------------
def wilcoxon_one_sided(diff: np.ndarray, alternative: str) -> tuple[float, float]:
    """Wilcoxon signed-rank statistic and p-value of paired differences (NaN-free, not all zero); NaN if
    undefined (fewer than two non-zero differences)."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    if np.count_nonzero(d) < 2:
        return float("nan"), float("nan")
    res = stats.wilcoxon(d, alternative=alternative, zero_method="wilcox")
    return float(res.statistic), float(res.pvalue)


def evaluate(draws: DrawSet, x: torch.Tensor, explainers: Sequence[Any], *, steps: int = 50,
             deletion_baseline: str = "zero", insertion_baseline: str = "blur",
             threshold: float = FOREGROUND_THRESHOLD, randomisation: bool = True,
             randomisation_images: int | None = None, seed: int = 0,
             batch_size: int | None = None, forward_batch: int = FORWARD_BATCH,
             image: np.ndarray | None = None, progress: Callable[[int], object] | None = None) -> xr.Dataset:
    """Faithfulness and sanity metrics of every explainer's last-layer maps, per draw and for the mean map.

    Parameters
    ----------
    draws
        The model's draws (a deterministic model: one).
    x
        Images (N, C, H, W) in [0, 1].
    explainers
        Explainers with distinct names (LRP rules, Captum methods, RISE).
    steps
        Insertion/deletion steps; one step moves ``1/steps`` of the pixels.
    deletion_baseline, insertion_baseline
        ``'zero'`` or ``'blur'`` (:func:`baseline_images`).
    threshold
        Foreground threshold of the localisation metrics.
    randomisation
        Run the cascading randomisation check (costs one explanation per layer and draw).
    randomisation_images
        Run it on the first this many images only (default all; the others get NaN): for the costly
        methods (RISE: masks × layers × draws forward passes per image).
    seed
        Seeds the random methods per draw and the random weights of the randomisation.
    image
        The ``image`` coordinate (default ``0..N-1``).

    Returns
    -------
    xarray.Dataset
        Variables (dims) — ``rule`` holds the method names (LRP rules, Captum methods, ``rise``: the
        ``rule`` coordinate of the explanation and analysis Datasets), ``map`` is ``draw`` (each draw's own
        map) or ``mean`` (the mean over draws):
        ``deletion_curve``/``insertion_curve`` (rule, map, draw, image, fraction);
        ``deletion_auc``/``insertion_auc`` and ``*_auc_normalised`` (rule, map, draw, image);
        ``confidence`` and ``unit`` (draw, image); ``relevance_share``/``pointing_hit`` (rule, map, draw,
        image) (the mean map's repeated along ``draw``); ``randomisation_rho`` (rule, map, draw, randomised,
        image) (the mean map's: the mean of the randomised draws' maps against the mean map, repeated along
        ``draw``); ``auc_confidence_rho`` (rule, map, curve); ``mean_vs_draw_statistic``/``_p`` (rule,
        curve).

    Raises
    ------
    ValueError
        Bad images, counts, baselines or duplicate method names, before any work.
    """
    check_images(x)
    count("steps", steps, allow_none=False)
    count("forward_batch", forward_batch, allow_none=False)
    count("randomisation_images", randomisation_images)
    check_baseline(deletion_baseline)
    check_baseline(insertion_baseline)
    if not 0 <= float(threshold) <= 1:  # NaN fails too
        raise ValueError(f"the foreground threshold is a pixel value in [0, 1], got {threshold!r}")
    names = [e.name for e in explainers]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"expected explainers with distinct names, got {names}")
    net = draws.net
    first = next(net.parameters())
    x = x.detach().to(device=first.device, dtype=first.dtype)
    n, s = x.shape[0], len(draws)
    k = steps + 1
    bases = {"deletion": baseline_images(x, deletion_baseline), "insertion": baseline_images(x, insertion_baseline)}
    fg = foreground(x, threshold)
    n_rand = len(net.layers)
    shape = (len(names), 2, s, n)
    curves = {c: np.full((*shape, k), np.nan) for c in CURVES}
    share, hit = np.full(shape, np.nan), np.zeros(shape, dtype=bool)
    rho = np.full((len(names), 2, s, n_rand, n), np.nan)
    confidence, units = np.empty((s, n)), np.empty((s, n), dtype=np.int64)
    rand_names: list[str] = []
    for m, explainer in enumerate(explainers):
        per_draw, draw_units, mean = draw_maps(draws, x, explainer, seed=seed, batch_size=batch_size)
        for position in draws:
            target = draw_units[position]
            with torch.no_grad():
                probs = torch.softmax(net(x), dim=-1).double()
            confidence[position] = probs.gather(1, target[:, None].to(probs.device))[:, 0].cpu().numpy()
            units[position] = target.numpy()
            for which, maps in enumerate((per_draw[position], mean)):
                got = perturbation_curves(net, x, maps, target, steps=steps, baselines=bases,
                                          forward_batch=forward_batch)
                for c in CURVES:
                    curves[c][m, which, position] = got[c].numpy()
            if progress is not None:
                progress(1)
        for which, maps in enumerate((per_draw, mean.expand(s, *mean.shape))):
            share[m, which] = relevance_share(maps, fg).cpu().numpy()
            hit[m, which] = pointing_game(maps, fg).cpu().numpy()
        if randomisation:
            r = n if randomisation_images is None else min(n, randomisation_images)
            randomised, rand_names = cascading_randomisation(draws, x[:r], explainer, per_draw[:, :r], seed=seed,
                                                             batch_size=batch_size)
            rho[m, 0, :, :, :r] = rank_correlation(per_draw[:, None, :r], randomised)
            rho[m, 1, :, :, :r] = rank_correlation(mean[None, :r], randomised.mean(0))[None]
    if not rand_names:
        rand_names = [name for name, _ in reversed(learnable_modules(net))]
    frac = fractions(steps).numpy()
    aucs = {c: np.trapezoid(curves[c], frac, axis=-1) for c in CURVES}
    coords = {"rule": np.array(names, dtype=object), "map": np.array(["draw", "mean"], dtype=object),
              **draws.coords(), "image": np.arange(n) if image is None else np.asarray(image),
              "fraction": frac, "randomised": np.array(rand_names, dtype=object),
              "curve": np.array(CURVES, dtype=object)}
    dims = ("rule", "map", "draw", "image")
    data: dict[str, Any] = {}
    for c in CURVES:
        data[f"{c}_curve"] = ((*dims, "fraction"), curves[c])
        data[f"{c}_auc"] = (dims, aucs[c])
        data[f"{c}_auc_normalised"] = (dims, aucs[c] / confidence[None, None])
    data["confidence"] = (("draw", "image"), confidence)
    data["unit"] = (("draw", "image"), units)
    data["relevance_share"] = (dims, share)
    data["pointing_hit"] = (dims, hit)
    data["randomisation_rho"] = (("rule", "map", "draw", "randomised", "image"), rho)
    conf_rho = np.full((len(names), 2, len(CURVES)), np.nan)
    test_stat, test_p = np.full((len(names), len(CURVES)), np.nan), np.full((len(names), len(CURVES)), np.nan)
    for m in range(len(names)):
        for ci, c in enumerate(CURVES):
            for which in range(2):
                a = aucs[c][m, which].ravel()
                if np.ptp(a) > 0 and np.ptp(confidence) > 0:
                    conf_rho[m, which, ci] = stats.spearmanr(a, confidence.ravel()).statistic
            if s > 1:  # mean map minus draw map, averaged over draws per image
                diff = aucs[c][m, 1].mean(0) - aucs[c][m, 0].mean(0)
                test_stat[m, ci], test_p[m, ci] = wilcoxon_one_sided(diff, "less" if c == "deletion" else "greater")
    data["auc_confidence_rho"] = (("rule", "map", "curve"), conf_rho)
    data["mean_vs_draw_statistic"] = (("rule", "curve"), test_stat)
    data["mean_vs_draw_p"] = (("rule", "curve"), test_p)
    ds = xr.Dataset(data, coords=coords)
    ds["randomised"].attrs["long_name"] = "top layers re-initialised, cumulatively, down to this one"
    ds["mean_vs_draw_p"].attrs["long_name"] = ("one-sided Wilcoxon signed-rank p, H1: the mean map is more "
                                               "faithful than a draw's (lower deletion / higher insertion AUC)")
    ds.attrs.update(steps=steps, deletion_baseline=deletion_baseline, insertion_baseline=insertion_baseline,
                    foreground_threshold=float(threshold), n_draws=s, seed=seed,
                    randomisation=int(bool(randomisation)),
                    randomisation_images=n if randomisation_images is None else min(n, randomisation_images))
    return ds
