"""default_collate, TensorDataset, DataLoader over plain lists and MNIST's transforms
(the values PyTorch's give are checked in test_conformance_nn.py; these run without it)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
from _mnist import require_mnist

import tinygrad_conv as tc
from tinygrad_conv.data import MNIST, DataLoader, TensorDataset, default_collate


def test_default_collate_types_and_values():
    items = [(np.full((2,), i, np.float32), i, float(i), True, "s") for i in range(3)]
    x, ints, floats, flags, names = default_collate(items)
    np.testing.assert_array_equal(x.data, [[0, 0], [1, 1], [2, 2]])
    assert x.dtype == tc.float32 and ints.dtype == tc.int64 and floats.dtype == tc.float64
    assert flags.dtype == tc.bool and names == ["s", "s", "s"]
    Pair = namedtuple("Pair", "a b")
    out = default_collate([Pair(tc.ones(2), 1), Pair(tc.zeros(2), 2)])
    assert isinstance(out, Pair) and out.a.shape == (2, 2) and out.b.tolist() == [1, 2]
    out = default_collate([{"k": 1}, {"k": 5}])
    assert out["k"].tolist() == [1, 5]
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([(1, 2), (1,)])
    with pytest.raises(TypeError, match="object"):
        default_collate([object()])


def test_loader_over_bare_tensors_and_pairs():
    xs = [tc.tensor([float(i), -i]) for i in range(5)]
    batches = list(DataLoader(xs, batch_size=2))
    assert [b.shape for b in batches] == [(2, 2), (2, 2), (1, 2)]
    np.testing.assert_array_equal(batches[2].data, [[4.0, -4.0]])
    pairs = [(x, i) for i, x in enumerate(xs)]
    (x, y), *_ = DataLoader(pairs, batch_size=3)
    assert x.shape == (3, 2) and y.tolist() == [0, 1, 2]
    collated = list(DataLoader(pairs, batch_size=5, collate_fn=lambda items: len(items)))
    assert collated == [5]


def test_tensor_dataset_items_and_batches():
    x, y = tc.arange(12).reshape(6, 2), tc.tensor([5, 4, 3, 2, 1, 0])
    ds = TensorDataset(x, y)
    a, b = ds[1]
    assert a.tolist() == [2, 3] and b.tolist() == 4 and len(ds) == 6
    bx, by = next(iter(DataLoader(ds, batch_size=4)))
    np.testing.assert_array_equal(bx.data, x.data[:4])
    np.testing.assert_array_equal(by.data, y.data[:4])


def test_mnist_transforms_apply_to_items_and_batches():
    root = require_mnist()
    ds = MNIST(root, train=False, download=False, transform=lambda img: img[0, :2, :2] * 0 + 1,
               target_transform=lambda label: label + 100)
    plain = MNIST(root, train=False, download=False)
    x, y = ds[3]
    assert x.shape == (2, 2) and np.all(x == 1) and y == plain[3][1] + 100
    bx, by = next(iter(DataLoader(ds, batch_size=4)))
    assert bx.shape == (4, 2, 2) and by.tolist() == (plain.labels[:4] + 100).tolist()


def test_pytorch_import_paths():
    import tinygrad_conv.nn.functional as F
    from tinygrad_conv.utils.data import DataLoader as Loader

    assert F is tc.functional and F.relu is tc.functional.relu
    assert Loader is DataLoader and tc.utils.data.TensorDataset is TensorDataset
