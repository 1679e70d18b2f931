"""The example scripts run as a user runs them (tiny subsets) and reach their accuracy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TINY = ["--epochs", "1", "--batch-size", "16", "--executor", "serial"]

# script, its tiny-run options, the accuracy its docstring promises for them (with a margin)
EXAMPLES = [
    ("kfold_example_mnist.py", ["--subset", "2000"], 0.75),
    ("kfold_example_cifar.py", ["--subset", "1000"], 0.75),
    ("hogwild_example_cifar.py", ["--subset", "600"], 0.8),
    ("distributed_example_mnist.py", ["--subset", "1000", "--epochs", "2"], 0.75),
    ("distributed_example_cifar.py", ["--subset", "600"], 0.8),
]


@pytest.mark.parametrize(("script", "args", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_runs_offline_and_reaches_its_accuracy(script, args, expected, tmp_path):
    if "mnist" in script and not (DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST is not in {DATA}")
    env = {**os.environ, "RAYNN_DATA": str(DATA if "mnist" in script else tmp_path)}
    core = min(os.sched_getaffinity(0))
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *TINY, *args],
        cwd=tmp_path,  # runs/ goes here
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),  # one thread: no oversubscription
    )
    assert out.returncode == 0, out.stderr[-2000:]
    if "cifar" in script:  # no CIFAR-10 in an empty RAYNN_DATA: the stand-in, said so
        assert "using CIFAR-shaped synthetic data" in out.stdout
    accuracy = float(re.findall(r"accuracy: ([0-9.]+)", out.stdout)[-1])
    assert accuracy >= expected, out.stdout
    assert (tmp_path / "runs").is_dir()
