"""Recording during training, the pictures of a trained model, and `tinygrad-conv inspect`."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from _mnist import require_mnist

import tinygrad_conv as tc
from tinygrad_conv import nn, recording, training
from tinygrad_conv.cli import main
from tinygrad_conv.training import TrainConfig, fit

pytest.importorskip("matplotlib")
from tinygrad_conv import pictures  # noqa: E402

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    return require_mnist()


def _tiny_net():
    tc.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 10))


class _Digits:
    """Eight 8x8 'images' with labels, indexable like MNIST."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
        self.y = np.arange(8) % 10

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_layer_norms_by_hand():
    net = _tiny_net()
    net(tc.randn(2, 1, 8, 8)).sum().backward()
    norms = recording.layer_norms(net)
    assert list(norms) == ["0", "3", "6"]
    w, b = net[3].weight, net[3].bias
    expected = np.sqrt((w.data.astype(np.float64) ** 2).sum() + (b.data ** 2).sum())
    assert norms["3"]["weight"] == pytest.approx(expected, rel=1e-6)
    g = np.sqrt((w.grad.data.astype(np.float64) ** 2).sum() + (b.grad.data ** 2).sum())
    assert norms["3"]["grad"] == pytest.approx(g, rel=1e-6)


def test_recorder_writes_every_n_batches_with_the_mean_loss(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n")
    rec = recording.BatchRecorder(path, every=3)
    net = _tiny_net()
    for step in range(1, 8):
        rec.after_backward(net, float(step), step, epoch=1, lr=0.1 / step)
    epochs, batches = recording.read_metrics(path)
    assert epochs == [{"epoch": 1, "train_loss": 1.0}]
    assert [b["step"] for b in batches] == [3, 6] and batches == rec.rows
    assert [b["loss"] for b in batches] == [2.0, 5.0]  # means of 1..3 and 4..6
    assert batches[1]["lr"] == pytest.approx(0.1 / 6) and set(batches[0]["norms"]) == {"0", "3",
                                                                                        "6"}
    with pytest.raises(ValueError, match="every"):
        recording.BatchRecorder(path, every=0)


def test_smooth_is_an_unbiased_moving_average():
    np.testing.assert_allclose(pictures.smooth([2.0, 2.0, 2.0]), [2.0, 2.0, 2.0])
    out = pictures.smooth([0.0, 1.0], weight=0.5)
    assert out[1] == pytest.approx((0.5 * 0.0 * 0.5 + 0.5 * 1.0) / 0.75)


def test_feature_maps_are_the_conv_outputs():
    net = _tiny_net()
    image = np.random.default_rng(1).standard_normal((1, 8, 8)).astype(np.float32)
    maps = pictures.feature_maps(net, image)
    assert [(name, m.shape) for name, m in maps] == [("0", (3, 8, 8)), ("3", (4, 4, 4))]
    first = net[0](tc.Tensor(image[None])).data[0]
    np.testing.assert_allclose(maps[0][1], first, rtol=1e-6)


def test_predictions_and_confusion_matrix():
    net, digits = _tiny_net(), _Digits()
    labels, predicted, probs = pictures.predict(net, digits, batch_size=3)
    logits = net.eval()(tc.Tensor(digits.x)).data
    np.testing.assert_array_equal(predicted, logits.argmax(axis=1))
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    counts = pictures.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_every_picture_is_a_png(tmp_path):
    net, digits = _tiny_net(), _Digits()
    rows = [{"step": s, "epoch": 1 + (s > 4), "loss": 1.0 / s, "lr": 0.1,
             "norms": {"0": {"weight": 1.0, "grad": 0.1 * s}}} for s in (2, 4, 6, 8)]
    history = [{"epoch": e, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.1,
                "test_acc": 0.4, "lr": 0.1} for e in (1, 2)]
    written = [
        pictures.plot_filters(net, tmp_path / "f.png"),
        pictures.plot_feature_maps(net, digits[0][0], tmp_path / "m.png"),
        pictures.plot_confusion(net, digits, tmp_path / "c.png"),
        pictures.plot_mistakes(net, digits, tmp_path / "w.png"),
        pictures.plot_norms(rows, tmp_path / "n.png"),
    ]
    assert pictures.plot_curves(history, tmp_path / "k.png", rows)
    for path in written + [tmp_path / "k.png"]:
        assert Path(path).read_bytes()[:4] == PNG
    with pytest.raises(ValueError, match="Conv2d"):
        pictures.plot_filters(nn.Sequential(nn.Linear(2, 2)), tmp_path / "x.png")


@pytest.mark.slow
def test_training_records_norms_and_says_where_its_files_are(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "BatchRecorder",
                        functools.partial(recording.BatchRecorder, every=2))
    lines: list[str] = []
    config = TrainConfig(epochs=2, batch_size=16, limit_batches=4, limit_test=60,
                         data_dir=str(mnist_dir), out=str(tmp_path), progress=False,
                         download=False)
    history = fit(config, log=lines.append)
    epochs, batches = recording.read_metrics(tmp_path / "metrics.jsonl")
    assert epochs == history
    assert [b["step"] for b in batches] == [2, 4, 6, 8]
    assert [b["epoch"] for b in batches] == [1, 1, 2, 2]
    assert set(batches[0]["norms"]) == {"0", "3", "7", "9"}
    assert batches[-1]["lr"] == pytest.approx(
        0.5e-3 * (1 + np.cos(np.pi * 7 / 8)), rel=1e-9)  # the cosine lr the 8th step used
    end = "\n".join(lines[-3:])
    assert f"checkpoint: {tmp_path / 'checkpoint.npz'}" in end
    assert str(tmp_path / "metrics.jsonl") in end and "tinygrad-conv inspect" in end

    assert main(["inspect", "--run", str(tmp_path), "--data-dir", str(mnist_dir),
                 "--limit-test", "60", "--out", str(tmp_path / "pics")]) == 0
    for name in pictures.PICTURES + ("curves.png",):
        assert (tmp_path / "pics" / name).read_bytes()[:4] == PNG
    assert main(["inspect", "--run", str(tmp_path / "none")]) == 1
