"""Posteriors as numbered draws of a plain network (docs/method.md §3.6).

Every trained model is a :class:`Posterior`: a deterministic network is a posterior with one draw, an SVI
posterior is a mean-field Normal over the parameters, an HMC posterior is a set of samples (kind ``'hmc'``,
the name of the inference on the command line and in every stored attribute). Later stages
(attacks, explanations) never ask which: they ask for ``n`` draws and get the same networks every time.

Draw ``j`` is fixed by the posterior alone, never by how many draws are requested: for SVI the noise of draw
``j`` comes from a generator seeded with ``(seed, j)``; for HMC draw ``j`` is sample ``order[j]`` of a
permutation seeded with ``seed`` (so the first ``n`` draws are a random subset without replacement), and
:meth:`Posterior.draw_coords` tells which chain and sample that is.

The one way to use many draws (docs/method.md §8) is :class:`bayesrobust.models.draws.DrawSet`: one module whose
weights are swapped in place, draw by draw. :func:`to_arviz` exports a posterior to ArviZ.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DrawOutOfRangeError
from .architectures import ArchConfig, Network, build, check_arch, expected_shapes

if TYPE_CHECKING:
    import xarray as xr

KINDS = ("deterministic", "svi", "hmc", "sghmc", "sgld", "ensemble", "laplace")
#: Kinds whose parameters are stored samples with leading dims (chain, sample) (docs/method.md §13): NUTS,
#: SGHMC, SGLD, and the deep ensemble (K chains of one sample each: every member is its own chain).
SAMPLED = ("hmc", "sghmc", "sgld", "ensemble")
#: How messages name each kind.
KIND_LABELS = {"deterministic": "deterministic", "svi": "SVI", "hmc": "HMC", "sghmc": "SGHMC", "sgld": "SGLD",
               "ensemble": "ensemble", "laplace": "Laplace"}
#: Kind names of older checkpoints → current names (read by :meth:`Posterior.load`).
LEGACY_KINDS = {"mcmc": "hmc"}
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
DIAGNOSTICS_FILE = "diagnostics.json"


def _draw_generator(seed: int, j: int) -> torch.Generator:
    """The generator of draw ``j``: independent streams per ``(seed, j)``."""
    state = np.random.SeedSequence([int(seed), int(j)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass
class Posterior:
    """Draws of the network ``arch``.

    Parameters
    ----------
    arch
        The architecture; draws are :class:`~bayesrobust.models.architectures.Network` instances of it.
    kind
        ``'deterministic'`` (``params`` are the weights), ``'svi'`` (``params`` are the means, ``scales`` the
        standard deviations of a mean-field Normal), ``'hmc'``, ``'sghmc'``, ``'sgld'`` or ``'ensemble'``
        (:data:`SAMPLED`: ``params`` are samples with leading dims ``(chain, sample)``; an ensemble is K chains
        of one sample), or ``'laplace'`` (``params`` the MAP, the Gaussian's sampling factor in ``extra``;
        docs/method.md §13.2).
    buffers
        Non-learnable state shared by every draw (BatchNorm running statistics).
    config
        The full training config (JSON-serialisable), kept with the checkpoint.
    extra
        Other tensors saved with the checkpoint (ELBO history, MCMC diagnostics arrays).
    seed
        Fixes which network draw ``j`` is.
    provenance
        :func:`bayesrobust.store.stamp` of the first :meth:`save` (library versions, git revision, creation
        time); later saves of the same posterior keep it.
    """

    arch: ArchConfig
    kind: str
    params: dict[str, torch.Tensor]
    scales: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    seed: int = 0
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown posterior kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind == "svi" and set(self.scales) != set(self.params):
            raise ValueError("an SVI posterior needs a scale for every parameter")
        self._order: torch.Tensor | None = None

    # -- size ------------------------------------------------------------------------------------------
    @property
    def max_draws(self) -> int | None:
        """How many distinct draws exist: 1, the number of HMC samples, or ``None`` (unbounded, SVI)."""
        if self.kind == "deterministic":
            return 1
        if self.kind in SAMPLED:
            first = next(iter(self.params.values()))
            return int(first.shape[0] * first.shape[1])
        return None

    def resolve_n_draws(self, n: int | None) -> int:
        """The number of draws to use when ``n`` are asked for: always 1 for a deterministic model;
        ``None`` means all HMC samples (or 100 for SVI); 0 is an error, never "the default".

        Raises
        ------
        ValueError
            ``n`` is not positive, or more than the HMC samples that exist.
        """
        if n is not None and (isinstance(n, bool) or int(n) != n or n <= 0):
            raise ValueError(f"n_draws must be positive, got {n}")
        if self.kind == "deterministic":
            return 1
        if n is None:
            return self.max_draws or 100
        if self.max_draws is not None and n > self.max_draws:
            raise ValueError(f"n_draws={n} but this {KIND_LABELS[self.kind]} posterior has only {self.max_draws} "
                             f"samples")
        return n

    # -- draws -----------------------------------------------------------------------------------------
    def draw_params(self, j: int) -> dict[str, torch.Tensor]:
        """The learnable parameters of draw ``j`` (state-dict names of the plain network).

        Raises
        ------
        DrawOutOfRangeError
            (a ``ValueError`` and ``IndexError``) ``j`` is not a draw of this posterior (deterministic: not 0;
            HMC: beyond the samples); the message says how many there are.
        """
        if self.kind == "deterministic":
            if j != 0:
                raise DrawOutOfRangeError(f"a deterministic model has only draw 0, asked for draw {j}")
            return self.params
        if self.kind == "svi":
            g = _draw_generator(self.seed, j)
            return {k: self.params[k] + self.scales[k] * torch.randn(self.params[k].shape, generator=g,
                                                                     dtype=self.params[k].dtype)
                    for k in sorted(self.params)}
        if self.kind == "laplace":
            from ..inference.laplace import laplace_draw
            return laplace_draw(self, _draw_generator(self.seed, j))
        n = self.max_draws
        assert n is not None
        if not 0 <= j < n:
            raise DrawOutOfRangeError(f"draw {j} out of range: this {KIND_LABELS[self.kind]} posterior has {n} "
                                      f"samples")
        flat = int(self._flat_order()[j])
        return {k: v.reshape(n, *v.shape[2:])[flat] for k, v in self.params.items()}

    def _flat_order(self) -> torch.Tensor:
        """HMC: the seeded permutation of the flattened (chain, sample) index; draw ``j`` is ``order[j]``."""
        if self._order is None:
            n = self.max_draws
            self._order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        return self._order

    def draw_coords(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(chain, sample)`` of each draw in ``indices``, two int64 arrays.

        For HMC, draw ``j`` is sample ``sample[j]`` of chain ``chain[j]`` (``params[k][chain, sample]``);
        SVI and deterministic draws have no chain: chain −1 and sample ``j``.

        Raises
        ------
        DrawOutOfRangeError
            (a ``ValueError`` and ``IndexError``) An index out of range (HMC: beyond the samples;
            deterministic: not 0).
        """
        idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
        n = self.max_draws
        if n is not None and idx.size and (idx.min() < 0 or idx.max() >= n):
            raise DrawOutOfRangeError(f"draw indices {idx.tolist()} out of range: this {self.kind} posterior has "
                                      f"{n} draw(s)")
        if self.kind not in SAMPLED:
            return np.full(idx.shape, -1, dtype=np.int64), idx.copy()
        per_chain = int(next(iter(self.params.values())).shape[1])
        flat = self._flat_order().numpy().astype(np.int64)[idx]
        return flat // per_chain, flat % per_chain

    def network(self, j: int = 0, device: str | torch.device = "cpu") -> Network:
        """A new plain network holding draw ``j``, in eval mode."""
        net = build(self.arch)
        net.load_state_dict({**self.draw_params(j), **self.buffers}, strict=True)
        return net.to(device).eval()

    def stacked_params(self, n: int) -> dict[str, torch.Tensor]:
        """Draws ``0..n-1`` stacked: every parameter gets a leading dimension of size ``n``."""
        draws = [self.draw_params(j) for j in range(n)]
        return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}

    # -- checkpoints -----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``weights.pt`` (tensors only), ``config.json`` (and, for HMC, ``diagnostics.json``) into
        ``directory``, atomically: all go into a hidden temporary sibling folder ``.NAME.<random>.tmp`` that
        replaces ``directory`` only when complete (the previous version waits as ``.NAME.old`` between the two
        renames, so a kill at any moment leaves a model that :func:`recover` restores). Leftovers of an earlier
        killed save are removed first. The folder and files get normal permissions."""
        from .. import store
        directory = Path(directory)
        recover(directory)
        store.clean_leftovers(directory)
        tmp = store.temp_sibling(directory, directory=True)
        try:
            tensors = {"params": self.params, "scales": self.scales, "buffers": self.buffers,
                       "extra": self.extra}
            torch.save(tensors, tmp / WEIGHTS_FILE)
            self.provenance = self.provenance or store.stamp()
            meta = {"kind": self.kind, "arch": self.arch.to_dict(), "seed": self.seed, "config": self.config,
                    "provenance": self.provenance}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            if "diagnostics" in self.config:
                (tmp / DIAGNOSTICS_FILE).write_text(json.dumps(self.config["diagnostics"], indent=2))
            _install(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | Path, arch: ArchConfig | None = None) -> Posterior:
        """Read a checkpoint written by :meth:`save` (``torch.load(weights_only=True)``: no unpickling); a save
        killed between its renames is recovered first (:func:`recover`).

        Raises
        ------
        FileNotFoundError
            No checkpoint in ``directory``.
        CorruptResultError
            ``config.json`` or ``weights.pt`` cannot be read (the message names the file and the train
            command that redoes it).
        ValueError
            ``arch`` is given and differs from the checkpoint's architecture; the stored architecture is
            absurd (:func:`~bayesrobust.models.architectures.check_arch`: refused before the weights are
            read); or the stored tensors do not match it (:func:`check_tensors`). One line each.
        """
        from ..store import CorruptResultError, error_reason
        directory = Path(directory)
        recover(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if directory.exists() and not directory.is_dir():
            raise CorruptResultError(directory, "a file where a model folder should be")
        if not config_path.is_file() and not weights_path.is_file():
            raise FileNotFoundError(f"no model checkpoint in {directory} (expected {CONFIG_FILE} and "
                                    f"{WEIGHTS_FILE})")
        for path, other in ((config_path, WEIGHTS_FILE), (weights_path, CONFIG_FILE)):
            if not path.is_file():
                raise CorruptResultError(path, f"missing, though {other} is there")
        try:
            meta = json.loads(config_path.read_text())
            arch_entry = meta["arch"]
            kind = LEGACY_KINDS.get(meta["kind"], meta["kind"])
            seed, config = int(meta["seed"]), meta["config"]
            provenance = meta.get("provenance", {})  # absent in checkpoints written before it was kept
            for name, entry in (("arch", arch_entry), ("config", config), ("provenance", provenance)):
                if not isinstance(entry, dict):
                    raise ValueError(f"{name} is not a mapping")
        except Exception as err:
            raise CorruptResultError(config_path, error_reason(err)) from err
        try:  # before anything is allocated: a stored config may name an absurd network
            saved = check_arch(ArchConfig.from_dict(arch_entry))
        except ValueError as err:
            raise ValueError(f"checkpoint {directory} refused: {err}") from None
        except (KeyError, TypeError) as err:
            raise CorruptResultError(config_path, error_reason(err)) from err
        if kind not in KINDS:
            raise ValueError(f"checkpoint {directory} refused: unknown posterior kind {kind!r}; expected one of "
                             f"{', '.join(KINDS)}")
        if arch is not None and saved != arch:
            raise ValueError(f"checkpoint {directory} holds architecture {saved} but {arch} was requested")
        try:
            tensors = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CorruptResultError(weights_path, error_reason(err)) from err
        check_tensors(saved, kind, tensors, f"checkpoint {directory}")
        return cls(saved, kind, tensors["params"], tensors["scales"], tensors["buffers"], config,
                   tensors.get("extra", {}), seed, {str(k): str(v) for k, v in provenance.items()})


def check_tensors(arch: ArchConfig, kind: str, tensors: object, where: str = "checkpoint") -> None:
    """Check that stored tensors are those of a ``kind`` posterior of ``arch``: the parameters (and SVI scales)
    have exactly the names and shapes of the architecture's parameters (HMC: behind leading dims (chain,
    sample)), the buffers those of its buffers. The expected shapes are computed on the ``meta`` device.

    Raises
    ------
    ValueError
        One line naming the first mismatch (a missing, unexpected or misshapen tensor).
    """
    if not isinstance(tensors, dict) or not all(isinstance(tensors.get(k), dict)
                                                for k in ("params", "scales", "buffers")):
        raise ValueError(f"{where} refused: {WEIGHTS_FILE} does not hold params, scales and buffers")
    params, buffers = expected_shapes(arch)
    groups = [("parameter", tensors["params"], params, 2 if kind in SAMPLED else 0)]
    if kind == "svi":
        groups.append(("scale", tensors["scales"], params, 0))
    groups.append(("buffer", tensors["buffers"], buffers, 0))
    for what, stored, wanted, lead in groups:
        missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
        if missing or extra:
            parts = ([f"missing {what}(s) {', '.join(missing)}"] if missing else []) + \
                    ([f"unexpected {what}(s) {', '.join(extra)}"] if extra else [])
            raise ValueError(f"{where} refused: its weights do not match its architecture {arch}: "
                             f"{'; '.join(parts)}")
        for name, shape in wanted.items():
            value = stored[name]
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{where} refused: {what} {name!r} is not a tensor")
            got = tuple(value.shape)
            if len(got) != len(shape) + lead or got[lead:] != tuple(shape):
                expected = ("(chain, sample, " + ", ".join(map(str, shape)) + ")") if lead else str(tuple(shape))
                raise ValueError(f"{where} refused: {what} {name!r} has shape {got} but architecture {arch.name} "
                                 f"(hidden {arch.hidden}, in_shape {arch.in_shape}, {arch.n_classes} classes) "
                                 f"expects {expected}")
    if kind in SAMPLED and params:
        leads = {tuple(tensors["params"][k].shape[:2]) for k in params}
        if len(leads) > 1:
            raise ValueError(f"{where} refused: HMC parameters disagree on (chain, sample): {sorted(leads)}")


def _old(directory: Path) -> Path:
    """Where :meth:`Posterior.save` keeps the previous checkpoint while it is being replaced."""
    return directory.with_name(f".{directory.name}.old")


def _install(tmp: Path, directory: Path) -> None:
    """Move the complete checkpoint folder ``tmp`` to ``directory``; a previous one waits as ``.NAME.old``
    between the two renames (:func:`recover` restores it after a kill there) and is removed after."""
    from .. import store
    old = None
    if directory.exists():
        old = _old(directory)
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old is not None:
        store.remove_path(old)


def copy_checkpoint(source: str | Path, directory: str | Path) -> Path:
    """Copy the checkpoint folder ``source`` to ``directory`` byte for byte, atomically as :meth:`Posterior.save`
    (a model shared by the steps of a sweep, :mod:`bayesrobust.grid`)."""
    from .. import store
    source, directory = Path(source), Path(directory)
    recover(directory)
    store.clean_leftovers(directory)
    tmp = store.temp_sibling(directory, directory=True)
    try:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        _install(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def recover(directory: str | Path) -> bool:
    """Restore the previous checkpoint of ``directory`` if a save was killed between moving it aside
    (``.NAME.old``) and moving the new one in: ``directory`` is missing and ``.NAME.old`` holds a checkpoint.
    Returns whether it did."""
    directory = Path(directory)
    old = _old(directory)
    if directory.exists() or not ((old / CONFIG_FILE).is_file() and (old / WEIGHTS_FILE).is_file()):
        return False
    os.replace(old, directory)
    return True


def deterministic(net: Network, config: dict | None = None) -> Posterior:
    """The one-draw posterior of a trained deterministic network."""
    params = {k: v.detach().cpu().clone() for k, v in net.named_parameters()}
    buffers = {k: v.detach().cpu().clone() for k, v in net.named_buffers()}
    return Posterior(net.arch, "deterministic", params, buffers=buffers, config=config or {})


def to_arviz(posterior: Posterior, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
             n_draws: int | None = None, *, device: str | torch.device = "cpu") -> xr.DataTree:
    """The posterior as an ArviZ 1.x DataTree (``arviz_base.from_dict``), with dims ``(chain, draw)``.

    Groups:

    ``posterior``
        The weight samples, one variable per parameter (state-dict names), ``(chain, draw, *shape)``.
        HMC: every sample, ``chain`` and ``draw`` being the sampler's chain and sample (the
        ``chain``/``sample`` coordinates of stored results); SVI and deterministic: one chain
        (coordinate −1) holding draws ``0..n_draws-1``.
    ``log_likelihood``, ``predictions``, ``observed_data`` (when ``x`` and ``y`` are given)
        ``y``: log p_s(y_i | x_i) of each draw s (log-softmax of the true class), ``(chain, draw, obs)``;
        predictions ``probs`` (chain, draw, obs, class) (the same predictive as
        :func:`~bayesrobust.models.draws.draw_probabilities`, computed through a DrawSet) and ``y``, each
        draw's predicted class; observed ``y`` (obs).

    Parameters
    ----------
    n_draws
        SVI/deterministic: the draws to export (:meth:`Posterior.resolve_n_draws`). HMC exports all samples
        (R-hat and ESS need whole chains); ``n_draws`` must then be ``None`` or their number.

    Raises
    ------
    ValueError
        Only one of ``x``, ``y`` given, or ``n_draws`` asked of an HMC posterior other than all samples.
    """
    from arviz_base import from_dict

    from .draws import DrawSet, draw_probabilities

    if (x is None) != (y is None):
        raise ValueError("give both x and y (held-out images and labels) or neither")
    if posterior.kind in SAMPLED:
        if n_draws is not None and n_draws != posterior.max_draws:
            raise ValueError(f"to_arviz exports all {posterior.max_draws} HMC samples (whole chains); "
                             f"got n_draws={n_draws}")
        first = next(iter(posterior.params.values()))
        shape = (int(first.shape[0]), int(first.shape[1]))
        weights = {k: v.detach().cpu().numpy() for k, v in posterior.params.items()}
        chain_coord, draw_coord = np.arange(shape[0]), np.arange(shape[1])
        n = posterior.max_draws
    else:
        n = posterior.resolve_n_draws(n_draws)
        shape = (1, n)
        weights = {k: v.detach().cpu().numpy()[None] for k, v in posterior.stacked_params(n).items()}
        chain_coord, draw_coord = np.array([-1]), np.arange(n)
    data: dict[str, dict[str, np.ndarray]] = {"posterior": weights}
    dims: dict[str, list[str]] = {}
    coords: dict[str, np.ndarray] = {"chain": chain_coord, "draw": draw_coord}
    if x is not None and y is not None:
        draws = DrawSet(posterior, n, device=device)
        log_probs = draw_probabilities(draws, x.to(draws.device()), log=True)[0].cpu()  # (S, N, classes)
        labels = y.detach().cpu().long()
        # grid position of each draw: HMC (chain, sample); otherwise (0, j)
        rows = np.asarray(draws.chains) if posterior.kind in SAMPLED else np.zeros(n, dtype=np.int64)
        cols = np.asarray(draws.samples)
        n_images, n_classes = log_probs.shape[1:]
        loglik = np.empty((*shape, n_images), dtype=np.float64)
        probs = np.empty((*shape, n_images, n_classes), dtype=np.float64)
        loglik[rows, cols] = log_probs.gather(-1, labels.expand(n, -1)[..., None])[..., 0].double().numpy()
        probs[rows, cols] = log_probs.exp().double().numpy()
        data["log_likelihood"] = {"y": loglik}
        data["predictions"] = {"y": probs.argmax(-1), "probs": probs}
        data["observed_data"] = {"y": labels.numpy()}
        dims.update(y=["obs"], probs=["obs", "class"])
        coords.update(obs=np.arange(n_images), **{"class": np.arange(n_classes)})
    return from_dict(data, dims=dims, coords=coords, pred_dims=dims, pred_coords=coords,
                     attrs={"/": {"inference": posterior.kind, "arch": posterior.arch.name,
                                  "seed": int(posterior.seed)}})
