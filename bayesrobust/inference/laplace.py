"""fullBNN by a Laplace approximation around a trained baseNN (laplace-torch; docs/method.md §13.2).

The posterior of the covered weights (the last layer, or all) is the Gaussian N(θ_MAP, P⁻¹) with
P = GGN of the training loss + prior precision (Daxberger et al. 2021, "Laplace Redux"); the GGN is diagonal,
Kronecker-factored (KFAC) or full, and the prior precision is fitted by maximising the Laplace marginal
likelihood (``optimize_prior_precision(method='marglik')``). Weights outside the covered subset stay at the MAP.
A last layer too wide for a dense KFAC factor takes ``kron_lowrank`` (:mod:`.laplace_lowrank`, our code).

What is stored (checkpoint ``extra``): the MAP vector of the covered weights and the factor that turns a
standard normal vector ε into a posterior deviation — the diagonal scale P^(-1/2) (``diag``), the dense
P^(-1/2) (``full``), or the eigendecomposition of each Kronecker factor with the prior deltas (``kron``;
deviation = laplace-torch's ``KronDecomposed.bmm(ε, exponent=-1/2)``, exactly what its ``sample`` does), or
the kept eigenpairs of both factors (``kron_lowrank``).
Draw j uses ε from the generator of ``(seed, j)``, so it is the same network on every load.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn

from ..data import Data
from ..models.architectures import ArchConfig, Network
from ..models.posterior import Posterior
from ..models.posterior import deterministic as one_draw_posterior
from ..presets import LaplaceConfig
from .laplace_lowrank import LowRankKFAC, fit_lowrank_kfac

PREFIX = "laplace."
LOWRANK_FIELDS = ("vectors", "values", "output_vectors", "output_values")


def last_layer_name(net: nn.Module) -> str:
    """The module name of the network's last ``nn.Linear`` (the output layer)."""
    names = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("a last-layer Laplace approximation needs a network ending in a Linear layer")
    return names[-1]


def laplace_approximation(net: Network, data: Data, cfg: LaplaceConfig, *, likelihood: str = "classification",
                          sigma_noise: float = 1.0, prior_scale: float = 1.0,
                          prior_precision: float | None = None) -> Any:
    """The fitted laplace-torch object around the trained ``net`` (its weights are the MAP) on ``data``, its
    prior precision fitted by marginal likelihood (``cfg.marglik_steps`` Adam steps on a scalar precision,
    from 1 / ``prior_scale``²) unless ``prior_precision`` is given. ``likelihood``: ``'classification'``
    (softmax cross-entropy) or ``'regression'`` (Gaussian noise of std ``sigma_noise``)."""
    from laplace import Laplace
    from torch.utils.data import DataLoader, TensorDataset

    net = net.eval()
    y = data.y if likelihood == "classification" or data.y.dim() > 1 else data.y[:, None]
    device = next(net.parameters()).device
    loader = DataLoader(TensorDataset(data.x.to(device), y.to(device)), batch_size=cfg.batch_size)
    kwargs = {"last_layer_name": last_layer_name(net)} if cfg.subset == "last_layer" else {}
    if cfg.structure == "diag" and cfg.subset == "last_layer":
        # laplace-torch's default backend (curvlinops) forms the diagonal from whole Jacobians, batch x classes
        # x weights: 2.6 GB a batch for mnist_conv's last layer, >15 min for the fit. BackPACK's DiagGGNExact
        # propagates the GGN's square-root factor instead (same values, tested). The last-layer Laplace
        # extends its own copy of the network; for all weights BackPACK would extend ``net`` itself.
        from laplace.curvature import BackPackGGN
        kwargs["backend"] = BackPackGGN
    la = Laplace(net, likelihood, subset_of_weights=cfg.subset, hessian_structure=cfg.structure,
                 sigma_noise=sigma_noise, prior_precision=1.0 / prior_scale**2, **kwargs)
    la.fit(loader)
    if prior_precision is not None:
        la.prior_precision = float(prior_precision)
    elif cfg.marglik_steps > 0:
        with warnings.catch_warnings():  # laplace-torch reminds that its (unused here) predictive is probit
            warnings.filterwarnings("ignore", message=".*link_approx.*")
            la.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=cfg.marglik_steps,
                                        init_prior_prec=1.0 / prior_scale**2, prior_structure="scalar")
    return la


def covered_names(net: Network, cfg: LaplaceConfig) -> list[str]:
    """State-dict names of the weights the approximation covers, in laplace-torch's vector order."""
    if cfg.subset == "last_layer":
        layer = last_layer_name(net)
        return [f"{layer}.{k}" for k, _ in dict(net.named_modules())[layer].named_parameters()]
    return [k for k, _ in net.named_parameters()]


def fit_laplace(net: Network, data: Data, cfg: LaplaceConfig, *, likelihood: str = "classification",
                sigma_noise: float = 1.0, prior_scale: float = 1.0, prior_precision: float | None = None,
                seed: int = 0) -> Posterior:
    """The Laplace posterior around the trained ``net`` on ``data`` (:func:`laplace_approximation`) as a
    ``Posterior`` of kind ``'laplace'`` (``params`` the MAP, the sampling factor in ``extra``);
    ``config['laplace']`` records the subset, structure, fitted prior precision, log marginal likelihood
    and fit time."""
    cfg.check_refit()
    start = time.perf_counter()
    if cfg.structure == "kron_lowrank":
        if prior_precision is None and cfg.marglik_steps == 0:  # as for laplace-torch: the prior's own precision
            prior_precision = 1.0 / prior_scale**2
        # λ from the closed-form marginal likelihood (no steps); wider batches keep the feature matmuls efficient
        fit = fit_lowrank_kfac(net, data, rank=cfg.rank, batch_size=max(cfg.batch_size, 1024), likelihood=likelihood,
                               sigma_noise=sigma_noise, prior_precision=prior_precision, seed=seed,
                               refit_steps=cfg.refit_steps)
        return lowrank_posterior(fit, net, cfg, seed, fit_seconds=time.perf_counter() - start)
    la = laplace_approximation(net, data, cfg, likelihood=likelihood, sigma_noise=sigma_noise,
                               prior_scale=prior_scale, prior_precision=prior_precision)
    return to_posterior(la, net, cfg, seed, fit_seconds=time.perf_counter() - start)


def to_posterior(la: Any, net: Network, cfg: LaplaceConfig, seed: int = 0, fit_seconds: float = 0.0) -> Posterior:
    """A fitted laplace-torch object as a ``Posterior`` of kind ``'laplace'`` around ``net``."""
    extra = {PREFIX + "mean": la.mean.detach().cpu().clone()}
    blocks: list[int] = []
    with torch.no_grad():
        if cfg.structure == "kron":
            precision = la.posterior_precision
            for b, (vecs, vals) in enumerate(zip(precision.eigenvectors, precision.eigenvalues)):
                blocks.append(len(vecs))
                for f, (vec, val) in enumerate(zip(vecs, vals)):
                    extra[f"{PREFIX}kron.{b}.vec{f}"] = vec.detach().cpu().clone()
                    extra[f"{PREFIX}kron.{b}.val{f}"] = val.detach().cpu().clone()
            extra[PREFIX + "kron.deltas"] = precision.deltas.detach().cpu().clone()
            damping = bool(precision.damping)
        else:
            extra[PREFIX + "scale"] = la.posterior_scale.detach().cpu().clone()
            damping = False
        log_marglik = float(la.log_marginal_likelihood())
    posterior = one_draw_posterior(net)
    posterior.kind = "laplace"
    posterior.seed = seed
    posterior.extra.update(extra)
    posterior.config["laplace"] = {
        "subset": cfg.subset, "structure": cfg.structure, "names": covered_names(net, cfg), "blocks": blocks,
        "damping": damping, "prior_precision": la.prior_precision.detach().cpu().reshape(-1).tolist(),
        "log_marginal_likelihood": log_marglik, "fit_seconds": fit_seconds, "n_params": int(la.n_params)}
    return posterior


def lowrank_posterior(fit: LowRankKFAC, net: Network, cfg: LaplaceConfig, seed: int = 0,
                      fit_seconds: float = 0.0) -> Posterior:
    """A fitted low-rank KFAC (:func:`.laplace_lowrank.fit_lowrank_kfac`) as a ``Posterior`` of kind
    ``'laplace'`` around ``net``; ``config['laplace']`` adds the rank, the share of trace(A) it keeps and the
    evidence refit (``cfg.refit_steps``; its last layer, not ``net``'s, is then the posterior's MAP)."""
    posterior = one_draw_posterior(net)
    posterior.kind = "laplace"
    posterior.seed = seed
    posterior.extra[PREFIX + "mean"] = fit.mean
    names = covered_names(net, cfg)
    shift = 0.0
    if fit.refits > 0:  # the MAP is the refit last layer, not net's
        start = torch.cat([posterior.params[n].reshape(-1).double() for n in names])
        shift = float((fit.mean.double() - start).norm() / start.norm().clamp_min(1e-30))
        posterior.params.update(_unflatten(fit.mean.clone(), posterior.params, names))
    for field in LOWRANK_FIELDS:
        posterior.extra[f"{PREFIX}lowrank.{field}"] = getattr(fit, field)
    posterior.config["laplace"] = {
        "subset": cfg.subset, "structure": cfg.structure, "names": names, "blocks": [],
        "damping": False, "prior_precision": [fit.prior_precision], "log_marginal_likelihood": fit.log_marglik,
        "fit_seconds": fit_seconds, "n_params": int(fit.mean.numel()), "rank": int(fit.values.numel()),
        "captured": fit.captured, "residual": fit.residual, "bias": fit.bias, "refit_steps": cfg.refit_steps,
        "refits": fit.refits, "refit_shift": shift}
    return posterior


def _deviation(posterior: Posterior, eps: torch.Tensor) -> torch.Tensor:
    """P^(-1/2) ε for the stored factor of ``posterior`` (ε: (n,))."""
    info, extra = posterior.config["laplace"], posterior.extra
    if info["structure"] == "diag":
        return extra[PREFIX + "scale"] * eps
    if info["structure"] == "full":
        return extra[PREFIX + "scale"] @ eps
    if info["structure"] == "kron_lowrank":
        fit = LowRankKFAC(mean=extra[PREFIX + "mean"], prior_precision=info["prior_precision"][0],
                          captured=info["captured"], bias=info["bias"], residual=info["residual"],
                          **{f: extra[f"{PREFIX}lowrank.{f}"] for f in LOWRANK_FIELDS})
        return fit.deviation(eps)
    from laplace.utils.matrix import KronDecomposed
    cache = posterior.__dict__.setdefault("_kron_precision", None)
    if cache is None:
        vecs = [tuple(extra[f"{PREFIX}kron.{b}.vec{f}"] for f in range(n)) for b, n in enumerate(info["blocks"])]
        vals = [tuple(extra[f"{PREFIX}kron.{b}.val{f}"] for f in range(n)) for b, n in enumerate(info["blocks"])]
        cache = KronDecomposed(vecs, vals, extra[PREFIX + "kron.deltas"], damping=info["damping"])
        posterior.__dict__["_kron_precision"] = cache
    return cache.bmm(eps[None], exponent=-0.5).reshape(-1)


def laplace_draw(posterior: Posterior, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The parameters of one Laplace draw: the covered weights MAP + P^(-1/2) ε (ε ~ N(0, I) from
    ``generator``), every other weight at the MAP."""
    info = posterior.config["laplace"]
    mean = posterior.extra[PREFIX + "mean"]
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    vector = mean + _deviation(posterior, eps)
    out = {**posterior.params, **_unflatten(vector, posterior.params, info["names"])}
    return {k: out[k] for k in sorted(out)}


def _unflatten(vector: torch.Tensor, params: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """The covered weights ``names`` (in that order) read from the flat ``vector``, shaped and typed like
    ``params``."""
    out, offset = {}, 0
    for name in names:
        like = params[name]
        out[name] = vector[offset:offset + like.numel()].reshape(like.shape).to(like.dtype)
        offset += like.numel()
    return out


#: Largest Kronecker factor (rows) a KFAC Laplace may need: each factor is stored dense and eigendecomposed,
#: O(d²) memory and O(d³) time. mnist_conv's last layer reads 25,088 features: a 2.5 GB factor whose
#: eigendecomposition had not finished after 13 minutes on 2 cores (``kron_lowrank`` or ``diag`` fit it).
MAX_KRON_FACTOR = 8192


def check_arch_for_laplace(arch: ArchConfig, cfg: LaplaceConfig) -> None:
    """Reject, before training, a structure that cannot be stored or factorised for this network: a dense
    (``full``) precision over more than 20,000 weights (its square would take gigabytes), or a KFAC one with
    a Kronecker factor over more than :data:`MAX_KRON_FACTOR` inputs or outputs."""
    from ..models.architectures import expected_shapes
    params, _ = expected_shapes(arch)
    covered = params if cfg.subset == "all" else dict(list(params.items())[-2:])
    n = sum(s.numel() for s in covered.values())
    if cfg.structure == "full" and n > 20_000:
        raise ValueError(f"a full Laplace precision over {n:,} weights ({cfg.subset}) is too large to store; "
                         f"use --laplace-structure kron or diag")
    if cfg.structure == "kron":
        widest = max((d for s in covered.values() if len(s) > 1 for d in (s[0], s[1:].numel())), default=0)
        if widest > MAX_KRON_FACTOR:
            raise ValueError(f"a KFAC Laplace precision over {cfg.subset} needs a {widest:,} x {widest:,} Kronecker "
                             f"factor (at most {MAX_KRON_FACTOR:,}: it is stored dense and eigendecomposed); "
                             f"use --laplace-structure kron_lowrank (last layer) or diag")
    if cfg.structure == "kron_lowrank" and cfg.subset != "last_layer":
        raise ValueError(f"--laplace-structure kron_lowrank covers the last layer only, got --laplace-subset "
                         f"{cfg.subset}; use kron or diag for all weights")
