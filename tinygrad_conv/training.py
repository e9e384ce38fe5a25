"""The MNIST training loop behind ``tinygrad-conv train``.

    from tinygrad_conv.training import TrainConfig, fit
    history = fit(TrainConfig(epochs=1, limit_batches=50, out="runs/try"))

Every epoch trains the reference CNN (``models.reference_cnn``) on shuffled batches, evaluates
it on the test set, then writes to ``out``: ``checkpoint.npz`` (model, optimizer, lr-scheduler,
RNG and data-loader states, metrics: ``resume=True`` continues exactly where it stopped; see
``tinygrad_conv.checkpoint``),
``metrics.jsonl`` (one JSON line per epoch) and ``curves.png`` (when matplotlib is installed).

The learning rate follows ``lr_schedule``: "cosine" (the default) anneals it from ``lr`` to 0
along half a cosine over all the run's optimizer steps (``optim.lr_scheduler.CosineAnnealingLR``
stepped after every batch, ``T_max = epochs * batches per epoch``); "constant" keeps it.

Ctrl-C finishes the current batch, saves a checkpoint of the exact point reached (mid-epoch
included) and raises ``TrainingInterrupted``; a resumed run then ends with the same weights,
bit for bit, as one never interrupted.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import checkpoint, data, rng
from . import functional as F
from .checkpoint import CHECKPOINT_NAME, TrainingDiverged, TrainingError
from .data import DataLoader, Subset
from .distributed.training import world as distributed_world
from .engine import no_grad
from .models import reference_cnn
from .pictures import plot_curves
from .recording import BatchRecorder, read_metrics, where_the_files_are

METRICS_NAME, CURVES_NAME = "metrics.jsonl", "curves.png"
EVAL_BATCH_SIZE = 500
MAX_LR = 10.0  # above this every optimizer here diverges at once
# peak memory of one training step of the reference CNN per image (measured: ~0.65 MB)
STEP_BYTES_PER_IMAGE = 700_000
OPTIMIZERS = ("sgd", "adam", "adamw")
DATASETS = ("mnist", "fashion-mnist")
LR_SCHEDULES = ("cosine", "constant")

# settings a checkpoint remembers; None in a TrainConfig means "the default, or on resume the
# checkpoint's value"
DEFAULTS: dict[str, Any] = {
    "epochs": 3, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "seed": 0,
    "limit_batches": None, "limit_test": None, "lr_schedule": "cosine", "dataset": "mnist",
}
# what a checkpoint without the setting (written before there were schedules) used
LEGACY_SETTINGS: dict[str, Any] = {"lr_schedule": "constant", "dataset": "mnist"}


@dataclass
class TrainConfig:
    """Settings of one training run (the ``train`` command's flags).

    ``limit_batches`` caps the batches per epoch, ``limit_test`` evaluates on the first N test
    images only (both for quick runs). ``lr_schedule`` is "cosine" (from ``lr`` to 0 over all
    the run's steps) or "constant". ``dataset`` is "mnist" (the default) or "fashion-mnist"
    (``data.FashionMNIST``, the same reference CNN). ``data_dir`` defaults as the dataset's
    root; ``verify=False`` loads data files that are not the published originals (with a
    warning).
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    seed: int | None = None
    limit_batches: int | None = None
    limit_test: int | None = None
    lr_schedule: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    out: str = "runs/mnist"
    resume: bool = False
    progress: bool = True
    download: bool = True
    verify: bool = True


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; ``.checkpoint`` is the saved file (or None), ``str()`` says more."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


def make_optimizer(name: str, params: Any, lr: float) -> Any:
    """``optim.SGD`` (momentum 0.9), ``optim.Adam`` or ``optim.AdamW`` over ``params``."""
    from . import optim

    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return optim.Adam(params, lr=lr)
    if name == "adamw":
        return optim.AdamW(params, lr=lr)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def make_scheduler(name: str, optimizer: Any, total_steps: int) -> Any:
    """``optim.lr_scheduler.CosineAnnealingLR`` from the optimizer's lr to 0 over
    ``total_steps`` steps for "cosine"; None (a constant lr) for "constant"."""
    from .optim import lr_scheduler

    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=0.0)
    if name == "constant":
        return None
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {name!r}")


def evaluate(model: Any, loader: Any, should_stop: Callable[[], bool] | None = None,
             ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) of ``model`` over ``loader``.

    Runs in eval mode under ``no_grad``; restores the model's previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    try:
        with no_grad():
            for x, y in loader:
                logits = model(x)
                total_loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((logits.data.argmax(axis=1) == y.data).sum())
                seen += len(y)
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
    finally:
        model.train(was_training)
    return total_loss / max(seen, 1), correct / max(seen, 1)


class _StopOnSigint:
    """While active, the first Ctrl-C only sets ``requested`` (training stops at the next batch
    boundary); a second one raises KeyboardInterrupt at once."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.requested, self.log, self.previous = False, log, None

    def __enter__(self) -> _StopOnSigint:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)
        self.log("\nCtrl-C: stopping after this batch (press Ctrl-C again to stop at once)")

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


@dataclass
class _EpochStats:
    batches: int = 0
    loss_sum: float = 0.0  # sum over samples of the loss
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


class Trainer:
    """One run: builds data, model and optimizer from a config, then ``run()`` trains."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print) -> None:
        # on several MPI ranks (tinygrad_conv.distributed.training): only rank 0 writes
        self.world = world = distributed_world()
        self.writes = world is None or world.is_main
        self.log = log
        self.out = check_out(config.out)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        saved = checkpoint.read(self.checkpoint_path) if config.resume else None
        self.config = cfg = resolve_config(config, checkpoint.settings(saved), log)

        dataset = data.DATASETS[cfg.dataset]
        self.train_set = dataset(cfg.data_dir, train=True, download=cfg.download,
                                 verify=cfg.verify)
        check_batch_size(cfg.batch_size, len(self.train_set))
        test_set = dataset(cfg.data_dir, train=False, download=cfg.download, verify=cfg.verify)
        if cfg.limit_test:
            test_set = Subset(test_set, range(min(cfg.limit_test, len(test_set))))
        self.test_set = test_set
        if world is not None:
            test_set = world.test_shard(test_set)

        rng.manual_seed(cfg.seed)
        self.model = reference_cnn()
        self.optimizer = make_optimizer(cfg.optimizer, self.model.parameters(), cfg.lr)
        if world is None:
            self.loader = DataLoader(self.train_set, cfg.batch_size, shuffle=True)
            self.net = self.model
        else:  # each rank's share of the global batch; gradients averaged in backward
            self.loader = world.train_loader(self.train_set, cfg.batch_size, cfg.seed)
            self.net = world.wrap(self.model)
        self._stop_agreed = False
        self._stop_requested: Callable[[], bool] = lambda: False  # set by run()
        self.test_loader = DataLoader(test_set, EVAL_BATCH_SIZE, seed=0)  # never shuffled
        n = len(self.loader)
        self.batches_per_epoch = min(n, cfg.limit_batches) if cfg.limit_batches else n
        self.scheduler = make_scheduler(cfg.lr_schedule, self.optimizer,
                                        cfg.epochs * self.batches_per_epoch)

        self.history: list[dict[str, Any]] = []
        self.epochs_done = 0
        self.stats = _EpochStats()
        self.rng_state = rng.get_rng_state()  # the RNG at the last consistent point
        self._updating = False  # True while weights are half updated (not safe to save)
        self.recorder = BatchRecorder(self.out / METRICS_NAME)  # loss, lr, norms every N batches
        self._loader_mid_epoch = False
        if saved:
            checkpoint.restore(self, saved)
            done = self.epochs_done * self.batches_per_epoch + self.stats.batches
            self.recorder.rows = [r for r in read_metrics(self.out / METRICS_NAME)[1]
                                  if r["step"] <= done]
            log(f"resuming {self.checkpoint_path}: {self._position()}")
        elif self.checkpoint_path.exists():
            log(f"starting from scratch: {self.checkpoint_path} will be replaced "
                "(pass --resume to continue it)")
        source = getattr(self.train_set, "root", cfg.data_dir)
        log(f"{_DATASET_NAMES[cfg.dataset]} from {source}: {len(self.train_set)} training images, "
            f"{self.batches_per_epoch} batches of {cfg.batch_size}{self._ranks_text()} per epoch; "
            f"{len(self.test_set)} test images; {cfg.optimizer} lr {cfg.lr} "
            f"({self._schedule_text()}), seed {cfg.seed}")

    def _schedule_text(self) -> str:
        if self.scheduler is None:
            return "constant"
        return f"cosine schedule to 0 over {self.scheduler.T_max} steps"

    def _ranks_text(self) -> str:
        if self.world is None:
            return ""
        return (f" ({self.world.size} ranks of {self.config.batch_size // self.world.size} "
                "images each)")

    def steps_left(self) -> int:
        """The optimizer steps from the current point to the end of the run."""
        cfg, bpe = self.config, self.batches_per_epoch
        if self.epochs_done >= cfg.epochs:
            return 0
        return max(bpe - self.stats.batches, 0) + (cfg.epochs - self.epochs_done - 1) * bpe

    def checkpoint(self) -> dict[str, Any]:
        """Everything a resume needs (``checkpoint.snapshot``)."""
        return checkpoint.snapshot(self)

    def save(self) -> Path:
        """Write the checkpoint to ``out`` (``checkpoint.write``); returns its path.

        A failed write (a full disk, say) leaves the previous checkpoint as it was and raises
        ``TrainingError`` saying so. On a distributed run's ranks other than 0, writes nothing.
        """
        if not self.writes:
            return self.checkpoint_path
        try:
            return checkpoint.write(self)
        except OSError as e:
            raise TrainingError(f"could not save {self.checkpoint_path} ({_reason(e)}); "
                                f"{self._kept()}. Free some space or pass another --out, "
                                "then run again") from None

    def _kept(self) -> str:
        """What is on disk of this run: the checkpoint the last save left, if any."""
        if self.checkpoint_path.exists():
            return f"the previous checkpoint {self.checkpoint_path} is kept unchanged"
        return "no checkpoint of this run is on disk"

    # ---- training ---------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Train up to ``config.epochs``; returns the metrics, one dict per epoch."""
        cfg = self.config
        if self.epochs_done >= cfg.epochs:
            self.log(f"{self.checkpoint_path} already has {self.epochs_done} epoch(s); nothing "
                     f"to do (pass --epochs N with N > {self.epochs_done} to train further)")
            return self.history
        self.out.mkdir(parents=True, exist_ok=True)
        self._rewrite_metrics_file()
        with _StopOnSigint(self.log) as stop:
            # on several ranks they stop together: after the batch any of them was asked to
            should_stop = ((lambda: stop.requested) if self.world is None
                           else (lambda: self._stop_agreed))
            self._stop_requested = lambda: stop.requested
            try:
                while self.epochs_done < cfg.epochs:
                    self._run_epoch(should_stop)
            except KeyboardInterrupt:
                raise self._interrupted() from None
        return self.history

    def _run_epoch(self, should_stop: Callable[[], bool]) -> None:
        from tqdm.auto import tqdm

        cfg, st, epoch = self.config, self.stats, self.epochs_done + 1
        started = time.perf_counter() - st.seconds
        self.model.train()
        bar = tqdm(total=self.batches_per_epoch, initial=st.batches, unit="batch",
                   desc=f"epoch {epoch}/{cfg.epochs}", disable=not (cfg.progress and self.writes),
                   dynamic_ncols=True, leave=False)
        with bar:
            # a resumed loader mid-epoch must still finish that epoch (even if a smaller
            # --limit-batches leaves nothing to train), so its next one draws a new order
            if st.batches < self.batches_per_epoch or self._loader_mid_epoch:
                if self.world is not None:  # the same order on every rank, new each epoch
                    self.loader.sampler.set_epoch(self.epochs_done)
                batches, self._loader_mid_epoch = iter(self.loader), False
                while st.batches < self.batches_per_epoch:
                    self.rng_state = rng.get_rng_state()
                    self._train_step(*next(batches))
                    bar.set_postfix(loss=f"{st.loss_sum / st.seen:.4f}",
                                    acc=f"{st.correct / st.seen:.2%}", refresh=False)
                    bar.update(1)
                    st.seconds = time.perf_counter() - started
                    if should_stop():
                        raise KeyboardInterrupt
                batches.close()
                self.rng_state = rng.get_rng_state()
        test_loss, test_acc = self._evaluate(should_stop)
        self._check_finite(test_loss, "on the test set after its last batch")
        row = {
            "epoch": epoch,
            "train_loss": st.loss_sum / max(st.seen, 1),
            "train_acc": st.correct / max(st.seen, 1),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "seconds": time.perf_counter() - started,
            "lr": self.optimizer.param_groups[0]["lr"],  # at the epoch's end (the next step's)
        }
        self.history, self.stats, self.epochs_done = self.history + [row], _EpochStats(), epoch
        self.save()
        if not self.writes:
            return
        try:
            with open(self.out / METRICS_NAME, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise TrainingError(f"could not append to {self.out / METRICS_NAME} ({_reason(e)}); "
                                f"the checkpoint of epoch {epoch} was saved. Free some space, "
                                "then continue with --resume") from None
        self.log(
            f"epoch {epoch}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc "
            f"{row['train_acc']:.2%} | test loss {test_loss:.4f} acc {test_acc:.2%} "
            f"({len(self.test_set)} images) | lr {row['lr']:.3g} | {row['seconds']:.1f} s"
        )
        self._plot(announce_missing=epoch == cfg.epochs)

    def _evaluate(self, should_stop: Callable[[], bool]) -> tuple[float, float]:
        """Test loss and accuracy; on several ranks each evaluates its shard (it cannot stop
        half way: the others would wait for its sums)."""
        if self.world is None:
            return evaluate(self.model, self.test_loader, should_stop)
        loss, acc = evaluate(self.model, self.test_loader)
        seen = len(self.test_loader.dataset)
        loss_sum, correct, seen = self.world.sum(loss * seen, acc * seen, seen)
        return loss_sum / max(seen, 1), round(correct) / max(seen, 1)

    def _train_step(self, x: Any, y: Any) -> None:
        st = self.stats
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        if self.world is None:
            self._check_finite(loss.item(), f"batch {st.batches + 1}")
        self.optimizer.zero_grad()
        loss.backward()
        correct, seen = int((logits.data.argmax(axis=1) == y.data).sum()), len(y)
        loss_value = loss.item()
        loss_sum = loss_value * seen
        if self.world is not None:  # the global batch's numbers, the same on every rank
            loss_sum, correct, seen, stops = self.world.sum(
                loss_sum, correct, seen, self._stop_requested())
            correct, seen, self._stop_agreed = round(correct), round(seen), stops > 0
            loss_value = loss_sum / seen
            self._check_finite(loss_value, f"batch {st.batches + 1}")
        if self.writes:
            self.recorder.after_backward(
                self.model, loss_value,
                self.epochs_done * self.batches_per_epoch + st.batches + 1,
                self.epochs_done + 1, self.optimizer.param_groups[0]["lr"])
        self._updating = True
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        st.loss_sum += loss_sum
        st.correct += correct
        st.seen += seen
        st.batches += 1
        self._updating = False

    def _check_finite(self, loss: float, where: str) -> None:
        """Stop the run (``TrainingError``) on a NaN or infinite loss, before it is saved."""
        if math.isfinite(loss):
            return
        lr = self.optimizer.param_groups[0]["lr"]
        raise TrainingDiverged(
            f"the loss became {loss} at epoch {self.epochs_done + 1}, {where} (lr {lr:.3g}): "
            f"training diverged and was stopped; {self._kept()}. Train again with a smaller "
            "--lr"
        )

    def _position(self) -> str:
        if self.stats.batches:
            return (f"epoch {self.epochs_done + 1}, after batch {self.stats.batches}/"
                    f"{self.batches_per_epoch}")
        return f"the end of epoch {self.epochs_done}"

    def _interrupted(self) -> TrainingInterrupted:
        if not self._updating:
            try:
                path = self.save()
            except KeyboardInterrupt:  # a second Ctrl-C: the save in progress is abandoned
                return TrainingInterrupted(
                    f"Interrupted again while saving the checkpoint: that save was abandoned "
                    f"and {self._kept()}.", self._existing_checkpoint())
            saved = f"saved a checkpoint at {self._position()} to {path}"
        elif self.checkpoint_path.exists():
            path = self.checkpoint_path
            saved = f"interrupted mid-update; the last checkpoint is {path}"
        else:
            return TrainingInterrupted("Interrupted before any checkpoint was saved.", None)
        command = f"tinygrad-conv train --resume --out {self.out}"
        if self.world is not None:
            command = f"mpiexec -n {self.world.size} {command}"
        if self.config.data_dir:
            command += f" --data-dir {self.config.data_dir}"
        return TrainingInterrupted(f"Interrupted: {saved}. Resume with:\n  {command}", path)

    def _existing_checkpoint(self) -> Path | None:
        return self.checkpoint_path if self.checkpoint_path.exists() else None

    # ---- outputs ----------------------------------------------------------------------
    def _rewrite_metrics_file(self) -> None:
        if not self.writes:
            return
        try:
            with open(self.out / METRICS_NAME, "w") as f:
                f.writelines(json.dumps(row) + "\n"
                             for row in self.history + self.recorder.rows)
        except OSError as e:
            raise TrainingError(f"cannot write {self.out / METRICS_NAME} ({_reason(e)}); "
                                "check the --out folder's space and permissions") from None

    def _plot(self, announce_missing: bool) -> None:
        try:
            drawn = plot_curves(self.history, self.out / CURVES_NAME, self.recorder.rows)
        except OSError as e:
            self.log(f"warning: could not draw {self.out / CURVES_NAME} ({_reason(e)})")
            return
        if not drawn and announce_missing:
            self.log("matplotlib not installed: skipping curves.png "
                     "(pip install 'tinygrad_conv[plot]')")


def saved_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a checkpoint remembers (``DEFAULTS``' keys) of ``cfg``."""
    return {k: getattr(cfg, k) for k in DEFAULTS}


_DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def check_out(out: str | Path) -> Path:
    """``out`` as a Path; ``TrainingError`` if it names something that is not a folder."""
    if not str(out).strip():
        raise TrainingError("--out is empty; pass the folder for the run's files")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise TrainingError(f"--out {out} is an existing file, not a folder; pass a folder "
                            "(it is created if missing)")
    return path


def check_batch_size(batch_size: int, n_images: int) -> None:
    """``TrainingError`` unless ``batch_size`` images fit the data and the free memory."""
    if batch_size > n_images:
        raise TrainingError(f"--batch-size {batch_size} is larger than the {n_images} "
                            f"training images; use at most {n_images}")
    free = _available_memory()
    need = batch_size * STEP_BYTES_PER_IMAGE
    if free is not None and need > free:
        fits = max(free // STEP_BYTES_PER_IMAGE, 1)
        raise TrainingError(
            f"--batch-size {batch_size} needs about {need / 2**30:.1f} GiB for one training "
            f"step but {free / 2**30:.1f} GiB of memory is free; use --batch-size {fits} or less"
        )


def _available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux's MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_settings(values: dict[str, Any], source: str) -> None:
    """``TrainingError`` naming the first bad setting; ``source`` says where it came from
    ("flag" for --flags and TrainConfig, else e.g. "the checkpoint's")."""
    def name(key: str) -> str:
        return "--" + key.replace("_", "-") if source == "flag" else f"{source} {key}"

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    rules = {
        "epochs": (lambda v: is_int(v) and v >= 1, "a positive integer"),
        "batch_size": (lambda v: is_int(v) and v >= 1, "a positive integer"),
        "limit_batches": (lambda v: v is None or (is_int(v) and v >= 1), "a positive integer"),
        "limit_test": (lambda v: v is None or (is_int(v) and v >= 1), "a positive integer"),
        "seed": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
        "lr": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v) and 0 < v <= MAX_LR, f"a number in (0, {MAX_LR:g}]"),
        "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        "lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
        "dataset": (lambda v: v in DATASETS, f"one of {', '.join(DATASETS)}"),
    }
    for key, (ok, what) in rules.items():
        if key in values and values[key] is not None and not ok(values[key]):
            raise TrainingError(f"{name(key)} must be {what}, got {values[key]!r}")


def resolve_config(cfg: TrainConfig, saved: dict[str, Any] | None,
                   log: Callable[[str], None] = print) -> TrainConfig:
    """Fill a config's None settings: from the checkpoint's when resuming, else the defaults.

    A setting given explicitly that differs from the checkpoint's wins, with a warning (the run
    then differs from an uninterrupted one); a different optimizer or lr schedule is an error.
    """
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    check_settings(values, "flag")
    if saved is not None:
        saved = {**LEGACY_SETTINGS, **saved}
        check_settings(saved, "the checkpoint's")
    base = DEFAULTS if saved is None else {**DEFAULTS, **saved}
    for key, default in base.items():
        given = values[key]
        if given is None:
            values[key] = default
        elif saved is not None and key != "epochs" and given != saved.get(key):
            if key == "seed":
                log("note: --seed has no effect on a resumed run (the checkpoint's random "
                    "states continue)")
                values[key] = saved[key]
                continue
            if key in ("optimizer", "lr_schedule", "dataset"):
                flag = "--" + key.replace("_", "-")
                raise TrainingError(
                    f"--resume: the checkpoint was trained with {flag} {saved[key]}, "
                    f"cannot continue it with {given} (run without --resume, or with another "
                    "--out, to start a new run)"
                )
            log(f"warning: resuming with --{key.replace('_', '-')} {given} (the checkpoint "
                f"used {saved.get(key)}): the result will differ from an uninterrupted run")
    if (saved is not None and values["lr_schedule"] == "cosine"
            and values["epochs"] != saved["epochs"]):
        log(f"warning: resuming with --epochs {values['epochs']} (the checkpoint's run was "
            f"planned for {saved['epochs']}): the cosine schedule is stretched to end at the new "
            "last step, so the result will differ from an uninterrupted run")
    check_settings(values, "flag")
    return TrainConfig(**values)


def fit(config: TrainConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the training ``config`` describes; returns the metrics, one dict per epoch.

    Holds ``out``'s lock (``runlock.RunLock``) while it runs. Raises ``TrainingInterrupted`` on
    Ctrl-C (after saving a checkpoint), ``TrainingError`` when the run cannot start (bad
    settings or checkpoint, ``out`` a file or held by another live run) or stops (a NaN loss,
    a failed save), and ``data.MNISTError`` when the data is missing or corrupt. On several
    MPI ranks (``mpiexec``), every rank trains its share (``distributed.training``).
    """
    world = distributed_world()
    if world is not None:
        from .distributed.training import fit as fit_on_ranks

        history, trainer = fit_on_ranks(world, config, log, _start)
        if world.is_main:
            log(where_the_files_are(trainer.out, trainer.recorder.every))
        return history
    lock, trainer = _start(config, log)
    try:
        history = trainer.run()
        log(where_the_files_are(trainer.out, trainer.recorder.every))
        return history
    finally:
        lock.__exit__()


def _start(config: TrainConfig, log: Callable[[str], None], lock: bool = True,
           ) -> tuple[Any, Trainer]:
    """``(the run folder's lock, or None without lock, the Trainer)``."""
    from .runlock import RunLock

    out = check_out(config.out)
    held = None
    if lock:
        try:
            out.mkdir(parents=True, exist_ok=True)
            held = RunLock(out)
            held.__enter__()
        except OSError as e:
            raise TrainingError(f"cannot use --out {out} ({_reason(e)}); pass a folder you "
                                "can write to") from None
    try:
        return held, Trainer(config, log)
    except BaseException:
        if held is not None:
            held.__exit__()
        raise
