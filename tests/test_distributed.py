"""tinygrad_conv.distributed without MPI: DistributedSampler's shards and padding, the
DataLoader's sampler, the errors of a distributed call that cannot run, and that single-process
code never imports mpi4py. The 2-rank runs are in test_distributed_mpi.py."""

import subprocess
import sys

import numpy as np
import pytest

import tinygrad_conv.distributed as dist
from tinygrad_conv import nn
from tinygrad_conv.data import DataLoader, TensorDataset
from tinygrad_conv.distributed import DistributedSampler


class _Sized:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


@pytest.mark.parametrize("n, replicas", [(10, 4), (12, 4), (7, 3), (3, 5), (60000, 2)])
def test_shards_are_disjoint_and_cover_the_order(n, replicas):
    shards = [list(DistributedSampler(_Sized(n), replicas, r, seed=3)) for r in range(replicas)]
    per_rank = -(-n // replicas)
    assert [len(s) for s in shards] == [per_rank] * replicas
    order = np.random.default_rng(3).permutation(n)  # seed + epoch 0
    padded = [order[i % n] for i in range(per_rank * replicas)]  # repeated from the start
    interleaved = [shards[i % replicas][i // replicas] for i in range(per_rank * replicas)]
    assert interleaved == padded
    if n % replicas == 0:  # no padding: each index exactly once over all ranks
        assert sorted(i for s in shards for i in s) == list(range(n))


def test_drop_last_cuts_the_tail_instead():
    shards = [list(DistributedSampler(_Sized(10), 4, r, shuffle=False, drop_last=True))
              for r in range(4)]
    assert shards == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_set_epoch_changes_the_order_the_same_way_on_every_rank():
    a, b = (DistributedSampler(_Sized(50), 2, r, seed=1) for r in range(2))
    first = list(a) + list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    second = list(a) + list(b)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    again = DistributedSampler(_Sized(50), 2, 0, seed=1)
    again.set_epoch(1)
    assert list(again) == second[:25]


def test_local_batches_together_are_the_single_process_batch():
    n, replicas, local = 40, 2, 4
    x = np.arange(n, dtype=np.float32)[:, None]
    ds = TensorDataset(x, np.arange(n))
    single = DataLoader(ds, local * replicas, sampler=DistributedSampler(ds, 1, 0, seed=5))
    ranks = [DataLoader(ds, local, sampler=DistributedSampler(ds, replicas, r, seed=5))
             for r in range(replicas)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 5
    for whole, *parts in zip(single, *ranks):
        together = np.concatenate([p[1].numpy() for p in parts])
        assert sorted(together.tolist()) == sorted(whole[1].numpy().tolist())


def test_bad_rank_and_shuffle_with_sampler_are_errors():
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval \[0, 1"):
        DistributedSampler(_Sized(4), 2, 2)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(_Sized(4), 2, shuffle=True, sampler=range(4))


def test_pytorch_paths_of_the_sampler_and_the_wrapper():
    from tinygrad_conv.utils.data.distributed import DistributedSampler as via_utils

    from tinygrad_conv import data
    assert via_utils is DistributedSampler is data.DistributedSampler
    assert nn.parallel.DistributedDataParallel.__name__ == "DistributedDataParallel"


def test_calls_before_init_process_group_say_so():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.get_rank()
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(_Sized(4))
    with pytest.raises(RuntimeError, match="init_process_group"):
        nn.parallel.DistributedDataParallel(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="backend='mpi'"):
        dist.init_process_group("nccl")


def test_without_mpi4py_a_distributed_call_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    assert not dist.is_available()
    with pytest.raises(dist.MPINotInstalled, match=r"pip install 'tinygrad_conv\[mpi\]'"):
        dist.init_process_group("mpi")
    assert not dist.is_initialized()


def test_cli_under_mpiexec_without_mpi4py(monkeypatch, tmp_path, capsys):
    from tinygrad_conv.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "started by mpiexec as 2 processes" in err and "tinygrad_conv[mpi]" in err
    assert not (tmp_path / "run").exists()


def test_single_process_code_never_imports_mpi4py():
    code = ("import sys, tinygrad_conv, tinygrad_conv.training, tinygrad_conv.cli, "
            "tinygrad_conv.distributed, tinygrad_conv.nn.parallel; "
            "from tinygrad_conv.cli import build_parser; build_parser(); "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_launched_by_mpiexec_reads_the_launchers_environment(monkeypatch):
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                 "PMIX_SIZE", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert dist.launched_by_mpiexec() is None
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert dist.launched_by_mpiexec() == (3, 4)
