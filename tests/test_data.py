"""MNIST reading (real IDX files, gzipped and raw, and broken copies), downloading, DataLoader."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from _mnist import require_mnist

import tinygrad_conv as tc
from tinygrad_conv import data
from tinygrad_conv.data import MNIST, DataLoader, MNISTError, Subset

TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # digits 0..9, test set


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return require_mnist()


@pytest.fixture(scope="module")
def train_set(mnist_dir):
    return MNIST(mnist_dir, train=True, download=False)


@pytest.fixture(scope="module")
def test_set(mnist_dir):
    return MNIST(mnist_dir, train=False, download=False)


def _raw_bytes(mnist_dir: Path, name: str) -> bytes:
    return gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())


def _test_split_copy(mnist_dir: Path, folder: Path, images: bytes | None = None,
                     labels: bytes | None = None) -> tuple[Path, Path]:
    """Write the test split raw into ``folder``, replacing either file's bytes if given."""
    folder.mkdir(parents=True, exist_ok=True)
    img = folder / "t10k-images-idx3-ubyte"
    lab = folder / "t10k-labels-idx1-ubyte"
    img.write_bytes(images if images is not None else _raw_bytes(mnist_dir, img.name))
    lab.write_bytes(labels if labels is not None else _raw_bytes(mnist_dir, lab.name))
    return img, lab


# ---- the real files ----------------------------------------------------------------------

def test_train_split_shapes_dtypes_and_first_label(train_set):
    assert len(train_set) == 60000
    assert train_set.images.shape == (60000, 28, 28) and train_set.images.dtype == np.uint8
    assert train_set.labels.shape == (60000,) and train_set.labels.dtype == np.int64
    assert train_set.labels.min() == 0 and train_set.labels.max() == 9
    assert train_set.labels[0] == 5
    x, y = train_set[0]
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    assert y == 5 and isinstance(y, int)


def test_test_split_known_facts(test_set):
    assert len(test_set) == 10000 and test_set.images.shape == (10000, 28, 28)
    assert test_set[0][1] == 7
    counts = np.bincount(test_set.labels, minlength=10)
    assert counts.tolist() == TEST_COUNTS and counts.sum() == 10000


def test_normalisation_values(mnist_dir, test_set):
    x, _ = test_set[0]
    expected = (test_set.images[0] / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(x[0], expected, rtol=1e-6, atol=1e-6)
    assert np.isclose(x.min(), -0.1307 / 0.3081, atol=1e-6)  # a black pixel: -0.4242
    assert np.isclose(x.max(), (1 - 0.1307) / 0.3081, atol=1e-6)  # white: 2.8215
    raw = MNIST(mnist_dir, train=False, download=False, normalize=False)
    xr, _ = raw[0]
    assert xr.dtype == np.float32 and xr.min() == 0.0 and xr.max() == 1.0
    all_x, _ = test_set.batch(np.arange(len(test_set)))
    assert abs(float(all_x.mean())) < 0.05 and abs(float(all_x.std()) - 1) < 0.05


def test_batch_matches_items(test_set):
    idx = np.array([5, 0, 9999, 17])
    xb, yb = test_set.batch(idx)
    assert xb.shape == (4, 1, 28, 28) and xb.dtype == np.float32 and yb.dtype == np.int64
    for k, i in enumerate(idx):
        x, y = test_set[int(i)]
        np.testing.assert_array_equal(xb[k], x)
        assert yb[k] == y
    with pytest.raises(IndexError):
        test_set[10000]


def test_root_defaults_to_env_var(mnist_dir, monkeypatch):
    monkeypatch.setenv("TINYGRAD_CONV_DATA", str(mnist_dir))
    ds = MNIST(train=False, download=False)
    assert ds.root == mnist_dir and len(ds) == 10000


def test_raw_copies_read_like_gzipped(mnist_dir, test_set, tmp_path):
    _test_split_copy(mnist_dir, tmp_path)
    raw = MNIST(tmp_path, train=False, download=False)
    np.testing.assert_array_equal(raw.images, test_set.images)
    np.testing.assert_array_equal(raw.labels, test_set.labels)


# ---- broken files: every error names the file --------------------------------------------

def test_truncated_file_is_an_error_naming_it(mnist_dir, tmp_path):
    images = _raw_bytes(mnist_dir, "t10k-images-idx3-ubyte")
    img, _ = _test_split_copy(mnist_dir, tmp_path, images=images[:100_000])
    with pytest.raises(MNISTError, match="truncated") as info:
        MNIST(tmp_path, train=False, download=False)
    assert str(img) in str(info.value) and "Delete it" in str(info.value)


def test_bad_magic_is_an_error_naming_it(mnist_dir, tmp_path):
    labels = bytearray(_raw_bytes(mnist_dir, "t10k-labels-idx1-ubyte"))
    labels[0:4] = (2051).to_bytes(4, "big")  # an images magic on a labels file
    _, lab = _test_split_copy(mnist_dir, tmp_path, labels=bytes(labels))
    with pytest.raises(MNISTError, match="magic number is 2051, expected 2049") as info:
        MNIST(tmp_path, train=False, download=False)
    assert str(lab) in str(info.value)


def test_wrong_image_size_is_an_error(mnist_dir, tmp_path):
    images = bytearray(_raw_bytes(mnist_dir, "t10k-images-idx3-ubyte"))
    images[8:16] = (14).to_bytes(4, "big") + (56).to_bytes(4, "big")  # same byte count
    img, _ = _test_split_copy(mnist_dir, tmp_path, images=bytes(images))
    with pytest.raises(MNISTError, match="14x56, expected 28x28") as info:
        MNIST(tmp_path, train=False, download=False)
    assert str(img) in str(info.value)


def test_corrupt_gzip_is_an_error_naming_it(mnist_dir, tmp_path):
    gz = bytearray((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    gz[100:140] = b"\xff" * 40
    _, lab = _test_split_copy(mnist_dir, tmp_path)
    lab.unlink()
    corrupt = tmp_path / "t10k-labels-idx1-ubyte.gz"
    corrupt.write_bytes(bytes(gz))
    with pytest.raises(MNISTError, match="not a valid gzip file") as info:
        MNIST(tmp_path, train=False, download=False)
    assert str(corrupt) in str(info.value)
    corrupt.write_bytes(bytes(gz[: len(gz) // 2]))  # cut short while downloading
    with pytest.raises(MNISTError, match="not a valid gzip file"):
        MNIST(tmp_path, train=False, download=False)


def test_mismatched_counts_is_an_error_naming_both_files(mnist_dir, tmp_path):
    labels = _raw_bytes(mnist_dir, "t10k-labels-idx1-ubyte")
    fewer = (2049).to_bytes(4, "big") + (9999).to_bytes(4, "big") + labels[8:-1]
    img, lab = _test_split_copy(mnist_dir, tmp_path, labels=fewer)
    with pytest.raises(MNISTError, match="10000 images but .* 9999 labels") as info:
        MNIST(tmp_path, train=False, download=False)
    assert str(img) in str(info.value) and str(lab) in str(info.value)


def test_missing_files_without_download_say_what_to_do(tmp_path):
    with pytest.raises(MNISTError) as info:
        MNIST(tmp_path, train=True, download=False)
    msg = str(info.value)
    assert str(tmp_path) in msg
    for name in data.ALL_FILES:
        assert name in msg
    assert "TINYGRAD_CONV_DATA" in msg and "--data-dir" in msg and "root=" in msg


# ---- downloading (never the real network) ------------------------------------------------

def test_download_failure_lists_mirrors_and_instructions(tmp_path, monkeypatch):
    dead = ["http://127.0.0.1:9/mnist/", (tmp_path / "no-such-mirror").as_uri() + "/"]
    monkeypatch.setattr(data, "MIRRORS", dead)
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 2.0)
    root = tmp_path / "mnist"
    start = time.perf_counter()
    with pytest.raises(MNISTError) as info:
        MNIST(root, train=False, download=True)
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    assert "could not download t10k-images-idx3-ubyte.gz" in msg and str(root) in msg
    for mirror in dead:
        assert mirror in msg
    assert "TINYGRAD_CONV_DATA" in msg and "--data-dir" in msg
    assert list(root.iterdir()) == []  # no partial files left behind


def test_download_verifies_md5_and_tries_the_next_mirror(mnist_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in data.TEST_FILES:  # the test split's files are the original ones
        shutil.copy(mnist_dir / f"{name}.gz", mirror / f"{name}.gz")
    monkeypatch.setattr(data, "MIRRORS", ["http://127.0.0.1:9/", mirror.as_uri() + "/"])
    root = tmp_path / "cache" / "mnist"
    ds = MNIST(root, train=False, download=True)
    assert len(ds) == 10000 and ds.labels[0] == 7
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in data.TEST_FILES)


def test_download_rejects_a_checksum_mismatch(mnist_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    # the rebuilt train-images file differs from the original published one
    shutil.copy(mnist_dir / "train-images-idx3-ubyte.gz", mirror)
    shutil.copy(mnist_dir / "train-labels-idx1-ubyte.gz", mirror)
    actual = hashlib.md5((mirror / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert actual != data.MD5["train-images-idx3-ubyte"]
    monkeypatch.setattr(data, "MIRRORS", [mirror.as_uri() + "/"])
    root = tmp_path / "mnist"
    with pytest.raises(MNISTError, match="checksum mismatch") as info:
        MNIST(root, train=True, download=True)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    # the labels (good md5) were kept; the bad images were not written
    assert sorted(p.name for p in root.iterdir()) == ["train-labels-idx1-ubyte.gz"]


# ---- DataLoader --------------------------------------------------------------------------

def _toy(n: int) -> list[tuple[np.ndarray, int]]:
    return [(np.full((1, 2, 2), i, dtype=np.float32), i) for i in range(n)]


def _labels(loader: DataLoader) -> list[list[int]]:
    return [y.tolist() for _, y in loader]


def test_loader_batches_mnist(test_set):
    loader = DataLoader(test_set, batch_size=64)
    assert len(loader) == 157  # 10000 / 64 rounded up
    batches = list(loader)
    assert len(batches) == 157
    x, y = batches[0]
    assert isinstance(x, tc.Tensor) and x.shape == (64, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (64,) and y.dtype == np.int64 and y.tolist()[0] == 7
    assert batches[-1][0].shape == (10000 - 156 * 64, 1, 28, 28)
    assert len(DataLoader(test_set, batch_size=64, drop_last=True)) == 156


def test_loader_over_any_indexable_dataset():
    loader = DataLoader(_toy(10), batch_size=4)
    assert len(loader) == 3
    x, y = next(iter(loader))
    assert x.shape == (4, 1, 2, 2) and x.dtype == np.float32 and y.dtype == np.int64
    assert _labels(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert _labels(DataLoader(_toy(10), batch_size=4, drop_last=True)) == [[0, 1, 2, 3],
                                                                           [4, 5, 6, 7]]


def test_item_path_and_batch_path_agree(test_set):
    class ItemsOnly:  # no .batch(): the loader indexes item by item
        def __len__(self):
            return len(test_set)

        def __getitem__(self, i):
            return test_set[i]

    fast = DataLoader(test_set, batch_size=50, shuffle=True, seed=1)
    slow = DataLoader(ItemsOnly(), batch_size=50, shuffle=True, seed=1)
    for (xf, yf), (xs, ys), _ in zip(fast, slow, range(3), strict=False):
        np.testing.assert_array_equal(xf.numpy(), xs.numpy())
        np.testing.assert_array_equal(yf.numpy(), ys.numpy())


def test_shuffle_draws_a_new_order_each_epoch():
    loader = DataLoader(_toy(20), batch_size=5, shuffle=True, seed=0)
    first, second = sum(_labels(loader), []), sum(_labels(loader), [])
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != second and first != list(range(20))
    again = DataLoader(_toy(20), batch_size=5, shuffle=True, seed=0)
    assert sum(_labels(again), []) == first  # same seed, same orders
    assert sum(_labels(DataLoader(_toy(20), batch_size=5)), []) == list(range(20))


def test_unseeded_loader_follows_manual_seed():
    tc.manual_seed(7)
    a = _labels(DataLoader(_toy(20), batch_size=5, shuffle=True))
    tc.manual_seed(7)
    b = _labels(DataLoader(_toy(20), batch_size=5, shuffle=True))
    assert a == b


def test_loader_state_resumes_mid_epoch_exactly():
    reference = DataLoader(_toy(23), batch_size=4, shuffle=True, seed=3)
    expected = _labels(reference) + _labels(reference)  # two epochs

    loader = DataLoader(_toy(23), batch_size=4, shuffle=True, seed=3)
    it = iter(loader)
    seen = [next(it)[1].tolist() for _ in range(2)]  # stop after 2 of 6 batches
    state = loader.state_dict()
    assert state["position"] == 2

    resumed = DataLoader(_toy(23), batch_size=4, shuffle=True, seed=99)
    resumed.load_state_dict(state)
    seen += _labels(resumed) + _labels(resumed)
    assert seen == expected


def test_subset_keeps_order_and_fast_path(test_set):
    sub = Subset(test_set, range(100))
    assert len(sub) == 100 and sub[0][1] == 7
    x, y = next(iter(DataLoader(sub, batch_size=100)))
    np.testing.assert_array_equal(y.numpy(), test_set.labels[:100])
    np.testing.assert_array_equal(x.numpy(), test_set.batch(np.arange(100))[0])
