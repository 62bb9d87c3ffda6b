"""fullBNN by stochastic-gradient MCMC: SGHMC (Chen, Fox & Guestrin 2014) and SGLD (Welling & Teh 2011) on
minibatches of the full training set (docs/method.md §13.1).

The potential is the full-data negative log posterior U(θ) = −log p(θ) − Σ_i log p(y_i | x_i, θ), estimated on a
minibatch of B images with the likelihood scaled by N / B. With step ε = lr / N and friction α, one step is
(the "SGD with momentum" form of SGHMC, gradient-noise estimate set to zero)::

    v ← (1 − α) v − ε ∇Ũ(θ) + √(2 α ε T) ξ,    θ ← θ + v,      ξ ~ N(0, I)

SGLD is the case α = 1 (no momentum): θ ← θ − ε ∇Ũ(θ) + √(2 ε T) ξ. T is the posterior temperature (1: the
Bayesian posterior). With ``precondition='adapted'`` both use a diagonal preconditioner P (an inverse mass,
Springenberg et al. 2016; Li et al. 2016): ε ∇Ũ becomes ε P ∇Ũ and the noise √(2 α ε T P) ξ. During burn-in
P_i = sqrt(mean V / V_i), clipped to [1, max_precondition], where V is a running mean of the squared gradient and
the mean is over the same tensor (so the weights with the larger gradients keep the plain step; scaling to the
largest V instead diverged on mnist_fc2 within 100 steps); P is then fixed, which leaves the target exp(−U/T)
unchanged. Weights the likelihood hardly constrains then relax to the prior in steps rather than in tens of
epochs.

We write the update ourselves: it is a few lines on the plain network's parameters, in place, whereas the
``posteriors`` package wants a functional (torch.func) log-posterior over a TensorDict state and three more
pre-1.0 dependencies (torchopt, tensordict, optree) for the same arithmetic; the exactness tests
(tests/test_posteriors.py) check ours, plain and preconditioned, against a conjugate posterior.

Each chain starts from its own initialisation (seed + 1000 c), runs ``burnin`` epochs, then keeps ``samples``
weight samples at equally spaced steps of the remaining epochs (cyclical schedule: in the low-step half of
each cycle). The result is a :class:`~bayesrobust.models.posterior.Posterior` of kind ``'sghmc'`` or
``'sgld'`` with leading dims (chain, sample), as NUTS's.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import Data, batches
from ..errors import DivergenceError
from ..models.architectures import ArchConfig, build
from ..models.bayesian import Likelihood, Prior, make_likelihood, make_prior
from ..models.posterior import Posterior
from ..presets import SGMCMCConfig

log = logging.getLogger(__name__)


def step_size(cfg: SGMCMCConfig, step: int, burnin_steps: int, total_steps: int) -> float:
    """lr of ``step`` (0-based): constant during burn-in; afterwards constant, decaying as
    (1 + t / 1000)^−0.55 (t = steps since burn-in), or cosine cycles from lr to 0."""
    if step < burnin_steps or cfg.schedule == "constant":
        return cfg.lr
    t = step - burnin_steps
    if cfg.schedule == "decay":
        return cfg.lr * (1 + t / 1000) ** -0.55
    cycle = max((total_steps - burnin_steps) // cfg.cycles, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (t % cycle) / cycle))


def sample_steps(cfg: SGMCMCConfig, burnin_steps: int, total_steps: int) -> np.ndarray:
    """The steps after which a sample is kept: ``cfg.samples`` equally spaced steps after burn-in, ending at
    the last step (cyclical: equally spaced in the second, low-step half of each cycle)."""
    span = total_steps - burnin_steps
    if span < cfg.samples:
        raise ValueError(f"{cfg.samples} samples need at least as many steps after burn-in; there are {span} "
                         f"({cfg.epochs - cfg.burnin} epochs): lower samples or raise epochs")
    if cfg.schedule != "cyclical":
        return burnin_steps + np.round(np.linspace(span / cfg.samples, span, cfg.samples)).astype(int) - 1
    cycle = span // cfg.cycles
    per_cycle = np.array_split(np.arange(cfg.samples), cfg.cycles)
    steps = []
    for c, members in enumerate(per_cycle):
        if len(members) == 0:
            continue
        start = burnin_steps + c * cycle + cycle // 2
        steps.extend(np.round(np.linspace(start + (cycle - cycle // 2) / len(members), start + cycle - cycle // 2,
                                          len(members))).astype(int) - 1)
    return np.asarray(steps)


def preconditioner(sq_grad: torch.Tensor, cap: float) -> torch.Tensor:
    """P of one parameter tensor from the running mean of its squared gradient: sqrt(mean V / V) per entry,
    in [1, cap] (an entry with V = 0 gets the cap)."""
    ratio = sq_grad.mean() / sq_grad.clamp_min(torch.finfo(sq_grad.dtype).tiny)
    return ratio.sqrt().clamp_(1.0, cap)


SQ_GRAD_DECAY = 0.99  # running mean of the squared gradient (RMSprop's usual decay)


def _chain(arch: ArchConfig, data: Data, cfg: SGMCMCConfig, prior: Prior, lik: Likelihood, seed: int,
           device: str | torch.device, progress: bool,
           friction: float) -> tuple[dict[str, torch.Tensor], int, dict[str, torch.Tensor]]:
    """One chain: its samples (name → (samples, *shape)), the number of steps it took, its buffers."""
    n = len(data)
    torch.manual_seed(seed)
    net = build(arch).to(device).train()
    if cfg.init_epochs > 0:  # start near a mode (as NUTS's init_epochs)
        from ..presets import OptimConfig
        from .deterministic import train_network
        net, _ = train_network(arch, data, OptimConfig(epochs=cfg.init_epochs, batch_size=cfg.batch_size),
                               seed=seed, device=device)
        net.train()
    params = dict(net.named_parameters())
    priors = {k: prior(k, v.detach()) for k, v in params.items()}  # a prior depends on the name and shape only
    momenta = {k: torch.zeros_like(v) for k, v in params.items()}
    adapt = cfg.precondition == "adapted"
    sq_grads = {k: torch.zeros_like(v) for k, v in params.items()} if adapt else {}
    precond: dict[str, torch.Tensor] = {}  # P, and its square root for the noise (adapted only)
    root: dict[str, torch.Tensor] = {}
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total, burnin = cfg.epochs * steps_per_epoch, cfg.burnin * steps_per_epoch
    keep = set(int(s) for s in sample_steps(cfg, burnin, total))
    samples: dict[str, list[torch.Tensor]] = {k: [] for k in params}
    gen = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    step = 0
    bar = tqdm(total=total, desc=f"SG-MCMC seed {seed}", disable=not progress, leave=False)
    for epoch in range(cfg.epochs):
        for xb, yb in batches(data, cfg.batch_size, shuffle=True, generator=gen):
            xb, yb = xb.to(device), yb.to(device)
            out = net(xb)
            if not torch.isfinite(out).all():  # stop at once, not at the end or in the likelihood's checks
                raise DivergenceError(
                    f"SG-MCMC chain (seed {seed}) diverged at step {step} (epoch {epoch + 1}): non-finite network "
                    f"outputs; lower lr (now {cfg.lr:g})" + (f" or max_precondition (now {cfg.max_precondition:g})"
                                                          if adapt else ""))
            log_lik = lik.distribution(out).log_prob(yb).sum() * (n / len(xb))
            log_prior = sum(priors[k].log_prob(v) for k, v in params.items())
            grads = torch.autograd.grad(-(log_lik + log_prior), list(params.values()))
            eps = step_size(cfg, step, burnin, total) / n
            with torch.no_grad():
                for (k, p), g in zip(params.items(), grads):
                    if adapt and step < burnin:  # adapted during burn-in, fixed afterwards
                        sq_grads[k].mul_(SQ_GRAD_DECAY).addcmul_(g, g, value=1 - SQ_GRAD_DECAY)
                        precond[k] = preconditioner(sq_grads[k], cfg.max_precondition)
                        root[k] = precond[k].sqrt()
                    v = momenta[k]
                    xi = torch.randn(p.shape, generator=noise, device=device, dtype=p.dtype)
                    if adapt:  # the plain sampler adds g and ξ as they are, without extra products
                        g, xi = g * precond[k], xi.mul_(root[k])
                    v.mul_(1 - friction).add_(g, alpha=-eps)
                    v.add_(xi, alpha=math.sqrt(2 * friction * eps * cfg.temperature))
                    p.add_(v)
            if step in keep:
                for k, p in params.items():
                    samples[k].append(p.detach().cpu().clone())
            step += 1
            bar.update()
    bar.close()
    if not all(torch.isfinite(s[-1]).all() for s in samples.values()):
        raise DivergenceError(f"SG-MCMC chain (seed {seed}) diverged to non-finite weights: lower lr "
                               f"(now {cfg.lr:g})")
    buffers = {k: v.detach().cpu().clone() for k, v in net.named_buffers()}
    if adapt:
        log.info("SG-MCMC seed %d: median preconditioner per tensor %s", seed,
                 {k: round(float(p.median()), 1) for k, p in precond.items()})
    return {k: torch.stack(v) for k, v in samples.items()}, step, buffers


def train_sgmcmc(arch: ArchConfig, data: Data, cfg: SGMCMCConfig, method: str = "sghmc", seed: int = 0,
                 device: str | torch.device = "cpu", progress: bool = False,
                 likelihood: str | Likelihood = "categorical", noise_scale: float | None = None, *,
                 prior: Prior | None = None, prior_scale: float = 1.0) -> Posterior:
    """Sample the full-data posterior of ``arch`` on ``data`` with SGHMC (``method='sghmc'``, friction
    ``cfg.friction``) or SGLD (``'sgld'``), ``cfg.chains`` chains; chain c is seeded ``seed + 1000 c``.

    Returns
    -------
    A ``Posterior`` of kind ``method`` with parameters (chain, sample, *shape); ``config['sgmcmc']`` records
    the steps, ``extra['chain_seconds']`` the wall time per chain. Weight-space R-hat/ESS are left to
    :mod:`bayesrobust.diagnose` (function-space numbers mean more for networks).
    """
    if method not in ("sghmc", "sgld"):
        raise ValueError(f"unknown SG-MCMC method {method!r}; expected sghmc or sgld")
    cfg.check_precondition()
    prior = make_prior(prior, prior_scale)
    lik = make_likelihood(likelihood, noise_scale).with_dataset_size(len(data))
    friction = 1.0 if method == "sgld" else cfg.friction
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    chains, seconds, steps = [], [], 0
    with torch.random.fork_rng(devices=cuda):  # the caller's global RNG is left as it was
        for c in range(cfg.chains):
            start = time.perf_counter()
            found, steps, buffers = _chain(arch, data, cfg, prior, lik, seed + 1000 * c, device, progress, friction)
            chains.append(found)
            seconds.append(time.perf_counter() - start)
            log.info("%s chain %d/%d: %d steps, %d samples in %.1f s", method, c + 1, cfg.chains, steps,
                     cfg.samples, seconds[-1])
    params = {k: torch.stack([c[k] for c in chains]) for k in chains[0]}
    return Posterior(arch, method, params, buffers=buffers, seed=seed,
                     config={"sgmcmc": {"steps_per_chain": steps, "friction": friction,
                                        "precondition": cfg.precondition}},
                     extra={"chain_seconds": torch.tensor(seconds)})
