"""One attack run, end to end: attack the posterior on a set of test images, evaluate, label (docs/method.md §4, §7.3).

:func:`run_attack` returns the ``attack`` Dataset of the results store; write it with
:func:`bayesrobust.store.write_netcdf` and open it anywhere with ``xr.open_dataset``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr

from .. import store
from ..data import Data
from ..models.draws import DrawSet
from ..models.posterior import Posterior
from .base import Attack, check_inputs
from .evaluate import evaluate
from .posterior import PosteriorAverage

log = logging.getLogger(__name__)


def model_attrs(model: Posterior, data: Data, model_name: str) -> dict[str, Any]:
    """Which model was attacked on which images (attributes shared by attack runs and tables)."""
    return {"model": model_name, "inference": model.kind, "arch": model.arch.name,
            "hidden": model.arch.hidden,
            "dataset": data.name, "split": data.split, "n_images": len(data)}


def attack_attrs(attack: Attack) -> dict[str, Any]:
    """Flat, always-present attack attributes: FGSM is one step of size ε without random start."""
    p = attack.params()
    return {"attack": p["attack"], "norm": p["norm"], "epsilon": p["epsilon"],
            "steps": p.get("steps", 1), "step_size": p.get("step_size", p["epsilon"]),
            "random_start": p.get("random_start", False), "loss": p["loss"]}


#: Above this share of unperturbed images an attack is reported as masked (:func:`run_attack` warns). A step
#: with a non-zero gradient moves some pixel of nearly every image; an image stays put when its gradient is
#: exactly zero, as when the softmax saturates in float32 (docs/results §2.7: 75% of one chain's images).
MASKED_SHARE = 0.01


def unperturbed_share(x: torch.Tensor, x_adv: torch.Tensor) -> float:
    """The share of images (first dimension) that the attack left exactly as they were."""
    return float((x_adv == x).flatten(1).all(dim=1).double().mean()) if x.shape[0] else 0.0


def run_attack(model: Posterior, data: Data, attack: Attack, *, mode: str = "mean_grad",
               n_draws: int | None = None, seed: int = 0, model_name: str = "",
               config: Mapping[str, Any] | None = None, chunk_size: int | None = None,
               device: str | torch.device = "cpu") -> xr.Dataset:
    """Attack ``model`` on every image of ``data`` and return the labelled result.

    Parameters
    ----------
    model
        The trained posterior (deterministic: S = 1).
    data
        The evaluation images, e.g. ``balanced_subset(load(name, 'test'), 500, seed)``; ``data.index``
        becomes the ``image`` coordinate.
    attack
        FGSM or PGD, wrapped in :class:`PosteriorAverage` with ``mode``.
    mode, n_draws, chunk_size
        See :class:`PosteriorAverage`. The same S draws are attacked and used for the evaluation.
    seed
        Seeds the random start (a CPU ``torch.Generator``).
    model_name
        ``'baseNN'``, ``'advNN'`` or ``'fullBNN'`` (stored as the ``model`` attribute).
    config
        The full config to store as JSON (default: the settings among the attributes).

    Returns
    -------
    xarray.Dataset
        Variables ``x``, ``x_adv`` (image, channel, height, width); ``label``, ``pred``, ``pred_adv``,
        ``success``, ``failed``, ``softmax_robustness`` (image); ``probs``, ``probs_adv`` (image, class);
        ``draw_pred``, ``draw_pred_adv`` (draw, image). Coordinates ``image`` (test-set indices), ``class``,
        ``draw`` (the posterior draw indices used) with ``chain`` and ``sample`` along it (each draw's chain
        and sample in an HMC posterior; −1 and the draw index otherwise). Attributes: model, inference, dataset,
        attack, norm,
        epsilon, steps, step_size, random_start, loss, posterior_mode, n_draws, seed, clean/adversarial accuracy,
        success rate, ``unperturbed_share`` (:func:`unperturbed_share`; above :data:`MASKED_SHARE` a warning
        says the attack is masked), and the provenance of :func:`bayesrobust.store.provenance`.

    Raises
    ------
    ValueError
        Images with a NaN or ±inf pixel or outside [0, 1], bad labels, or an invalid mode, ``n_draws`` or
        ``chunk_size`` — all before any draw is made.
    """
    if not isinstance(attack, Attack):
        raise TypeError(f"attack must be an Attack (FGSM, PGD), got {type(attack).__name__}")
    wrapper = PosteriorAverage(attack, mode=mode, n_draws=n_draws, chunk_size=chunk_size)
    check_inputs(data.x, data.y, "the images of data")  # before the draws are made
    draws = DrawSet(model, n_draws, device=device)
    x, y = data.x.to(device), data.y.to(device)
    log.info("attacking %d images with %r on %d draws", len(data), wrapper, len(draws))
    x_adv = wrapper(draws, x, y, generator=torch.Generator().manual_seed(int(seed)))
    ev = evaluate(draws, x, x_adv, y, chunk_size=chunk_size)
    setup = {**model_attrs(model, data, model_name), **attack_attrs(attack), "posterior_mode": mode,
             "n_draws": len(draws), "seed": int(seed)}
    unperturbed = unperturbed_share(x, x_adv)
    if unperturbed > MASKED_SHARE and attack.epsilon > 0:
        remedy = ("attack the logit margin instead (loss 'margin', `--loss margin`), which does not saturate, or "
                  if attack.loss == "ce" else "")
        log.warning("%s left %.0f%% of the images of %s unperturbed: the loss gradient is exactly zero there (a "
                    "saturated softmax masks the attack), so this attack's robustness numbers measure unperturbed "
                    "images; %scompare models on the cross-attack control (docs/method.md §4.4, §9.8)",
                    type(attack).__name__, 100 * unperturbed, model_name or "the model", remedy)
    attrs = {**setup, "accuracy": ev.accuracy, "adversarial_accuracy": ev.adversarial_accuracy,
             "success_rate": ev.success_rate, "unperturbed_share": unperturbed}
    image, pixel = ("image",), ("image", "channel", "height", "width")
    cpu = {k: v.detach().cpu().numpy() for k, v in {
        "x": x, "x_adv": x_adv, "label": y, "pred": ev.pred, "pred_adv": ev.pred_adv, "success": ev.success,
        "failed": ev.failed, "softmax_robustness": ev.softmax_robustness, "probs": ev.probs,
        "probs_adv": ev.probs_adv, "draw_pred": ev.draw_pred, "draw_pred_adv": ev.draw_pred_adv}.items()}
    ds = xr.Dataset(
        {"x": (pixel, cpu["x"]), "x_adv": (pixel, cpu["x_adv"]),
         **{k: (image, cpu[k]) for k in ("label", "pred", "pred_adv", "success", "failed",
                                         "softmax_robustness")},
         "probs": (("image", "class"), cpu["probs"]), "probs_adv": (("image", "class"), cpu["probs_adv"]),
         "draw_pred": (("draw", "image"), cpu["draw_pred"]),
         "draw_pred_adv": (("draw", "image"), cpu["draw_pred_adv"])},
        coords={"image": data.index.numpy(), "class": np.arange(cpu["probs"].shape[1]),
                **draws.coords()},
        attrs=store.provenance("attack", dict(config) if config is not None else setup, **attrs))
    ds["softmax_robustness"].attrs["description"] = "1 - max_k |p_k(x) - p_k(x_adv)|, p the predictive"
    ds["success"].attrs["description"] = "correct on x and wrong on x_adv"
    ds["failed"].attrs["description"] = "correct on x and on x_adv"
    return store.validate(ds, "attack")
