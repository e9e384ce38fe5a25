"""Pictures of a trained CNN and its training run, as PNG files (matplotlib, Agg backend).

    from tinygrad_conv import pictures
    pictures.plot_filters(model, "filters.png")            # the first conv layer's kernels
    pictures.plot_feature_maps(model, image, "maps.png")   # every conv layer's output
    pictures.plot_confusion(model, test_set, "confusion.png")
    pictures.plot_mistakes(model, test_set, "mistakes.png")
    pictures.plot_norms(batch_rows, "norms.png")           # per-layer norms over training
    pictures.plot_curves(epoch_rows, "curves.png", batch_rows)

``inspect_run(run_dir)`` draws them all for a run of ``tinygrad-conv train``. The figures are
``matplotlib.figure.Figure`` objects drawn without pyplot (no GUI, no global state), so this
works on a server and from threads; matplotlib is the optional ``plot`` extra.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_atomic
from .engine import no_grad
from .recording import read_metrics
from .summary import run_watched
from .tensor import Tensor

PICTURES = ("filters.png", "feature_maps.png", "confusion.png", "mistakes.png", "norms.png")
_PLOT_HINT = "pictures need matplotlib: pip install 'tinygrad_conv[plot]'"


def _figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_PLOT_HINT) from None
    return Figure(figsize=(width, height), layout=layout)


def _save(fig: Any, path: str | Path) -> Path:
    """The figure as a PNG at ``path``, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return write_atomic(path, buffer.getvalue())


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


# ---- training curves ----------------------------------------------------------------------------
def smooth(values: Sequence[float], weight: float = 0.6) -> np.ndarray:
    """Exponential moving average (``weight`` of the past), started without bias toward 0."""
    out, avg = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out[i] = avg / (1 - weight ** (i + 1))
    return out


def plot_curves(history: list[dict[str, Any]], path: str | Path,
                batches: Sequence[dict[str, Any]] = ()) -> bool:
    """Loss, accuracy and learning rate over the run as one PNG; False without matplotlib.

    ``history``: the per-epoch rows (``epoch``, ``train_loss``, ``train_acc``, ``test_loss``,
    ``test_acc``, ``lr``); ``batches``: the recorder's rows (``step``, ``loss``, ``lr``), which
    put the batch loss and the lr on the same axis of epochs (step / steps per epoch).
    """
    try:
        fig = _figure(13, 3.8)
    except ImportError:
        return False
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    epochs = [r["epoch"] for r in history]
    per_epoch = _steps_per_epoch(batches)
    if batches and per_epoch:
        x = [b["step"] / per_epoch for b in batches]
        loss = [b["loss"] for b in batches]
        every = batches[1]["step"] - batches[0]["step"] if len(batches) > 1 else batches[0]["step"]
        loss_ax.plot(x, loss, color="#9ecae1", lw=0.8, label=f"train, mean of each {every} batches")
        loss_ax.plot(x, smooth(loss), color="#2171b5", lw=1.5, label="train, smoothed")
        lr_ax.plot(x, [b["lr"] for b in batches], color="#6a51a3", label="per batch")
    elif history and all("lr" in r for r in history):  # checkpoints from before schedules lack it
        lr_ax.plot(epochs, [r["lr"] for r in history], "o-", color="#6a51a3",
                   label="at each epoch's end")
    if history:
        loss_ax.plot(epochs, [r["train_loss"] for r in history], "o--", color="#08306b",
                     label="train, epoch mean")
        loss_ax.plot(epochs, [r["test_loss"] for r in history], "s-", color="#d94801",
                     label="test, after the epoch")
        acc_ax.plot(epochs, [100 * r["train_acc"] for r in history], "o--", color="#08306b",
                    label="train, epoch mean")
        acc_ax.plot(epochs, [100 * r["test_acc"] for r in history], "s-", color="#d94801",
                    label="test, after the epoch")
    for ax, title, ylabel in ((loss_ax, "cross-entropy loss", "loss"),
                              (acc_ax, "accuracy", "accuracy (%)"),
                              (lr_ax, "learning rate", "lr")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _steps_per_epoch(batches: Sequence[dict[str, Any]]) -> float | None:
    """Batches per epoch, from the rows' steps and epochs (the last full epoch's)."""
    by_epoch: dict[int, int] = {}
    for b in batches:
        by_epoch[b["epoch"]] = max(by_epoch.get(b["epoch"], 0), b["step"])
    ends = sorted(by_epoch.items())
    if len(ends) >= 2:
        return (ends[-2][1] - (ends[-3][1] if len(ends) >= 3 else 0)) or None
    if ends:
        return ends[0][1] or None
    return None


def plot_norms(batches: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Each layer's gradient norm and weight norm against the training step (log scale)."""
    if not batches:
        raise ValueError("plot_norms: no per-batch rows (a run records them every 20 batches)")
    fig = _figure(11, 4)
    grad_ax, weight_ax = fig.subplots(1, 2)
    steps = [b["step"] for b in batches]
    for layer in batches[-1]["norms"]:
        for ax, key in ((grad_ax, "grad"), (weight_ax, "weight")):
            values = [b["norms"].get(layer, {}).get(key) for b in batches]
            ax.plot(steps, [np.nan if v is None else v for v in values], label=f"layer {layer}")
    for ax, title in ((grad_ax, "gradient L2 norm per layer"),
                      (weight_ax, "weight L2 norm per layer")):
        ax.set_title(title)
        ax.set_xlabel("training step (batch)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.legend(*grad_ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8,
               title="layer\n(weight and\nbias together)", title_fontsize=8)
    return _save(fig, path)


# ---- the model ----------------------------------------------------------------------------------
def _conv_layers(model: Any) -> list[tuple[str, Any]]:
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ == "Conv2d"]


def plot_filters(model: Any, path: str | Path) -> Path:
    """The first conv layer's kernels, one small image per output channel (its first input
    channel), on one colour scale centred at 0: red positive, blue negative."""
    convs = _conv_layers(model)
    if not convs:
        raise ValueError("plot_filters: the model has no Conv2d layer")
    name, conv = convs[0]
    w = conv.weight.data[:, 0]  # (F, kh, kw)
    rows, cols = _grid(len(w))
    fig = _figure(cols * 0.9 + 1, rows * 0.9 + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    limit = float(np.abs(w).max()) or 1.0
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < len(w):
            image = ax.imshow(w[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(str(i), fontsize=7)
    fig.suptitle(f"layer {name}: {len(w)} filters {w.shape[1]}x{w.shape[2]}")
    fig.colorbar(image, ax=list(axes), shrink=0.6, label="weight")
    return _save(fig, path)


def feature_maps(model: Any, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """``[(layer name, its output (C, H, W))]`` for every conv layer, for one image (1, H, W)."""
    maps: list[tuple[str, np.ndarray]] = []

    def leave(name: str, module: Any, out: Any) -> None:
        if type(module).__name__ == "Conv2d":
            maps.append((name, out.data[0]))

    x = Tensor(np.asarray(image, dtype=np.float32)[None])
    run_watched(model, x, lambda name, module: name, leave)
    return maps


def plot_feature_maps(model: Any, image: np.ndarray, path: str | Path,
                      max_channels: int = 16, label: str = "") -> Path:
    """The image, then the first ``max_channels`` output channels of every conv layer."""
    maps = feature_maps(model, image)
    if not maps:
        raise ValueError("plot_feature_maps: the model has no Conv2d layer")
    cols = max_channels
    fig = _figure(cols * 0.8, (len(maps) + 1) * 1.0 + 0.2, layout=None)
    axes = fig.subplots(len(maps) + 1, cols, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.9, wspace=0.08, hspace=0.45)
    for ax in axes.reshape(-1):
        ax.set_axis_off()
    axes[0, 0].imshow(np.asarray(image)[0], cmap="gray")
    axes[0, 0].set_title(label or "input", fontsize=8, loc="left")
    for row, (name, out) in zip(axes[1:], maps):
        for c, ax in enumerate(row[: min(cols, len(out))]):
            ax.imshow(out[c], cmap="viridis")
        row[0].set_title(f"layer {name}: {len(out)} channels {out.shape[1]}x"
                                 f"{out.shape[2]} (the first shown), before its ReLU",
                                 fontsize=8, loc="left")
    return _save(fig, path)


def predict(model: Any, dataset: Any, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """``(labels (N,), predicted classes (N,), probabilities (N, K))`` over ``dataset``."""
    from . import functional as F
    from .data import DataLoader

    labels, probs = [], []
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for x, y in DataLoader(dataset, batch_size):
                probs.append(F.softmax(model(x), axis=1).data)
                labels.append(y.data)
    finally:
        model.train(was_training)
    p = np.concatenate(probs)
    return np.concatenate(labels), p.argmax(axis=1), p


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts (classes, classes): row = true class, column = predicted class."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def plot_confusion(model: Any, dataset: Any, path: str | Path) -> Path:
    """The confusion matrix of ``model`` on ``dataset`` (counts in every cell)."""
    labels, predicted, probs = predict(model, dataset)
    counts = confusion_matrix(labels, predicted, probs.shape[1])
    k = len(counts)
    fig = _figure(6.5, 5.5)
    ax = fig.subplots()
    image = ax.imshow(np.log1p(counts), cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        if n:
            dark = np.log1p(n) > 0.6 * np.log1p(counts.max())
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"confusion matrix: {counts.sum()} test images, {accuracy:.2%} correct")
    fig.colorbar(image, ax=ax, shrink=0.8, label="log(1 + count)")
    return _save(fig, path)


def plot_mistakes(model: Any, dataset: Any, path: str | Path, count: int = 24) -> Path:
    """The first ``count`` misclassified images with their true and predicted labels and the
    model's confidence (softmax probability) in its prediction."""
    labels, predicted, probs = predict(model, dataset)
    wrong = np.flatnonzero(labels != predicted)[:count]
    rows, cols = _grid(max(len(wrong), 1))
    fig = _figure(cols * 1.3, rows * 1.45 + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, wrong):
        ax.imshow(np.asarray(dataset[int(i)][0])[0], cmap="gray_r")
        ax.set_title(f"true {labels[i]}, said {predicted[i]}\n{probs[i, predicted[i]]:.0%} sure",
                     fontsize=8)
    total = int((labels != predicted).sum())
    fig.suptitle(f"{len(wrong)} of the {total} misclassified test images (of {len(labels)})")
    return _save(fig, path)


# ---- a whole run --------------------------------------------------------------------------------
def inspect_run(run: str | Path, data_dir: str | None = None, out: str | Path | None = None,
                image_index: int = 0, limit_test: int | None = None) -> list[Path]:
    """Draw every picture for a ``tinygrad-conv train`` run folder (its checkpoint.npz and
    metrics.jsonl) into ``out`` (default the run folder); returns the files written."""
    from .data import MNIST, Subset
    from .models import reference_cnn
    from .serialization import load
    from .training import CHECKPOINT_NAME, CURVES_NAME, METRICS_NAME

    run = Path(run)
    out = Path(out) if out is not None else run
    saved = load(run / CHECKPOINT_NAME)
    if not isinstance(saved, dict) or "model" not in saved:
        raise ValueError(f"{run / CHECKPOINT_NAME} is not a checkpoint of `tinygrad-conv train`")
    model = reference_cnn()
    model.load_state_dict(saved["model"])
    model.eval()
    test_set = MNIST(data_dir, train=False)
    if limit_test:
        test_set = Subset(test_set, range(min(limit_test, len(test_set))))
    if not 0 <= image_index < len(test_set):
        raise ValueError(f"--image must be between 0 and {len(test_set) - 1}, got {image_index}")
    image, label = test_set[image_index]
    written = [
        plot_filters(model, out / "filters.png"),
        plot_feature_maps(model, image, out / "feature_maps.png",
                          label=f"test image {image_index} (a {label})"),
        plot_confusion(model, test_set, out / "confusion.png"),
        plot_mistakes(model, test_set, out / "mistakes.png"),
    ]
    epochs, batches = read_metrics(run / METRICS_NAME)
    if batches:
        written.append(plot_norms(batches, out / "norms.png"))
    if epochs and plot_curves(epochs, out / CURVES_NAME, batches):
        written.append(out / CURVES_NAME)
    return written
