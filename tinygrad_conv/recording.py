"""What a training run records between epochs, for the curves and ``tinygrad-conv inspect``.

Every ``every`` batches (20 by default) the recorder appends one JSON line to the run's
``metrics.jsonl``::

    {"kind": "batches", "step": 40, "epoch": 1, "loss": 0.41, "lr": 0.00099,
     "norms": {"0": {"weight": 3.2, "grad": 0.51}, "3": {...}, ...}}

``loss`` is the mean training loss of those batches (a smoothed per-batch loss), ``lr`` the
learning rate of the last of them, ``norms`` the L2 norm of each layer's parameters and of
their gradients (weight and bias together) right after that batch's backward. Between those
batches it only adds one float, so a step is not measurably slower. The per-epoch lines
(``train_loss``, ``test_acc``...) have no ``"kind"``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

RECORD_EVERY = 20
KIND = "batches"


def layer_norms(model: Any) -> dict[str, dict[str, float | None]]:
    """``{layer name: {"weight": L2 norm of its parameters, "grad": of their grads}}`` for each
    module holding parameters directly (``"grad"`` is None before any backward)."""
    norms: dict[str, dict[str, float | None]] = {}
    for name, module in model.named_modules():
        params = [p for p in module._parameters.values() if p is not None]
        if not params:
            continue
        weight = math.sqrt(sum(_square_sum(p.data) for p in params))
        grads = [p.grad.data for p in params if p.grad is not None]
        grad = math.sqrt(sum(_square_sum(g) for g in grads)) if grads else None
        norms[name or "model"] = {"weight": weight, "grad": grad}
    return norms


def _square_sum(a: np.ndarray) -> float:
    flat = a.reshape(-1)
    return float(np.dot(flat, flat))


class BatchRecorder:
    """Call :meth:`after_backward` once per training batch; every ``every`` batches it
    appends a row to ``path`` (and to ``rows``)."""

    def __init__(self, path: str | Path, every: int = RECORD_EVERY) -> None:
        if every < 1:
            raise ValueError(f"BatchRecorder: every must be a positive number of batches, "
                             f"got {every}")
        self.path, self.every = Path(path), every
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []

    def after_backward(self, model: Any, loss: float, step: int, epoch: int, lr: float) -> None:
        """Note this batch's ``loss``; on every ``every``-th ``step`` (counted from 1 over the
        whole run) also the layer norms, and write the row."""
        self._losses.append(loss)
        if step % self.every:
            return
        row = {"kind": KIND, "step": step, "epoch": epoch,
               "loss": sum(self._losses) / len(self._losses), "lr": lr,
               "norms": layer_norms(model)}
        self._losses.clear()
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(epoch rows, batch rows)`` of a run's ``metrics.jsonl``; a missing file gives two
    empty lists."""
    epochs: list[dict[str, Any]] = []
    batches: list[dict[str, Any]] = []
    path = Path(path)
    if not path.exists():
        return epochs, batches
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            (batches if row.get("kind") == KIND else epochs).append(row)
    return epochs, batches


def where_the_files_are(out: Path, every: int = RECORD_EVERY) -> str:
    """The lines a training run ends with: where its checkpoint, metrics and pictures are."""
    curves = out / "curves.png"
    pictures = (f"{curves}; `tinygrad-conv inspect --run {out}` draws the filters, feature "
                "maps, confusion matrix, mistakes and norms there" if curves.exists()
                else "none yet (matplotlib is not installed: pip install 'tinygrad_conv[plot]')")
    return (f"checkpoint: {out / 'checkpoint.npz'}\n"
            f"metrics:    {out / 'metrics.jsonl'} (a line per epoch, and the loss, lr and layer "
            f"norms every {every} batches)\n"
            f"pictures:   {pictures}")
