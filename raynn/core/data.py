"""Datasets as numpy arrays: loaded once, shared with workers, sliced by index.

Images are ``uint8`` arrays of shape ``(N, C, H, W)``, labels ``int64``. Batches are made by
index slicing and normalised per channel on the fly in one pass (:class:`Normalizer`),
never through a per-sample ``Dataset.__getitem__``. Nothing here imports scikit-learn:
splits come from :mod:`raynn.core.folds` and ``digits`` is read from its data file directly.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raynn.core.folds import stratified_kfold, stratified_split
from raynn.core.loaders import Arrays, as_arrays, call_loader, first_line
from raynn.core.registry import DATASETS
from raynn.core.safe_pickle import load_arrays
from raynn.errors import DatasetError, RaynnError, SpecError

Split = tuple[np.ndarray, np.ndarray]


@dataclass
class ArrayDataset:
    """A train split, an optional test split, per-channel mean/std and K-fold indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    folds: list[Split] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_arrays(
            self.name, self.x_train, self.y_train, self.x_test, self.y_test, self.num_classes
        )
        if not self.mean:
            x = self.x_train.astype(np.float32) / 255.0
            self.mean = tuple(float(v) for v in x.mean(axis=(0, 2, 3)))
            self.std = tuple(max(float(v), 1e-3) for v in x.std(axis=(0, 2, 3)))

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one sample."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def with_folds(self, folds: int, seed: int) -> ArrayDataset:
        """Compute stratified K-fold (train, validation) indices; checks folds vs. classes."""
        counts = np.bincount(self.y_train, minlength=self.num_classes)
        smallest = int(counts.min())
        if smallest == 0:
            raise DatasetError(
                f"dataset {self.name}: class {int(counts.argmin())} of {self.num_classes} has no "
                "training samples; give every class samples, or lower num_classes"
            )
        if folds > smallest:
            raise SpecError(
                f"spec key 'folds': {folds} folds but the smallest class of {self.name} has "
                f"{smallest} training samples; use at most {smallest} folds"
            )
        self.folds = [
            (tr.astype(np.int64), va.astype(np.int64))
            for tr, va in stratified_kfold(self.y_train, folds, seed)
        ]
        return self

    def normalizer(self) -> Normalizer:
        """The per-channel normalisation of this dataset's images."""
        return Normalizer(self.mean, self.std)


def check_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    num_classes: int,
) -> None:
    """The checks of an :class:`ArrayDataset`'s arrays: one line naming what is wrong and the
    fix (:class:`~raynn.errors.DatasetError`)."""
    _check_split(name, num_classes, "train", x_train, y_train)
    if (x_test is None) != (y_test is None):
        raise DatasetError(
            f"dataset {name}: a test split needs both x_test and y_test; return both or neither"
        )
    if x_test is not None:
        _check_split(name, num_classes, "test", x_test, y_test)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DatasetError(
                f"dataset {name}: test samples are {x_test.shape[1:]} but training samples "
                f"{x_train.shape[1:]}; make them the same shape"
            )


def _check_split(name: str, num_classes: int, split: str, x: Any, y: Any) -> None:
    """One line naming what is wrong with a split a loader returned, and the fix."""
    where = f"dataset {name}: {split}"
    if not isinstance(num_classes, int) or num_classes < 2:
        raise DatasetError(f"dataset {name}: num_classes must be an int >= 2")
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        shape = getattr(x, "shape", type(x).__name__)
        raise DatasetError(
            f"{where} images have shape {shape}; return a 4-D uint8 array "
            "(samples, channels, height, width)"
        )
    if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu":
        shape = getattr(y, "shape", type(y).__name__)
        raise DatasetError(f"{where} labels have shape {shape}; return a 1-D integer array")
    if len(x) != len(y):
        raise DatasetError(
            f"{where} has {len(x)} images but {len(y)} labels; return one label per image"
        )
    if len(y) == 0:
        raise DatasetError(f"{where} is empty; the loader returned no samples")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise DatasetError(
            f"{where} labels span {low}..{high} but num_classes is {num_classes}; "
            f"labels must be 0..{num_classes - 1}"
        )


def checked_dataset(
    name: str, arrays: Arrays, num_classes: int, limit: int | None, seed: int
) -> ArrayDataset:
    """``arrays`` (x_train, y_train, x_test, y_test) as an :class:`ArrayDataset`, checked
    whole before ``limit`` keeps a stratified subset of the training samples (a label file
    short of its images is named even when ``limit`` would have hidden it)."""
    x_tr, y_tr, x_te, y_te = arrays
    check_arrays(name, x_tr, y_tr, x_te, y_te, num_classes)
    x_tr, y_tr = _stratified_subset(x_tr, y_tr, limit, seed)
    return ArrayDataset(name, x_tr, y_tr, x_te, y_te, num_classes=num_classes)


class Normalizer:
    """uint8 images to normalised float32: ``(x / 255 - mean) / std`` per channel.

    Computed as ``x * scale + shift`` (``scale = 1 / (255 std)``, ``shift = -mean / std``):
    a conversion and two in-place passes instead of three. Measured on a 64-image CIFAR-sized
    batch at one thread: 50 us against 87 us for ``float().div_(255).sub_(mean).div_(std)``
    (``torch.addcmul`` with broadcasting took 115 us).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * s)
        self.shift = -m / s

    def __call__(self, x: np.ndarray, idx: np.ndarray | slice | None = None) -> torch.Tensor:
        """``x[idx]`` (all of ``x`` when None) as a normalised float32 NCHW tensor.

        The tensor always has the canonical NCHW strides. A one-channel array may carry any
        stride on its channel axis (``data[:, None]`` gives 0) and still count as contiguous;
        torch then takes such a batch for channels-last and convolves it another way, which
        changed the last bits of a job's test loss between a process that loaded the data
        and one that received a copy.
        """
        batch = torch.from_numpy(np.ascontiguousarray(x if idx is None else x[idx]))
        out = torch.empty(batch.shape, dtype=torch.float32)
        return out.copy_(batch).mul_(self.scale).add_(self.shift)


def _stratified_subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> Split:
    if n is None or n >= len(y):
        return x, y
    try:
        idx, _ = stratified_split(y, train_size=n, seed=seed)
    except ValueError:  # a class would be missing from the kept or the dropped samples
        k = len(np.unique(y))
        fix = f"use {k} to {len(y) - k}, or leave it out" if 2 * k <= len(y) else "leave it out"
        raise SpecError(
            f"spec key 'dataset.limit': {n} of {len(y)} training samples cannot keep every "
            f"one of the {k} classes in a stratified subset; {fix}"
        ) from None
    idx = np.sort(idx)
    return x[idx], y[idx]


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``load_digits()``: ``(images (1797, 8, 8) in 0..16, labels)``.

    Read from the data file scikit-learn ships, without importing scikit-learn (its import
    costs about a second); ``tests/test_data.py`` checks it against ``load_digits``.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("dataset 'digits' needs scikit-learn; pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    try:
        with gzip.open(path, mode="rt", encoding="utf-8") as fh:
            table = np.loadtxt(fh, delimiter=",")
    except OSError as exc:
        raise DatasetError(
            f"dataset 'digits': cannot read {path} ({exc}); reinstall scikit-learn"
        ) from None
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _digits(spec) -> ArrayDataset:  # noqa: ANN001 - DatasetSpec, imported lazily
    images, y = digits_arrays()
    x = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    try:
        idx_tr, idx_te = stratified_split(y, test_fraction=spec.test_fraction, seed=spec.seed)
    except ValueError as exc:  # a side too small to hold every class
        raise SpecError(f"spec key 'dataset.test_fraction': {exc}; use e.g. 0.2") from None
    idx_tr, idx_te = np.sort(idx_tr), np.sort(idx_te)
    arrays = (x[idx_tr], y[idx_tr], x[idx_te], y[idx_te])
    return checked_dataset("digits", arrays, 10, spec.limit, spec.seed)


_TORCHVISION = {
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}
_IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format; ``path`` or ``path.gz``) as an array."""
    gz = path.with_name(path.name + ".gz")
    if path.exists():
        raw = path.read_bytes()
    elif gz.exists():
        raw = gzip.decompress(gz.read_bytes())
    else:
        raise FileNotFoundError(2, "no such file", str(path))
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise OSError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_split(name: str, folder: Path, train: bool) -> Split:
    """One split of MNIST/FashionMNIST (raw IDX files) or CIFAR-10 (python batches)."""
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        xs, ys = [], []
        for f in files:
            with open(folder / f, "rb") as fh:
                try:  # numpy arrays and plain containers only: pickle.load would run code
                    batch = load_arrays(fh)
                except (pickle.UnpicklingError, EOFError) as exc:
                    raise ValueError(f"{folder / f}: {exc or 'truncated'}") from None
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)
    image_file, label_file = _IDX_FILES[train]
    images, labels = read_idx(folder / "raw" / image_file), read_idx(folder / "raw" / label_file)
    if len(images) != len(labels):
        raise ValueError(f"{image_file} holds {len(images)} images but {label_file} {len(labels)}")
    return np.array(images[:, None]), labels.astype(np.int64)  # a copy: canonical strides


def _torchvision(name: str) -> Callable[..., ArrayDataset]:
    cls_name, folder = _TORCHVISION[name]

    def load(spec) -> ArrayDataset:  # noqa: ANN001
        root = spec.resolved_root
        looked = root / folder
        if spec.download:  # torchvision fetches (and checks) the files; raynn reads them
            import torchvision

            cls = getattr(torchvision.datasets, cls_name)
            try:
                for train in (True, False):
                    cls(root=str(root), train=train, download=True)
            except (RuntimeError, OSError) as exc:
                raise DatasetError(
                    f"dataset '{name}' could not be downloaded to {root} ({exc}); check the "
                    f"network, or put {folder}/ under dataset.root (or RAYNN_DATA)"
                ) from None
        try:
            (x_tr, y_tr), (x_te, y_te) = (_read_split(name, looked, t) for t in (True, False))
        except FileNotFoundError as exc:
            raise DatasetError(
                f"dataset '{name}' not found under {looked} ({exc.filename} is missing); set "
                f"dataset.root or RAYNN_DATA to the folder that holds {folder}/, or set "
                "dataset.download: true where a network is reachable"
            ) from None
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise DatasetError(
                f"dataset '{name}' under {root} cannot be read: {exc}; check the files or "
                "download them again"
            ) from None
        return checked_dataset(name, (x_tr, y_tr, x_te, y_te), 10, spec.limit, spec.seed)

    return load


def _synthetic(spec) -> ArrayDataset:  # noqa: ANN001
    """Seeded, learnable images: one random prototype per class plus Gaussian noise."""
    rng = np.random.default_rng(spec.seed)
    protos = rng.uniform(0.2, 0.8, size=(spec.num_classes, *spec.shape))

    def draw(n: int) -> Split:
        y = np.arange(n, dtype=np.int64) % spec.num_classes
        rng.shuffle(y)
        x = protos[y] + spec.noise * rng.standard_normal((n, *spec.shape)) * 0.25
        return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8), y

    x_tr, y_tr = draw(spec.samples)
    x_te, y_te = draw(spec.test_samples)
    return ArrayDataset("synthetic", x_tr, y_tr, x_te, y_te, num_classes=spec.num_classes)


LOADERS: dict[str, Callable[..., ArrayDataset]] = {
    "digits": _digits,
    "mnist": _torchvision("mnist"),
    "fashion_mnist": _torchvision("fashion_mnist"),
    "cifar10": _torchvision("cifar10"),
    "synthetic": _synthetic,
}
DATASETS.add_builtins(LOADERS)


def load_dataset(spec) -> ArrayDataset:  # noqa: ANN001 - raynn.spec.DatasetSpec
    """Load the dataset a :class:`~raynn.spec.DatasetSpec` names into arrays.

    A loader of the user's (``pkg.mod:loader``, or a name registered from Python) is called
    as :func:`raynn.core.loaders.call_loader` says and may return any of
    :data:`raynn.core.loaders.RETURNS`; its classes are ``0..`` its largest label, and
    ``limit`` applies after the checks. An exception it raises becomes one line naming it.
    """
    loader = DATASETS.get(spec.name, key="dataset.name")
    if spec.name in LOADERS and getattr(spec, "args", None):
        raise SpecError(
            f"spec key 'dataset.args': the built-in dataset {spec.name} takes none; drop them "
            "(they are keyword arguments of a pkg.mod:loader)"
        )
    try:
        value = call_loader(spec.name, loader, spec)
        if not isinstance(value, ArrayDataset):
            value = as_arrays(spec.name, value)  # may read a torch Dataset: the user's code
    except RaynnError:
        raise
    except Exception as exc:
        raise DatasetError(
            f"dataset loader {spec.name} failed: {first_line(exc)}; fix the loader or run with "
            "--debug for the traceback"
        ) from exc
    if not isinstance(value, ArrayDataset):
        return checked_dataset(spec.name, value, _classes(value), spec.limit, spec.seed)
    if spec.name in LOADERS or spec.limit is None or spec.limit >= len(value.y_train):
        return value  # the built-ins apply limit themselves (synthetic has its samples)
    arrays = (value.x_train, value.y_train, value.x_test, value.y_test)
    return checked_dataset(value.name, arrays, value.num_classes, spec.limit, spec.seed)


def _classes(arrays: Arrays) -> int:
    """``1 +`` the largest integer label of the splits (at least 2)."""
    highest = [
        int(y.max())
        for y in arrays[1::2]
        if isinstance(y, np.ndarray) and y.size and y.dtype.kind in "iu"
    ]
    return max(2, max(highest, default=0) + 1)


def dataset_root_hint(root: Path) -> str:
    """A short description of what a root folder holds, for error messages."""
    if not root.exists():
        return f"{root} does not exist"
    return f"{root} holds: {', '.join(sorted(p.name for p in root.iterdir())[:8]) or 'nothing'}"
