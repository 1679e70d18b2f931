"""A user's own data the natural way, and dataset files read without trusting them (issue 21,
items 3 and 7).

A ``pkg.mod:loader`` may take no arguments, keyword arguments from ``dataset.args`` or the
DatasetSpec, and return ``(x, y)``, ``(x, y, x_test, y_test)``, a torch ``Dataset`` or a
``(train, test)`` pair of them; one that raises gets one line. ``dataset.limit`` applies
after the checks. CIFAR-10 batches are unpickled admitting only numpy arrays and plain
containers.
"""

from __future__ import annotations

import itertools
import os
import pickle
import textwrap

import numpy as np
import pandas as pd
import pytest

from raynn.cli import main
from raynn.core.data import load_dataset
from raynn.core.safe_pickle import load_arrays
from raynn.errors import DatasetError, SpecError
from raynn.spec import spec_from_dict

LOADERS = """
import numpy as np
import torch

from raynn.core.data import ArrayDataset


def _arrays(n=60, classes=3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = rng.random((n, 8, 8)) * 0.25 + y[:, None, None] * 0.25  # floats in [0, 1]
    return x.astype(np.float32), y


def pairs():
    return _arrays()


def four(n=60, test=12):
    x, y = _arrays(n)
    x8 = np.rint(x * 255).astype(np.uint8)[:, None]
    return x8, y, x8[:test], y[:test]


def tensors(n):
    x, y = _arrays(n)
    return torch.from_numpy(x)[:, None], torch.from_numpy(y)


def old_style(spec):
    x, y, xt, yt = four()
    return ArrayDataset("old", x, y, xt, yt, num_classes=3)


class Images(torch.utils.data.Dataset):
    def __init__(self, n):
        self.x, self.y = _arrays(n)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i])[None], int(self.y[i])


def dataset():
    return Images(30)


def dataset_pair(train=30, test=9):
    return Images(train), Images(test)


def short_labels():
    x, y = _arrays(60)
    return x, y[:50]


def boom():
    raise ValueError("no table named train\\nsecond line of the message")


def text():
    return "not data"


def normalised():
    x, y = _arrays()
    return (x - 0.5) / 0.25, y
"""


@pytest.fixture
def mod(tmp_path, monkeypatch):
    """The name of a fresh module of loaders (its own name: no import cache shared)."""
    name = f"user_loaders_{next(_COUNT)}_{os.getpid()}"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(textwrap.dedent(LOADERS))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    return name


_COUNT = itertools.count()


def _spec_file(tmp_path, dataset: str, extra: str = "") -> str:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"models: [mlp]\nfolds: 2\ndataset: {dataset}\n"
        f"training: {{epochs: 1, batch_size: 16}}\noutput: {{dir: {tmp_path / 'runs'}}}\n{extra}"
    )
    return str(path)


def _arrays(n=60, classes=3):  # the module's data, computed here again
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = rng.random((n, 8, 8)) * 0.25 + y[:, None, None] * 0.25
    return x.astype(np.float32), y


OK = {  # loader, dataset.args -> what validate reports
    "pairs": ("pairs", None, "(1, 8, 8), 60 train / 0 test samples"),
    "four": ("four", None, "(1, 8, 8), 60 train / 12 test samples"),
    "kwargs": ("four", "{n: 40, test: 6}", "(1, 8, 8), 40 train / 6 test samples"),
    "tensors": ("tensors", "{n: 30}", "(1, 8, 8), 30 train / 0 test samples"),
    "old_style": ("old_style", None, "(1, 8, 8), 60 train / 12 test samples"),
    "dataset": ("dataset", None, "(1, 8, 8), 30 train / 0 test samples"),
    "dataset_pair": ("dataset_pair", "{test: 9}", "(1, 8, 8), 30 train / 9 test samples"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(OK))
def test_a_loader_returning_arrays_or_a_dataset_validates(case, mod, tmp_path, capsys):
    fn, args, expected = OK[case]
    extra = f", args: {args}" if args else ""
    assert main(["validate", _spec_file(tmp_path, f"{{name: '{mod}:{fn}'{extra}}}")]) == 0
    out = capsys.readouterr().out
    assert f"on {mod}:{fn} {expected}" in out or f"on old {expected}" in out, out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fn", ["pairs", "tensors", "dataset"])
def test_float_images_in_0_1_become_uint8_0_255(fn, mod):
    n = 30 if fn != "pairs" else 60
    args = {"n": n} if fn == "tensors" else {}
    data = load_dataset(
        spec_from_dict(
            {"models": ["mlp"], "dataset": {"name": f"{mod}:{fn}", "args": args}}
        ).dataset
    )
    x, y = _arrays(n)
    assert data.x_train.dtype == np.uint8 and data.x_train.shape == (n, 1, 8, 8)
    assert np.array_equal(data.x_train[:, 0], np.rint(x * 255).astype(np.uint8))
    assert data.y_train.dtype == np.int64 and np.array_equal(data.y_train, y)
    assert data.num_classes == 3


@pytest.mark.timeout(300)
def test_a_run_trains_on_a_users_arrays(mod, tmp_path, capsys):
    spec = _spec_file(tmp_path, f"{{name: '{mod}:four', limit: 30}}")
    assert main(["run", spec, "--serial", "--threads", "1", "--no-progress"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    jobs = pd.read_parquet(run_dir / "jobs")
    assert len(jobs) == 2 and set(jobs["status"]) == {"ok"}
    assert (jobs["test_accuracy"] >= 0).all()


BAD = {  # loader, dataset.args -> what the one line says
    "raises": ("boom", None, ["dataset loader", ":boom failed: ValueError: no table named train"]),
    "wrong_type": ("text", None, [":text returned str; return (x, y), (x, y, x_test, y_test)"]),
    "args_do_not_fit": ("pairs", "{n: 3}", [":pairs() cannot be called with dataset.args n"]),
    "short_labels": ("short_labels", None, ["train has 60 images but 50 labels"]),
    "normalised": ("normalised", None, ["train images are float32 from", "floats in [0, 1]"]),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_loader_gets_one_line(case, mod, tmp_path, capsys):
    fn, args, says = BAD[case]
    extra = f", args: {args}" if args else ""
    assert (
        main(["validate", _spec_file(tmp_path, f"{{name: '{mod}:{fn}'{extra}, limit: 10}}")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert all(s in err for s in says), err
    assert "second line" not in err


@pytest.mark.timeout(120)
def test_debug_shows_the_loaders_own_traceback(mod, tmp_path):
    with pytest.raises(DatasetError) as caught:
        main(["--debug", "validate", _spec_file(tmp_path, f"{{name: '{mod}:boom'}}")])
    assert isinstance(caught.value.__cause__, ValueError)
    assert "--debug" in str(caught.value)


@pytest.mark.timeout(60)
def test_dataset_args_are_a_mapping_for_a_users_loader():
    with pytest.raises(SpecError, match="dataset.args"):
        spec_from_dict({"models": ["mlp"], "dataset": {"name": "digits", "args": [1, 2]}})
    spec = spec_from_dict({"models": ["mlp"], "dataset": {"name": "digits", "args": {"n": 1}}})
    with pytest.raises(SpecError, match="built-in dataset digits takes none"):
        load_dataset(spec.dataset)


# -- dataset files: checks before limit, CIFAR without pickle.load ------------------------------
def _idx(path, array: np.ndarray) -> None:
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(b"\0\0\x08" + bytes([array.ndim]) + dims + array.astype(np.uint8).tobytes())


@pytest.mark.timeout(120)
def test_a_label_file_short_of_its_images_is_named_even_with_limit(tmp_path, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    _idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (40, 8, 8)))
    _idx(raw / "train-labels-idx1-ubyte", np.arange(30) % 10)  # 10 labels short
    _idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 8, 8)))
    _idx(raw / "t10k-labels-idx1-ubyte", np.arange(10))
    spec = _spec_file(tmp_path, f"{{name: mnist, root: {tmp_path / 'data'}, limit: 20}}")
    assert main(["validate", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "train-images-idx3-ubyte holds 40 images but train-labels-idx1-ubyte 30" in err


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in np.arange(n) % 10],
        b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def _cifar(root, first_batch: bytes | None = None) -> list[dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [_cifar_batch(10, i) for i in range(6)]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, batch in zip(names, batches, strict=True):
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))  # as CIFAR's python 2 did
    if first_batch is not None:
        (folder / "data_batch_1").write_bytes(first_batch)
    return batches


class _Shell:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.timeout(120)
def test_a_crafted_cifar_batch_runs_nothing_and_gets_one_line(tmp_path, capsys):
    marker = tmp_path / "ran"
    crafted = pickle.dumps({b"data": _Shell(marker), b"labels": []}, protocol=2)
    _cifar(tmp_path / "data", crafted)
    spec = _spec_file(tmp_path, f"{{name: cifar10, root: {tmp_path / 'data'}}}")
    assert main(["validate", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data_batch_1" in err and "system" in err, err
    assert not marker.exists()


@pytest.mark.timeout(120)
def test_a_genuine_cifar_batch_still_loads(tmp_path, capsys):
    batches = _cifar(tmp_path / "data")
    spec = spec_from_dict(
        {
            "models": ["mlp"],
            "folds": 2,
            "dataset": {"name": "cifar10", "root": str(tmp_path / "data")},
        }
    )
    data = load_dataset(spec.dataset)
    expected = np.concatenate([b[b"data"] for b in batches[:5]]).reshape(-1, 3, 32, 32)
    assert np.array_equal(data.x_train, expected)
    assert data.y_train.tolist() == sum((b[b"labels"] for b in batches[:5]), [])
    assert np.array_equal(data.x_test, batches[5][b"data"].reshape(-1, 3, 32, 32))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_arrays_pickled_with_any_protocol_load(protocol, tmp_path):
    batch = {**_cifar_batch(4, 0), b"mean": np.float64(0.5), b"set": {1, 2}}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    with open(path, "rb") as fh:
        loaded = load_arrays(fh)
    assert np.array_equal(loaded[b"data"], batch[b"data"]) and loaded[b"labels"] == batch[b"labels"]
    assert loaded[b"mean"] == 0.5 and loaded[b"set"] == {1, 2}
