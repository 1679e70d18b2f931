"""What the examples share: their options, and MNIST / CIFAR-10 from disk (or a stand-in).

Datasets are read from ``$RAYNN_DATA`` (default ``./data``), as torchvision lays them out.
"""

from __future__ import annotations

import argparse
import os
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset


def options(doc: str, epochs: int, batch_size: int = 64, address: bool = False) -> Namespace:
    """The examples' command line; the defaults are the full run."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subset", type=int, help="use only the first N training and test images")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--executor", default="ray", help="ray (parallel), or serial (one process)")
    p.add_argument("--download", action="store_true", help="download the dataset first")
    p.add_argument("--root-dir", default="runs", help="where run directories are written")
    p.add_argument("--seed", type=int, default=0, help="seeds the model's initial weights")
    if address:
        p.add_argument("--address", help="a Ray cluster to train on (default: this machine)")
    args = p.parse_args()
    torch.manual_seed(args.seed)  # the models are built after this: the same start every run
    return args


def subset(dataset: Dataset, n: int | None) -> Dataset:
    """The first ``n`` samples of ``dataset`` (all of it when ``n`` is None)."""
    return dataset if n is None or n >= len(dataset) else Subset(dataset, range(n))


def data_root() -> str:
    return os.environ.get("RAYNN_DATA", "./data")


def mnist(train: bool, transform, download: bool = False) -> Dataset:  # noqa: ANN001
    """torchvision's MNIST: from disk, else downloaded, else MNIST-shaped synthetic digits."""
    from torchvision.datasets import MNIST

    root = data_root()
    if not download:
        try:
            return MNIST(root, train=train, transform=transform, download=False)
        except RuntimeError:
            print(f"MNIST is not under {root} (set RAYNN_DATA); downloading it")
    try:
        return MNIST(root, train=train, transform=transform, download=True)
    except Exception as exc:  # noqa: BLE001 - no network: say so and carry on
        print(f"MNIST could not be downloaded ({type(exc).__name__}): using synthetic 28x28 data")
        return Synthetic(60000 if train else 10000, (28, 28), train, transform)


def cifar10(train: bool, transform, download: bool = False) -> Dataset:  # noqa: ANN001
    """torchvision's CIFAR-10 when on disk (or downloaded), else CIFAR-shaped synthetic data."""
    from torchvision.datasets import CIFAR10

    root = data_root()
    if download or (Path(root) / "cifar-10-batches-py").is_dir():
        try:
            return CIFAR10(root, train=train, transform=transform, download=download)
        except Exception as exc:  # noqa: BLE001
            print(f"CIFAR-10 could not be read or downloaded ({type(exc).__name__})")
    print(f"CIFAR-10 is not under {root}: using CIFAR-shaped synthetic data (32x32 RGB)")
    return Synthetic(50000 if train else 10000, (32, 32, 3), train, transform)


class Synthetic(Dataset):
    """Ten classes of images: a fixed random pattern per class plus per-image noise.

    Yields PIL images like torchvision's datasets, so the same transforms apply; learnable
    (the pattern gives the class away) but not trivially (the noise is strong).
    """

    def __init__(self, n: int, shape: tuple[int, ...], train: bool, transform=None) -> None:  # noqa: ANN001
        self.n, self.shape, self.train, self.transform = n, shape, train, transform
        self.patterns = np.random.default_rng(0).integers(0, 256, size=(10, *shape))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):  # noqa: ANN204
        rng = np.random.default_rng((int(self.train), i))
        label = int(rng.integers(10))
        pixels = self.patterns[label] + rng.normal(0.0, 50.0, size=self.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        return (self.transform(image) if self.transform else image), label
