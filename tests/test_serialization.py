"""tc.save / tc.load: round trips, the exact file name, atomic writes, bad files."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
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


# ---- crafted files (issue 17) ------------------------------------------------------------
def _craft(path, structure: dict | str, **members) -> None:
    """An npz with ``members`` (name -> raw .npy bytes or array) and a JSON structure."""
    doc = structure if isinstance(structure, str) else json.dumps(structure)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__structure__.npy", _npy(np.frombuffer(doc.encode(), np.uint8)))
        for name, value in members.items():
            z.writestr(f"{name}.npy", value if isinstance(value, bytes) else _npy(value))


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _doc(root) -> dict:
    return {"format": "tinygrad_conv.save", "version": 1, "root": root}


def _huge_header(shape: tuple, dtype: str = "<f4") -> bytes:
    """A .npy member whose header declares ``shape`` but which holds 16 bytes."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(16)


CRAFTED = {
    "a string version": lambda p: _craft(p, {**_doc(1), "version": "2"}),
    "an int tensor marked requires_grad": lambda p: _craft(
        p, _doc({"$type": "tensor", "member": "a0", "requires_grad": True}),
        a0=np.arange(3)),
    "a header claiming 10^12 floats": lambda p: _craft(
        p, _doc({"$type": "array", "member": "a0"}), a0=_huge_header((10**12,))),
    "a header claiming a negative shape": lambda p: _craft(
        p, _doc({"$type": "array", "member": "a0"}), a0=_huge_header((-4,))),
    "a member it does not have": lambda p: _craft(p, _doc({"$type": "array", "member": "zz"})),
    "a member named by a number": lambda p: _craft(p, _doc({"$type": "array", "member": 3})),
    "an unknown node type": lambda p: _craft(p, _doc({"$type": "set", "items": []})),
    "a node without a type": lambda p: _craft(p, _doc({"items": []})),
    "a dict of non-pairs": lambda p: _craft(p, _doc({"$type": "dict", "items": [1, 2]})),
    "a float that is not one": lambda p: _craft(p, _doc({"$type": "float", "value": "x"})),
    "deep JSON": lambda p: _craft(p, json.dumps(_doc(0))[:-1] + ', "d": '
                                  + "[" * 100_000 + "]" * 100_000 + "}"),
    "a deep structure": lambda p: _craft(p, json.dumps(_doc(0))[:-2] + "[" * 900 + "]" * 900
                                         + "}"),  # JSON reads it; decoding it recurses deeper
    "structure of int64": lambda p: _craft(p, _doc(0)) or _replace_structure(p),
}


def _replace_structure(path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__structure__.npy", _npy(np.arange(5)))


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_files_raise_only_checkpoint_error(case, tmp_path):
    path = tmp_path / "crafted.npz"
    CRAFTED[case](path)
    with pytest.raises(serialization.CheckpointError, match="crafted.npz"):
        tc.load(path)


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(serialization.CheckpointError, match="is a folder"):
        tc.load(tmp_path)


def test_a_compressed_bomb_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "bomb.npz"
    tc.save({"w": np.zeros(2)}, path)
    with zipfile.ZipFile(path) as z:
        structure = z.read("__structure__.npy")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("__structure__.npy", structure)
        z.writestr("a0.npy", _npy(np.zeros(2_000_000, np.float32)))  # 8 MB in ~8 kB
    assert path.stat().st_size < 100_000
    with pytest.raises(serialization.CheckpointError, match="declares 8000128 bytes"):
        tc.load(path)


def _temps(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


def test_temp_files_of_killed_saves_are_removed_at_the_next_save(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for name in (f".ck.npz.{dead}.0123456789ab.tmp", ".ck.npz.0123456789ab.tmp",
                 f".other.npz.{dead}.ba9876543210.tmp"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 half")
    live = f".ck.npz.{os.getppid()}.aaaaaaaaaaaa.tmp"  # a live process's save in progress
    (tmp_path / live).write_bytes(b"PK")
    (tmp_path / "mine.tmp").write_bytes(b"not ours")
    tc.save({"w": np.zeros(2)}, tmp_path / "ck.npz")
    assert _temps(tmp_path) == [live, "mine.tmp"]


def test_saving_over_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "ck.npz"
    tc.save({"w": np.zeros(2)}, path)
    path.chmod(0o600)
    tc.save({"w": np.ones(2)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    np.testing.assert_array_equal(tc.load(path)["w"], np.ones(2))


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "ck.npz"
    tc.save({"w": np.zeros(2)}, target)
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    tc.save({"w": np.ones(2)}, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(tc.load(target)["w"], np.ones(2))
    assert _temps(tmp_path) == [] and _temps(tmp_path / "real") == []


def test_saves_from_two_threads_into_one_folder_do_not_remove_each_others_temps(tmp_path):
    """A save cleans stale temps first; another thread's save in progress is not stale."""
    import threading

    big = {"w": np.arange(3_000_000, dtype=np.float32)}  # long enough for the saves to overlap
    errors = []

    def save_many(name):
        try:
            for _ in range(5):
                tc.save(big, tmp_path / name)
        except BaseException as error:  # handed to the test
            errors.append(error)

    threads = [threading.Thread(target=save_many, args=(f"{k}.npz",)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for k in range(3):
        np.testing.assert_array_equal(tc.load(tmp_path / f"{k}.npz")["w"], big["w"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
