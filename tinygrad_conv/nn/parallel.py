"""``DistributedDataParallel``: one model replica per MPI rank, gradients averaged in backward
(``torch.nn.parallel.DistributedDataParallel``).

    dist.init_process_group("mpi")
    model = DistributedDataParallel(model)       # every rank now holds rank 0's weights
    loss = F.cross_entropy(model(x), y)          # x: this rank's share of the global batch
    loss.backward()                              # .grad: the mean over ranks of their grads
    optimizer.step()                             # the same step on every rank

The gradients travel in flat buckets (``bucket_cap_mb`` each, float32 arrays), filled in the
order backward produces them (the parameters' reverse order); a bucket's allreduce starts as
soon as its last gradient arrives, while backward goes on with the layers before it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import distributed as dist
from ..engine import is_grad_enabled, topological_order
from ..tensor import Tensor
from .module import Module


class _Bucket:
    """A flat buffer holding some parameters' gradients end to end, and its allreduce."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        sizes = [p.data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.buffer = np.zeros(self.offsets[-1], dtype=params[0].dtype)
        self.waiting = 0  # gradients still to arrive in this backward
        self.request: Any = None  # the allreduce in flight

    def view(self, i: int) -> np.ndarray:
        """Parameter i's slot, shaped as the parameter."""
        return self.buffer[self.offsets[i]:self.offsets[i + 1]].reshape(self.params[i].shape)


def _buckets(params: list[Tensor], cap_bytes: float) -> list[_Bucket]:
    """Consecutive parameters of one dtype grouped into buckets of at most ``cap_bytes``
    (a parameter larger than that gets a bucket of its own)."""
    groups: list[list[Tensor]] = []
    size = 0
    for p in params:
        fits = groups and groups[-1][0].dtype == p.dtype and size + p.data.nbytes <= cap_bytes
        if not fits:
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += p.data.nbytes
    return [_Bucket(g) for g in groups]


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over the process group.

    At construction, every rank's parameters and buffers are overwritten with rank 0's. In
    training mode with ``broadcast_buffers`` (the default), each forward first copies rank
    0's buffers again (BatchNorm's running statistics: the batch statistics a BatchNorm
    normalises with stay each rank's own, as PyTorch's DDP; use a larger per-rank batch or
    none if that matters). Each backward averages the gradients over the ranks, so after
    ``loss.backward()`` every rank holds the mean of the ranks' gradients (for a loss that is
    a mean over the rank's batch: the gradient of the mean over the global batch).

    Parameters the forward's output does not depend on get no gradient and are not waited
    for; a forward whose output is never backpropagated is forgotten at the next forward.
    ``no_sync()`` skips the averaging (gradient accumulation); ``comm_seconds`` adds up the
    time spent in MPI calls (a benchmark's measure of communication).
    ``device_ids``, ``output_device`` and the other PyTorch arguments are accepted and ignored
    (CPU only).
    """

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None,
                 dim: int = 0, broadcast_buffers: bool = True, process_group: Any = None,
                 bucket_cap_mb: float | None = 25.0, find_unused_parameters: bool = False,
                 **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected an nn.Module, got "
                            f"{type(module).__name__}")
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel: the default process group has not "
                               "been initialized; call tinygrad_conv.distributed."
                               "init_process_group('mpi') first (under mpiexec -n N)")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.world_size = dist.get_world_size()
        self.comm_seconds = 0.0
        object.__setattr__(self, "_syncing", True)
        self._sync_state(list(module.parameters()) + list(module.buffers()))
        params = [p for p in module.parameters() if p.requires_grad][::-1]
        cap = (25.0 if bucket_cap_mb is None else float(bucket_cap_mb)) * 2**20
        self._bucket_list = _buckets(params, cap) if self.world_size > 1 and params else []
        self._slots = {id(p): (b, i) for b in self._bucket_list for i, p in enumerate(b.params)}
        self._waiting = 0  # gradients still to arrive in the current backward
        self._armed = 0  # the gradients the current backward will bring
        self._before: dict[int, Tensor | None] = {}  # each param's .grad before this backward
        self._hooks = [p.register_hook(self._grad_hook(p)) for b in self._bucket_list
                       for p in b.params]

    def _sync_state(self, tensors: list[Tensor]) -> None:
        started = time.perf_counter()
        for t in tensors:
            if t is not None and t.data.size:
                dist.broadcast(t, src=0)
        self.comm_seconds += time.perf_counter() - started

    # ---- forward ------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)``; in training mode with grad enabled, also arms the
        gradient averaging of the next backward through the output."""
        if 0 < self._waiting < self._armed:  # a backward started, and stopped half way
            raise RuntimeError(
                "DistributedDataParallel: the previous backward did not produce gradients for "
                f"{self._waiting} parameter(s) the forward used, so their averaging never "
                "finished; call backward on a loss computed from the whole output before the "
                "next forward")
        if self.training and self.broadcast_buffers and self.world_size > 1:
            self._sync_state(list(self.module.buffers()))
        out = self.module(*args, **kwargs)
        if self._bucket_list and self.training and is_grad_enabled() and self._syncing:
            self._arm(out)
        return out

    def _arm(self, out: Any) -> None:
        """Count, per bucket, the parameters whose gradient backward will bring; zero the
        slots of those it will not (unused parameters add nothing to the mean)."""
        reached = {id(t) for t in topological_order(*_tensors_in(out)) if t.op is None}
        self._waiting = 0
        self._before.clear()
        for bucket in self._bucket_list:
            bucket.waiting = 0
            for i, p in enumerate(bucket.params):
                if id(p) in reached:
                    bucket.waiting += 1
                else:
                    bucket.view(i)[...] = 0
            self._waiting += bucket.waiting
        self._armed = self._waiting
        self._next_to_start = 0

    # ---- backward -----------------------------------------------------------------------
    def _grad_hook(self, p: Tensor) -> Any:
        def hook(grad: Tensor) -> Tensor | None:
            if not self._waiting:  # a backward this wrapper did not arm (or under no_sync)
                return None
            bucket, i = self._slots[id(p)]
            bucket.view(i)[...] = grad.data
            self._before[id(p)] = p.grad
            bucket.waiting -= 1
            self._waiting -= 1
            self._start_ready_buckets()
            if self._waiting:
                return None
            return self._finish(p)

        return hook

    def _start_ready_buckets(self) -> None:
        """Start the allreduce of each filled bucket, in bucket order (every rank must start
        them in the same order)."""
        group = dist._default_group()
        started = time.perf_counter()
        buckets = self._bucket_list
        while self._next_to_start < len(buckets) and buckets[self._next_to_start].waiting == 0:
            bucket = buckets[self._next_to_start]
            bucket.request = group.comm.Iallreduce(group.mpi.IN_PLACE, bucket.buffer,
                                                   op=group.mpi.SUM)
            self._next_to_start += 1
        self.comm_seconds += time.perf_counter() - started

    def _finish(self, last: Tensor) -> Tensor:
        """Wait for every bucket, then put each parameter's mean gradient into its .grad
        (backward has already stored the local ones; ``last``'s is returned, for backward
        to store)."""
        group = dist._default_group()
        started = time.perf_counter()
        group.mpi.Request.Waitall([b.request for b in self._bucket_list])
        self.comm_seconds += time.perf_counter() - started
        result = None
        for bucket in self._bucket_list:
            bucket.request = None
            np.divide(bucket.buffer, self.world_size, out=bucket.buffer)
            for i, p in enumerate(bucket.params):
                if id(p) not in self._before:
                    continue
                mean = bucket.view(i)
                if p is last:
                    result = Tensor._from_array(mean.copy())
                    continue
                before = self._before[id(p)]
                if p.grad is None:  # autograd.grad captured it instead of storing it
                    continue
                if before is None:
                    p.grad.data[...] = mean
                else:
                    np.add(before.data, mean, out=p.grad.data)
        self._before.clear()
        return result

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Inside the block, backward keeps each rank's own gradients (accumulate several
        batches, then run one synchronised backward outside it)."""
        previous = self._syncing
        object.__setattr__(self, "_syncing", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_syncing", previous)


def _tensors_in(out: Any) -> list[Tensor]:
    """The Tensors in a forward's output (a Tensor, or tuples, lists and dicts of them)."""
    if isinstance(out, Tensor):
        return [out] if out.requires_grad else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors_in(item)]
    return []
