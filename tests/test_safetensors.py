"""tc.save/tc.load of .safetensors files: the weights load into the PyTorch twin, and back."""

import os
import sys

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import nn, optim, safetensors_io
from tinygrad_conv.cli import main
from tinygrad_conv.models import reference_cnn
from tinygrad_conv.safetensors_io import _NumpyFormat


@pytest.fixture(params=["package", "numpy twin"])
def backend(request, monkeypatch):
    """Each test twice: through the safetensors package, and as if it were not installed."""
    if request.param == "package":
        pytest.importorskip("safetensors")
    else:
        monkeypatch.setattr(safetensors_io, "_package", lambda: _NumpyFormat)
    return request.param


def test_without_the_package_the_numpy_twin_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    assert safetensors_io._package() is _NumpyFormat


def _trained_briefly(seed=0, steps=5):
    """The reference CNN after a few Adam steps on a fixed random batch."""
    tc.manual_seed(seed)
    model = reference_cnn()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(seed)
    x = tc.Tensor(rng.standard_normal((16, 1, 28, 28)).astype(np.float32))
    y = rng.integers(0, 10, size=16)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_round_trip_keeps_every_array_exactly(tmp_path, backend):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    model(tc.randn(4, 1, 3, 3))  # moves the running statistics
    path = tmp_path / "m.safetensors"
    tc.save(model.state_dict(), path)
    loaded = tc.load(path)
    assert set(loaded) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key], value)
    assert not [p for p in os.listdir(tmp_path) if p != "m.safetensors"]  # no temp file left


def test_bad_objects_and_files_are_named(tmp_path, backend):
    with pytest.raises(TypeError, match="flat dict"):
        tc.save([np.zeros(2)], tmp_path / "a.safetensors")
    with pytest.raises(TypeError, match="'x'.*dict"):
        tc.save({"x": {"nested": np.zeros(2)}}, tmp_path / "a.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{trun")
    with pytest.raises(ValueError, match="bad.safetensors"):
        tc.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        tc.load(tmp_path / "missing.safetensors")


def _torch_reference_cnn(torch):
    n = torch.nn
    return n.Sequential(n.Conv2d(1, 32, 3, padding=1), n.ReLU(), n.MaxPool2d(2),
                        n.Conv2d(32, 64, 3, padding=1), n.ReLU(), n.MaxPool2d(2), n.Flatten(),
                        n.Linear(3136, 128), n.ReLU(), n.Linear(128, 10))


def test_trained_here_loads_in_pytorch_and_back(tmp_path, backend):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")  # PyTorch's side reads and writes with the package
    import importlib

    torch_io = importlib.import_module("safetensors.torch")
    load_file, save_file = torch_io.load_file, torch_io.save_file

    model = _trained_briefly()
    path = tmp_path / "model.safetensors"
    tc.save(model.state_dict(), path)
    twin = _torch_reference_cnn(torch)
    twin.load_state_dict(load_file(str(path)))
    x = np.random.default_rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)
    with tc.no_grad():
        ours = model.eval()(x).data
    theirs = twin.eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)

    # and back: weights changed in PyTorch, saved there, loaded here
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
    save_file(twin.state_dict(), str(tmp_path / "back.safetensors"))
    fresh = reference_cnn()
    fresh.load_state_dict(tc.load(tmp_path / "back.safetensors"))
    np.testing.assert_allclose(fresh.eval()(x).data, twin(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-4)


def test_export_command_writes_the_runs_model(tmp_path, capsys):
    model = _trained_briefly(steps=1)
    run = tmp_path / "run"
    run.mkdir()
    tc.save({"format": "tinygrad_conv.training/1", "model": model.state_dict()},
            run / "checkpoint.npz")
    out = tmp_path / "exported.safetensors"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    loaded = tc.load(out)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded[key], value)
    assert main(["export", "--run", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "checkpoint" in capsys.readouterr().err


def test_the_numpy_twin_and_the_package_read_each_other():
    package = pytest.importorskip("safetensors.numpy")
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(7, np.int64),
              "mask": np.array([True, False]), "h": np.ones(3, np.float16),
              "d": np.linspace(0, 1, 4), "empty": np.zeros((0, 2), np.float32)}
    for written, read in ((_NumpyFormat.save(arrays), package.load),
                          (package.save(arrays), _NumpyFormat.load)):
        loaded = read(written)
        assert set(loaded) == set(arrays)
        for key, value in arrays.items():
            assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
            np.testing.assert_array_equal(loaded[key], value)


def test_the_numpy_twin_refuses_a_header_that_does_not_fit():
    good = _NumpyFormat.save({"w": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="header claims"):
        _NumpyFormat.load(good[:20])
    bad = good.replace(b"[0,16]", b"[0,99]")
    with pytest.raises(ValueError, match="'w'.*byte offsets"):
        _NumpyFormat.load(bad)
