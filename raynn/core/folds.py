"""Stratified splits, index for index the ones scikit-learn makes, without importing it.

Importing scikit-learn costs about a second (it loads SciPy), and every ``raynn run`` needs
its fold indices before the first job can start. These two functions reproduce
``StratifiedKFold(n_splits, shuffle=True, random_state=seed)`` and
``train_test_split(..., stratify=y, random_state=seed)`` exactly (same random draws, same
order); ``tests/test_folds.py`` holds them equal to scikit-learn's own over many sizes and
seeds.
"""

from __future__ import annotations

import math

import numpy as np

Split = tuple[np.ndarray, np.ndarray]


def stratified_kfold(y: np.ndarray, n_splits: int, seed: int) -> list[Split]:
    """``(train, test)`` indices of ``StratifiedKFold(n_splits, shuffle=True, random_state=seed)``.

    Raises:
        ValueError: ``n_splits`` exceeds the size of every class (as scikit-learn does).
    """
    y = np.asarray(y)
    rng = np.random.RandomState(seed)
    _, y_idx, y_inv = np.unique(y, return_index=True, return_inverse=True)
    _, class_perm = np.unique(y_idx, return_inverse=True)  # classes in order of appearance
    y_encoded = class_perm[y_inv.reshape(-1)]
    n_classes = len(y_idx)
    if np.all(n_splits > np.bincount(y_encoded)):
        raise ValueError(f"n_splits={n_splits} cannot be greater than every class's size")
    y_order = np.sort(y_encoded)
    allocation = np.asarray(
        [np.bincount(y_order[i::n_splits], minlength=n_classes) for i in range(n_splits)]
    )
    test_folds = np.empty(len(y), dtype="i")
    for k in range(n_classes):
        folds_for_class = np.arange(n_splits).repeat(allocation[:, k])
        rng.shuffle(folds_for_class)
        test_folds[y_encoded == k] = folds_for_class
    index = np.arange(len(y))
    return [(index[test_folds != i], index[test_folds == i]) for i in range(n_splits)]


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState):
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def stratified_split(
    y: np.ndarray,
    *,
    test_fraction: float | None = None,
    train_size: int | None = None,
    seed: int = 0,
) -> Split:
    """``(train, test)`` indices of ``train_test_split(arange(n), stratify=y, ...)``.

    Give ``test_fraction`` (a float in (0, 1): ``ceil(fraction x n)`` test samples) or
    ``train_size`` (a count; the rest is the test part).
    """
    y = np.asarray(y)
    n = len(y)
    if (test_fraction is None) == (train_size is None):
        raise ValueError("give exactly one of test_fraction and train_size")
    if test_fraction is not None:
        n_test = math.ceil(test_fraction * n)
        n_train = n - n_test
    else:
        n_train = int(train_size)
        n_test = n - n_train
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or n_train < len(classes) or n_test < len(classes):
        raise ValueError(
            f"cannot split {n} samples of {len(classes)} classes into {n_train} train and "
            f"{n_test} test samples with every class in both"
        )
    class_indices = np.split(
        np.argsort(y_indices.reshape(-1), kind="stable"), np.cumsum(class_counts)[:-1]
    )
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[: n_i[i]])
        test.extend(perm[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)
