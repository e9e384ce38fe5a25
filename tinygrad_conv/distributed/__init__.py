"""``tinygrad_conv.distributed``: data-parallel training over MPI, with ``torch.distributed``'s
names.

    import tinygrad_conv.distributed as dist
    dist.init_process_group("mpi")                 # under `mpiexec -n 4 python train.py`
    model = nn.parallel.DistributedDataParallel(model)   # parameters from rank 0; grads averaged
    sampler = dist.DistributedSampler(train_set, seed=0)  # a disjoint shard per rank
    loader = DataLoader(train_set, batch_size=32, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        ...

Processes are started by an MPI launcher (``mpiexec -n N``; the ``mpich`` package on PyPI
brings one); ``init_process_group`` joins them through mpi4py (``pip install
'tinygrad_conv[mpi]'``). Importing this module does not import mpi4py: only
``init_process_group`` does, so single-process code never pays for it. See docs/distributed.md.
"""

from __future__ import annotations

import os
import sys
import time
from enum import Enum
from typing import Any

import numpy as np

from .sampler import DistributedSampler

__all__ = [
    "DistributedSampler", "MPINotInstalled", "ReduceOp", "abort", "all_reduce", "barrier",
    "broadcast", "destroy_process_group", "get_backend", "get_rank", "get_world_size",
    "init_process_group", "is_available", "is_initialized", "is_mpi_available",
    "launched_by_mpiexec",
]

INSTALL_HINT = "pip install 'tinygrad_conv[mpi]' (mpi4py and the mpich MPI library)"
# what MPI launchers put in each process's environment: MPICH's Hydra, Open MPI, Slurm's PMI
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


class MPINotInstalled(RuntimeError):
    """A distributed call without mpi4py installed; the message says what to install."""


class ReduceOp(Enum):
    """How ``all_reduce`` combines the ranks' tensors (``torch.distributed.ReduceOp``)."""

    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"


class _Group:
    """The default process group: MPI's COMM_WORLD, its rank and size."""

    def __init__(self, comm: Any, mpi: Any) -> None:
        self.comm, self.mpi = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()


_group: _Group | None = None


def is_available() -> bool:
    """True when mpi4py can be imported (distributed training can run here)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


is_mpi_available = is_available


def launched_by_mpiexec() -> tuple[int, int] | None:
    """``(rank, world size)`` read from the environment an MPI launcher sets (``mpiexec -n
    N``), or None when this process was not started by one. Imports nothing."""
    for size_name, rank_name in zip(_SIZE_VARIABLES, _RANK_VARIABLES):
        size, rank = os.environ.get(size_name), os.environ.get(rank_name)
        if size is not None and rank is not None and size.isdigit() and rank.isdigit():
            return int(rank), int(size)
    return None


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise MPINotInstalled(f"distributed training needs mpi4py, which is not installed "
                              f"({e}): {INSTALL_HINT}") from None
    return MPI


def init_process_group(backend: str | None = "mpi", init_method: str | None = None,
                       timeout: Any = None, world_size: int = -1, rank: int = -1,
                       **kwargs: Any) -> None:
    """Join the processes an MPI launcher started (``torch.distributed.init_process_group``).

    ``backend`` must be "mpi" (or None); rank and world size come from MPI, so
    ``world_size``/``rank`` may only repeat them. Without a launcher this process is a group of
    one. An uncaught exception on any rank then ends every rank (MPI abort) instead of leaving
    the others waiting. ``MPINotInstalled`` when mpi4py is missing; RuntimeError if called twice.
    """
    global _group
    if backend not in (None, "mpi"):
        raise ValueError(f"init_process_group: backend {backend!r} is not available here; "
                         "tinygrad_conv runs on the CPU over MPI: use backend='mpi'")
    if _group is not None:
        raise RuntimeError("trying to initialize the default process group twice; call "
                           "destroy_process_group() first")
    mpi = _import_mpi()
    group = _Group(mpi.COMM_WORLD, mpi)
    for given, actual, what in ((world_size, group.size, "world_size"),
                                (rank, group.rank, "rank")):
        if given not in (-1, None) and given != actual:
            raise ValueError(f"init_process_group: {what}={given}, but MPI started this process "
                             f"with {what} {actual}; leave it out (MPI decides)")
    _group = group
    if group.size > 1:
        _abort_on_uncaught_exceptions()


def _abort_on_uncaught_exceptions() -> None:
    """Print an uncaught exception as Python does, then abort every rank (the others would
    otherwise wait forever in their next collective)."""
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        if _group is not None and not isinstance(value, SystemExit):
            abort(1)

    sys.excepthook = hook


def _default_group() -> _Group:
    if _group is None:
        raise RuntimeError("Default process group has not been initialized, please make sure "
                           "to call init_process_group.")
    return _group


def is_initialized() -> bool:
    """True between ``init_process_group`` and ``destroy_process_group``."""
    return _group is not None


def get_rank(group: Any = None) -> int:
    """This process's rank, 0 to world size - 1 (RuntimeError before ``init_process_group``)."""
    return _default_group().rank


def get_world_size(group: Any = None) -> int:
    """The number of processes in the group."""
    return _default_group().size


def get_backend(group: Any = None) -> str:
    """"mpi", the only backend."""
    _default_group()
    return "mpi"


def destroy_process_group(group: Any = None) -> None:
    """Leave the group (MPI itself is finalised when the process exits)."""
    global _group
    _group = None


def barrier(group: Any = None, async_op: bool = False) -> None:
    """Wait until every rank has reached this call."""
    _default_group().comm.Barrier()


def _array_of(tensor: Any, what: str) -> np.ndarray:
    from ..tensor import Tensor

    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what}: expected a Tensor, got {type(tensor).__name__}")
    arr = tensor.data
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        raise ValueError(f"{what}: the tensor must be contiguous and writeable (it is updated "
                         "in place); pass tensor.contiguous() or a clone")
    return arr


def all_reduce(tensor: Any, op: ReduceOp = ReduceOp.SUM, group: Any = None,
               async_op: bool = False) -> None:
    """Combine ``tensor`` (any shape) over all ranks in place: every rank ends with the sum
    (or product, min, max, mean) of all ranks' values."""
    g = _default_group()
    arr = _array_of(tensor, "all_reduce")
    if not isinstance(op, ReduceOp):
        raise ValueError(f"all_reduce: op must be a ReduceOp (SUM, PRODUCT, MIN, MAX, AVG), "
                         f"got {op!r}")
    mpi_op = {ReduceOp.SUM: g.mpi.SUM, ReduceOp.AVG: g.mpi.SUM, ReduceOp.PRODUCT: g.mpi.PROD,
              ReduceOp.MIN: g.mpi.MIN, ReduceOp.MAX: g.mpi.MAX}[op]
    g.comm.Allreduce(g.mpi.IN_PLACE, arr, op=mpi_op)
    if op is ReduceOp.AVG:
        np.divide(arr, g.size, out=arr, casting="unsafe")
    tensor._version += 1


def broadcast(tensor: Any, src: int = 0, group: Any = None, async_op: bool = False) -> None:
    """Copy rank ``src``'s ``tensor`` (any shape) into every rank's, in place."""
    g = _default_group()
    arr = _array_of(tensor, "broadcast")
    if not 0 <= src < g.size:
        raise ValueError(f"broadcast: src must be a rank in [0, {g.size - 1}], got {src}")
    g.comm.Bcast(arr, root=src)
    tensor._version += 1


ABORT_GRACE_SECONDS = 0.5  # before MPI abort: mpiexec forwards what the rank just printed


def abort(code: int = 1) -> None:
    """End every rank at once (MPI abort) with exit ``code``; a plain exit outside a group.

    The rank's output is flushed and given ABORT_GRACE_SECONDS to reach mpiexec first: an
    abort straight after the print lost the message now and then (MPICH's mpiexec tore
    the ranks' pipes down before forwarding it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if _group is None or _group.size == 1:
        raise SystemExit(code)
    time.sleep(ABORT_GRACE_SECONDS)
    _group.comm.Abort(code)

