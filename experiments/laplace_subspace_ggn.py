"""Is the KFAC form of the GGN what makes the last-layer Laplace too wide? (issue 9; docs/method.md §13.2)

Takes a fitted ``kron_lowrank`` Laplace (``OUT/models/PRESET/fullBNN_laplace``) and rebuilds its posterior on
the k kept feature directions V with the exact GGN there, Σₙ Λₙ ⊗ zₙzₙᵀ (zₙ = Vᵀφ̃ₙ; a (C·k)-square matrix,
10,000 for mnist_conv's C = 10, k = 1,000), in place of KFAC's (mean Λₙ) ⊗ diag(S). Off V both keep the KFAC
form, so the two differ only in how the class and feature curvature combine on V. It prints the test NLL of

* the stored posterior rebuilt here (KFAC on V; must reproduce ``bayesrobust evaluate``'s figure),
* the exact GGN on V at the stored λ, and at the λ its own marginal likelihood picks,
* both with the weights off V held at the MAP (what the off-V remainder costs),

each with 64 draws on every test image, beside the MAP's. Per-image logit deviations are drawn from their
exact marginal (the V part from the (C·k)-dim Gaussian, the off-V part as ‖(I − VVᵀ)φ̃‖ (ρG + λI)^(-1/2) ξ),
so the per-image predictive, and the NLL, are those of the posterior. A diagnostic, printed, not a test.

    .venv/bin/python experiments/laplace_subspace_ggn.py --out OUT --data-root ../shared/datasets
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bayesrobust.data import load  # noqa: E402
from bayesrobust.inference.laplace import LOWRANK_FIELDS, PREFIX  # noqa: E402
from bayesrobust.inference.laplace_lowrank import (  # noqa: E402
    LowRankKFAC,
    evidence_prior_precision,
    feature_batches,
    likelihood_terms,
)
from bayesrobust.models.architectures import build  # noqa: E402
from bayesrobust.models.posterior import Posterior  # noqa: E402
from bayesrobust.presets import get_preset  # noqa: E402


def stream(net, x, vectors, batch_size=1000):
    """z = Vᵀφ̃ (N, k), the off-V energy ‖φ̃‖² − ‖z‖² (N,) and the MAP logits (N, C), in float64."""
    zs, rest, logits = [], [], []
    for phi, out in feature_batches(net, x, batch_size):
        z = phi @ vectors
        zs.append(z.double())
        rest.append((phi.double().pow(2).sum(1) - z.double().pow(2).sum(1)).clamp_min(0))
        logits.append(out.double())
    return torch.cat(zs), torch.cat(rest), torch.cat(logits)


def exact_ggn(z, logits, batch=4000):
    """Σₙ Λₙ ⊗ zₙzₙᵀ as a (C·k, C·k) matrix, class-major (index c·k + i), Λₙ = diag(pₙ) − pₙpₙᵀ."""
    n, k = z.shape
    c = logits.shape[1]
    out = torch.zeros(c, k, c, k, dtype=torch.float64)
    for start in range(0, n, batch):
        zb, p = z[start:start + batch].float(), logits[start:start + batch].softmax(-1)
        lam = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).float()
        for a in range(c):
            for b in range(a, c):
                block = (zb * lam[:, a, b, None]).T @ zb
                out[a, :, b] += block.double()
                if b != a:
                    out[b, :, a] += block.T.double()
    return out.reshape(c * k, c * k)


def nll(logits0, y, zt, v_dev, off_scale, off_factor, n_draws, generator):
    """Test NLL with logits = MAP + V part + off-V part, per image, averaging the softmax over draws.
    ``zt`` (N, k): the test features on V; ``v_dev(generator)`` gives a (C, k) weight deviation on V;
    ``off_scale`` (N,) = ‖(I − VVᵀ)φ̃‖; ``off_factor`` (C, C) = (ρG + λI)^(-1/2)."""
    probs = torch.zeros_like(logits0)
    for _ in range(n_draws):
        dv = v_dev(generator)  # (C, k)
        f = logits0 + zt @ dv.T + off_scale[:, None] * (torch.randn(logits0.shape, generator=generator,
                                                                      dtype=torch.float64) @ off_factor.T)
        probs += f.softmax(-1)
    probs /= n_draws
    return float(-probs[torch.arange(len(y)), y].clamp_min(1e-300).log().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="mnist_conv")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--draws", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    preset = get_preset(args.preset)
    post = Posterior.load(os.path.join(args.out, "models", preset.name, "fullBNN_laplace"))
    info, extra = post.config["laplace"], post.extra
    if info["structure"] != "kron_lowrank":
        raise SystemExit(f"needs a kron_lowrank Laplace, got {info['structure']!r}")
    fit = LowRankKFAC(mean=extra[PREFIX + "mean"], prior_precision=info["prior_precision"][0],
                      captured=info["captured"], bias=info["bias"], residual=info["residual"],
                      **{f: extra[f"{PREFIX}lowrank.{f}"] for f in LOWRANK_FIELDS})
    net = build(post.arch)
    net.load_state_dict({**post.params, **post.buffers}, strict=True)
    net.eval()
    v = fit.vectors.float()
    c, k = fit.output_vectors.shape[0], v.shape[1]
    lam = fit.prior_precision
    start = time.perf_counter()
    train, test = load(preset.dataset, "train", args.data_root), load(preset.dataset, "test", args.data_root)
    z, _, logits = stream(net, train.x, v)
    zt, rest_t, logits_t = stream(net, test.x, v)
    y = test.y.long() if torch.is_tensor(test.y) else torch.as_tensor(test.y).long()
    print(f"features: {time.perf_counter() - start:.0f} s ({len(z)} train, {len(zt)} test, k = {k})", flush=True)
    start = time.perf_counter()
    g_sum = likelihood_terms(logits, torch.as_tensor(train.y).long(), "classification", 1.0)[2]  # Σ Λₙ
    g_lib = fit.output_vectors.double() @ torch.diag(fit.output_values.double()) @ fit.output_vectors.double().T
    print(f"G stored vs recomputed (mean Λ): max |Δ| {float((g_lib - g_sum / len(z)).abs().max()):.2e}, "
          f"max |G| {float(g_lib.abs().max()):.2e}")
    ggn = exact_ggn(z, logits)
    print(f"exact GGN on V: {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    gains, vecs = torch.linalg.eigh(ggn)
    gains = gains.clamp_min(0)
    print(f"eigh: {time.perf_counter() - start:.0f} s", flush=True)
    kfac_gains = fit.precision_eigenvalues().double().reshape(-1)  # γ_c s_i
    print(f"trace of the GGN on V: exact {float(gains.sum()):.4g}, KFAC {float(kfac_gains.sum()):.4g}; largest "
          f"{float(gains.max()):.4g} vs {float(kfac_gains.max()):.4g}; eigenvalues > λ: {int((gains > lam).sum())} vs "
          f"{int((kfac_gains > lam).sum())} of {c * k}")
    d_aug = v.shape[0]
    off_gains = fit.residual_eigenvalues().double()
    theta_sq = float(fit.mean.double().pow(2).sum())
    counts = torch.cat([torch.ones(c * k, dtype=torch.float64), torch.full((c,), float(d_aug - k),
                                                                           dtype=torch.float64)])
    lam_exact = evidence_prior_precision(torch.cat([gains, off_gains]), theta_sq, counts)
    lam_kfac = evidence_prior_precision(torch.cat([kfac_gains, off_gains]), theta_sq, counts)
    print(f"λ: stored {lam:.4g}, KFAC root recomputed {lam_kfac:.4g}, exact-on-V root {lam_exact:.4g}")
    off_scale = rest_t.sqrt()
    q, gam = fit.output_vectors.double(), fit.output_values.double()

    def off_factor(lam_):
        return q @ torch.diag((gam * fit.residual + lam_).rsqrt()) @ q.T

    def kfac_dev(lam_):
        scale = (gam[:, None] * fit.values.double()[None, :] + lam_).rsqrt()  # (C, k) in (G-eigvec, V) basis

        def draw(gen):
            return q @ (scale * torch.randn(c, k, generator=gen, dtype=torch.float64))
        return draw

    def exact_dev(lam_):
        scale = (gains + lam_).rsqrt()

        def draw(gen):
            return (vecs @ (scale * torch.randn(c * k, generator=gen, dtype=torch.float64))).reshape(c, k)
        return draw

    map_nll = float(torch.nn.functional.cross_entropy(logits_t, y))
    print(f"\ntest NLL ({len(y)} images, {args.draws} draws): MAP {map_nll:.4f}")
    none = torch.zeros_like(off_scale)
    share = rest_t / (rest_t + zt.pow(2).sum(1))
    print(f"off-V share of the test features' energy: median {float(share.median()):.3f}")
    for name, dev, lam_, off in [("KFAC on V (the stored posterior)", kfac_dev, lam, off_scale),
                                 ("exact GGN on V, stored λ", exact_dev, lam, off_scale),
                                 ("exact GGN on V, its own marginal-likelihood λ", exact_dev, lam_exact, off_scale),
                                 ("KFAC on V, off-V weights held at the MAP", kfac_dev, lam, none),
                                 ("exact GGN on V, off-V weights held at the MAP", exact_dev, lam, none)]:
        gen = torch.Generator().manual_seed(0)
        value = nll(logits_t, y, zt, dev(lam_), off, off_factor(lam_), args.draws, gen)
        print(f"  {name} (λ = {lam_:.4g}): {value:.4f}", flush=True)


if __name__ == "__main__":
    main()
