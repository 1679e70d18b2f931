"""Batches are the same tensors whatever the memory layout of the arrays they come from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raynn.core.data import Normalizer
from raynn.core.models.lenet import lenet


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


MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (MNIST / "MNIST" / "raw").is_dir(), reason="no MNIST in ../shared/data")
def test_mnist_is_read_as_torchvision_reads_it():
    import torchvision

    from raynn.core.data import load_dataset
    from raynn.spec import DatasetSpec

    data = load_dataset(DatasetSpec(name="mnist", root=str(MNIST)))
    for train, (x, y) in (
        (True, (data.x_train, data.y_train)),
        (False, (data.x_test, data.y_test)),
    ):
        ref = torchvision.datasets.MNIST(str(MNIST), train=train)
        assert np.array_equal(x[:, 0], ref.data.numpy()) and np.array_equal(y, ref.targets.numpy())
        assert x.strides == (784, 784, 28, 1)


def test_cifar10_batches_are_read_as_images_and_labels(tmp_path):
    import pickle

    from raynn.core.data import load_dataset
    from raynn.spec import DatasetSpec

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            b"labels": list(range(10)) * 2,
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    data = load_dataset(DatasetSpec(name="cifar10", root=str(tmp_path)))
    assert data.x_train.shape == (100, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
    batch = pickle.loads((folder / "test_batch").read_bytes())
    assert np.array_equal(data.x_test[0], batch[b"data"][0].reshape(3, 32, 32))
    assert list(data.y_test[:10]) == list(range(10))


def test_a_missing_dataset_names_the_file_and_the_fix(tmp_path):
    from raynn.core.data import load_dataset
    from raynn.errors import DatasetError
    from raynn.spec import DatasetSpec

    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.*RAYNN_DATA.*download"):
        load_dataset(DatasetSpec(name="mnist", root=str(tmp_path)))
