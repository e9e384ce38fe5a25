"""What ``tinygrad-conv train`` does differently when ``mpiexec -n N`` started it.

Every rank builds the same Trainer; ``World`` holds what differs:

- ``--batch-size`` is the global batch: each rank reads ``batch_size / N`` images of it
  through a ``DistributedSampler`` seeded with the run's seed, so a run on N ranks takes the
  same optimizer steps as one on any other number of ranks dividing the batch (within float32
  rounding);
- the model trains inside ``DistributedDataParallel`` (rank 0's initial weights, gradients
  averaged in backward);
- after each step one small allreduce sums the batch's loss, correct predictions and size
  over the ranks (the progress bar, metrics and checkpoints hold global numbers) and whether
  any rank was asked to stop (Ctrl-C), so every rank stops after the same batch;
- the test set is split between the ranks and its sums reduced the same way;
- only rank 0 logs, draws the progress bar and writes files; every rank reads the checkpoint
  on ``--resume``.

Errors: one that every rank meets at once (bad settings, missing data, a diverged loss, an
agreed stop) is printed by rank 0 and every rank exits with the same code; one that only some
ranks meet (a failed save, a crash) is printed by that rank, which then aborts them all
(``MPI_Abort``), so no rank waits forever.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from . import (
    DistributedSampler,
    MPINotInstalled,
    _default_group,
    abort,
    get_rank,
    get_world_size,
    init_process_group,
    is_initialized,
    launched_by_mpiexec,
)

_outcome = {"all_ranks": False}  # True when the last failure was one every rank met


class World:
    """The ranks of a distributed training run (``None`` stands for a single process)."""

    def __init__(self) -> None:
        self.rank, self.size = get_rank(), get_world_size()
        self.comm = _default_group().comm

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs and writes files."""
        return self.rank == 0

    def local_batch_size(self, batch_size: int) -> int:
        """Each rank's share of the global ``batch_size``; TrainingError unless it divides."""
        from ..checkpoint import TrainingError

        if batch_size % self.size:
            fits = max(batch_size // self.size, 1) * self.size
            raise TrainingError(f"--batch-size {batch_size} (the global batch) must be a "
                                f"multiple of the {self.size} ranks; use --batch-size {fits}")
        return batch_size // self.size

    def train_loader(self, dataset: Any, batch_size: int, seed: int) -> Any:
        """This rank's loader: its shard of each epoch's order, ``batch_size / N`` at a time."""
        from ..data import DataLoader

        sampler = DistributedSampler(dataset, self.size, self.rank, shuffle=True, seed=seed)
        return DataLoader(dataset, self.local_batch_size(batch_size), sampler=sampler, seed=0)

    def test_shard(self, dataset: Any) -> Any:
        """This rank's part of the test set: every N-th image from its rank on."""
        from ..data import Subset

        return Subset(dataset, range(self.rank, len(dataset), self.size))

    def wrap(self, model: Any) -> Any:
        """``model`` inside ``DistributedDataParallel``."""
        from ..nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def sum(self, *values: float) -> list[float]:
        """The sums over the ranks of ``values`` (one small allreduce, float64)."""
        buf = np.array(values, dtype=np.float64)
        self.comm.Allreduce(_default_group().mpi.IN_PLACE, buf)
        return buf.tolist()


def world() -> World | None:
    """The run's ``World`` when a process group of two or more ranks is initialised."""
    if not is_initialized() or get_world_size() < 2:
        return None
    return World()


def fit(w: World, config: Any, log: Callable[[str], None],
        start: Callable[[Any, Callable[[str], None], bool], tuple[Any, Any]],
        ) -> tuple[list[dict[str, Any]], Any]:
    """``training.fit`` on every rank: ``start(config, log, lock)`` (rank 0 takes the run
    folder's lock and logs) agreed by all ranks, then the run; returns ``(history, trainer)``.
    An error every rank meets is raised on rank 0 only (the others exit quietly)."""
    _outcome["all_ranks"] = False
    quiet = log if w.is_main else _silent
    lock, trainer = agree(w, lambda: start(config, quiet, w.is_main))
    try:
        return _together(w, trainer.run), trainer
    finally:
        if lock is not None:
            lock.__exit__()


def _silent(message: str) -> None:
    pass


def _together(w: World, step: Callable[[], Any]) -> Any:
    """Run ``step``; on ranks other than 0, an error every rank meets becomes a quiet exit."""
    from ..checkpoint import TrainingDiverged
    from ..training import TrainingInterrupted

    try:
        return step()
    except (TrainingInterrupted, TrainingDiverged) as e:
        _outcome["all_ranks"] = True
        if w.is_main:
            raise
        raise SystemExit(130 if isinstance(e, TrainingInterrupted) else 1) from None


def agree(w: World, make: Callable[[], Any]) -> Any:
    """``make()`` on every rank, then check every rank succeeded: the first failure (lowest
    rank) is raised on rank 0 and the other ranks exit quietly, so it is shown once."""
    from ..checkpoint import TrainingError

    try:
        made, failure = make(), None
    except Exception as e:  # noqa: BLE001 - every failure is handed to rank 0
        made, failure = None, e
    messages = w.comm.allgather(None if failure is None else f"{failure}")
    failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
    if not failed:
        return made
    _outcome["all_ranks"] = True
    if not w.is_main:
        raise SystemExit(1)
    if failure is not None:
        raise failure
    rank, message = failed[0]
    raise TrainingError(f"rank {rank}: {message}")


def run_command(handler: Callable[[Any], int], args: Any) -> int:
    """Run the CLI ``handler`` on this rank of an ``mpiexec`` launch: join the process group
    (an error saying what to install when mpi4py is missing), and abort every rank when this
    one fails alone."""
    rank, size = launched_by_mpiexec() or (0, 1)
    if size < 2:
        return handler(args)
    try:
        init_process_group("mpi")
    except MPINotInstalled as e:
        if rank == 0:
            print(f"error: started by mpiexec as {size} processes, but {e}", file=sys.stderr)
        return 1
    try:
        code = handler(args)
    except SystemExit:
        raise
    except BaseException:  # a bug: show it, then stop the ranks waiting for this one
        traceback.print_exc()
        abort(1)
        raise
    if code and not _outcome["all_ranks"]:
        abort(code)
    return code
