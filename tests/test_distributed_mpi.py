"""Two MPI ranks (``mpiexec -n 2``, from the mpich package): DistributedDataParallel against
one process over the same global batch, the CLI's distributed run and its resume, and errors
that end every rank. Each launch has a timeout, so a hang fails instead of blocking; skipped
when mpi4py or mpiexec is missing (``pip install -e '.[mpi]'``)."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _mnist import REPO, require_mnist

import tinygrad_conv as tc

pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install -e '.[mpi]')")


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel's, in this venv
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
TIMEOUT = 120


def run_ranks(args: list[str], cwd: Path, ranks: int = 2) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks args`` with one compute thread per rank; fails on a timeout."""
    env = {**os.environ, "TINYGRAD_CONV_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.run([MPIEXEC, "-n", str(ranks), *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mpiexec did not finish within {TIMEOUT} s (a hang): {e.stderr}")


# one model and data for both the ranks and the single-process reference
MODEL = textwrap.dedent("""
    import numpy as np
    import tinygrad_conv as tc
    import tinygrad_conv.functional as F
    from tinygrad_conv import nn, optim

    STEPS, GLOBAL_BATCH = 4, 8

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 6 * 6, 5)
            self.unused = nn.Linear(3, 3)  # no gradient: must not be waited for

        def forward(self, x):
            return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))

    def batches():
        g = np.random.default_rng(7)
        xs = g.standard_normal((STEPS, GLOBAL_BATCH, 1, 12, 12)).astype(np.float32)
        ys = g.integers(0, 5, (STEPS, GLOBAL_BATCH))
        return xs, ys

    def train(model, params, rank=0, world=1):
        opt = optim.SGD(params, lr=0.1, momentum=0.9)
        xs, ys = batches()
        local = GLOBAL_BATCH // world
        for step in range(STEPS):
            x = tc.tensor(xs[step][rank * local:(rank + 1) * local])
            y = tc.tensor(ys[step][rank * local:(rank + 1) * local])
            opt.zero_grad()
            if step == STEPS - 1:  # two backward passes add up before one step
                half = local // 2
                F.cross_entropy(model(x[:half]), y[:half]).backward()
                F.cross_entropy(model(x[half:]), y[half:]).backward()
            else:
                F.cross_entropy(model(x), y).backward()
            opt.step()
""")

WORKER = MODEL + textwrap.dedent("""
    import sys
    import tinygrad_conv.distributed as dist
    from tinygrad_conv.nn.parallel import DistributedDataParallel

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    tc.manual_seed(100 + rank)  # different weights per rank: the wrapper copies rank 0's
    model = Net()
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.001)  # several buckets
    assert len(ddp._bucket_list) > 1
    train(ddp, ddp.parameters(), rank, world)
    assert ddp.comm_seconds > 0
    tc.save(model.state_dict(), f"{sys.argv[1]}/rank{rank}.npz")
""")


def test_two_ranks_equal_one_process_over_the_global_batch(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    done = run_ranks([sys.executable, "worker.py", str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr
    namespace: dict = {}
    exec(MODEL, namespace)
    tc.manual_seed(100)  # rank 0's initial weights
    model = namespace["Net"]()
    initial = {k: v.copy() for k, v in model.state_dict().items()}
    namespace["train"](model, model.parameters())
    expected = model.state_dict()
    for rank in (0, 1):
        got = tc.load(tmp_path / f"rank{rank}.npz")
        assert set(got) == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
            if name.startswith("unused"):
                np.testing.assert_array_equal(got[name], initial[name])
            else:
                assert not np.array_equal(value, initial[name]), name  # training moved it


BUFFERS = textwrap.dedent("""
    import sys
    import numpy as np
    import tinygrad_conv as tc
    import tinygrad_conv.distributed as dist
    from tinygrad_conv import nn
    from tinygrad_conv.nn.parallel import DistributedDataParallel

    dist.init_process_group("mpi")
    rank = dist.get_rank()
    bn = nn.BatchNorm1d(3)
    bn.running_mean.data[...] = rank + 1.0  # each rank's own, before the wrapper
    ddp = DistributedDataParallel(bn)
    seen = [bn.running_mean.numpy().copy()]
    x = tc.tensor(rank * 10.0 + np.arange(12, dtype=np.float32).reshape(4, 3))
    for _ in range(2):
        ddp(x)
        seen.append(bn.running_mean.numpy().copy())
    np.save(f"{sys.argv[1]}/rank{rank}.npy", np.stack(seen))
""")


def test_buffers_come_from_rank_0_before_each_forward_and_batch_statistics_stay_local(
        tmp_path):
    (tmp_path / "buffers.py").write_text(BUFFERS)
    done = run_ranks([sys.executable, "buffers.py", str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr
    got = [np.load(tmp_path / f"rank{r}.npy") for r in (0, 1)]
    batch_mean = [r * 10.0 + np.arange(12).reshape(4, 3).mean(axis=0) for r in (0, 1)]
    rank0_first = 0.9 * 1.0 + 0.1 * batch_mean[0]  # BatchNorm's momentum 0.1
    for r in (0, 1):
        np.testing.assert_allclose(got[r][0], 1.0)  # rank 0's running mean, copied
        np.testing.assert_allclose(got[r][1], 0.9 * 1.0 + 0.1 * batch_mean[r], rtol=1e-6)
        # the second forward starts again from rank 0's, then adds this rank's own batch
        np.testing.assert_allclose(got[r][2], 0.9 * rank0_first + 0.1 * batch_mean[r],
                                   rtol=1e-6)


COLLECTIVES = textwrap.dedent("""
    import sys
    import numpy as np
    import tinygrad_conv as tc
    import tinygrad_conv.distributed as dist

    dist.init_process_group("mpi")
    rank = dist.get_rank()
    out = {}
    for op in dist.ReduceOp:
        t = tc.tensor([rank + 1.0, -2.0 * (rank + 1)])
        dist.all_reduce(t, op=op)
        out[op.name] = t.numpy()
    t = tc.tensor([10.0 * rank + 1, 10.0 * rank + 2])
    dist.broadcast(t, src=1)
    out["broadcast"] = t.numpy()
    out["world"] = np.array([dist.get_world_size(), dist.get_backend() == "mpi"])
    np.savez(f"{sys.argv[1]}/rank{rank}.npz", **out)
""")


def test_all_reduce_and_broadcast_on_two_ranks(tmp_path):
    (tmp_path / "collectives.py").write_text(COLLECTIVES)
    done = run_ranks([sys.executable, "collectives.py", str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr
    values = np.array([[1.0, -2.0], [2.0, -4.0]])  # rank 0's and rank 1's
    expected = {"SUM": values.sum(0), "PRODUCT": values.prod(0), "MIN": values.min(0),
                "MAX": values.max(0), "AVG": values.mean(0), "broadcast": [11.0, 12.0],
                "world": [2, 1]}
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert set(got.files) == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, err_msg=f"rank {rank} {name}")


ERRORS = textwrap.dedent("""
    import sys
    import tinygrad_conv.distributed as dist

    dist.init_process_group("mpi")
    if dist.get_rank() == 1:
        raise ValueError("boom on rank 1")
    dist.barrier()  # rank 0 would wait here for ever without the abort
""")


def test_an_error_on_one_rank_ends_every_rank_once(tmp_path):
    (tmp_path / "fails.py").write_text(ERRORS)
    done = run_ranks([sys.executable, "fails.py"], tmp_path)
    assert done.returncode != 0
    assert (done.stdout + done.stderr).count("ValueError: boom on rank 1") == 1


def _train_args(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tinygrad_conv", "train", "--out", str(out),
            "--data-dir", str(require_mnist()), "--no-progress", "--limit-test", "64",
            "--lr-schedule", "constant", *extra]


@pytest.mark.slow
def test_cli_error_every_rank_meets_is_shown_once(tmp_path):
    done = run_ranks(_train_args(tmp_path / "run", "--batch-size", "15"), tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("must be a multiple of the 2 ranks") == 1, done.stderr


@pytest.mark.slow
def test_cli_trains_on_two_ranks_and_resumes(tmp_path):
    common = ("--batch-size", "16", "--limit-batches", "3")
    whole = run_ranks(_train_args(tmp_path / "whole", "--epochs", "2", *common), tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.count("epoch 2/2:") == 1  # rank 0 alone logs
    assert "2 ranks of 8 images each" in whole.stdout
    first = run_ranks(_train_args(tmp_path / "split", "--epochs", "1", *common), tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_ranks(_train_args(tmp_path / "split", "--epochs", "2", "--resume"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("resuming") == 1
    a = tc.load(tmp_path / "whole" / "checkpoint.npz")
    b = tc.load(tmp_path / "split" / "checkpoint.npz")
    assert a["epoch"] == b["epoch"] == 2
    for name, value in a["model"].items():
        np.testing.assert_allclose(b["model"][name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    assert [r["train_loss"] for r in a["metrics"]] == pytest.approx(
        [r["train_loss"] for r in b["metrics"]], rel=1e-6)


@pytest.mark.slow
def test_cli_error_on_rank_0_alone_aborts_every_rank(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint.npz").mkdir(parents=True)  # rank 0's save fails; rank 1 saves nothing
    done = run_ranks(_train_args(out, "--epochs", "2", "--batch-size", "8",
                                 "--limit-batches", "2"), tmp_path)
    assert done.returncode != 0
    assert done.stderr.count("could not save") == 1, done.stderr
    assert "epoch 2/2" not in done.stdout


@pytest.mark.slow
def test_the_example_script_runs_on_two_ranks(tmp_path):
    done = run_ranks([sys.executable, str(REPO / "examples" / "mnist_cnn.py"), "--epochs", "1",
                      "--limit-batches", "3", "--data-dir", str(require_mnist())], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch 1: test accuracy") == 1  # rank 0 alone evaluates


STOP = textwrap.dedent("""
    import os, signal, sys
    import tinygrad_conv as tc
    import tinygrad_conv.distributed as dist
    from tinygrad_conv.training import TrainConfig, Trainer, TrainingInterrupted

    dist.init_process_group("mpi")
    rank = dist.get_rank()
    out, data = sys.argv[1], sys.argv[2]
    config = TrainConfig(epochs=1, batch_size=8, limit_batches=10, limit_test=16, out=out,
                         data_dir=data, progress=False, lr_schedule="constant")
    trainer = Trainer(config, log=lambda message: None)
    step = trainer._train_step

    def step_then_ctrl_c_on_rank_1(x, y):
        step(x, y)
        if rank == 1 and trainer.stats.batches == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C reaches rank 1 alone

    trainer._train_step = step_then_ctrl_c_on_rank_1
    try:
        trainer.run()
    except TrainingInterrupted:
        print(f"rank {rank} stopped after batch {trainer.stats.batches}")
""")


@pytest.mark.slow
def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_batch(tmp_path):
    (tmp_path / "stop.py").write_text(STOP)
    done = run_ranks([sys.executable, "stop.py", str(tmp_path / "run"), str(require_mnist())],
                     tmp_path)
    assert done.returncode == 0, done.stderr
    # rank 1's request travels with batch 3's sums: both ranks stop after batch 3
    assert "rank 0 stopped after batch 3" in done.stdout, done.stdout + done.stderr
    assert "rank 1 stopped after batch 3" in done.stdout
    saved = tc.load(tmp_path / "run" / "checkpoint.npz")
    assert saved["partial"]["batches"] == 3 and saved["loader"]["position"] == 3
