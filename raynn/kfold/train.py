"""Training of one K-fold job: a pure function, shared by every executor.

``train_job(job, data, threads=...)`` builds the model from the job's seed, trains it on the
job's fold with index-sliced batches, validates every epoch, checkpoints, and returns a
:class:`JobResult`. It knows nothing of Ray or of processes: every executor calls the very
same function, so a job gives bit-identical metrics at the same thread count wherever it
runs, including after a retry that resumes from a checkpoint.

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
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from raynn.core import checkpoint
from raynn.core.data import ArrayDataset
from raynn.core.losses import build_loss
from raynn.core.nn import Evaluation, evaluate, seeded_model
from raynn.core.optim import make_optimizer, make_schedule
from raynn.errors import CheckpointError
from raynn.kfold.grid import Job
from raynn.kfold.rows import EpochRecord, JobResult
from raynn.spec.checks import to_plain

EpochCallback = Callable[[str, int, int, float], None]  # job, epochs done, of, val loss


def _restore(job: Job, store: checkpoint.CheckpointStore | None) -> dict[str, Any] | None:
    if store is None:
        return None
    blob = store.load_checkpoint(job.job_id)
    if blob is None:
        return None
    try:
        state = checkpoint.decode(blob)
    except CheckpointError as exc:  # start from scratch rather than resume from garbage
        _set_aside(job, store, str(exc))
        return None
    return state if state.get("job_id") == job.job_id else None  # another job's (schema 2)


def _set_aside(job: Job, store: checkpoint.CheckpointStore, why: str) -> None:
    """Move the job's checkpoint that cannot be loaded out of the way and say so in one line."""
    set_aside = getattr(store, "set_aside", None)
    where = set_aside(job.job_id) if set_aside is not None else None
    fate = f"set aside as {where}" if where else "ignored"
    print(
        f"raynn: the checkpoint of job {job.job_id} cannot be loaded ({why}); {fate}, "
        "training afresh",
        file=sys.stderr,
        flush=True,
    )


def _fresh(job: Job, data: ArrayDataset, steps: int) -> tuple[nn.Module, Any, Any]:
    """The job's model from its seed, its optimizer and its schedule, as a new job has them."""
    model = seeded_model(job.model, job.seed, data.in_shape, data.num_classes)
    opt = make_optimizer(job, model)
    return model, opt, make_schedule(job, opt, steps, key="schedulers")


def _resume(
    state: dict[str, Any], model: nn.Module, opt: Any, schedule: Any, result: JobResult
) -> int:
    """Load a decoded checkpoint into the job's model, optimizer, schedule, RNG and result;
    the epoch it resumes from. Raises whatever a checkpoint that does not fit raises (keys
    or shapes of a changed model, a missing entry): the caller starts afresh."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    history = [EpochRecord(**row) for row in state["history"]]
    train_s, eval_s = (float(s) for s in state["seconds"])
    epoch = int(state["epoch"])
    torch.set_rng_state(state["torch_rng"])
    result.history, result.train_seconds, result.eval_seconds = history, train_s, eval_s
    result.resumed_from_epoch = epoch
    return epoch


class _CheckpointWriter:
    """Encodes and saves a job's checkpoints in a background thread, one at a time.

    The state is copied on the training thread (a memory copy); ``torch.save``, the checksum
    and the store's write happen in the background while the next epoch trains. A new
    checkpoint waits for the one before it. :meth:`close` waits for the last one, so that no
    checkpoint lands after the job's result.
    """

    def __init__(self, store: checkpoint.CheckpointStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, state: dict[str, Any]) -> None:
        self.close()
        self._thread = threading.Thread(
            target=self._save, args=(state,), name="raynn-checkpoint", daemon=True
        )
        self._thread.start()

    def _save(self, state: dict[str, Any]) -> None:
        try:
            self.store.save_checkpoint(self.job_id, checkpoint.encode(state))
        except BaseException as exc:  # raised again on the training thread by close()
            self._error = exc

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _epoch_threads(threads: int | Sequence[int], epoch: int) -> int:
    if isinstance(threads, int):
        return threads
    return threads[min(epoch, len(threads) - 1)]


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
        torch.set_num_threads(_epoch_threads(threads, 0))
    start = time.time()
    cfg = job.training
    train_idx, val_idx = data.folds[job.fold]
    norm = data.normalizer()
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    sizes = torch.tensor(
        [
            len(train_idx[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            for b in range(steps_per_epoch)
        ],
        dtype=torch.float64,
    )

    model, opt, schedule = _fresh(job, data, steps_per_epoch)
    result = JobResult(
        job.job_id,
        job.model.label,
        job.scheduler.label,
        job.fold,
        job.seed,
        config=job.config,
        columns=job.columns,
        attempt=attempt,
        start_time=start,
        threads=torch.get_num_threads(),
        cores=sorted(os.sched_getaffinity(0)),
        params=sum(p.numel() for p in model.parameters()),
    )

    first_epoch = 0
    state = _restore(job, checkpoints)
    if state is not None and checkpoints is not None:
        try:
            first_epoch = _resume(state, model, opt, schedule, result)
        except Exception as exc:  # e.g. the model's code changed: its keys no longer fit
            _set_aside(job, checkpoints, checkpoint.reason(exc))
            model, opt, schedule = _fresh(job, data, steps_per_epoch)  # loads may be partial

    writer = _CheckpointWriter(checkpoints, job.job_id) if checkpoints is not None else None
    since_checkpoint = 0.0
    loss_fn = build_loss(cfg.loss, data.num_classes)
    val: Evaluation | None = None
    try:
        for epoch in range(first_epoch, cfg.epochs):
            if isinstance(threads, Sequence):  # a replayed schedule: each epoch its own
                torch.set_num_threads(_epoch_threads(threads, epoch))
            t0 = time.perf_counter()
            model.train()
            loss_fn.train()
            order = train_idx[np.random.default_rng([job.seed, epoch]).permutation(len(train_idx))]
            losses = torch.empty(steps_per_epoch)
            correct = torch.zeros((), dtype=torch.int64)
            lr = opt.param_groups[0]["lr"]
            for b in range(steps_per_epoch):
                bi = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                xb, yb = norm(data.x_train, bi), torch.from_numpy(data.y_train[bi])
                opt.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = loss_fn(logits, yb)
                losses[b] = loss.detach()
                loss.backward()
                opt.step()
                schedule.after_batch()
                correct += (logits.argmax(1) == yb).sum()
            finite = torch.isfinite(losses)
            if not bool(finite.all()):
                bad = int((~finite).nonzero()[0])
                result.status = "failed"
                result.error = (
                    f"loss became {float(losses[bad])} at epoch {epoch + 1}, batch {bad + 1}; "
                    "lower optimizer.lr or check the data"
                )
                result.end_time = time.time()
                return result
            train_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            val = evaluate(
                model,
                data.x_train,
                data.y_train,
                val_idx,
                norm,
                data.num_classes,
                cfg.eval_batch_size,
                loss_fn,
            )
            result.eval_seconds += time.perf_counter() - t1
            result.train_seconds += train_s
            train_loss = float((losses.double() * sizes).sum()) / len(train_idx)
            # a refit trains on every sample: no validation, so the schedule sees the
            # training loss
            schedule.after_epoch(val.loss if len(val_idx) else train_loss)
            result.history.append(
                EpochRecord(
                    job.job_id,
                    epoch + 1,
                    train_loss,
                    int(correct) / len(train_idx),
                    val.loss,
                    val.accuracy,
                    lr,
                    train_s,
                    len(train_idx) / max(train_s, 1e-9),
                    torch.get_num_threads(),
                )
            )
            since_checkpoint += train_s
            every = cfg.checkpoint_seconds
            due = (
                (epoch + 1) % cfg.checkpoint_epochs == 0
                if cfg.checkpoint_epochs
                else bool(every) and since_checkpoint >= every
            )
            if writer is not None and due and epoch + 1 < cfg.epochs:
                writer.submit(
                    {
                        "job_id": job.job_id,
                        "epoch": epoch + 1,
                        "model": copy.deepcopy(model.state_dict()),
                        "optimizer": copy.deepcopy(opt.state_dict()),
                        "schedule": copy.deepcopy(schedule.state_dict()),
                        "torch_rng": torch.get_rng_state(),
                        "history": [asdict(r) for r in result.history],
                        "seconds": (result.train_seconds, result.eval_seconds),
                    }
                )
                since_checkpoint = 0.0
            if on_epoch is not None:
                on_epoch(job.job_id, epoch + 1, cfg.epochs, val.loss)
    finally:
        if writer is not None:
            writer.close()

    t1 = time.perf_counter()
    if val is None:  # resumed after its last epoch: nothing trained here
        val = evaluate(
            model,
            data.x_train,
            data.y_train,
            val_idx,
            norm,
            data.num_classes,
            cfg.eval_batch_size,
            loss_fn,
        )
    result.val_loss, result.val_accuracy, result.per_class_accuracy = (
        val.loss,
        val.accuracy,
        val.per_class,
    )
    if cfg.evaluate_test and data.x_test is not None and data.y_test is not None:
        test = evaluate(
            model,
            data.x_test,
            data.y_test,
            None,
            norm,
            data.num_classes,
            cfg.eval_batch_size,
            loss_fn,
        )
        result.test_loss, result.test_accuracy = test.loss, test.accuracy
    result.eval_seconds += time.perf_counter() - t1
    result.epochs = cfg.epochs
    if job.keep_model:
        result.model_state = model_file(job, data, model, result)
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
