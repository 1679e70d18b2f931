"""The neural-network helpers both kinds of training share: build a seeded model, evaluate.

* :func:`seeded_model`: a model entry built from a seed, identical in every process (a
  K-fold job from its job seed, every HOGWILD worker and the driver from the run seed).
* :func:`evaluate`: loss, accuracy and per-class accuracy over a set of samples, in batches,
  normalised on the fly by the dataset's :class:`~raynn.core.data.Normalizer` (the one
  normaliser, :meth:`raynn.core.data.ArrayDataset.normalizer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raynn.core.data import Normalizer
from raynn.core.losses import Loss
from raynn.core.model_builder import build_model
from raynn.spec.checks import Component


def seeded_model(
    component: Component, seed: int, in_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """``component``'s model for ``in_shape`` and ``num_classes``, initialised from ``seed``
    (seeds torch's global generator, then builds it: :func:`~raynn.core.model_builder.build_model`).
    """
    torch.manual_seed(seed)
    return build_model(component, in_shape, num_classes)


@dataclass
class Evaluation:
    """Loss, accuracy and per-class accuracy on a set of samples."""

    loss: float
    accuracy: float
    per_class: list[float]


def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray | None,
    norm: Normalizer,
    num_classes: int,
    batch_size: int = 1024,
    loss: Loss | None = None,
) -> Evaluation:
    """Evaluate ``model`` on ``x[idx]`` (all of ``x`` when ``idx`` is None).

    ``loss``: the criterion the loss is measured with, in eval mode (default: plain
    cross-entropy). No samples give NaN loss and accuracy.
    """
    idx = np.arange(len(y)) if idx is None else idx
    if len(idx) == 0:
        return Evaluation(math.nan, math.nan, [math.nan] * num_classes)
    model.eval()
    if loss is not None:
        loss.eval()
    loss_sum, weight_sum, correct = 0.0, 0.0, np.zeros(num_classes)
    totals = np.bincount(y[idx], minlength=num_classes)
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            bi = idx[start : start + batch_size]
            logits = model(norm(x, bi))
            target = torch.from_numpy(y[bi])
            if loss is None:
                loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum").item()
                weight_sum += len(bi)
            else:
                part, weight = loss.total(logits, target)
                loss_sum, weight_sum = loss_sum + part, weight_sum + weight
            hits = (logits.argmax(1) == target).numpy()
            correct += np.bincount(y[bi][hits], minlength=num_classes)
    per_class = [float(c / t) if t else math.nan for c, t in zip(correct, totals, strict=True)]
    return Evaluation(loss_sum / weight_sum, float(correct.sum() / len(idx)), per_class)


__all__ = ["Evaluation", "evaluate", "seeded_model"]
