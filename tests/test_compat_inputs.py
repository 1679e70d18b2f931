"""The seed API's inputs: any scale a dataset yields, any kind of model, one set of imports.

Trainer, tester and the model handed back must agree on what the network sees, whatever the
dataset yields (uint8, PIL images, ``ToTensor()`` floats, normalised floats).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose, Normalize, ToTensor

from raynn.compat import AsyncKFold, DistributedTester, DistributedTrainer
from raynn.compat.data import (
    attach_input_mapping,
    convert_dataset,
    detach_input_mapping,
    model_component,
)
from raynn.core.data import Normalizer, digits_arrays
from raynn.errors import RaynnError, SpecError

IMAGES, LABELS = digits_arrays()
U8 = np.clip(np.rint(IMAGES * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # (1797, 8, 8)
TO_TENSOR = ToTensor()
NORMALISED = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])


def third(x: np.ndarray) -> np.ndarray:
    """A third channel with every level 0..127 and none above: a finer grid than 0..255."""
    return ((x // 2 + np.arange(64, dtype=np.uint8).reshape(8, 8)) % 128).astype(np.uint8)


class Digits(Dataset):
    """scikit-learn's digits as a torchvision-style dataset of PIL images plus a transform."""

    def __init__(self, part: slice, transform=None, rgb: bool = False) -> None:
        self.x, self.y = U8[part], LABELS[part]
        self.transform, self.rgb = transform, rgb

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.x[i])
        if self.rgb:  # three different channels
            x = self.x[i]
            img = Image.fromarray(np.stack([x, 255 - x, third(x)], axis=-1))
        return (self.transform(img) if self.transform else img), int(self.y[i])


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * channels, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x):
        return self.net(x)


def plain_accuracy(model: nn.Module, loader: DataLoader) -> float:
    """What a user would compute: the loader's batches straight into the model."""
    model.eval()
    hits = total = 0
    with torch.no_grad():
        for x, y in loader:
            hits += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return hits / total


def test_every_input_scale_is_stored_exactly_and_mapped_back_bit_for_bit():
    part = slice(0, 300)
    kinds = {
        "pil": Digits(part),
        "uint8 arrays": [(U8[i], int(LABELS[i])) for i in range(300)],
        "ToTensor": Digits(part, TO_TENSOR),
        "normalised": Digits(part, NORMALISED),
        "normalised rgb": Digits(
            part, Compose([ToTensor(), Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))]), rgb=True
        ),
    }
    ref = U8[part][:, None]
    for kind, ds in kinds.items():
        data, mapping = convert_dataset(ds)
        assert mapping.exact, kind
        if kind == "normalised rgb":
            assert np.array_equal(data.x_train[:, 0], ref[:, 0])
            assert np.array_equal(data.x_train[:, 1], 255 - ref[:, 0])
            assert np.array_equal(data.x_train[:, 2], third(ref[:, 0]))
        else:
            assert np.array_equal(data.x_train, ref), kind
        # the user's own batch, through the mapping, is the training batch, bit for bit
        batch = torch.stack([torch.tensor(np.asarray(ds[i][0])) for i in range(50)])
        if batch.dim() == 3:  # HW uint8 / PIL: a channel axis, as the model's input has
            batch = batch[:, None]
        expected = Normalizer(data.mean, data.std)(data.x_train, np.arange(50))
        assert torch.equal(mapping(batch), expected), kind


def test_normalised_inputs_missing_the_extreme_levels_are_still_exact():
    levels = third(U8[:200, None]) + 10  # every level 10..137: neither 0 nor 255 occurs
    x = (levels.astype(np.float32) / 255 - 0.5) / 0.2
    data, mapping = convert_dataset([(torch.from_numpy(v), i % 2) for i, v in enumerate(x)])
    assert mapping.exact and np.array_equal(data.x_train, levels - 10)
    expected = Normalizer(data.mean, data.std)(data.x_train[:20])
    assert torch.equal(mapping(torch.from_numpy(x[:20])), expected)


def test_floats_off_any_grid_are_quantised_the_same_for_training_and_for_the_model():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(64, 2, 4, 4)).astype(np.float32)
    data, mapping = convert_dataset([(torch.from_numpy(v), i % 3) for i, v in enumerate(x)])
    assert not mapping.exact and data.x_train.min() == 0 and data.x_train.max() == 255
    stored = mapping.stored(torch.from_numpy(x)).to(torch.uint8).numpy()
    assert np.array_equal(stored, data.x_train)
    with pytest.raises(RaynnError, match=r"takes \(batch, 2, height, width\)"):
        mapping(torch.zeros(3, 4, 4))


def _train(train, epochs=4, model=None, **kw):
    torch.manual_seed(0)
    model = MLP() if model is None else model
    trainer = DistributedTrainer(1, nn.CrossEntropyLoss(), kw.pop("root"), batch_size=32)
    trainer(
        model,
        train,
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
        epochs=epochs,
        executor="serial",
        threads=1,
    )
    return trainer


def test_tester_equals_plain_pytorch_for_totensor_and_normalised_inputs(tmp_path):
    scores = {}
    for name, tf in (("ToTensor", TO_TENSOR), ("normalised", NORMALISED)):
        trainer = _train(Digits(slice(0, 1300), tf), root=str(tmp_path / name))
        model = trainer.model
        loader = DataLoader(Digits(slice(1300, None), tf), batch_size=64, shuffle=True)
        tested = DistributedTester(loader, str(tmp_path / name))(model)
        assert tested["accuracy"] == plain_accuracy(model, loader) and tested["accuracy"] > 0.85
        scores[name] = tested["accuracy"]
    # both stored the same uint8 arrays, so they trained the same network
    assert scores["ToTensor"] == scores["normalised"]


def test_trained_model_is_the_users_instance_and_keeps_its_state_dict(tmp_path):
    model = MLP()
    keys = list(model.state_dict())
    trainer = _train(Digits(slice(0, 600), TO_TENSOR), epochs=1, model=model, root=str(tmp_path))
    assert trainer.model is model and list(model.state_dict()) == keys
    assert trainer.input_mapping is model.raynn_input
    x = torch.stack([TO_TENSOR(Image.fromarray(U8[i])) for i in range(1300, 1340)])
    out = model(x)
    # a deep copy and a pickled copy behave the same; detaching gives the raw network back
    assert torch.equal(copy.deepcopy(model)(x), out)
    assert torch.equal(pickle.loads(pickle.dumps(model))(x), out)
    mapping = detach_input_mapping(model)
    assert torch.equal(model(mapping(x)), out) and not torch.equal(model(x), out)
    # training again starts from the trained weights, without the mapping applied twice
    attach_input_mapping(model, mapping)
    again = _train(Digits(slice(0, 600), TO_TENSOR), epochs=1, model=model, root=str(tmp_path))
    assert again.model is model


def test_distributed_trainer_builds_a_class_a_factory_or_a_name(tmp_path):
    train = Digits(slice(0, 400), TO_TENSOR)
    for i, model in enumerate((MLP, lambda: MLP(10), "lenet")):
        trainer = _train(train, epochs=1, model=model, root=str(tmp_path / str(i)))
        assert isinstance(trainer.model, nn.Module) and trainer.model.raynn_input.exact
    with pytest.raises(SpecError, match="not a model; pass an nn.Module class, a factory"):
        _train(train, epochs=1, model=42, root=str(tmp_path / "bad"))


def _kfold_table(dataset, models, tmp_path):
    kfold = AsyncKFold(
        2, dataset, str(tmp_path), nn.CrossEntropyLoss(), 32, executor="serial", threads=1
    )
    table = kfold(
        models,
        ["cosine"],
        lambda m: torch.optim.Adam(m.parameters(), 3e-3),
        {"epochs": 1, "progress": False},
    )
    return kfold, table.sort_values("job_id").reset_index(drop=True)


def test_async_kfold_trains_the_same_on_every_input_scale(tmp_path):
    tables = {
        name: _kfold_table(Digits(slice(0, 400), tf), [MLP], tmp_path / name)
        for name, tf in (("uint8", None), ("ToTensor", TO_TENSOR), ("normalised", NORMALISED))
    }
    ref = tables["uint8"][1]["val_accuracy"].tolist()
    assert ref[0] > 0.5
    for _, table in tables.values():
        assert table["val_accuracy"].tolist() == ref
    kfold = tables["normalised"][0]
    x = torch.stack([NORMALISED(Image.fromarray(U8[i])) for i in range(10)])
    assert torch.equal(
        kfold.input_mapping(x), Normalizer(kfold.data.mean, kfold.data.std)(U8[:10, None])
    )


def test_async_kfold_accepts_every_kind_of_model(tmp_path):
    instance = MLP()
    before = copy.deepcopy(instance.state_dict())
    _, table = _kfold_table(
        Digits(slice(0, 200), TO_TENSOR),
        [MLP, lambda: MLP(10), "lenet", instance, MLP()],
        tmp_path,
    )
    assert set(table["model"]) == {"mlp", "<lambda>", "lenet", "mlp-2", "mlp-3"}
    assert (table["status"] == "ok").all()
    assert all(torch.equal(v, instance.state_dict()[k]) for k, v in before.items())
    # an instance is copied with its weights: every job starts from them
    copy_of = model_component(instance).factory((1, 8, 8), 10)
    assert copy_of is not instance
    assert all(torch.equal(v, copy_of.state_dict()[k]) for k, v in before.items())
    with pytest.raises(SpecError, match=r"models: 'x' is not|models: 3.5 is not a model; pass"):
        _kfold_table(Digits(slice(0, 200)), [MLP, 3.5], tmp_path / "bad")


def test_the_whole_seed_api_imports_from_raynn_compat():
    import raynn.compat
    import raynn.compat.hogwild
    import raynn.compat.kfold

    # the face re-exports each half's own class (tests/test_architecture.py guards cycles)
    assert raynn.compat.DistributedTrainer is raynn.compat.hogwild.DistributedTrainer
    assert raynn.compat.DistributedTester is raynn.compat.hogwild.DistributedTester
    assert raynn.compat.AsyncKFold is raynn.compat.kfold.AsyncKFold


def test_async_kfold_best_model_takes_the_users_inputs(tmp_path):
    kfold, _ = _kfold_table(Digits(slice(0, 400), NORMALISED), [MLP], tmp_path)
    model = kfold.best_model()
    loader = DataLoader(Digits(slice(1300, 1500), NORMALISED), batch_size=64)
    tested = DistributedTester(loader, str(tmp_path))(model)
    assert tested["accuracy"] == plain_accuracy(model, loader) and tested["accuracy"] > 0.5


def test_tester_reports_the_criterion_the_model_was_trained_with(tmp_path):
    smooth = nn.CrossEntropyLoss(label_smoothing=0.2)
    torch.manual_seed(0)
    trainer = DistributedTrainer(1, smooth, str(tmp_path), batch_size=32)
    trainer(
        MLP(),
        Digits(slice(0, 600), TO_TENSOR),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
        epochs=1,
        executor="serial",
        threads=1,
    )
    model = trainer.model
    assert "raynn_criterion" not in dict(model.named_modules())  # no submodule: same weights
    loader = DataLoader(Digits(slice(1300, None), TO_TENSOR), batch_size=64)
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    with torch.no_grad():
        logits = model(x)
    tested = DistributedTester(loader, str(tmp_path))(model)
    assert tested["criterion"] == "CrossEntropyLoss"
    assert tested["loss"] == pytest.approx(float(smooth(logits, y)), rel=1e-5)
    plain = float(nn.functional.cross_entropy(logits, y))
    assert abs(tested["loss"] - plain) > 1e-3  # label smoothing shows in the loss
    # a criterion given to the tester wins; the default for any other model is cross-entropy
    given = DistributedTester(loader, str(tmp_path), criterion=nn.CrossEntropyLoss())(model)
    assert given["loss"] == pytest.approx(plain, rel=1e-5)
