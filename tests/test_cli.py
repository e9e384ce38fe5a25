"""The command line: --help, a tiny training run, resume (constant and cosine lr), Ctrl-C, errors,
the graph command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from _mnist import require_mnist

import tinygrad_conv as tc
from tinygrad_conv import cli
from tinygrad_conv.training import Trainer

TRAIN_FLAGS = ["--epochs", "--batch-size", "--lr", "--lr-schedule", "--optimizer", "--seed",
               "--data-dir", "--out", "--limit-batches", "--limit-test", "--resume",
               "--no-progress"]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return require_mnist()


def quick(mnist_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(mnist_dir), "--out", str(out), "--limit-batches", "3",
            "--limit-test", "200", "--epochs", "1", "--no-progress", *extra]


def test_help_describes_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in TRAIN_FLAGS:
        assert flag in text
    assert "sgd,adam,adamw" in text and "default 64" in text and "default 3" in text
    assert "cosine,constant" in text and "default cosine" in text
    with pytest.raises(SystemExit):
        cli.main(["graph", "--help"])
    text = capsys.readouterr().out
    for flag in ("--out", "--format", "--modules", "--rankdir"):
        assert flag in text


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "tinygrad_conv", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "train" in result.stdout and "graph" in result.stdout


def test_bad_flags_are_rejected(capsys):
    for argv in (["train", "--optimizer", "rmsprop"], ["train", "--epochs", "0"],
                 ["train", "--lr-schedule", "step"], []):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    capsys.readouterr()


def test_tiny_train_run_writes_checkpoint_and_metrics(mnist_dir, tmp_path, capsys):
    assert cli.main(quick(mnist_dir, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "test loss" in out and "(200 images)" in out
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["epoch"] == 1 and 0 <= row["test_acc"] <= 1 and row["seconds"] > 0
    assert row["lr"] == 0.0  # the cosine default ends at 0
    assert "adam lr 0.001 (cosine schedule to 0 over 3 steps), seed 0" in out
    ckpt = tc.load(tmp_path / "checkpoint.npz")
    assert ckpt["epoch"] == 1 and ckpt["metrics"][0]["test_acc"] == row["test_acc"]
    assert ckpt["config"]["limit_batches"] == 3 and ckpt["config"]["limit_test"] == 200


def assert_same_run(a: object, b: object, where: str = "checkpoint") -> None:
    """Two checkpoints hold equal arrays (bit for bit) and numbers, timings aside."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            if key != "seconds":
                assert_same_run(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_run(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == np.asarray(b).dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def test_cli_resume_with_more_epochs_equals_uninterrupted(mnist_dir, tmp_path, capsys):
    # only with a constant lr: a cosine schedule's length depends on --epochs
    constant = ["--seed", "3", "--lr-schedule", "constant"]
    assert cli.main(quick(mnist_dir, tmp_path / "a", "--epochs", "2", *constant)) == 0
    assert cli.main(quick(mnist_dir, tmp_path / "b", "--epochs", "1", *constant)) == 0
    resume = ["train", "--resume", "--epochs", "2", "--no-progress",
              "--data-dir", str(mnist_dir), "--out", str(tmp_path / "b")]
    assert cli.main(resume) == 0
    a, b = (tc.load(tmp_path / run / "checkpoint.npz") for run in "ab")
    assert a["epoch"] == b["epoch"] == 2
    assert a["scheduler"] is None and b["config"]["lr_schedule"] == "constant"
    assert_same_run(a, b)
    capsys.readouterr()


def test_cli_cosine_resume_after_ctrl_c_equals_uninterrupted(mnist_dir, tmp_path, monkeypatch,
                                                              capsys):
    assert cli.main(quick(mnist_dir, tmp_path / "a", "--epochs", "2", "--seed", "3")) == 0
    original, calls = Trainer._train_step, {"n": 0}

    def ctrl_c_after_step_5(self, x, y):  # epoch 2, after its 2nd batch
        original(self, x, y)
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_train_step", ctrl_c_after_step_5)
    assert cli.main(quick(mnist_dir, tmp_path / "b", "--epochs", "2", "--seed", "3")) == 130
    monkeypatch.undo()
    resume = ["train", "--resume", "--no-progress", "--data-dir", str(mnist_dir),
              "--out", str(tmp_path / "b")]
    capsys.readouterr()
    assert cli.main([*resume, "--lr-schedule", "constant"]) == 1
    err = capsys.readouterr().err
    assert "--lr-schedule cosine, cannot continue it with constant" in err
    assert cli.main(resume) == 0
    assert "cosine schedule to 0 over 6 steps" in capsys.readouterr().out
    a, b = (tc.load(tmp_path / run / "checkpoint.npz") for run in "ab")
    assert a["epoch"] == b["epoch"] == 2 and a["scheduler"]["last_epoch"] == 6
    assert_same_run(a, b)  # model, optimizer, scheduler, RNG, loader and metrics
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [row["lr"] for row in rows] == [r["lr"] for r in a["metrics"]]
    assert rows[0]["lr"] == pytest.approx(5e-4, rel=1e-12) and rows[1]["lr"] == 0.0


def test_ctrl_c_exits_130_with_resume_instructions(mnist_dir, tmp_path, monkeypatch, capsys):
    original = Trainer._train_step

    def step_then_ctrl_c(self, x, y):
        original(self, x, y)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_train_step", step_then_ctrl_c)
    assert cli.main(quick(mnist_dir, tmp_path)) == 130
    err = capsys.readouterr().err
    assert "after batch 1/3" in err and f"--resume --out {tmp_path}" in err
    assert tc.load(tmp_path / "checkpoint.npz")["partial"]["batches"] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_missing_data_is_a_clean_error(tmp_path, monkeypatch, capsys):
    from tinygrad_conv import data

    monkeypatch.setattr(data, "MIRRORS", ["http://127.0.0.1:9/"])
    code = cli.main(["train", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path),
                     "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST: download into") and "--data-dir" in err
    assert "Traceback" not in err


def test_resume_without_checkpoint_is_a_clean_error(mnist_dir, tmp_path, capsys):
    assert cli.main(quick(mnist_dir, tmp_path, "--resume")) == 1
    assert "no checkpoint at" in capsys.readouterr().err


def test_graph_command_calls_viz(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("tinygrad_conv.viz")
    fake.graph_command = lambda **kwargs: calls.append(kwargs) or Path(kwargs["out"])
    monkeypatch.setitem(sys.modules, "tinygrad_conv.viz", fake)
    assert cli.main(["graph", "--out", str(tmp_path / "g.png"), "--modules"]) == 0
    assert cli.main(["graph", "--out", str(tmp_path / "g"), "--format", "pdf",
                     "--rankdir", "LR"]) == 0
    assert calls == [
        dict(out=str(tmp_path / "g.png"), fmt="png", modules=True, rankdir="TB"),
        dict(out=str(tmp_path / "g"), fmt="pdf", modules=False, rankdir="LR"),
    ]
