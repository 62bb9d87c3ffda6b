"""Last-layer KFAC Laplace with a low-rank input factor (docs/method.md §13.2), for last layers too wide for
laplace-torch's dense KFAC.

The last layer maps features φ (d,) to C outputs with weights [W, b] (C, d+1); write φ̃ = [φ, 1]. Its GGN is
Σₙ Λₙ ⊗ φ̃ₙφ̃ₙᵀ (Λₙ = diag(pₙ) − pₙpₙᵀ for softmax, I/σ² for Gaussian noise); KFAC approximates it by
G ⊗ A with G = mean Λₙ (C, C) and A = Σₙ φ̃ₙφ̃ₙᵀ (d+1, d+1) (Martens & Grosse 2015; Ritter et al. 2018). For
mnist_conv, d = 25,088: A is 2.5 GB and its dense eigendecomposition takes over 13 minutes here. A's
spectrum falls fast, so we keep its top k eigenpairs exactly and its remaining d+1−k eigenvalues by their
mean ρ (the isotropic fit of probabilistic PCA): A ≈ V S Vᵀ + ρ (I − V Vᵀ). The eigenpairs come from a
randomised Nyström approximation that streams the training features (Halko et al. 2011; Tropp et al. 2017:
one pass per subspace iteration, A never formed); ρ from trace(A). With G = Q Γ Qᵀ the posterior
precision P = G ⊗ A + λ I has eigenvalues γ_c s_i + λ on the kept subspace and γ_c ρ + λ (each d+1−k
times) off it, so it is exactly invertible: a standard normal E (C, d+1) becomes the deviation
P^(-1/2) E = Q (r ⊙ QᵀE) + Q (K ⊙ QᵀEV) Vᵀ with r_c = (γ_c ρ + λ)^(-1/2), K_ci = (γ_c s_i + λ)^(-1/2) − r_c.
The prior precision λ maximises the Laplace marginal likelihood with the MAP held fixed (as laplace-torch's
``marglik``), here in closed form: log p(D | λ) = log p(D | θ) − ½ λ ‖θ‖² − ½ Σ_j log(1 + g_j / λ) over the
GGN eigenvalues g_j, whose maximum solves λ ‖θ‖² = Σ_j g_j / (g_j + λ) (MacKay 1992; one root, found by
bisection in log λ).

That λ assumes θ is the mode of the posterior under the prior it fits. A network trained without weight decay
(the paper's baseNNs: Adam, no penalty) is not: its ‖θ‖² is large, λ comes out small and the posterior too wide.
``refit_steps > 0`` makes the pair consistent (MacKay's evidence iterations): the last layer is refit as the MAP
of the penalised loss on the fixed features, −log p(D | θ) + ½ λ ‖θ‖², by Newton steps preconditioned with the
same KFAC (a closed-form solve) and a backtracking line search, re-estimating G and λ at every step.

Why written here: laplace-torch's KFAC stores and eigendecomposes every factor dense, and its low-rank
Laplace needs whole-network Jacobians (asdl); neither reaches a 25,088-feature last layer on a CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Data

log = logging.getLogger(__name__)


@dataclass
class LowRankKFAC:
    """A fitted last-layer low-rank KFAC posterior. ``mean`` (C·d + C or C·d,): the MAP, weight (row-major)
    then bias; ``vectors`` (d̃, k) and ``values`` (k,): the kept eigenpairs of A; ``output_vectors`` (C, C)
    and ``output_values`` (C,): the eigendecomposition of G; ``prior_precision`` λ; ``captured``: the share
    of trace(A) the kept eigenvalues hold; ``residual`` ρ: the mean of A's other eigenvalues; ``log_marglik``:
    the Laplace log marginal likelihood at λ (laplace-torch's definition); ``refits``: the evidence refit
    steps taken (0: ``mean`` is the network's own last layer)."""

    mean: torch.Tensor
    vectors: torch.Tensor
    values: torch.Tensor
    output_vectors: torch.Tensor
    output_values: torch.Tensor
    prior_precision: float
    captured: float
    bias: bool
    residual: float = 0.0
    log_marglik: float = 0.0
    refits: int = 0

    def precision_eigenvalues(self) -> torch.Tensor:
        """γ_c s_i (C, k): the GGN eigenvalues on the kept subspace."""
        return self.output_values[:, None] * self.values[None, :]

    def residual_eigenvalues(self) -> torch.Tensor:
        """γ_c ρ (C,): the GGN eigenvalues off the kept subspace (each d̃ − k times)."""
        return self.output_values * self.residual

    def solve(self, m: torch.Tensor) -> torch.Tensor:
        """P⁻¹ m for m (C, d̃) in matrix form (rows: outputs, columns: φ̃), in the factors' precision."""
        lam = self.prior_precision
        q, v = self.output_vectors, self.vectors
        off = 1 / (self.residual_eigenvalues() + lam)  # (C,)
        on = 1 / (self.precision_eigenvalues() + lam) - off[:, None]  # (C, k)
        rotated = q.T @ m
        return q @ (off[:, None] * rotated + (on * (rotated @ v)) @ v.T)

    def deviation(self, eps: torch.Tensor) -> torch.Tensor:
        """P^(-1/2) ε for ε (..., n) in the ``mean`` order (weight then bias)."""
        c, d_aug = self.output_vectors.shape[0], self.vectors.shape[0]
        d = d_aug - 1 if self.bias else d_aug
        lead = eps.shape[:-1]
        e = eps.reshape(-1, eps.shape[-1]).to(self.vectors.dtype)
        weight = e[:, :c * d].reshape(-1, c, d)
        e_mat = torch.cat([weight, e[:, c * d:, None]], dim=2) if self.bias else weight
        lam = self.prior_precision
        r = (self.residual_eigenvalues() + lam).rsqrt()[:, None]
        k = (self.precision_eigenvalues() + lam).rsqrt() - r
        q, v = self.output_vectors, self.vectors
        inner = q.T @ e_mat @ v  # (batch, C, k)
        dev = q @ (r * (q.T @ e_mat)) + q @ (k * inner) @ v.T
        flat = torch.cat([dev[:, :, :d].reshape(len(e), -1), dev[:, :, d]], dim=1) if self.bias \
            else dev.reshape(len(e), -1)
        return flat.reshape(*lead, -1)


def _last_linear(net: nn.Module) -> nn.Linear:
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("a last-layer Laplace approximation needs a network ending in a Linear layer")
    return layers[-1]


def feature_batches(net: nn.Module, x: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(φ̃, outputs) per batch of ``x``: the last Linear layer's input augmented with a column of ones when it
    has a bias (B, d̃), and the network's outputs (B, C)."""
    layer = _last_linear(net)
    device = next(net.parameters()).device
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                captured.clear()
                out = net(x[start:start + batch_size].to(device))
                phi = captured[0].reshape(len(out), -1)
                if layer.bias is not None:
                    phi = torch.cat([phi, phi.new_ones(len(phi), 1)], dim=1)
                yield phi, out
    finally:
        handle.remove()


def nystrom_eigh(apply: Callable[[torch.Tensor], torch.Tensor], dim: int, rank: int, *, oversample: int = 32,
                 power_iters: int = 1, rel_shift: float = 1e-6, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``rank`` eigenpairs (values (rank,), vectors (dim, rank)) of a positive semi-definite matrix A
    known only through ``apply(Ω) = A Ω``: ``power_iters`` subspace iterations, then the stabilised Nyström
    approximation (Tropp et al. 2017, Alg. 3) with a shift of ``rel_shift`` · ‖AΩ‖ (above the rounding of
    ``apply``: float32 products need ≈ 1e-6). ``power_iters + 1`` calls of ``apply``; exact up to the shift
    when A has rank ≤ ``rank + oversample``."""
    width = min(dim, rank + oversample)
    omega = torch.randn(dim, width, generator=generator, dtype=torch.float64).to(device)
    omega = torch.linalg.qr(omega).Q
    y = apply(omega)
    for _ in range(power_iters):
        omega = torch.linalg.qr(y).Q
        y = apply(omega)
    scale = torch.linalg.matrix_norm(y)  # Frobenius: an upper bound of the spectral norm, no SVD
    for attempt in range(4):  # the shift grows tenfold while float rounding leaves the core indefinite
        shift = rel_shift * 10**attempt * scale
        shifted = y + shift * omega
        core = omega.T @ shifted
        chol, info = torch.linalg.cholesky_ex((core + core.T) / 2)
        if int(info) == 0:
            break
    else:
        raise RuntimeError(f"the Nyström core stayed indefinite up to a shift of {float(shift):.3g}; "
                           "the products A Ω are not those of a positive semi-definite matrix")
    b = torch.linalg.solve_triangular(chol, shifted.T, upper=False).T  # y chol⁻ᵀ
    u, sigma, _ = torch.linalg.svd(b, full_matrices=False)
    values = (sigma ** 2 - shift).clamp_min(0)
    keep = min(rank, width)
    return values[:keep], u[:, :keep]


def evidence_prior_precision(gains: torch.Tensor, theta_sq: float, counts: torch.Tensor | None = None) -> float:
    """The λ maximising −½ λ ‖θ‖² − ½ Σ_j n_j log(1 + g_j/λ): the root of λ ‖θ‖² = Σ_j n_j g_j / (g_j + λ)
    (``gains`` g ≥ 0 with multiplicities ``counts`` n (default 1), ``theta_sq`` = ‖θ‖² > 0), by bisection in
    log λ."""
    if not theta_sq > 0:
        raise ValueError(f"the MAP's squared norm must be positive to fit a prior precision, got {theta_sq}")
    g = gains.double().reshape(-1)
    n = torch.ones_like(g) if counts is None else counts.double().reshape(-1)
    n, g = n[g > 0], g[g > 0]
    if len(g) == 0:
        raise ValueError("the GGN has no positive eigenvalue: the marginal likelihood has no maximum")

    def excess(log_lam: float) -> float:
        lam = math.exp(log_lam)
        return lam * theta_sq - float((n * g / (g + lam)).sum())

    lo, hi = math.log(1e-12), math.log(max(float(n.sum()), 1.0) / theta_sq) + 1.0
    if excess(lo) >= 0:
        raise ValueError(f"the marginal likelihood peaks below λ = 1e-12 (‖θ‖² = {theta_sq:.3g}, largest GGN "
                         f"eigenvalue {float(g.max()):.3g}): no usable prior precision")
    for _ in range(200):  # excess is increasing in λ: negative at lo, non-negative at hi
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) < 0 else (lo, mid)
        if hi - lo < 1e-12:
            break
    return math.exp((lo + hi) / 2)


def likelihood_terms(logits: torch.Tensor, y: torch.Tensor, likelihood: str,
                     sigma_noise: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """For the last layer's outputs ``logits`` (B, C) and targets ``y``: the summed negative log-likelihood,
    its gradient with respect to the outputs (B, C) and the summed output Hessian Σ Λₙ (C, C), all in float64
    (softmax cross-entropy, or Gaussian noise of std ``sigma_noise``)."""
    logits = logits.double()
    if likelihood == "classification":
        p = logits.softmax(-1)
        nll = float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        grad = p - nn.functional.one_hot(y, logits.shape[1]).double()
        return nll, grad, torch.diag(p.sum(0)) - p.T @ p
    residual = logits - y.reshape(logits.shape).double()
    nll = 0.5 * float((residual ** 2).sum()) / sigma_noise ** 2 \
        + logits.numel() * math.log(sigma_noise * math.sqrt(2 * math.pi))
    eye = torch.eye(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return nll, residual / sigma_noise ** 2, eye * len(logits) / sigma_noise ** 2


def fit_lowrank_kfac(net: nn.Module, data: Data, *, rank: int, batch_size: int = 1024, power_iters: int = 1,
                     likelihood: str = "classification", sigma_noise: float = 1.0,
                     prior_precision: float | None = None, seed: int = 0, cache_bytes: float = 8e9,
                     refit_steps: int = 0, refit_tol: float = 1e-6) -> LowRankKFAC:
    """The low-rank last-layer KFAC Laplace posterior around the trained ``net`` on ``data``
    (x (N, ...), y (N,) labels or (N, C) targets): ``power_iters + 1`` passes over the training features,
    kept in host memory after the first when they fit in ``cache_bytes`` (mnist_conv: 6 GB), else recomputed;
    λ from the closed-form marginal likelihood unless ``prior_precision`` is given.

    ``refit_steps > 0``: up to that many evidence iterations (module docstring), one feature pass each plus
    one per halved line-search step; they stop when half the Newton decrement falls below ``refit_tol`` ×
    the objective and λ moved by less than 0.1%. The posterior's ``mean`` is then the refit last
    layer, not ``net``'s (``net`` is left unchanged)."""
    if rank < 1:
        raise ValueError(f"the rank of the input factor must be at least 1, got {rank}")
    if likelihood not in ("classification", "regression"):
        raise ValueError(f"likelihood must be 'classification' or 'regression', got {likelihood!r}")
    if prior_precision is not None and not prior_precision > 0:
        raise ValueError(f"the prior precision must be positive, got {prior_precision}")
    if refit_steps < 0:
        raise ValueError(f"the number of evidence refit steps must be at least 0, got {refit_steps}")
    net = net.eval()
    layer = _last_linear(net)
    device = layer.weight.device
    c, d = layer.weight.shape
    d_aug = d + (layer.bias is not None)
    dtype = torch.float64
    parts = [layer.weight.detach()] + ([layer.bias.detach()[:, None]] if layer.bias is not None else [])
    start_weights = torch.cat(parts, dim=1).to(dtype)  # [W, b] (C, d̃)

    # the first pass over the features also sums G (Σ Λₙ), trace(A) and the log-likelihood, and checks that the
    # network's output is the last Linear layer's (the refit computes the outputs from the features)
    stats = {"g": torch.zeros(c, c, dtype=dtype, device=device), "trace": 0.0, "nll": 0.0, "passes": 0,
             "mismatch": 0.0, "scale": 0.0}
    targets = data.y.to(device)
    item = layer.weight.element_size()
    cache: list[torch.Tensor] | None = [] if len(data.x) * d_aug * item <= cache_bytes else None

    def features() -> Iterator[torch.Tensor]:
        if stats["passes"] > 0 and cache is not None:
            yield from (phi.to(device) for phi in cache)
            return
        for start, (phi, outputs) in zip(range(0, len(data.x), batch_size),
                                         feature_batches(net, data.x, batch_size)):
            if stats["passes"] == 0:
                accumulate(phi, outputs, targets[start:start + len(phi)])
                if cache is not None:
                    cache.append(phi.cpu())
            yield phi

    def apply(omega: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(d_aug, omega.shape[1], dtype=dtype, device=device)
        omega_net = omega.to(layer.weight.dtype)  # the network's precision (float32: fast matmuls)
        for phi in features():
            out += (phi.T @ (phi @ omega_net)).to(dtype)
        stats["passes"] += 1
        return out

    def terms(phi: torch.Tensor, weights: torch.Tensor,
              y: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
        """NLL, its gradient (C, d̃) and Σ Λₙ of one feature batch with the last layer ``weights``, in float64,
        from products in the network's precision (float32 on mnist_conv: a pass reads 6 GB); and the outputs."""
        own = phi @ weights.to(phi.dtype).T
        nll, d_out, lam_sum = likelihood_terms(own, y, likelihood, sigma_noise)
        return nll, (d_out.to(phi.dtype).T @ phi).to(dtype), lam_sum, own

    def accumulate(phi: torch.Tensor, outputs: torch.Tensor, y: torch.Tensor) -> None:
        stats["trace"] += float((phi.double() ** 2).sum())
        nll, grad, lam_sum, own = terms(phi, start_weights, y)
        stats["nll"] += nll
        stats["grad"] = stats.get("grad", 0) + grad
        stats["g"] += lam_sum
        stats["mismatch"] = max(stats["mismatch"], float((own - outputs.reshape(own.shape)).abs().max()))
        stats["scale"] = max(stats["scale"], float(outputs.abs().max()))

    def evaluate(weights: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """(NLL, its gradient (C, d̃), Σ Λₙ) with the last layer set to ``weights``: one feature pass."""
        nll, grad = 0.0, torch.zeros_like(weights)
        lam_sum = torch.zeros(c, c, dtype=dtype, device=device)
        start = 0
        for phi in features():
            part, part_grad, part_lam, _ = terms(phi, weights, targets[start:start + len(phi)])
            nll, grad, lam_sum, start = nll + part, grad + part_grad, lam_sum + part_lam, start + len(phi)
        stats["passes"] += 1
        return nll, grad, lam_sum

    generator = torch.Generator().manual_seed(seed)
    values, vectors = nystrom_eigh(apply, d_aug, min(rank, d_aug), power_iters=power_iters, generator=generator,
                                   device=device)
    kept = len(values)
    residual = max(0.0, (stats["trace"] - float(values.sum())) / (d_aug - kept)) if d_aug > kept else 0.0
    counts = torch.cat([torch.ones(c * kept, dtype=dtype, device=device),
                        torch.full((c,), float(d_aug - kept), dtype=dtype, device=device)])

    def posterior(weights: torch.Tensor, lam_sum: torch.Tensor) -> tuple[LowRankKFAC, torch.Tensor]:
        """The posterior with G = Σ Λₙ / N around ``weights``, λ fitted (or given), and its GGN eigenvalues."""
        g_vals, g_vecs = torch.linalg.eigh(lam_sum / len(data.x))
        g_vals = g_vals.clamp_min(0)
        gains = torch.cat([(g_vals[:, None] * values[None, :]).reshape(-1), g_vals * residual])
        theta_sq = float((weights ** 2).sum())
        lam = float(prior_precision) if prior_precision is not None else \
            evidence_prior_precision(gains, theta_sq, counts)
        mean = torch.cat([weights[:, :d].reshape(-1), weights[:, d]]) if layer.bias is not None \
            else weights.reshape(-1)
        fit = LowRankKFAC(mean=mean, vectors=vectors, values=values, output_vectors=g_vecs, output_values=g_vals,
                          prior_precision=lam, captured=float(values.sum()) / stats["trace"],
                          bias=layer.bias is not None, residual=residual)
        return fit, gains

    weights, nll, lam_sum, taken = start_weights, stats["nll"], stats["g"], 0
    if refit_steps > 0:
        if stats["mismatch"] > 1e-4 * (1 + stats["scale"]):
            raise ValueError(f"the network's output differs from its last Linear layer's by up to "
                             f"{stats['mismatch']:.3g}; the evidence refit needs a network that ends in that layer")
        grad = stats["grad"]  # the first pass's, at the trained weights
        previous = float(prior_precision) if prior_precision is not None else math.nan
        start_step = 1.0  # the line search starts at twice the last accepted step (at most 1)
        for step in range(refit_steps):
            fit, _ = posterior(weights, lam_sum)
            lam = fit.prior_precision
            objective = nll + 0.5 * lam * float((weights ** 2).sum())
            gradient = grad + lam * weights
            direction = fit.solve(gradient)
            decrement = float((gradient * direction).sum())
            if decrement / 2 <= refit_tol * max(1.0, abs(objective)) and abs(lam / previous - 1) < 1e-3:
                break
            previous, t = lam, start_step
            for _ in range(12):  # backtracking (Armijo) line search along the KFAC-Newton direction
                trial = weights - t * direction
                trial_nll, trial_grad, trial_lam = evaluate(trial)
                if trial_nll + 0.5 * lam * float((trial ** 2).sum()) <= objective - 1e-4 * t * decrement:
                    break
                t /= 2
            else:  # no decrease left at float precision: the MAP for this λ
                if step == 0:
                    log.warning("the evidence refit found no decrease from the trained last layer (Newton "
                                "decrement %.3g); the posterior stays around it", decrement)
                break
            weights, nll, grad, lam_sum, taken = trial, trial_nll, trial_grad, trial_lam, taken + 1
            start_step = min(1.0, 2 * t)
            log.info("evidence refit step %d: penalised NLL %.6g, prior precision %.4g, step %.3g",
                     step + 1, trial_nll + 0.5 * lam * float((trial ** 2).sum()), lam, t)
    fit, gains = posterior(weights, lam_sum)
    fit.refits = taken
    theta_sq = float((weights ** 2).sum())
    lam = fit.prior_precision
    fit.log_marglik = -nll - 0.5 * (lam * theta_sq + float((counts * torch.log1p(gains / lam)).sum()))
    for field in ("mean", "vectors", "values", "output_vectors", "output_values"):
        setattr(fit, field, getattr(fit, field).float().cpu())
    return fit
