"""The command line: --help, a tiny training run, resume, Ctrl-C, errors, the graph command."""

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

TRAIN_FLAGS = ["--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--data-dir", "--out",
               "--limit-batches", "--limit-test", "--resume", "--no-progress"]


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
    for argv in (["train", "--optimizer", "rmsprop"], ["train", "--epochs", "0"], []):
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
    ckpt = tc.load(tmp_path / "checkpoint.npz")
    assert ckpt["epoch"] == 1 and ckpt["metrics"][0]["test_acc"] == row["test_acc"]
    assert ckpt["config"]["limit_batches"] == 3 and ckpt["config"]["limit_test"] == 200


def test_cli_resume_equals_uninterrupted(mnist_dir, tmp_path, capsys):
    assert cli.main(quick(mnist_dir, tmp_path / "a", "--epochs", "2", "--seed", "3")) == 0
    assert cli.main(quick(mnist_dir, tmp_path / "b", "--epochs", "1", "--seed", "3")) == 0
    resume = ["train", "--resume", "--epochs", "2", "--no-progress",
              "--data-dir", str(mnist_dir), "--out", str(tmp_path / "b")]
    assert cli.main(resume) == 0
    a, b = (tc.load(tmp_path / run / "checkpoint.npz") for run in "ab")
    assert a["epoch"] == b["epoch"] == 2
    for name, value in a["model"].items():
        np.testing.assert_array_equal(value, b["model"][name], err_msg=name)
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(value, b["optimizer"]["state"][index][key])
    capsys.readouterr()


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
