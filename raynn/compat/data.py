"""The seed API's data and models: one converter, one input mapping, one model resolver.

Both seed-style APIs (:class:`raynn.compat.kfold.AsyncKFold` and
:class:`raynn.compat.hogwild.DistributedTrainer` / ``DistributedTester``) turn the user's
dataset into raynn's uint8 arrays with :func:`convert_dataset`, which also returns the
:class:`InputMapping` from the values the dataset yields to what the network is trained on.

Whatever the dataset yields is read through ``dataset[i]`` (so its transforms apply): uint8
arrays or PIL images (values 0..255), ``ToTensor()`` floats (0..1), normalised floats
(``Normalize(mean, std)`` after ``ToTensor()``, values outside [0, 1]) or any other floats.
Each channel is stored as ``stored = clamp(round((x - lo) / step), 0, 255)``; ``lo`` and
``step`` are chosen so that inputs on a grid of at most 256 levels (all of the above) are
stored exactly (``InputMapping.exact``); other floats are quantised to 256 levels over their
range (0..1 for values inside it). raynn then trains on ``(stored / 255 - mean) / std`` per
channel (:class:`raynn.core.data.Normalizer`, ``mean`` and ``std`` of the stored training set).

A trained model is handed back with that mapping attached (:func:`attach_input_mapping`): a
forward pre-hook applies it, so ``model(x)`` takes the same tensors the user's dataset and
DataLoader yield (NCHW) and computes exactly what the network computed on them in training.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.core.data import ArrayDataset, Normalizer
from raynn.core.loaders import image_array
from raynn.errors import RaynnError, SpecError
from raynn.spec import Component, short_repr

ACCEPTED_MODELS = (
    "an nn.Module class, a factory returning an nn.Module, a raynn model name (e.g. 'lenet') "
    "or an nn.Module instance"
)
ATTR = "raynn_input"  # the attribute holding a model's InputMapping


@dataclass(frozen=True)
class InputMapping:
    """The exact map from a user's input tensors to what the network was trained on.

    Per channel ``c``: ``stored = clamp(round((x - lo[c]) / step[c]), 0, 255)`` (the uint8
    value raynn keeps), then ``(stored / 255 - mean[c]) / std[c]``, computed as
    :class:`raynn.core.data.Normalizer` computes it, so the result is bit-identical to a training
    batch. Inputs outside the training set's range are clamped to it.

    Attributes:
        lo: per-channel input value stored as 0.
        step: per-channel input difference of one stored level.
        mean: per-channel mean of ``stored / 255`` over the training set.
        std: per-channel standard deviation of ``stored / 255`` over the training set.
        exact: whether every training input lay on the grid (stored without loss).
    """

    lo: tuple[float, ...]
    step: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    exact: bool = True

    def _view(self, values: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)

    def stored(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (NCHW, any dtype) as the float32 values 0..255 raynn stores for it."""
        if x.dim() != 4 or x.shape[1] != len(self.lo):
            raise RaynnError(
                f"input of shape {tuple(x.shape)}; this model takes (batch, {len(self.lo)}, "
                "height, width) tensors, as its training dataset yielded"
            )
        x = x.to(torch.float32)
        return x.sub(self._view(self.lo, x)).div_(self._view(self.step, x)).round_().clamp_(0, 255)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (NCHW) as the normalised network input raynn trained on."""
        norm = Normalizer(self.mean, self.std)
        out = self.stored(x)
        return out.mul_(norm.scale.to(out.device)).add_(norm.shift.to(out.device))

    def to_uint8(self, x: np.ndarray) -> np.ndarray:
        """A batch of images (NCHW array) as raynn's stored uint8 array."""
        if x.dtype == np.uint8 and all(v == 0 for v in self.lo) and all(s == 1 for s in self.step):
            return np.ascontiguousarray(x)
        out = self.stored(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return out.to(torch.uint8).numpy()

    def describe(self) -> str:
        """The mapping as one line of arithmetic."""
        r = ", ".join
        return (
            f"stored = clamp(round((x - [{r(f'{v:.6g}' for v in self.lo)}]) / "
            f"[{r(f'{v:.6g}' for v in self.step)}]), 0, 255); network input = (stored / 255 - "
            f"[{r(f'{v:.6g}' for v in self.mean)}]) / [{r(f'{v:.6g}' for v in self.std)}]"
            + ("" if self.exact else " (inputs were quantised to 256 levels)")
        )


def _on_grid(v: np.ndarray, lo: float, step: float) -> bool:
    q = (v - np.float32(lo)) / np.float32(step)
    return bool(q.min() > -0.5 and q.max() < 255.5 and np.abs(q - np.rint(q)).max() < 1e-3)


def _channel_grid(v: np.ndarray) -> tuple[float, float, bool]:
    """``(lo, step, exact)`` for one channel's float32 values (flat)."""
    lo, hi = float(v.min()), float(v.max())
    unit = lo >= 0.0 and hi <= 1.0
    candidates = [(0.0, 1.0 / 255.0)] if unit else []  # ToTensor()'s scale first
    if hi == lo:
        candidates.append((lo, 1.0))
    else:
        candidates.append((lo, (hi - lo) / 255.0))
        levels = np.unique(v[:: max(1, v.size // 200_000)])  # the grid's step, from a sample
        n = round((hi - lo) / float(np.diff(levels).min())) if levels.size > 1 else 0
        if not unit and 0 < n < 255:  # e.g. normalised inputs missing the extreme levels
            candidates.append((lo, (hi - lo) / n))
    for c_lo, c_step in candidates:
        if _on_grid(v, c_lo, c_step):
            return c_lo, c_step, True
    return (0.0, 1.0 / 255.0, False) if unit else (lo, (hi - lo) / 255.0, False)


def fit_mapping(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
    """Per-channel ``(lo, step)`` storing the images ``x`` (NCHW) as uint8, and whether exactly."""
    if x.dtype == np.uint8:
        return (0.0,) * x.shape[1], (1.0,) * x.shape[1], True
    fits = [
        _channel_grid(np.ascontiguousarray(x[:, c], dtype=np.float32).ravel())
        for c in range(x.shape[1])
    ]
    if not all(np.isfinite([f[0] for f in fits] + [f[1] for f in fits])):
        raise RaynnError("the dataset yields NaN or infinite pixel values; fix its transforms")
    return tuple(f[0] for f in fits), tuple(f[1] for f in fits), all(f[2] for f in fits)


def convert_dataset(dataset: Any, name: str = "seed_dataset") -> tuple[ArrayDataset, InputMapping]:
    """A dataset of ``(image, label)`` pairs as raynn's arrays, and its :class:`InputMapping`.

    Every sample is read once through ``dataset[i]`` (transforms apply; random ones are drawn
    once). A torchvision-style dataset with ``data``/``targets`` and no transforms is read from
    its arrays directly (the same values, faster). An :class:`~raynn.core.data.ArrayDataset` is
    used as it is (its inputs are its uint8 arrays).
    """
    if isinstance(dataset, ArrayDataset):
        c = dataset.in_shape[0]
        return dataset, InputMapping((0.0,) * c, (1.0,) * c, dataset.mean, dataset.std)
    x, y = _raw_arrays(dataset)
    if x is None:
        xs, ys = [], []
        for i in range(len(dataset)):
            image, label = dataset[i][:2]
            xs.append(image_array(image))
            ys.append(int(label))
        if not xs:
            raise RaynnError("the training dataset is empty; pass a dataset with samples")
        shapes = {a.shape for a in xs}
        if len(shapes) > 1:
            some = ", ".join(map(str, sorted(shapes)[:3]))
            raise RaynnError(
                f"the dataset yields images of {len(shapes)} shapes ({some}, ...); resize them "
                "to one shape in its transform"
            )
        x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    lo, step, exact = fit_mapping(x)
    probe = InputMapping(lo, step, (0.0,) * len(lo), (1.0,) * len(lo), exact)
    classes = max(int(y.max()) + 1 if len(y) else 0, 2)
    data = ArrayDataset(name, probe.to_uint8(x), y, None, None, num_classes=classes)
    return data, InputMapping(lo, step, data.mean, data.std, exact)


def _raw_arrays(dataset: Any) -> tuple[Any, Any]:
    """``(images NCHW uint8, labels)`` of a torchvision dataset without transforms, else None."""
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    untransformed = all(
        getattr(dataset, a, None) is None for a in ("transform", "target_transform", "transforms")
    )
    if not untransformed or data is None or targets is None or len(data) != len(targets):
        return None, None
    x = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        return None, None
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    return np.ascontiguousarray(x), y.astype(np.int64)


def _apply_input_mapping(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The forward pre-hook of :func:`attach_input_mapping`."""
    mapping = module.__dict__.get(ATTR)
    if mapping is None or not args:
        return None
    return (mapping(args[0]), *args[1:])


def attach_input_mapping(model: nn.Module, mapping: InputMapping) -> nn.Module:
    """Make ``model(x)`` apply ``mapping`` to ``x`` first; ``model.raynn_input`` holds it.

    The weights and ``state_dict()`` are unchanged: a network loaded from a saved state dict
    needs the mapping attached again (it pickles; keep it next to the weights).
    """
    detach_input_mapping(model)
    model.__dict__[ATTR] = mapping
    model.register_forward_pre_hook(_apply_input_mapping)
    return model


def detach_input_mapping(model: nn.Module) -> InputMapping | None:
    """Remove the mapping :func:`attach_input_mapping` attached; returns it (None if none)."""
    hooks = model._forward_pre_hooks
    for key in [k for k, fn in hooks.items() if fn is _apply_input_mapping]:
        del hooks[key]
    return model.__dict__.pop(ATTR, None)


def model_component(model: Any) -> Component:
    """A raynn model entry for a seed-style model: name, class, factory or instance.

    A class or factory is called with ``num_classes=`` when it takes that argument, else with
    none. An instance is deep-copied for every build (its current weights are the start).
    """
    if isinstance(model, str):
        return Component(model)
    if isinstance(model, nn.Module):
        template = copy.deepcopy(model)
        detach_input_mapping(template)
        label = type(model).__name__.lower()

        def copy_of(in_shape: tuple[int, int, int], num_classes: int, **_: Any) -> nn.Module:
            return copy.deepcopy(template)

        return Component(label, label=label, factory=copy_of)
    if not callable(model):
        raise SpecError(f"models: {short_repr(model)} is not a model; pass {ACCEPTED_MODELS}")
    label = getattr(model, "__name__", type(model).__name__).lower()

    def build(in_shape: tuple[int, int, int], num_classes: int, **_: Any) -> nn.Module:
        try:
            params = inspect.signature(model).parameters
        except (TypeError, ValueError):
            params = {}
        return model(num_classes=num_classes) if "num_classes" in params else model()

    return Component(label, label=label, factory=build)


def model_instance(model: Any, data: ArrayDataset, seed: int = 0) -> nn.Module:
    """The model to train for a seed-style ``model``: an instance is itself, else built once."""
    from raynn.core.model_builder import build_model

    if isinstance(model, nn.Module):
        return model
    component = model_component(model)
    torch.manual_seed(seed)
    return build_model(component, data.in_shape, data.num_classes)


def instance_factory(instance: nn.Module) -> Callable[..., nn.Module]:
    """A raynn model factory returning copies of ``instance`` (without a mapping hook)."""
    return model_component(instance).factory  # type: ignore[return-value]


def batch_tensor(x: Any) -> torch.Tensor:
    """A loader's image batch as a tensor: tensors as they are, else stacked CHW float32."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.stack([image_array(i) for i in x]).astype(np.float32))


__all__ = [
    "ACCEPTED_MODELS",
    "InputMapping",
    "attach_input_mapping",
    "batch_tensor",
    "convert_dataset",
    "detach_input_mapping",
    "fit_mapping",
    "image_array",
    "model_component",
    "model_instance",
]
