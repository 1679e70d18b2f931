"""raynn.core.folds and the digits loader reproduce scikit-learn's splits and data exactly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split

from raynn.core.folds import stratified_kfold, stratified_split


def _labels(n: int, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes  # every class present
    y[classes:] = rng.integers(0, classes, n - classes)  # uneven class sizes
    return rng.permutation(y).astype(np.int64)


@pytest.mark.parametrize("n, classes, k", [(40, 2, 2), (400, 10, 5), (1437, 10, 4), (97, 3, 3)])
@pytest.mark.parametrize("seed", [0, 3, 12345])
def test_kfold_equals_scikit_learn(n, classes, k, seed):
    y = _labels(n, classes, seed)
    ours = stratified_kfold(y, k, seed)
    theirs = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), y)
    for (tr, te), (tr2, te2) in zip(ours, theirs, strict=True):
        assert np.array_equal(tr, tr2) and np.array_equal(te, te2)


@pytest.mark.parametrize("n, classes", [(40, 2), (400, 10), (1797, 10), (97, 3)])
@pytest.mark.parametrize("seed", [0, 7, 2024])
def test_split_equals_scikit_learn(n, classes, seed):
    y = _labels(n, classes, seed)
    idx = np.arange(n)
    for fraction in (0.2, 0.37):
        tr, te = stratified_split(y, test_fraction=fraction, seed=seed)
        tr2, te2 = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
        assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    size = n // 2 + 1
    tr, te = stratified_split(y, train_size=size, seed=seed)
    tr2, te2 = train_test_split(idx, train_size=size, stratify=y, random_state=seed)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)


def test_split_refuses_what_scikit_learn_refuses():
    with pytest.raises(ValueError, match="every class"):
        stratified_split(np.array([0, 0, 1, 1, 2]), test_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="cannot be greater"):
        stratified_kfold(np.array([0, 1, 0, 1]), 3, 0)


def test_digits_are_scikit_learns_own():
    from sklearn.datasets import load_digits

    from raynn.core.data import digits_arrays

    images, labels = digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)
