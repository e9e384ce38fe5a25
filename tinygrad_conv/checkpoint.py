"""Training checkpoints: what ``tinygrad-conv train`` saves in ``OUT/checkpoint.npz`` and how
``--resume`` puts a run back where it stopped.

A checkpoint is one ``tc.save`` file holding a dict::

    format     "tinygrad_conv.training/1"
    epoch      epochs finished
    model      model.state_dict()
    optimizer  optimizer.state_dict()
    scheduler  the lr scheduler's state_dict(), or None for a constant lr
    rng        tc.manual_seed's generator state
    loader     the DataLoader's state (its generator, and the batches done this epoch)
    partial    the running sums of the epoch in progress
    metrics    one dict per finished epoch
    config     the run's settings (training.DEFAULTS' keys)

The functions take the ``training.Trainer`` whose state they save or restore.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import rng

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_FORMAT = "tinygrad_conv.training/1"


class TrainingError(RuntimeError):
    """A run that cannot start (no checkpoint to resume, mismatched settings)."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite (on every rank at once, in a distributed run)."""


def read(path: Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``; ``TrainingError`` saying what to do if there is none,
    or the file is not a training checkpoint."""
    from .serialization import load

    if not path.exists():
        raise TrainingError(
            f"--resume: no checkpoint at {path}; run without --resume to "
            "start training, or pass the --out folder of the run to continue"
        )
    try:
        saved = load(path)
    except (OSError, ValueError) as e:  # truncated or corrupt: tc.load says which
        raise TrainingError(f"--resume: {e}; delete it or run without --resume") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(
            f"--resume: {path} is not a training checkpoint written by "
            "`tinygrad-conv train`"
        )
    return saved


def settings(saved: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run settings a checkpoint holds (None for no checkpoint); ``TrainingError`` if they
    are missing (``training.resolve_config`` checks their values)."""
    if saved is None:
        return None
    config = saved.get("config")
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise TrainingError("--resume: the checkpoint has no valid run settings (its 'config'); "
                            "it was not written by `tinygrad-conv train` or was edited; delete "
                            "it or run without --resume")
    return config


def restore(trainer: Any, saved: dict[str, Any]) -> None:
    """Put ``trainer`` (model, optimizer, loader, RNG, progress, lr) at the checkpoint's
    point; ``TrainingError`` if the checkpoint does not fit the run."""
    try:
        _check_progress(saved, len(trainer.loader))
        _restore_state(trainer, saved)
        _replan_lr(trainer)
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError,
            OverflowError) as e:
        raise TrainingError(
            f"--resume: {trainer.checkpoint_path} does not fit this run ({e}); delete it "
            "or run without --resume"
        ) from None


def _check_progress(saved: dict[str, Any], batches: int) -> None:
    """ValueError naming the first counter of ``saved`` that no run could have written."""
    def count(value: Any, what: str, most: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"its {what} is {value!r}, not a count >= 0")
        if most is not None and value > most:
            raise ValueError(f"its {what} is {value}, more than the {most} batches per epoch")
        return value

    epoch = count(saved["epoch"], "epoch")
    if not isinstance(saved["metrics"], list) or len(saved["metrics"]) != epoch:
        raise ValueError(f"it has epoch {epoch} but not one metrics row per epoch")
    if not isinstance(saved["loader"], dict) or not isinstance(saved["partial"], dict):
        raise ValueError("its loader or partial-epoch state is not a dict")
    position = count(saved["loader"].get("position", 0), "loader position", batches)
    partial = saved["partial"]
    for key in ("batches", "correct", "seen"):
        count(partial[key], f"partial {key}")
    if position and partial["batches"] != position:
        raise ValueError(f"its loader position {position} differs from the "
                         f"{partial['batches']} batches its partial epoch counts")
    for key in ("loss_sum", "seconds"):
        value = partial[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"its partial {key} is {value!r}, not a finite number")


def _restore_state(trainer: Any, saved: dict[str, Any]) -> None:
    trainer.model.load_state_dict(saved["model"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.loader.load_state_dict(saved["loader"])
    trainer._loader_mid_epoch = saved["loader"]["position"] > 0
    trainer.rng_state = saved["rng"]
    rng.set_rng_state(trainer.rng_state)
    trainer.history = list(saved["metrics"])
    trainer.epochs_done = int(saved["epoch"])
    trainer.stats = type(trainer.stats)(**saved["partial"])
    if trainer.scheduler is not None:
        state = saved["scheduler"]
        if not isinstance(state, dict) or set(state) != set(trainer.scheduler.state_dict()):
            raise ValueError("it has no lr-scheduler state of this run's kind")
        steps = state["last_epoch"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"its lr scheduler's step count is {steps!r}")
        trainer.scheduler.load_state_dict(state)


def _replan_lr(trainer: Any) -> None:
    """Set the lr of a restored optimizer: ``--lr`` given on resume wins; a cosine schedule
    keeps its position (steps done) and ends at 0 on the run's last step. Unchanged
    settings give back exactly the checkpoint's schedule and lr."""
    lr = trainer.config.lr
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    sched = trainer.scheduler
    if sched is not None:
        sched.replan(lr, T_max=max(sched.last_epoch + trainer.steps_left(), 1))


def snapshot(trainer: Any) -> dict[str, Any]:
    """Everything a resume needs, at the last consistent point (a batch boundary)."""
    from .training import saved_settings

    loader_state = trainer.loader.state_dict()
    if loader_state["position"]:  # mid-epoch: count only the batches fully trained
        loader_state["position"] = trainer.stats.batches
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": trainer.epochs_done,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": None if trainer.scheduler is None else trainer.scheduler.state_dict(),
        "rng": trainer.rng_state,  # tc.manual_seed's generator
        "loader": loader_state,  # its own generator, and the batches done this epoch
        "partial": asdict(trainer.stats),  # the running sums of the epoch in progress
        "metrics": trainer.history,
        "config": saved_settings(trainer.config),
    }


def write(trainer: Any) -> Path:
    """Save ``snapshot(trainer)`` to its checkpoint path (atomically); returns the path."""
    from .serialization import save

    trainer.out.mkdir(parents=True, exist_ok=True)
    save(snapshot(trainer), trainer.checkpoint_path)
    return trainer.checkpoint_path
