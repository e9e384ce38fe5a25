"""tc.save / tc.load: round trips, the exact file name, atomic writes, bad files."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import tinygrad_conv as tc
from tinygrad_conv import nn, optim, serialization


def checkpoint() -> dict:
    return {
        "model": {"0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
                  "1.num_batches_tracked": np.array(4, dtype=np.int64)},
        "optimizer": {"state": {0: {"step": 3, "exp_avg": np.ones(3)}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
        "epoch": 3, "name": "run-1", "done": False, "note": None, "loss": 0.25,
        "inf": float("inf"), "history": [1.5, [2, "x"], ()],
        "rng": {"bit_generator": "PCG64", "state": {"state": 2**100 + 7, "inc": 5}},
        "scalar": np.float32(1.5), "flags": np.array([True, False]),
        "tensor": tc.Tensor([1.0, 2.0], requires_grad=True),
    }


def test_round_trip_keeps_types_values_and_key_types(tmp_path):
    path = tmp_path / "ck.npz"
    tc.save(checkpoint(), path)
    back = tc.load(path)
    original = checkpoint()
    assert list(back) == list(original)
    np.testing.assert_array_equal(back["model"]["0.weight"], original["model"]["0.weight"])
    assert back["model"]["0.weight"].dtype == np.float32
    assert back["model"]["1.num_batches_tracked"].dtype == np.int64
    assert list(back["optimizer"]["state"]) == [0]  # int keys stay ints
    assert back["optimizer"]["state"][0]["step"] == 3
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    for key in ("epoch", "name", "done", "note", "loss", "inf", "history", "rng"):
        assert back[key] == original[key]
    assert back["history"][2] == () and isinstance(back["scalar"], np.float32)
    assert back["flags"].dtype == bool
    assert isinstance(back["tensor"], tc.Tensor) and back["tensor"].requires_grad
    np.testing.assert_array_equal(back["tensor"].data, [1.0, 2.0])


def test_name_is_used_exactly(tmp_path):
    tc.save({"a": np.zeros(2)}, tmp_path / "model.ckpt")
    assert os.listdir(tmp_path) == ["model.ckpt"]
    tc.save({"a": np.ones(2)}, str(tmp_path / "model.ckpt"))  # overwrite, str path
    assert os.listdir(tmp_path) == ["model.ckpt"]
    np.testing.assert_array_equal(tc.load(str(tmp_path / "model.ckpt"))["a"], np.ones(2))


def test_model_round_trip_gives_identical_outputs(tmp_path, rng):
    tc.manual_seed(0)

    def make():
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                             nn.Linear(3 * 4 * 4, 2))

    model = make()
    x = rng.standard_normal((4, 1, 6, 6)).astype(np.float32)
    model(x)  # moves the batch-norm running statistics
    model.eval()
    opt = optim.Adam(model.parameters())
    tc.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1},
            tmp_path / "ck.pt")
    fresh = make().eval()
    saved = tc.load(tmp_path / "ck.pt")
    fresh.load_state_dict(saved["model"])
    optim.Adam(fresh.parameters()).load_state_dict(saved["optimizer"])
    np.testing.assert_array_equal(fresh(x).data, model(x).data)


def test_unsupported_objects_are_refused_with_their_place(tmp_path):
    with pytest.raises(TypeError, match=r"obj\['model'\]\['w'\] of type set"):
        tc.save({"model": {"w": {1, 2}}}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="object array"):
        tc.save([np.array([{}], dtype=object)], tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


# ---- atomic writes ---------------------------------------------------------------------
def _fail_midway(f, arrays):
    f.write(b"PK\x03\x04 half of a zip")
    raise OSError("disk full")


@pytest.mark.parametrize("where", ["writing", "fsync"])
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "model.ckpt"
    tc.save({"version": 1, "w": np.zeros(3)}, path)
    old_bytes = path.read_bytes()
    if where == "writing":
        monkeypatch.setattr(serialization, "_write_npz", _fail_midway)
    else:
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("io error")))
    with pytest.raises(OSError):
        tc.save({"version": 2, "w": np.ones(3)}, path)
    assert os.listdir(tmp_path) == ["model.ckpt"]
    assert path.read_bytes() == old_bytes
    assert tc.load(path)["version"] == 1


def test_an_interrupted_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(serialization, "_write_npz", _fail_midway)
    with pytest.raises(OSError, match="disk full"):
        tc.save({"w": np.zeros(3)}, tmp_path / "new.ckpt")
    assert os.listdir(tmp_path) == []


# ---- bad files -------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        tc.load(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("keep", [0, 10, 0.5, 0.95])
def test_truncated_file_names_the_file(tmp_path, keep):
    path = tmp_path / "ck.npz"
    tc.save(checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(serialization.CheckpointError, match="ck.npz") as info:
        tc.load(path)
    assert isinstance(info.value, ValueError)
    assert any(w in str(info.value) for w in ("truncated", "empty", "corrupt"))


def test_corrupt_bytes_and_foreign_files(tmp_path):
    path = tmp_path / "ck.npz"
    tc.save({"w": np.arange(1000.0)}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flips a byte inside an array: the zip CRC catches it
    path.write_bytes(bytes(data))
    with pytest.raises(serialization.CheckpointError, match="ck.npz.*corrupt"):
        tc.load(path)
    path.write_text("hello, not a checkpoint")
    with pytest.raises(serialization.CheckpointError, match="not an .npz"):
        tc.load(path)
    np.savez(path.with_suffix(""), w=np.zeros(2))  # writes ck.npz, a plain npz
    with pytest.raises(serialization.CheckpointError, match="not a tinygrad_conv checkpoint"):
        tc.load(path)


def test_pickled_data_is_never_loaded(tmp_path):
    path = tmp_path / "evil.npz"
    good = tmp_path / "good.npz"
    tc.save({"w": np.zeros(1)}, good)
    with zipfile.ZipFile(good) as z:
        structure = z.read("__structure__.npy")
    np.savez(path, a0=np.array([{"x": 1}], dtype=object))  # np.savez pickles object arrays
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("__structure__.npy", structure)
    with pytest.raises(serialization.CheckpointError, match="pickled"):
        tc.load(path)
