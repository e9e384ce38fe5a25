"""``DistributedSampler``: each rank's share of every epoch's shuffled order, as PyTorch's."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np


class DistributedSampler:
    """The dataset indices one rank reads in an epoch (``torch.utils.data.DistributedSampler``).

    Every rank draws the same order (a permutation seeded with ``seed + epoch``, or 0..n-1
    without ``shuffle``) and takes every ``num_replicas``-th index from its ``rank`` on, so the
    shards are disjoint and together are the whole order. Padding rule: when the dataset's
    length n is not a multiple of ``num_replicas``, the order is extended by repeating its
    first indices until it is (so every rank gets ``ceil(n / num_replicas)`` indices and a
    few samples are seen twice per epoch); with ``drop_last`` its tail is cut instead (every
    rank gets ``floor(n / num_replicas)``). Call ``set_epoch(epoch)`` before each epoch, or
    every epoch repeats the first one's order.

    Batch k of rank r's loader (batch size b) holds global positions r, r + R, r + 2R, ... of
    the order's slice [k*b*R, (k+1)*b*R): together the ranks' batches k are exactly batch k of
    one process reading the same order with batch size b*R.

    ``num_replicas`` and ``rank`` default to the process group's (``init_process_group``).
    """

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        from . import get_rank, get_world_size

        if num_replicas is None:
            num_replicas = get_world_size()
        if rank is None:
            rank = get_rank()
        if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive int, got "
                             f"{num_replicas!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def order(self) -> np.ndarray:
        """This epoch's global order after padding or cutting: ``total_size`` int64 indices."""
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            indices = np.arange(n)
        return np.resize(indices, self.total_size)  # repeats from the start, or cuts the tail

    def indices(self) -> np.ndarray:
        """This rank's indices for this epoch: (num_samples,) int64."""
        return self.order()[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next ``iter`` on (the same on every rank)."""
        self.epoch = int(epoch)
