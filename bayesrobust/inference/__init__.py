"""Training of the three model kinds of the paper: ``baseNN``, ``advNN`` and ``fullBNN`` (docs/method.md §3).

:func:`train_model` is the one call behind ``python -m bayesrobust.train``: it loads the preset's data,
trains, and returns the model as a :class:`~bayesrobust.models.posterior.Posterior` whose ``config`` holds
everything needed to reproduce it. :func:`load_model` reads it back and explains how to make a missing one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .. import data as datasets
from ..models.bayesian import NormalPrior
from ..models.posterior import Posterior, recover
from ..models.posterior import deterministic as one_draw_posterior
from ..paths import model_dir, model_tag
from ..presets import INFERENCES, Preset, art_config, check_model
from .deterministic import train_network
from .ensemble import train_ensemble
from .hmc import NUTSKernel, train_hmc
from .laplace import check_arch_for_laplace, fit_laplace
from .sgmcmc import train_sgmcmc
from .svi import MeanFieldGuide, train_svi

__all__ = ["train_model", "training_fields", "load_model", "train_network", "train_svi", "train_hmc",
           "MeanFieldGuide", "NUTSKernel", "train_sgmcmc", "train_ensemble", "fit_laplace"]


def resolve_inference(preset: Preset, model: str, inference: str | None) -> str | None:
    """The inference of a fullBNN (the preset's unless given); ``None`` for the deterministic models."""
    if model == "artBNN":  # ART is added to the SVI objective only
        if inference not in (None, "svi"):
            raise ValueError(f"artBNN is trained by SVI (the ART term is added to the ELBO); got inference "
                             f"{inference!r}")
        return "svi"
    if model != "fullBNN":
        return None
    inference = preset.inference if inference is None else inference
    if inference not in INFERENCES:
        raise ValueError(f"unknown inference {inference!r}; expected one of {', '.join(INFERENCES)}")
    return inference


#: The preset fields :func:`train_model` reads for each model (by its resolved inference for a fullBNN), beside
#: ``dataset`` and ``arch``: a stored model is the same model when these, the model, inference and seed are
#: equal; other preset fields (``n_inputs``, the attack settings, another inference's settings) do not make
#: it stale. ART settings are compared apart (:func:`~bayesrobust.presets.art_config`).
TRAINING_FIELDS: dict[str, tuple[str, ...]] = {
    "baseNN": ("base",), "advNN": ("adv", "adv_optim"), "artNN": ("base",), "artBNN": ("svi", "prior_scale"),
    "svi": ("svi", "prior_scale"), "hmc": ("hmc", "prior_scale"), "sghmc": ("sgmcmc", "prior_scale"),
    "sgld": ("sgmcmc", "prior_scale"), "ensemble": ("base", "ensemble"),
    "laplace": ("base", "laplace", "prior_scale")}


def training_fields(model: str, inference: str | None) -> tuple[str, ...]:
    """The preset fields that train ``model`` (with the resolved ``inference`` of a fullBNN)."""
    key = inference if model == "fullBNN" else model
    if key not in TRAINING_FIELDS:
        raise ValueError(f"no training settings known for model {model!r} with inference {inference!r}")
    return ("dataset", "arch", *TRAINING_FIELDS[key])


def train_model(preset: Preset, model: str, inference: str | None = None, seed: int = 0,
                device: str = "cpu", data_root: str | Path | None = None,
                progress: bool = False, map_network: torch.nn.Module | None = None) -> Posterior:
    """Train ``model`` (baseNN, advNN or fullBNN) with the settings of ``preset`` on its dataset's train split.

    ``map_network``: for ``inference='laplace'``, the trained baseNN to approximate around (default: one
    trained here with ``preset.base`` and ``seed``).

    The returned posterior's ``config`` records the preset (with overrides), model, inference and seed, and
    ``config['train_seconds']``.
    """
    import time
    check_model(model)
    inference = resolve_inference(preset, model, inference)
    train = datasets.load(preset.dataset, "train", data_root)
    if train.x.shape[1:] != torch.Size(preset.arch.in_shape):
        raise ValueError(f"dataset {preset.dataset!r} has images of shape {tuple(train.x.shape[1:])} but "
                         f"architecture {preset.arch.name!r} was configured for {preset.arch.in_shape}")
    start = time.perf_counter()
    extra: dict = {}
    if model == "baseNN":
        net, hist = train_network(preset.arch, train, preset.base, None, seed, device, progress)
        posterior = one_draw_posterior(net)
        extra = hist.as_tensors()
    elif model == "advNN":
        net, hist = train_network(preset.arch, train, preset.adv_optim, preset.adv, seed, device, progress)
        posterior = one_draw_posterior(net)
        extra = hist.as_tensors()
    elif model == "artNN":
        net, hist = train_network(preset.arch, train, preset.base, None, seed, device, progress,
                                  art=art_config(preset))
        posterior = one_draw_posterior(net)
        extra = hist.as_tensors()
    elif model == "artBNN":
        posterior = train_svi(preset.arch, train, preset.svi, seed=seed, device=device, progress=progress,
                              prior=NormalPrior(preset.prior_scale), art=art_config(preset))
    elif inference in ("sghmc", "sgld"):
        posterior = train_sgmcmc(preset.arch, train, preset.sgmcmc, inference, seed=seed, device=device,
                                 progress=progress, prior=NormalPrior(preset.prior_scale))
    elif inference == "ensemble":
        posterior = train_ensemble(preset.arch, train, preset.base, preset.ensemble, seed, device, progress)
    elif inference == "laplace":
        check_arch_for_laplace(preset.arch, preset.laplace)
        if map_network is None:  # the baseNN of this preset and seed, trained here
            map_network, _ = train_network(preset.arch, train, preset.base, None, seed, device, progress)
        posterior = fit_laplace(map_network, train, preset.laplace, prior_scale=preset.prior_scale, seed=seed)
    elif inference == "svi":
        posterior = train_svi(preset.arch, train, preset.svi, seed=seed, device=device, progress=progress,
                              prior=NormalPrior(preset.prior_scale))
    else:
        posterior = train_hmc(preset.arch, train, preset.hmc, seed=seed, device=device, progress=progress,
                              prior=NormalPrior(preset.prior_scale))
    posterior.extra.update(extra)
    posterior.seed = seed
    posterior.config.update(preset=preset.to_dict(), model=model, inference=inference, seed=seed,
                            dataset=preset.dataset, n_train=len(train),
                            train_seconds=time.perf_counter() - start)
    if model in ("artNN", "artBNN"):
        posterior.config["art"] = asdict(art_config(preset))
    return posterior


def train_command(preset: Preset, model: str, inference: str | None) -> str:
    """The shell command that trains what :func:`load_model` could not find."""
    inf = f" --inference {inference}" if model == "fullBNN" and inference else ""
    return f"python -m bayesrobust.train --model {model} --preset {preset.name}{inf} --out OUT"


def load_model(out: str | Path, preset: Preset, model: str, inference: str | None = None,
               check_arch: bool = False) -> Posterior:
    """Read the model trained by ``python -m bayesrobust.train`` under ``out``.

    The checkpoint's own config (``posterior.config['preset']``) says which data and architecture it was
    trained with (it may have been trained with overrides of ``preset``); ``check_arch`` additionally
    requires the architecture to equal ``preset.arch``.

    Raises
    ------
    FileNotFoundError
        Not trained yet; the message names the train command to run.
    CorruptResultError
        The checkpoint cannot be read (:meth:`Posterior.load`).
    ValueError
        The checkpoint's architecture differs from the preset's.
    """
    check_model(model)
    inference = resolve_inference(preset, model, inference)
    directory = model_dir(out, preset.name, model, inference)
    recover(directory)
    if not directory.exists():
        raise FileNotFoundError(f"no trained {model_tag(model, inference)} for preset {preset.name!r} in "
                                f"{directory}; train it first: "
                                f"{train_command(preset, model, inference).replace('OUT', str(out))}")
    return Posterior.load(directory, preset.arch if check_arch else None)


def describe(posterior: Posterior) -> dict:
    """Flat summary of a trained model for logs and the CLI."""
    cfg = posterior.config
    return {"model": cfg.get("model"), "inference": cfg.get("inference"), "kind": posterior.kind,
            "arch": asdict(posterior.arch), "train_seconds": round(float(cfg.get("train_seconds", 0.0)), 1)}
