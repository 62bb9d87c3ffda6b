"""Attributional robustness training, ART (Singh et al. 2020, arXiv:1911.13073; seed 002; docs/method.md §11.5).

The ART term of an image x with label y pulls the input-gradient map of the true class towards the image and
pushes that of the strongest other class away from it: with g_c = ∂f_c/∂x, the most likely class n ≠ y, and M
the k pixels of largest |g_y| (channel-summed),

    L_attr(x) = softplus( d(x, g_y) − d(x, g_n) ),   d(a, b) = 1 − cos(a ⊙ M, b ⊙ M),

a triplet loss with soft margin on the cosine distance, anchored at the image. Training minimises
CE(f(x̃), y) + λ·L_attr(x̃) at a point x̃ of the Linf ε-ball that first *maximises* L_attr (projected signed
steps from a random start: the attack inside the loop). ReLU nets have no usable second derivative, so
L_attr and its attack use the β-softplus surrogate (:func:`~bayesrobust.adversarial.attribution.softplus_activations`);
the cross-entropy uses the network as it is.

- ``artNN``: a deterministic network trained on that objective (:func:`train_network` with ``art``).
- ``artBNN``: the same term added to the SVI objective — :class:`ARTBayesianNetwork` observes y at x̃ (drawn
  for the weights sampled in this ELBO particle) and adds ``pyro.factor(−λ·(N/B)·Σ L_attr)``, so SVI
  maximises E_q[log p(y | x̃, w) − λ L_attr(x̃; w)] + E_q[log p(w) − log q(w)].
"""

from __future__ import annotations

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from ..adversarial.attribution import softplus_activations
from ..models.bayesian import BayesianNetwork
from ..presets import ARTConfig

#: Added to norms before dividing.
TINY = 1e-12


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cos(a, b) per image, flattened (N,)."""
    a, b = a.flatten(1), b.flatten(1)
    return 1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + TINY)


def art_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, k: int, beta: float | None,
             create_graph: bool = True) -> torch.Tensor:
    """L_attr per image, (N,), for images x (N, C, H, W) and labels y (N,) (module docstring).

    Both class gradients come from one forward and one backward of the batch doubled; ``create_graph``
    keeps the result differentiable in x and in the network's parameters. ``k`` is capped at the pixels
    of an image.
    """
    n = x.shape[0]
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    with torch.enable_grad(), softplus_activations(net, beta):
        xx = torch.cat([x, x])
        logits = net(xx)
        with torch.no_grad():
            others = logits[:n].masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).argmax(1)
        picked = logits.gather(1, torch.cat([y, others]).view(-1, 1)).sum()
        g, = torch.autograd.grad(picked, xx, create_graph=create_graph)
    g_pos, g_neg = g[:n], g[n:]
    with torch.no_grad():
        importance = g_pos.abs().sum(1).flatten(1)
        mask = torch.zeros_like(importance)
        mask.scatter_(1, importance.topk(min(int(k), importance.shape[1]), dim=1).indices, 1.0)
        mask = mask.view(n, 1, *x.shape[2:])
    anchor = x * mask
    return F.softplus(_cosine_distance(anchor, g_pos * mask) - _cosine_distance(anchor, g_neg * mask))


def art_attack(net: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ARTConfig) -> torch.Tensor:
    """x̃ in the Linf ε-ball around x (and [0, 1]) that increases Σ L_attr: ``cfg.steps`` signed steps from
    a uniform random start (the global RNG). Detached."""
    x = x.detach()
    x_adv = (x + torch.empty_like(x).uniform_(-cfg.epsilon, cfg.epsilon)).clamp(0, 1)
    for _ in range(cfg.steps):
        xg = x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(art_loss(net, xg, y, k=cfg.k, beta=cfg.beta).sum(), xg)
        x_adv = torch.min(torch.max(x_adv.detach() + cfg.step_size * grad.sign(), x - cfg.epsilon),
                          x + cfg.epsilon).clamp(0, 1)
    return x_adv.detach()


def art_objective(net: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ARTConfig) -> torch.Tensor:
    """The mean ART training loss of a batch: CE(f(x̃), y) + λ·L_attr(x̃), x̃ from :func:`art_attack` (made
    with the network in eval mode, as advNN's examples)."""
    mode = net.training
    net.eval()
    x_adv = art_attack(net, x, y, cfg)
    net.train(mode)
    return F.cross_entropy(net(x_adv), y) + cfg.weight * art_loss(net, x_adv, y, k=cfg.k, beta=cfg.beta).mean()


class ARTBayesianNetwork(BayesianNetwork):
    """The Pyro model of artBNN: the likelihood observed at x̃ plus the ART term as a ``pyro.factor``.

    In a forward pass the weights are sampled once (PyroModule caches them for the whole call), so the
    attack, the likelihood and the ART term all use the same network draw.
    """

    def __init__(self, *args, art: ARTConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.art = art

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            return super().forward(x, y)
        x_adv = art_attack(self.net, x, y, self.art)
        out = self.net(x_adv)
        self.likelihood(out, y)
        size = self.likelihood.dataset_size
        scale = size / x.shape[0] if size else 1.0
        term = art_loss(self.net, x_adv, y, k=self.art.k, beta=self.art.beta).sum()
        pyro.factor("art", -self.art.weight * scale * term)
        return out
