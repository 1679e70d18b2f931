"""A user's own dataset loader (``dataset.name: pkg.mod:loader``), called the natural way,
and what it returns as raynn's arrays.

:func:`call_loader` calls a loader as its signature asks: with ``dataset.args`` as keyword
arguments, and with the :class:`~raynn.spec.DatasetSpec` first only when it takes a
positional parameter those leave unfilled (the built-ins' way); a loader that takes nothing
is called with nothing. :func:`as_arrays` turns what it returns, one of :data:`RETURNS`, into
``(x_train, y_train, x_test, y_test)``: images ``uint8`` NCHW, labels ``int64``. Images may be
numpy arrays or tensors, ``(N, C, H, W)`` or ``(N, H, W)`` (one channel), ``uint8`` or
integers 0..255, or floats in [0, 1] (``ToTensor()``'s scale: multiplied by 255 and rounded).
A torch ``Dataset`` is read once through ``dataset[i]``: tensors CHW or HW, arrays and PIL
images HWC or HW. The checks of the arrays themselves are :class:`raynn.core.data.ArrayDataset`'s.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from raynn.errors import DatasetError

RETURNS = (
    "(x, y), (x, y, x_test, y_test), a torch Dataset of (image, label) pairs, a (train, test) "
    "pair of them, or a raynn ArrayDataset"
)
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


def call_loader(name: str, loader: Callable[..., Any], spec: Any) -> Any:
    """``loader`` called with ``spec.args`` as keywords, and ``spec`` first if it needs it.

    Raises:
        DatasetError: its parameters cannot take ``dataset.args`` (with or without the spec).
    """
    args = dict(getattr(spec, "args", None) or {})
    try:
        signature = inspect.signature(loader)
    except (TypeError, ValueError):  # no signature to read (a C function): the built-ins' way
        return loader(spec, **args)
    for positional in ((), (spec,)):
        try:
            signature.bind(*positional, **args)
        except TypeError:
            continue
        return loader(*positional, **args)
    given = f"dataset.args {', '.join(args)}" if args else "no dataset.args"
    shown = signature.replace(return_annotation=inspect.Signature.empty)
    raise DatasetError(
        f"dataset loader {name}{shown} cannot be called with {given}; give its parameters "
        "in dataset.args, or let it take none (or one: the DatasetSpec)"
    )


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 200 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _is_dataset(value: Any) -> bool:
    return isinstance(value, Dataset) and hasattr(value, "__len__")


def as_arrays(name: str, value: Any) -> Arrays:
    """What a loader returned (one of :data:`RETURNS` but an ArrayDataset) as arrays.

    Raises:
        DatasetError: another kind of value, or images that are not 0..255 or [0, 1].
    """
    if _is_dataset(value):
        return (*_read_dataset(name, value), None, None)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_dataset, value)):
        return (*_read_dataset(name, value[0]), *_read_dataset(name, value[1], "test"))
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 4):
        what = f"a {len(value)}-tuple" if isinstance(value, (tuple, list)) else type(value).__name__
        raise DatasetError(f"dataset loader {name} returned {what}; return {RETURNS}")
    x, y, x_test, y_test = (*value, None, None)[:4]
    return (
        images(name, "train", x),
        labels(y),
        None if x_test is None else images(name, "test", x_test),
        None if y_test is None else labels(y_test),
    )


def _array(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value) if isinstance(value, (list, tuple)) else value


def images(name: str, split: str, x: Any) -> Any:
    """``x`` as uint8 NCHW images (a 3-D array gets one channel); anything not an array of
    images is handed on for :class:`~raynn.core.data.ArrayDataset`'s checks to name."""
    x = _array(x)
    if not isinstance(x, np.ndarray) or x.ndim not in (3, 4):
        return x
    if x.ndim == 3:
        x = np.array(x[:, None])  # a copy: canonical strides
    if x.dtype == np.uint8 or x.size == 0:
        return np.ascontiguousarray(x)
    low, high = (x.min(), x.max()) if x.dtype.kind in "biuf" else (None, None)
    if x.dtype.kind in "biu" and 0 <= low and high <= 255:
        return np.ascontiguousarray(x, dtype=np.uint8)
    if x.dtype.kind == "f" and 0.0 <= low and high <= 1.0:  # False for NaN
        return np.rint(x * 255.0).astype(np.uint8)
    span = f"{x.dtype} from {low} to {high}" if low is not None else str(x.dtype)
    raise DatasetError(
        f"dataset {name}: {split} images are {span}; return uint8 0..255 (or integers in that "
        "range) or floats in [0, 1]"
    )


def labels(y: Any) -> Any:
    """``y`` as int64 labels when it holds whole numbers; else as it is, for the checks."""
    y = _array(y)
    if isinstance(y, np.ndarray) and y.dtype.kind in "biu":
        return y.astype(np.int64)
    if isinstance(y, np.ndarray) and y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
        return y.astype(np.int64)
    return y


def _read_dataset(name: str, dataset: Any, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Every ``(image, label)`` of a torch Dataset, read once through ``dataset[i]``."""
    xs, ys = [], []
    for i in range(len(dataset)):
        image, label = dataset[i][:2]
        xs.append(image_array(image))
        ys.append(int(label))
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        some = ", ".join(map(str, sorted(shapes)[:3]))
        raise DatasetError(
            f"dataset {name}: its {split} Dataset yields images of {len(shapes)} shapes "
            f"({some}, ...); resize them to one shape"
        )
    if not xs:
        raise DatasetError(f"dataset {name}: its {split} Dataset is empty; give it samples")
    return images(name, split, np.stack(xs)), np.asarray(ys, dtype=np.int64)


def image_array(image: Any) -> np.ndarray:
    """One image as a CHW array: tensors are CHW (or HW), PIL images and arrays HWC (or HW).

    A 3-D array whose last axis has 1, 3 or 4 entries and whose first axis has not is taken
    for HWC; any other 3-D array for CHW.
    """
    if isinstance(image, torch.Tensor):
        arr, hwc = image.detach().cpu().numpy(), False
    else:
        arr = np.asarray(image)
        hwc = arr.ndim == 3 and (
            not isinstance(image, np.ndarray)
            or (arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4))
        )
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise DatasetError(
            f"an image has shape {arr.shape}; yield (channels, height, width) tensors, "
            "(height, width[, channels]) arrays or PIL images"
        )
    return arr.transpose(2, 0, 1) if hwc else arr
