"""Posterior predictive: the mean over draws of the softmax (SPEC 1.4)."""

from __future__ import annotations

import torch

from .posterior import Posterior


@torch.no_grad()
def predictive_probs(posterior: Posterior, x: torch.Tensor, n_draws: int | None = None,
                     batch_size: int = 500, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-draw and mean softmax of ``x``.

    Parameters
    ----------
    x
        Images (N, C, H, W) in [0, 1].
    n_draws
        Draws ``0..S-1`` to use (see :meth:`Posterior.resolve_n_draws`).

    Returns
    -------
    mean : (N, classes) tensor, the posterior predictive.
    per_draw : (S, N, classes) tensor.
    """
    n = posterior.resolve_n_draws(n_draws)
    net = posterior.network(device=device)
    per_draw = torch.empty(n, x.shape[0], posterior.arch.n_classes)
    for j in posterior.iter_draws(net, n):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            per_draw[j, start:start + batch_size] = torch.softmax(net(xb), dim=-1).cpu()
    return per_draw.mean(0), per_draw


def accuracy(posterior: Posterior, x: torch.Tensor, y: torch.Tensor, n_draws: int | None = None,
             device: str | torch.device = "cpu") -> float:
    """Accuracy of the posterior predictive's argmax on ``(x, y)``."""
    mean, _ = predictive_probs(posterior, x, n_draws, device=device)
    return float((mean.argmax(-1) == y).float().mean())
