"""The seed project's AsyncKFold API still works, on raynn's machinery."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from raynn.compat import AsyncKFold, arrays_from_dataset
from raynn.errors import SpecError


class TinyNet(nn.Module):
    """A user model class in the seed's style: constructed with no arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


class TorchDigits(torch.utils.data.Dataset):
    def __init__(self) -> None:
        d = load_digits()
        self.x = torch.tensor(d.images[:300] / 16.0, dtype=torch.float32)[:, None]
        self.y = d.target[:300]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_async_kfold_seed_api(tmp_path):
    def get_optimizer(model):
        return torch.optim.Adam(model.parameters(), 3e-3)

    kfold = AsyncKFold(
        2, TorchDigits(), str(tmp_path), nn.CrossEntropyLoss(), 32, executor="serial", threads=1
    )
    table = kfold(
        [TinyNet, "lenet"],
        ["cosine", "warm"],
        get_optimizer,
        {"epochs": 2, "save_checkpoint_frequency": 1, "progress": False},
    )
    assert len(table) == 2 * 2 * 2 and (table["status"] == "ok").all()
    assert set(table["model"]) == {"tinynet", "lenet"}
    assert table["val_accuracy"].mean() > 0.3


def test_arrays_from_torch_dataset_scales_to_uint8():
    data = arrays_from_dataset(TorchDigits())
    assert data.x_train.dtype.name == "uint8" and data.x_train.shape == (300, 1, 8, 8)
    assert data.x_train.max() == 255 and data.num_classes == 10


def test_other_criteria_are_refused():
    with pytest.raises(SpecError, match="CrossEntropyLoss"):
        AsyncKFold(2, TorchDigits(), "runs", nn.MSELoss(), 32)


def test_unknown_trainer_params_are_refused_before_training(tmp_path):
    kfold = AsyncKFold(2, TorchDigits(), str(tmp_path), batch_size=32, executor="serial")
    with pytest.raises(SpecError, match="unknown key.*epoch; valid: epochs"):
        kfold([TinyNet], ["cosine"], trainer_params={"epoch": 2})
    assert not list(tmp_path.iterdir())
