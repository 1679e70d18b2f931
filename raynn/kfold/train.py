"""Training of one K-fold job: a pure function, shared by every executor.

``train_job(job, data, threads=...)`` builds the model from the job's seed, trains it on the
job's fold with index-sliced batches, validates every epoch, checkpoints, and returns a
:class:`JobResult`. Its epochs are the one loop of both kinds
(:class:`~raynn.core.epochs.EpochLoop`): :class:`JobTraining` is what it trains; the thread
schedule, the checkpoints and the caller's epoch hook (a lease's renewal and widening) are
its callbacks; a NaN loss fails the job through the loop's one NaN guard.

It knows nothing of Ray or of processes: every executor calls the very same function, so a
job gives bit-identical metrics at the same thread count wherever it runs, including after
a retry that resumes from a checkpoint.

What a job costs beyond its training steps is kept small: the last epoch's validation is
the job's validation (it is not run twice), losses and hits stay tensors until the end of
an epoch (no ``.item()`` per step), batches are normalised in one conversion and two
in-place passes, and checkpoints are taken by training time (``checkpoint_seconds``) and
encoded and saved by a background thread while training goes on.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.core import checkpoint
from raynn.core.data import ArrayDataset
from raynn.core.epochs import (
    Checkpointing,
    EpochLoop,
    Hooks,
    ThreadSchedule,
    Trainable,
    epoch_threads,
)
from raynn.core.losses import build_loss
from raynn.core.nn import Evaluation, evaluate, seeded_model
from raynn.core.optim import make_optimizer, make_schedule
from raynn.kfold.grid import Job
from raynn.kfold.rows import EpochRecord, JobResult
from raynn.spec.checks import to_plain

EpochCallback = Callable[[str, int, int, float], None]  # job, epochs done, of, val loss
NAN_FIX = "lower optimizer.lr or check the data"


class JobTraining(Trainable):
    """One K-fold job's epochs on the one loop (:class:`~raynn.core.epochs.EpochLoop`): its
    fold's seeded batches, its step, its epoch record and its checkpoint's state.

    The step keeps its loss and hits as tensors (``state.epoch_losses``: the NaN guard reads
    them at the epoch's end); an epoch's end validates it, steps the schedule and appends its
    :class:`EpochRecord` to the result.
    """

    def __init__(self, job: Job, data: ArrayDataset) -> None:
        self.job, self.data, self.cfg = job, data, job.training
        self.train_idx, self.val_idx = data.folds[job.fold]
        self.norm = data.normalizer()
        size = self.cfg.batch_size
        self.steps = math.ceil(len(self.train_idx) / size)
        self.sizes = torch.tensor(
            [len(self.train_idx[b * size : (b + 1) * size]) for b in range(self.steps)],
            dtype=torch.float64,
        )
        self.fresh()
        labels = (job.model.label, job.scheduler.label)
        self.result = JobResult(job.job_id, *labels, job.fold, job.seed)
        self.loss_fn: Any = None  # built once the checkpoint (and its RNG state) is loaded
        self.val: Evaluation | None = None  # the last epoch's validation

    def fresh(self) -> None:
        """The job's model from its seed, its optimizer and its schedule, as a new job has them."""
        job = self.job
        self.model = seeded_model(job.model, job.seed, self.data.in_shape, self.data.num_classes)
        self.opt = make_optimizer(job, self.model)
        self.schedule = make_schedule(job, self.opt, self.steps, key="schedulers")

    def batches(self, loop: EpochLoop) -> Iterator[np.ndarray]:
        self.t0 = time.perf_counter()
        self.model.train()
        self.loss_fn.train()
        rng = np.random.default_rng([self.job.seed, loop.state.epoch])
        order = self.train_idx[rng.permutation(len(self.train_idx))]
        loop.state.epoch_losses = self.losses = torch.empty(self.steps)
        self.correct = torch.zeros((), dtype=torch.int64)
        self.lr = self.opt.param_groups[0]["lr"]
        size = self.cfg.batch_size
        return (order[b * size : (b + 1) * size] for b in range(self.steps))

    def train_step(self, loop: EpochLoop, batch: np.ndarray) -> None:
        xb, yb = self.norm(self.data.x_train, batch), torch.from_numpy(self.data.y_train[batch])
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(xb)
        loss = self.loss_fn(logits, yb)
        self.losses[loop.state.batch] = loss.detach()
        loss.backward()
        self.opt.step()
        self.schedule.after_batch()
        self.correct += (logits.argmax(1) == yb).sum()

    def on_epoch_end(self, loop: EpochLoop) -> None:
        result, n = self.result, len(self.train_idx)
        train_s = loop.state.epoch_seconds = time.perf_counter() - self.t0
        t1 = time.perf_counter()
        self.val = self.evaluate(self.data.x_train, self.data.y_train, self.val_idx)
        result.eval_seconds += time.perf_counter() - t1
        result.train_seconds += train_s
        train_loss = float((self.losses.double() * self.sizes).sum()) / n
        # a refit trains on every sample: no validation, so the schedule sees the training loss
        self.schedule.after_epoch(self.val.loss if len(self.val_idx) else train_loss)
        result.history.append(
            EpochRecord(
                self.job.job_id,
                loop.state.epoch + 1,
                train_loss,
                int(self.correct) / n,
                self.val.loss,
                self.val.accuracy,
                self.lr,
                train_s,
                n / max(train_s, 1e-9),
                torch.get_num_threads(),
            )
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray, idx: np.ndarray | None) -> Evaluation:
        """The model's loss and accuracy on ``x[idx]`` (:func:`~raynn.core.nn.evaluate`)."""
        return evaluate(
            self.model,
            x,
            y,
            idx,
            self.norm,
            self.data.num_classes,
            self.cfg.eval_batch_size,
            self.loss_fn,
        )

    def save_state(self, loop: EpochLoop) -> dict[str, Any]:
        result = self.result
        return {
            "job_id": self.job.job_id,
            "epoch": loop.state.epoch + 1,
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.opt.state_dict()),
            "schedule": copy.deepcopy(self.schedule.state_dict()),
            "torch_rng": torch.get_rng_state(),
            "history": [asdict(r) for r in result.history],
            "seconds": (result.train_seconds, result.eval_seconds),
        }

    def load_state(self, state: dict[str, Any]) -> int:
        """Load a decoded checkpoint into the model, optimizer, schedule, RNG and result; the
        epoch it resumes from. Raises whatever a checkpoint that does not fit raises (keys or
        shapes of a changed model, a missing entry): the caller starts afresh."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        history = [EpochRecord(**row) for row in state["history"]]
        train_s, eval_s = (float(s) for s in state["seconds"])
        epoch = int(state["epoch"])
        torch.set_rng_state(state["torch_rng"])
        result = self.result
        result.history, result.train_seconds, result.eval_seconds = history, train_s, eval_s
        result.resumed_from_epoch = epoch
        return epoch


def _resume(training: JobTraining, store: checkpoint.CheckpointStore | None) -> int:
    """The epoch the job starts at: its checkpoint's, loaded, or 0 (none, or one that does
    not load: set aside, and the model, optimizer and schedule made afresh)."""
    state = checkpoint.load_latest(store, training.job.job_id)
    if state is None or store is None:
        return 0
    try:
        return training.load_state(state)
    except Exception as exc:  # e.g. the model's code changed: its keys no longer fit
        checkpoint.set_aside(store, training.job.job_id, checkpoint.reason(exc))
        training.fresh()  # loads may be partial
        return 0


def train_job(
    job: Job,
    data: ArrayDataset,
    *,
    threads: int | Sequence[int] | None = None,
    checkpoints: checkpoint.CheckpointStore | None = None,
    on_epoch: EpochCallback | None = None,
    attempt: int = 1,
) -> JobResult:
    """Train one job and return its result.

    Args:
        job: the job (model, scheduler, fold, seed, optimizer and training settings).
        data: the dataset with its fold indices (``data.folds``).
        threads: torch intra-op threads to use; a sequence gives the threads of each epoch
            (replaying a job that tail widening gave more threads); None keeps the current
            setting.
        checkpoints: where epoch checkpoints are saved and resumed from; None disables them.
        on_epoch: called as ``on_epoch(job_id, epoch_done, epochs, val_loss)`` after each
            epoch.
        attempt: the attempt number recorded in the result.

    Returns:
        The job's result; ``status == "failed"`` with the reason if the loss became NaN/inf.
    """
    if threads is not None:
        torch.set_num_threads(epoch_threads(threads, 0))
    start = time.time()
    training = JobTraining(job, data)
    result = training.result
    result.config, result.columns, result.attempt = job.config, job.columns, attempt
    result.start_time, result.threads = start, torch.get_num_threads()
    result.cores = sorted(os.sched_getaffinity(0))
    result.params = sum(p.numel() for p in training.model.parameters())
    first_epoch = _resume(training, checkpoints)
    callbacks = _callbacks(training, threads, checkpoints, on_epoch)
    training.loss_fn = build_loss(job.training.loss, data.num_classes)
    state = EpochLoop(training, callbacks).run(first_epoch, job.training.epochs)
    if state.failure is not None:
        result.status = "failed"
        result.error = state.failure.describe(f"batch {state.failure.batch + 1}", NAN_FIX)
        result.end_time = time.time()
        return result
    return _finish(training)


def _callbacks(
    training: JobTraining,
    threads: int | Sequence[int] | None,
    store: checkpoint.CheckpointStore | None,
    on_epoch: EpochCallback | None,
) -> list[Any]:
    """A job's callbacks: its thread schedule, its checkpoints, then its epoch hook."""
    job, cfg = training.job, training.cfg
    callbacks: list[Any] = []
    if isinstance(threads, Sequence):  # a replayed schedule: each epoch its own
        callbacks.append(ThreadSchedule(threads))
    if store is not None:
        writer = checkpoint.CheckpointWriter(store, job.job_id)
        every = (cfg.checkpoint_epochs, cfg.checkpoint_seconds)
        callbacks.append(Checkpointing(writer, cfg.epochs, *every))
    if on_epoch is not None:

        def report(state: Any) -> None:
            assert training.val is not None
            on_epoch(job.job_id, state.epoch + 1, cfg.epochs, training.val.loss)

        callbacks.append(Hooks(after_epoch=report))
    return callbacks


def _finish(training: JobTraining) -> JobResult:
    """The trained job's result: its validation (the last epoch's), its test, its model."""
    job, data, cfg, result = training.job, training.data, training.cfg, training.result
    t1 = time.perf_counter()
    val = training.val
    if val is None:  # resumed after its last epoch: nothing trained here
        val = training.evaluate(data.x_train, data.y_train, training.val_idx)
    result.val_loss, result.val_accuracy, result.per_class_accuracy = (
        val.loss,
        val.accuracy,
        val.per_class,
    )
    if cfg.evaluate_test and data.x_test is not None and data.y_test is not None:
        test = training.evaluate(data.x_test, data.y_test, None)
        result.test_loss, result.test_accuracy = test.loss, test.accuracy
    result.eval_seconds += time.perf_counter() - t1
    result.epochs = cfg.epochs
    if job.keep_model:
        result.model_state = model_file(job, data, training.model, result)
    result.end_time = time.time()
    return result


MODEL_FORMAT = "raynn-model/1"


def model_file(job: Job, data: ArrayDataset, model: nn.Module, result: JobResult) -> bytes:
    """A trained job's weights and what rebuilds its model, as the bytes of a ``.pt`` file.

    Holds the state dict, the model entry (name, args, label, whether a Python factory built
    it), the input shape, class count and the normalisation the model was trained behind
    (per-channel ``mean``/``std`` of ``x / 255``), the loss, and the job's metrics. Read
    with :func:`raynn.kfold.saved.load_model`.
    """
    import io

    state = {
        "format": MODEL_FORMAT,
        "job_id": job.job_id,
        "model": {
            "name": job.model.name,
            "args": to_plain(dict(job.model.args)),
            "label": job.model.label,
            "python_factory": job.model.factory is not None,
        },
        "scheduler": job.scheduler.label,
        "fold": job.fold,
        "seed": job.seed,
        "epochs": job.training.epochs,
        "in_shape": list(data.in_shape),
        "num_classes": data.num_classes,
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
        "loss": to_plain(job.training.loss),
        "metrics": {
            "val_accuracy": result.val_accuracy,
            "val_loss": result.val_loss,
            "test_accuracy": result.test_accuracy,
            "test_loss": result.test_loss,
        },
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()
