"""The explanation Dataset: relevance of the clean and adversarial images of an attack run (docs/method.md §5.4, §7.4).

:func:`explain_attack` explains the images ``x`` and ``x_adv`` of an attack Dataset together, with every
posterior draw and every requested rule (or method) and layer, and returns a Dataset with

``relevance`` (input, rule, layer, image, channel, height, width)
    the Bayesian explanation: the mean over draws of the per-draw maps (each for that draw's own argmax);
``relevance_std`` (same dims)
    the per-pixel standard deviation over draws (ddof = 0; 0 for a deterministic model);
``relevance_sign_agreement`` (same dims)
    the fraction of draws whose relevance has the sign of the mean map (1 = all draws agree);
``unit`` (input, layer, draw, image)
    the argmax unit each draw explained (over the flattened layer output; the class for the last layer);

coordinates ``input`` = ``clean``/``adversarial``, ``rule`` (rule, composite or method names), ``layer``
(indices) with ``layer_name`` (module names), ``image`` (the attack's test-set indices), ``draw`` with
``chain`` and ``sample`` along it (each draw's chain and sample in an HMC posterior, −1 and the draw index
otherwise; the same as in the attack Dataset); the
attack's ``label``/``success``/``failed`` per image when present; and the attack run it explains in its
attributes. With ``draws_path``, every draw's maps are also streamed, draw by draw, into a zarr store as
``relevance_draws`` (input, rule, layer, draw, image, channel, height, width) next to the summary
variables — the full array never sits in memory; open it lazily with ``xr.open_zarr`` (dask).
Maps are stored as float32.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .. import store
from ..checks import check_images, count
from ..models.posterior import Posterior
from .bayesian import Explainer, posterior_draws
from .captum_methods import METHODS, CaptumMethod
from .fused import EachDrawCallback, explain_each
from .layers import LayerSelection, layer_names, resolve_layers
from .lrp import LRP
from .rise import RISE

log = logging.getLogger(__name__)

INPUTS = ("clean", "adversarial")
MAP_DIMS = ("input", "rule", "layer", "image", "channel", "height", "width")
DRAW_DIMS = ("input", "rule", "layer", "draw", "image", "channel", "height", "width")
#: Upper bound of one zarr chunk of ``relevance_draws`` (bytes, uncompressed).
CHUNK_BYTES = 4 * 2**20
#: Per-image variables copied from the attack Dataset when present.
ATTACK_VARIABLES = ("label", "pred", "pred_adv", "success", "failed")


def make_explainers(method: str = "lrp", rules: Sequence[str] = ("epsilon",), composite: str | None = None,
                    initial: str = "one_hot", **params: Any) -> list[Explainer]:
    """The explainers of one run: an :class:`LRP` per rule (and one for ``composite``) for
    ``method='lrp'``, :class:`~bayesrobust.explain.rise.RISE` for ``'rise'``, else the one
    :class:`CaptumMethod` ``method``.

    Raises
    ------
    ValueError
        Unknown method, rule, composite or parameter; rules/composite given with a Captum method.
    """
    if method == "lrp":
        explainers: list[Explainer] = [LRP(rule, initial=initial, **params) for rule in rules]
        if composite is not None:
            explainers.append(LRP(composite=composite, initial=initial, **params))
        if not explainers:
            raise ValueError("no LRP rule or composite given")
        return explainers
    if method not in METHODS and method != "rise":
        raise ValueError(f"unknown method {method!r}; expected one of lrp, {', '.join(METHODS)}, rise")
    if composite is not None:
        raise ValueError(f"a Zennit composite applies to method 'lrp' only, not {method!r}")
    if method == "rise":
        return [RISE(**params)]
    return [CaptumMethod(method, **params)]


def attack_images(attack: xr.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean and adversarial images ``(x, x_adv)`` of an attack Dataset as (N, C, H, W) tensors.

    Raises
    ------
    ValueError
        A variable is missing or has other dims, or an image has a NaN or ±inf pixel or one outside [0, 1].
    """
    missing = [v for v in ("x", "x_adv") if v not in attack.variables]
    if missing:
        raise ValueError(f"the attack Dataset lacks variable(s) {', '.join(missing)}; expected an attack "
                         f"result with x and x_adv (image, channel, height, width)")
    dims = ("image", "channel", "height", "width")
    found = [tuple(str(d) for d in attack[v].dims) for v in ("x", "x_adv")]
    if any(sorted(f) != sorted(dims) for f in found):
        raise ValueError(f"the attack Dataset's x and x_adv have dims {found[0]} and {found[1]}; expected {dims}")
    x = torch.from_numpy(np.asarray(attack["x"].transpose(*dims).values))
    x_adv = torch.from_numpy(np.asarray(attack["x_adv"].transpose(*dims).values))
    check_images(x, "the attack's clean images x")
    check_images(x_adv, "the attack's adversarial images x_adv")
    return x, x_adv


def check_attack(attack: xr.Dataset, expected: Mapping[str, Any]) -> None:
    """Check that the attack run was made on the model being explained.

    Parameters
    ----------
    attack
        The attack Dataset.
    expected
        Attribute name → value the attack's attributes must hold (e.g. ``{"model": "fullBNN"}``);
        an attribute the attack lacks is not checked.

    Raises
    ------
    ValueError
        A mismatch, naming the attribute and both values.
    """
    for key, value in expected.items():
        if key in attack.attrs and str(attack.attrs[key]) != str(value):
            raise ValueError(f"the attack run was made with {key}={attack.attrs[key]!r} but the model to "
                             f"explain has {key}={value!r}; explain the attack run of this model")


def _draw_chunks(n_images: int, image_shape: tuple[int, ...]) -> tuple[int, ...]:
    per_image = int(np.prod(image_shape)) * 4
    return (1, 1, 1, 1, max(1, min(n_images, CHUNK_BYTES // per_image)), *image_shape)


def _create_draws_store(path: Path, coords: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Write the metadata of the (still empty, NaN-filled) ``relevance_draws`` array and the coordinates."""
    import dask.array as da

    chunks = _draw_chunks(shape[4], shape[5:])
    template = xr.Dataset({"relevance_draws": (DRAW_DIMS, da.full(shape, np.nan, dtype=np.float32,
                                                                   chunks=chunks))}, coords=coords)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        template.to_zarr(path, mode="w", compute=False, write_empty_chunks=True)


def checked_inputs(posterior: Posterior, attack: xr.Dataset, explainers: Sequence[Explainer],
                   n_draws: int | None, batch_size: int | None, expected: Mapping[str, Any] | None
                   ) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """The checks of an attack explanation before any draw (explainers, counts, the attack and its images):
    ``(x, x_adv, n_draws)``, ``n_draws`` defaulting to the attack's for a posterior."""
    if not explainers:
        raise ValueError("no explainer given")
    names = [e.name for e in explainers]
    if len(set(names)) != len(names):
        raise ValueError(f"explainer names must differ, got {names}")
    count("n_draws", n_draws)
    count("batch_size", batch_size)
    check_attack(attack, expected or {})
    x, x_adv = attack_images(attack)
    if n_draws is None and "n_draws" in attack.attrs and posterior.kind != "deterministic":
        n_draws = int(attack.attrs["n_draws"])
    return x, x_adv, n_draws


def explain_attack(posterior: Posterior, attack: xr.Dataset, explainers: Sequence[Explainer], *,
                   layers: LayerSelection = None, n_draws: int | None = None, batch_size: int | None = None,
                   seed: int = 0, draws_path: str | Path | None = None, config: Mapping[str, Any] | None = None,
                   attack_run: str = "", expected: Mapping[str, Any] | None = None,
                   progress: Callable[[int], object] | None = None,
                   device: str | torch.device = "cpu",
                   extra_attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Explain the clean and adversarial images of ``attack`` with every draw of ``posterior``.

    Parameters
    ----------
    posterior
        The attacked model (a deterministic model is a one-draw posterior).
    attack
        An attack Dataset with ``x`` and ``x_adv`` (image, channel, height, width) and the ``image``
        coordinate; select a subset with ``attack.isel(image=...)`` first if wanted.
    explainers
        From :func:`make_explainers`; their names become the ``rule`` coordinate and must differ.
    layers
        Layer indices or ``'all'`` (default).
    n_draws
        Draws ``0..n_draws-1``; by default the attack's ``n_draws`` attribute, so every image is explained
        with the networks it was attacked with (draw ``j`` is the same network in both).
    batch_size, seed
        See :func:`~bayesrobust.explain.bayesian.explain_posterior`.
    draws_path
        If given, a zarr store written atomically with ``relevance_draws`` (streamed draw by draw) and
        the summary variables.
    config
        The run's config, stored as JSON in the ``config`` attribute (the explanation settings are added
        under ``'explanation'`` unless present).
    attack_run
        Name or path of the attack run (stored in the attributes with the attack's config).
    expected
        Attributes the attack must have (:func:`check_attack`), e.g. the model name.
    progress
        Called with 1 after each (rule, draw).
    device
        Where the network runs.
    extra_attrs
        More attributes to store (the stage adds the content hashes ``attack_sha256`` and ``model_sha256`` of
        the attack file and the model checkpoint the explanation was computed from).

    Returns
    -------
    xarray.Dataset
        The summary Dataset described in the module docstring (in memory, without ``relevance_draws``;
        ``attrs['draws_store']`` names the zarr store if any, by its file name: it lies next to the
        explanation file).

    Raises
    ------
    ValueError
        Not an attack Dataset, a mismatching attack, duplicate rule names, invalid layers, ``n_draws`` or
        ``batch_size``, or attack images (``x`` or ``x_adv``) with a NaN or ±inf pixel or outside [0, 1] —
        all before any draw is made.
    """
    x, x_adv, n_draws = checked_inputs(posterior, attack, explainers, n_draws, batch_size, expected)
    names = [e.name for e in explainers]
    n_images = x.shape[0]
    draws = posterior_draws(posterior, n_draws, device=device)  # generated once, for every explainer
    n, net = len(draws), draws.net
    idx = resolve_layers(net, layers)
    both = torch.cat([x, x_adv])
    image_shape = tuple(x.shape[1:])
    coords = {"input": _text(INPUTS), "rule": _text(names), "layer": idx,
              "layer_name": ("layer", _text(layer_names(net, idx))),
              "image": attack["image"].values, **draws.coords(), "channel": np.arange(image_shape[0]),
              "height": np.arange(image_shape[1]), "width": np.arange(image_shape[2])}
    map_shape = (len(INPUTS), len(explainers), len(idx), n_images, *image_shape)
    summary = {name: np.empty(map_shape, dtype=np.float32)
               for name in ("relevance", "relevance_std", "relevance_sign_agreement")}
    units = None

    def run(on_draw: EachDrawCallback | None) -> None:
        nonlocal units
        results = explain_each(draws, both, explainers, layers=idx, batch_size=batch_size, seed=seed,
                               on_draw=on_draw, progress=progress)
        for r, (result, _) in enumerate(results):
            for name, value in zip(summary, (result.mean, result.std, result.sign_agreement)):
                summary[name][:, r] = _split_inputs(value, n_images)
        units = results[0][0].units.reshape(n, len(idx), len(INPUTS), n_images).permute(2, 1, 0, 3).numpy()

    settings = {"explainers": [e.config() for e in explainers], "layers": idx, "n_draws": n,
                "batch_size": batch_size, "seed": seed}
    cfg = dict(config or {})
    cfg.setdefault("explanation", settings)
    attrs = store.provenance("explanation", cfg, method=explainers[0].config()["method"], rules=names,
                             layers=idx, n_draws=n, posterior_kind=posterior.kind, attack_run=str(attack_run),
                             attack_config=attack.attrs.get("config", ""),
                             attack_created=attack.attrs.get("created", ""),
                             draws_store=Path(draws_path).name if draws_path is not None else "",
                             **dict(extra_attrs or {}))

    if draws_path is None:
        run(None)
        return _summary_dataset(summary, units, coords, attack, attrs)

    with store.atomic_zarr(draws_path) as tmp:
        _create_draws_store(tmp, coords, (len(INPUTS), len(explainers), len(idx), n, n_images, *image_shape))
        import zarr
        # every chunk is written, even one equal to the fill value: a missing chunk then means a damaged store
        array = zarr.open_array(str(Path(tmp) / "relevance_draws"), mode="r+").with_config(
            {"write_empty_chunks": True})

        def write(r: int, j: int, maps: torch.Tensor, _units: torch.Tensor) -> None:
            array[:, r, :, j] = _split_inputs(maps, n_images)

        run(write)
        ds = _summary_dataset(summary, units, coords, attack, attrs)
        store.validate(ds)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            ds.assign_attrs({store.ALL_CHUNKS_ATTR: 1}).to_zarr(tmp, mode="a", write_empty_chunks=True)
    return ds


def _text(values: Sequence[str]) -> np.ndarray:
    """Variable-length strings (zarr v3 has no stable fixed-length unicode type)."""
    return np.array(list(values), dtype=object)


def _split_inputs(maps: torch.Tensor, n_images: int) -> np.ndarray:
    """(L, 2N, C, H, W) → (2, L, N, C, H, W) float32 NumPy: clean first, adversarial second."""
    layers = maps.shape[0]
    out = maps.detach().reshape(layers, len(INPUTS), n_images, *maps.shape[2:]).transpose(0, 1)
    return out.to(torch.float32).cpu().numpy()


def _summary_dataset(summary: dict[str, np.ndarray], units: np.ndarray | None, coords: dict[str, Any],
                     attack: xr.Dataset, attrs: dict[str, Any]) -> xr.Dataset:
    data_vars: dict[str, Any] = {name: (MAP_DIMS, value) for name, value in summary.items()}
    data_vars["unit"] = (("input", "layer", "draw", "image"), units)
    for name in ATTACK_VARIABLES:
        if name in attack.variables and attack[name].dims == ("image",):
            data_vars[name] = ("image", attack[name].values)
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    ds["relevance"].attrs["long_name"] = "mean over posterior draws of the layer-wise relevance"
    ds["relevance_std"].attrs["long_name"] = "standard deviation over posterior draws (ddof=0)"
    ds["relevance_sign_agreement"].attrs["long_name"] = "fraction of draws with the sign of the mean"
    ds["unit"].attrs["long_name"] = "argmax unit explained by each draw (flattened layer output)"
    return ds

