"""Small-image model zoo (pure PyTorch).

Every factory in :data:`MODEL_FACTORIES` has the signature
``factory(in_shape: tuple[int, int, int], num_classes: int, **kwargs) -> nn.Module``, where
``in_shape`` is ``(channels, height, width)`` of NCHW float32 inputs. Models adapt to 1 or 3
channels and to spatial sizes from 8x8 upwards, and return logits of shape
``(N, num_classes)``. Unknown keyword arguments are ignored so callers can pass a shared set of
options to any factory.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .alexnet import alexnet
from .lenet import lenet
from .mlp import mlp
from .mobilenet import mobilenet
from .vgg import vgg, vgg11, vgg16

MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "lenet": lenet,
    "mlp": mlp,
    "mobilenet": mobilenet,
    "vgg": vgg,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "alexnet": alexnet,
}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Count the parameters of a model.

    Args:
        model: The model.
        trainable_only: If True, count only parameters with ``requires_grad``.

    Returns:
        Total number of scalar parameters.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MODEL_FACTORIES",
    "alexnet",
    "count_parameters",
    "lenet",
    "mlp",
    "mobilenet",
    "vgg",
    "vgg11",
    "vgg16",
]
