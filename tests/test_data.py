"""Batches are the same tensors whatever the memory layout of the arrays they come from."""

from __future__ import annotations

import numpy as np
import torch

from raynn.data import Normalizer
from raynn.models.lenet import lenet


def test_a_one_channel_view_and_its_copy_give_the_same_outputs_bit_for_bit():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    view = images[:, None]  # channel stride 0: still "contiguous" for numpy
    copy = np.array(view)  # what a worker gets after pickling
    assert view.strides[1] == 0 and copy.strides[1] != 0
    norm, idx = Normalizer((0.13,), (0.31,)), np.arange(256)
    a, b = norm(view, idx), norm(copy, idx)
    assert a.stride() == b.stride() == (784, 784, 28, 1)
    torch.manual_seed(0)
    model = lenet((1, 28, 28), 10).eval()
    with torch.no_grad():
        assert torch.equal(model(a), model(b))


def test_normalised_values():
    norm = Normalizer((0.5,), (0.25,))
    x = np.array([[[[0, 255]]]], dtype=np.uint8)
    assert torch.allclose(norm(x), torch.tensor([[[[-2.0, 2.0]]]]))
