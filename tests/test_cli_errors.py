"""The command line under a user's mistakes and the machine's state: every case ends in one
``error:`` line and a non-zero exit, never a traceback; checkpoints on disk survive."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _mnist import require_mnist

import tinygrad_conv as tc
from tinygrad_conv import cli, serialization, training
from tinygrad_conv.runlock import LOCK_NAME, RunLock
from tinygrad_conv.training import Trainer


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return require_mnist()


def quick(mnist_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(mnist_dir), "--out", str(out), "--limit-batches", "2",
            "--limit-test", "100", "--epochs", "1", "--no-progress", *extra]


@pytest.fixture(scope="session")
def trained(mnist_dir, tmp_path_factory) -> Path:
    """The folder of a finished 1-epoch run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("trained")
    assert cli.main(quick(mnist_dir, out)) == 0
    return out


def one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("flags", [
    ["--lr", "inf"], ["--lr", "1e30"], ["--lr", "nan"], ["--lr", "-0.1"], ["--lr", "0"],
    ["--seed", "-1"], ["--batch-size", "0"], ["--epochs", "-2"], ["--limit-batches", "x"],
])
def test_bad_flags_stop_before_any_work(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--out", str(tmp_path / "run"), *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flags[0]}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_python_api_checks_settings_too(tmp_path):
    for bad in ({"lr": float("inf")}, {"seed": -1}, {"batch_size": 0}, {"optimizer": "rmsprop"},
                {"epochs": True}):
        flag = "--" + next(iter(bad)).replace("_", "-")
        with pytest.raises(training.TrainingError, match=flag):
            training.fit(training.TrainConfig(out=str(tmp_path), **bad))


def test_out_naming_a_file(mnist_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert cli.main(quick(mnist_dir, tmp_path / "file")) == 1
    one_error_line(capsys, "is an existing file, not a folder")
    assert (tmp_path / "file").read_text() == "mine"


def test_batch_size_larger_than_the_data(mnist_dir, tmp_path, capsys):
    assert cli.main(quick(mnist_dir, tmp_path, "--batch-size", "70000")) == 1
    one_error_line(capsys, "--batch-size 70000 is larger than the 60000 training images")


def test_batch_size_that_does_not_fit_memory(mnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training, "_available_memory", lambda: 2**30)
    assert cli.main(quick(mnist_dir, tmp_path, "--batch-size", "5000")) == 1
    one_error_line(capsys, "--batch-size 5000 needs about 3.3 GiB", "1.0 GiB of memory is free",
                   "--batch-size 1533 or less")


def test_unwritable_out_folder(mnist_dir, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    tmp_path.chmod(0o500)
    try:
        assert cli.main(quick(mnist_dir, tmp_path / "run")) == 1
    finally:
        tmp_path.chmod(0o700)
    one_error_line(capsys, "cannot use --out", "Permission denied")


# ---- edited and foreign checkpoints -------------------------------------------------------
def edit_model(c):
    c["model"] = {"other.weight": np.zeros((3, 3), np.float32)}


def edit_shape(c):
    c["model"]["0.weight"] = np.zeros((8, 1, 3, 3), np.float32)


def edit_missing(c):
    del c["model"]["2.bias" if "2.bias" in c["model"] else "0.bias"]


def write_deep_json(path: Path, depth: int = 100_000) -> None:
    """Rewrite the checkpoint at ``path`` with a first entry nested ``depth`` lists deep."""
    with np.load(path) as z:
        members = {name: z[name] for name in z.files}
    doc = members["__structure__"].tobytes().decode()
    head = '"root": {"$type": "dict", "items": ['
    doc = doc.replace(head, head + '["deep", ' + "[" * depth + "]" * depth + "], ", 1)
    members["__structure__"] = np.frombuffer(doc.encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)


EDITS = {
    "another model": (edit_model, "does not fit this run"),
    "a parameter of the wrong shape": (edit_shape, "does not fit this run"),
    "a missing key": (edit_missing, "does not fit this run"),
    "loader past the end": (lambda c: c["loader"].update(position=999), "loader position is 999"),
    "negative loader position": (lambda c: c["loader"].update(position=-1), "loader position"),
    "batch size 'big'": (lambda c: c["config"].update(batch_size="big"),
                         "the checkpoint's batch_size must be a positive integer, got 'big'"),
    "batch size 0": (lambda c: c["config"].update(batch_size=0), "batch_size must be"),
    "unknown optimizer": (lambda c: c["config"].update(optimizer="rmsprop"),
                          "the checkpoint's optimizer must be one of sgd, adam, adamw"),
    "NaN lr": (lambda c: c["config"].update(lr=float("nan")), "the checkpoint's lr must be"),
    "negative epoch": (lambda c: c.update(epoch=-3), "its epoch is -3"),
    "no config": (lambda c: c.pop("config"), "no valid run settings"),
    "string scheduler steps": (lambda c: c["scheduler"].update(last_epoch="2"),
                               "step count is '2'"),
    "deep JSON": (None, "nested too deeply"),
    "a list, not a dict": (lambda c: (c.clear(), c.update(format="x")), "not a training"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_resume_from_an_edited_checkpoint_is_a_clean_error(case, mnist_dir, trained, tmp_path,
                                                           capsys):
    edit, message = EDITS[case]
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    if edit is None:
        write_deep_json(out / "checkpoint.npz")
    else:
        ckpt = tc.load(out / "checkpoint.npz")
        edit(ckpt)
        tc.save(ckpt, out / "checkpoint.npz")
    before = (out / "checkpoint.npz").read_bytes()
    assert cli.main(quick(mnist_dir, out, "--resume", "--epochs", "2")) == 1
    one_error_line(capsys, message)
    assert (out / "checkpoint.npz").read_bytes() == before


# ---- the run stops cleanly ----------------------------------------------------------------
def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(mnist_dir, trained, tmp_path,
                                                                monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = (out / "checkpoint.npz").read_bytes()
    original, calls = training.F.cross_entropy, {"n": 0}

    def nan_on_second_batch(logits, target, **kw):
        loss = original(logits, target, **kw)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(training.F, "cross_entropy", nan_on_second_batch)
    assert cli.main(quick(mnist_dir, out, "--resume", "--epochs", "2")) == 1
    one_error_line(capsys, "the loss became nan at epoch 2, batch 2 (lr 0.000146)",
                   "the previous checkpoint", "is kept unchanged", "smaller --lr")
    assert (out / "checkpoint.npz").read_bytes() == before


def test_a_full_disk_at_the_epoch_save_keeps_the_previous_checkpoint(mnist_dir, trained,
                                                                     tmp_path, monkeypatch,
                                                                     capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = (out / "checkpoint.npz").read_bytes()

    def disk_full(f, arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(serialization, "_write_npz", disk_full)
    assert cli.main(quick(mnist_dir, out, "--resume", "--epochs", "2")) == 1
    one_error_line(capsys, "could not save", "No space left on device",
                   "the previous checkpoint", "is kept unchanged")
    assert (out / "checkpoint.npz").read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_a_second_ctrl_c_during_the_stop_save(mnist_dir, trained, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = (out / "checkpoint.npz").read_bytes()

    def ctrl_c(self, x, y):
        raise KeyboardInterrupt  # a first Ctrl-C (outside an update)

    def second_ctrl_c(f, arrays):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_train_step", ctrl_c)
    monkeypatch.setattr(serialization, "_write_npz", second_ctrl_c)
    assert cli.main(quick(mnist_dir, out, "--resume", "--epochs", "2")) == 130
    err = capsys.readouterr().err
    assert "before training started" not in err
    assert "Interrupted again while saving" in err and "is kept unchanged" in err
    assert (out / "checkpoint.npz").read_bytes() == before


# ---- one run per folder -------------------------------------------------------------------
def test_a_second_run_into_a_held_folder_is_refused(mnist_dir, tmp_path, capsys):
    with RunLock(tmp_path):
        assert cli.main(quick(mnist_dir, tmp_path)) == 1
    one_error_line(capsys, f"in use by another training run (process {os.getpid()}",
                   "pass another --out")
    assert not (tmp_path / "checkpoint.npz").exists()
    assert cli.main(quick(mnist_dir, tmp_path)) == 0  # released


def test_a_stale_lock_of_a_dead_process_is_taken_over(mnist_dir, tmp_path, capsys):
    (tmp_path / LOCK_NAME).write_text("999999999\n")
    assert cli.main(quick(mnist_dir, tmp_path)) == 0
    assert (tmp_path / "checkpoint.npz").exists()
    capsys.readouterr()


def test_flags_that_are_not_numbers_say_what_a_number_should_be(capsys):
    for flag, text, what in (("--lr", "abc", "a number in (0, 10]"),
                             ("--seed", "x", "an integer >= 0"),
                             ("--epochs", "1.5", "a positive integer")):
        with pytest.raises(SystemExit):
            cli.main(["train", flag, text])
        assert f"argument {flag}: must be {what}, got '{text}'" in capsys.readouterr().err


def test_an_empty_out_and_a_data_dir_that_is_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--out", "", "--no-progress"]) == 1
    one_error_line(capsys, "--out is empty")
    (tmp_path / "afile").write_text("x")
    assert cli.main(["train", "--data-dir", "afile", "--out", "run", "--no-progress"]) == 1
    one_error_line(capsys, "afile is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "run"]
