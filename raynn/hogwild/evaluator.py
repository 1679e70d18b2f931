"""The one HOGWILD evaluator: flat weight vectors on the test split, into eval rows.

Used by the driver of a run (the server's weights, every ``training.eval_every_seconds``),
by the serial baseline and by ``raynn bench hogwild``'s PyTorch modes (the shared model's
weights), so every curve is measured the same way: one torch thread, the test split (the
training split where there is none), the criterion the model is trained with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raynn.core.data import ArrayDataset
from raynn.core.nn import evaluate
from raynn.hogwild.loop import build, make_loss
from raynn.hogwild.protocol import ServerState, version_count
from raynn.hogwild.rows import EvalRow
from raynn.hogwild.shared_params import load_flat
from raynn.hogwild.tables import EVAL_SCHEMA
from raynn.runs.results import write_table
from raynn.spec.hogwild import HogwildSpec

EVAL_WRITE_SECONDS = 2.0  # how often the eval rows of a running attempt reach the disk


class Evaluator:
    """Evaluates flat weight vectors on the test split (one thread) into eval rows.

    Args:
        spec: the run's spec (model, loss, ``training.eval_batch_size``).
        data: the run's data.
        attempt: the attempt number written in each row.
        run_dir: where the rows are written as they come (``eval/part-<attempt>.parquet``, at
            most every :data:`EVAL_WRITE_SECONDS`, so a killed driver keeps them); None: kept
            in :attr:`rows` only.
    """

    def __init__(
        self,
        spec: HogwildSpec,
        data: ArrayDataset,
        attempt: int = 0,
        run_dir: Path | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.written = 0.0
        self.data = data
        self.spec = spec
        self.model = build(spec, data)
        self.norm = data.normalizer()
        self.loss = make_loss(spec, data)  # reported as trained
        self.attempt = attempt
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.time()

    def __call__(
        self,
        weights: np.ndarray,
        version: int = 0,
        steps: int = 0,
        samples: int = 0,
        final: bool = False,
    ) -> dict[str, Any]:
        """Evaluate ``weights``, append the row to :attr:`rows` (and the disk) and return it."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            load_flat(self.model, weights)
            d = self.data
            x, y = (d.x_test, d.y_test) if d.y_test is not None else (d.x_train, d.y_train)
            ev = evaluate(
                self.model,
                x,
                y,
                None,
                self.norm,
                d.num_classes,
                self.spec.training.eval_batch_size,
                self.loss,
            )
        finally:
            torch.set_num_threads(threads)
        now = time.time()
        row = EvalRow(
            attempt=self.attempt,
            time=now,
            elapsed=now - self.t0,
            version=version_count(version),
            step=steps,
            samples=samples,
            epoch=samples / max(len(d.y_train), 1),
            loss=ev.loss,
            accuracy=ev.accuracy,
            final=final,
            per_class_accuracy=ev.per_class if final else [],
        ).row()
        self.rows.append(row)
        if self.run_dir is not None and (final or now - self.written >= EVAL_WRITE_SECONDS):
            write_table(
                self.run_dir / "eval" / f"part-{self.attempt}.parquet", self.rows, EVAL_SCHEMA
            )
            self.written = now
        return row

    def evaluate(self, state: ServerState, final: bool = False) -> dict[str, Any]:
        """Evaluate the server's ``state`` (see :meth:`__call__`)."""
        return self(state.weights, state.version, state.steps, state.samples, final)
