"""Faults from outside the program: kill -9 during saves, a full disk, Ctrl-C at every batch
(then --resume, bit for bit equal to an uninterrupted run), two runs into one --out."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from _mnist import require_mnist

import tinygrad_conv as tc
from tinygrad_conv import cli, serialization
from tinygrad_conv.runlock import LOCK_NAME
from tinygrad_conv.training import Trainer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return require_mnist()


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1"}  # lines reach the pipe as printed


def python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- kill -9 during saves ------------------------------------------------------------------
def test_kill_9_during_saves_keeps_a_whole_checkpoint_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "ck.npz"
    saver = python(f"""
        import numpy as np, tinygrad_conv as tc
        big = np.zeros((4, 1024, 1024), np.float32)   # 16 MB: a save takes a while
        i = 0
        while True:
            big[0, 0, 0] = i
            tc.save({{"i": i, "w": big}}, {str(path)!r})
            print(i, flush=True)
            i += 1
    """)
    rng = np.random.default_rng(0)
    try:
        assert saver.stdout.readline().strip() == "0"  # one whole file exists
        for _ in range(4):  # kill at random points of later saves
            time.sleep(float(rng.uniform(0.0, 0.15)))
            os.kill(saver.pid, signal.SIGSTOP)  # freeze, look, then kill or go on
            ck = tc.load(path)  # whatever moment: the file on disk is a whole checkpoint
            assert ck["w"][0, 0, 0] == ck["i"]
            os.kill(saver.pid, signal.SIGCONT)
        saver.kill()  # SIGKILL, most likely mid-save
        saver.wait(timeout=30)
    finally:
        if saver.poll() is None:
            saver.kill()
            saver.wait()
    ck = tc.load(path)
    assert ck["w"][0, 0, 0] == ck["i"] and ck["w"].shape == (4, 1024, 1024)
    left = temps(tmp_path)
    tc.save({"i": -1}, path)  # the next save into the folder removes the dead run's temps
    assert temps(tmp_path) == [] and tc.load(path) == {"i": -1}
    assert all(f".{saver.pid}." in name for name in left)


# ---- a full disk --------------------------------------------------------------------------
class _FullDisk:
    """A file object that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self.room:
            self.f.write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("room", [0, 50, 4096, 60_000])
def test_a_full_disk_at_any_byte_keeps_the_old_checkpoint(tmp_path, monkeypatch, room):
    path = tmp_path / "ck.npz"
    tc.save({"w": np.arange(10_000, dtype=np.float64)}, path)
    before = path.read_bytes()
    fdopen = os.fdopen
    monkeypatch.setattr(serialization.os, "fdopen",
                        lambda fd, *a, **k: _FullDisk(fdopen(fd, *a, **k), room))
    with pytest.raises(OSError) as info:
        tc.save({"w": np.ones(10_000)}, path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and temps(tmp_path) == []


def test_a_full_disk_in_a_run_says_so_and_resume_continues(mnist_dir, tmp_path, monkeypatch,
                                                            capsys):
    argv = ["train", "--data-dir", str(mnist_dir), "--out", str(tmp_path), "--epochs", "2",
            "--limit-batches", "2", "--limit-test", "100", "--no-progress"]
    assert cli.main([*argv[:6], "1", *argv[7:]]) == 0
    before = (tmp_path / "checkpoint.npz").read_bytes()
    fdopen = os.fdopen
    monkeypatch.setattr(serialization.os, "fdopen",
                        lambda fd, *a, **k: _FullDisk(fdopen(fd, *a, **k), 10_000))
    capsys.readouterr()
    assert cli.main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "is kept unchanged" in err
    assert (tmp_path / "checkpoint.npz").read_bytes() == before and temps(tmp_path) == []
    monkeypatch.undo()  # space again
    assert cli.main([*argv, "--resume"]) == 0
    assert tc.load(tmp_path / "checkpoint.npz")["epoch"] == 2


# ---- Ctrl-C at every batch, then --resume ------------------------------------------------------
RUN = ["--epochs", "2", "--limit-batches", "3", "--limit-test", "100", "--batch-size", "32",
       "--seed", "5", "--no-progress"]


def train(mnist_dir: Path, out: Path, *extra: str) -> int:
    return cli.main(["train", "--data-dir", str(mnist_dir), "--out", str(out), *RUN, *extra])


@pytest.fixture(scope="module")
def uninterrupted(mnist_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("whole")
    assert train(mnist_dir, out) == 0
    return tc.load(out / "checkpoint.npz")


def assert_same_run(a: dict, b: dict) -> None:
    for key in ("model", "optimizer", "scheduler", "rng", "loader", "epoch"):
        flat_a, flat_b = _flatten(a[key]), _flatten(b[key])
        assert flat_a.keys() == flat_b.keys(), key
        for k in flat_a:
            assert np.array_equal(flat_a[k], flat_b[k]), (key, k)
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a["metrics"]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in b["metrics"]]


def _flatten(obj, prefix="") -> dict:
    """{path: array} of every leaf of nested dicts, lists and tuples."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return {prefix: np.asarray(obj)}
    return {k: v for key, value in items for k, v in _flatten(value, f"{prefix}/{key}").items()}


QUICK = {(2, "after a step"), (3, "inside a step"), (4, "inside a step")}
EVERY_BATCH = [  # 2 epochs of 3 batches: every batch, Ctrl-C between steps or during one
    pytest.param(batch, during, marks=() if (batch, during) in QUICK else pytest.mark.slow)
    for batch in range(1, 7) for during in ("after a step", "inside a step")]


@pytest.mark.parametrize("batch, during", EVERY_BATCH)
def test_ctrl_c_at_any_batch_then_resume_is_bit_exact(batch, during, mnist_dir, tmp_path,
                                                     monkeypatch, uninterrupted, capsys):
    original, calls = Trainer._train_step, {"n": 0}

    def step(self, x, y):
        calls["n"] += 1
        if during == "inside a step" and calls["n"] == batch:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the batch is computed
        original(self, x, y)
        if during == "after a step" and calls["n"] == batch:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_train_step", step)
    assert train(mnist_dir, tmp_path) == 130
    monkeypatch.undo()
    assert "Resume with" in capsys.readouterr().err
    assert train(mnist_dir, tmp_path, "--resume") == 0
    assert_same_run(tc.load(tmp_path / "checkpoint.npz"), uninterrupted)


@pytest.mark.slow
def test_sigint_to_a_real_process_then_resume_is_bit_exact(mnist_dir, tmp_path, uninterrupted):
    """A real SIGINT at random moments of a separate process, three times, then resume."""
    rng = np.random.default_rng(1)
    command = [sys.executable, "-m", "tinygrad_conv", "train", "--data-dir", str(mnist_dir),
               "--out", str(tmp_path), *RUN]
    resumed = False
    for _ in range(3):
        run = subprocess.Popen(command + (["--resume"] if resumed else []), cwd=REPO,
                               env=UNBUFFERED, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        run.stdout.readline()  # its first line: the data and settings (training starts)
        time.sleep(float(rng.uniform(0, 0.5)))
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=120)
        assert run.returncode in (0, 130), err
        assert "Traceback" not in err
        resumed = resumed or (tmp_path / "checkpoint.npz").exists()
    final = subprocess.run(command + (["--resume"] if resumed else []), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert_same_run(tc.load(tmp_path / "checkpoint.npz"), uninterrupted)


# ---- two runs into one --out ----------------------------------------------------------------
@pytest.mark.slow
def test_two_runs_into_one_out(mnist_dir, tmp_path, capsys):
    first = subprocess.Popen(
        [sys.executable, "-m", "tinygrad_conv", "train", "--data-dir", str(mnist_dir), "--out",
         str(tmp_path), "--epochs", "1", "--limit-batches", "400", "--batch-size", "16",
         "--limit-test", "100", "--no-progress"],
        cwd=REPO, env=UNBUFFERED, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first.stdout.readline()  # it holds the lock before it prints its settings
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(first.pid)
        assert train(mnist_dir, tmp_path) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and f"(process {first.pid}," in err
        assert "pass another --out" in err and len(err.splitlines()) == 1
    finally:
        first.kill()  # kill -9: its lock file stays behind, naming a dead process
        first.wait()
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(first.pid)
    assert train(mnist_dir, tmp_path) == 0  # the stale lock is taken over
    assert tc.load(tmp_path / "checkpoint.npz")["epoch"] == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]  # one run's lines, not interleaved

