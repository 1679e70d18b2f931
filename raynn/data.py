"""Datasets as numpy arrays: loaded once, shared through Ray's object store, sliced by index.

Images are ``uint8`` arrays of shape ``(N, C, H, W)``, labels ``int64``. Batches are made by
index slicing and normalised per channel on the fly (:func:`to_tensor`), never through a
per-sample ``Dataset.__getitem__``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

from raynn.errors import DatasetError, SpecError

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
        smallest = int(np.bincount(self.y_train, minlength=self.num_classes).min())
        if folds > smallest:
            raise SpecError(
                f"spec key 'folds': {folds} folds but the smallest class of {self.name} has "
                f"{smallest} training samples; use at most {smallest} folds"
            )
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        self.folds = [
            (tr.astype(np.int64), va.astype(np.int64))
            for tr, va in skf.split(np.zeros(len(self.y_train)), self.y_train)
        ]
        return self


def to_tensor(
    x: np.ndarray, idx: np.ndarray | slice, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Slice ``x[idx]`` (uint8) into a normalised float32 NCHW tensor."""
    batch = torch.from_numpy(np.ascontiguousarray(x[idx])).float().div_(255.0)
    return batch.sub_(mean).div_(std)


def _stratified_subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> Split:
    if n is None or n >= len(y):
        return x, y
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    idx = np.sort(idx)
    return x[idx], y[idx]


def _digits(spec) -> ArrayDataset:  # noqa: ANN001 - DatasetSpec, imported lazily
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    idx_tr, idx_te = train_test_split(
        np.arange(len(y)), test_size=spec.test_fraction, stratify=y, random_state=spec.seed
    )
    x_tr, y_tr = _stratified_subset(x[np.sort(idx_tr)], y[np.sort(idx_tr)], spec.limit, spec.seed)
    return ArrayDataset(
        "digits", x_tr, y_tr, x[np.sort(idx_te)], y[np.sort(idx_te)], num_classes=10
    )


_TORCHVISION = {
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}


def _torchvision(name: str) -> Callable[..., ArrayDataset]:
    cls_name, folder = _TORCHVISION[name]

    def load(spec) -> ArrayDataset:  # noqa: ANN001
        import torchvision

        root = spec.resolved_root
        cls = getattr(torchvision.datasets, cls_name)
        splits = []
        for train in (True, False):
            try:
                ds = cls(root=str(root), train=train, download=spec.download)
            except RuntimeError as exc:
                looked = root / folder
                raise DatasetError(
                    f"dataset '{name}' not found under {looked} ({exc}); set dataset.root or "
                    f"RAYNN_DATA to the folder that holds {folder}/, or set dataset.download: "
                    "true where a network is reachable"
                ) from None
            except OSError as exc:
                raise DatasetError(
                    f"dataset '{name}' under {root} cannot be read: {exc}; check the files or "
                    "download them again"
                ) from None
            data = np.asarray(ds.data)
            data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
            splits.append(
                (np.ascontiguousarray(data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64))
            )
        (x_tr, y_tr), (x_te, y_te) = splits
        x_tr, y_tr = _stratified_subset(x_tr, y_tr, spec.limit, spec.seed)
        return ArrayDataset(name, x_tr, y_tr, x_te, y_te, num_classes=10)

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


def load_dataset(spec) -> ArrayDataset:  # noqa: ANN001 - raynn.spec.DatasetSpec
    """Load the dataset a :class:`~raynn.spec.DatasetSpec` names into arrays."""
    from raynn.registry import DATASETS

    loader = DATASETS.get(spec.name, key="dataset.name")
    data = loader(spec)
    if not isinstance(data, ArrayDataset):
        raise DatasetError(
            f"dataset loader {spec.name!r} returned {type(data).__name__}, "
            "expected raynn.data.ArrayDataset"
        )
    return data


def dataset_root_hint(root: Path) -> str:
    """A short description of what a root folder holds, for error messages."""
    if not root.exists():
        return f"{root} does not exist"
    return f"{root} holds: {', '.join(sorted(p.name for p in root.iterdir())[:8]) or 'nothing'}"
