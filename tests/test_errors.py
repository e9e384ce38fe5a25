"""Bad input gives an error of the right type whose message names the op and the shapes
(or values) received and expected."""

import re

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F


def raises(exc, *fragments):
    """pytest.raises that also checks every fragment appears verbatim in the message."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# ---- conv2d ----------------------------------------------------------------------------


def test_conv2d_channel_mismatch():
    with raises(ValueError, "conv2d", "3 channels", "(4, 2, 3, 3)"):
        F.conv2d(tc.ones(1, 3, 5, 5), tc.ones(4, 2, 3, 3))


def test_conv2d_channel_mismatch_names_the_input_shape():
    with raises(ValueError, "(1, 3, 5, 5)"):
        F.conv2d(tc.ones(1, 3, 5, 5), tc.ones(4, 2, 3, 3))


def test_conv2d_kernel_larger_than_padded_input():
    with raises(ValueError, "conv2d", "kernel 5x5", "padded input 4x4", "(1, 3, 4, 4)"):
        F.conv2d(tc.ones(1, 3, 4, 4), tc.ones(2, 3, 5, 5))
    with raises(ValueError, "conv2d", "spanning 5x5", "padded input 4x4"):
        F.conv2d(tc.ones(1, 3, 4, 4), tc.ones(2, 3, 3, 3), dilation=2)
    # padding makes it fit: no error
    assert F.conv2d(tc.ones(1, 3, 4, 4), tc.ones(2, 3, 5, 5), padding=1).shape == (1, 2, 2, 2)


def test_conv2d_needs_4d_input_and_weight():
    with raises(ValueError, "conv2d", "4-D input", "(3, 5, 5)"):
        F.conv2d(tc.ones(3, 5, 5), tc.ones(4, 3, 3, 3))
    with raises(ValueError, "conv2d", "4-D weight", "(4, 3, 3)"):
        F.conv2d(tc.ones(1, 3, 5, 5), tc.ones(4, 3, 3))


def test_conv2d_groups_must_divide_channels():
    with raises(ValueError, "conv2d", "groups=2", "input channels (3)"):
        F.conv2d(tc.ones(1, 3, 5, 5), tc.ones(4, 1, 3, 3), groups=2)
    with raises(ValueError, "conv2d", "groups=2", "output channels (3)"):
        F.conv2d(tc.ones(1, 4, 5, 5), tc.ones(3, 2, 3, 3), groups=2)
    with raises(ValueError, "conv2d", "groups"):
        F.conv2d(tc.ones(1, 4, 5, 5), tc.ones(4, 4, 3, 3), groups=0)


def test_conv2d_other_bad_arguments():
    with raises(TypeError, "conv2d", "int64"):
        F.conv2d(tc.Tensor(np.ones((1, 1, 3, 3), dtype=np.int64)), tc.ones(1, 1, 1, 1))
    with raises(ValueError, "conv2d", "stride=(0, 0)"):
        F.conv2d(tc.ones(1, 1, 3, 3), tc.ones(1, 1, 1, 1), stride=0)
    with raises(TypeError, "conv2d", "stride", "(1, 2, 3)"):
        F.conv2d(tc.ones(1, 1, 3, 3), tc.ones(1, 1, 1, 1), stride=(1, 2, 3))
    with raises(ValueError, "conv2d", "bias", "(2,)", "(3,)"):
        F.conv2d(tc.ones(1, 1, 3, 3), tc.ones(2, 1, 1, 1), tc.ones(3))


# ---- pools -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pool_kernel_too_large(name):
    fn = getattr(F, name)
    with raises(ValueError, name, "kernel (3, 3)", "padded input 2x2", "(1, 1, 2, 2)"):
        fn(tc.ones(1, 1, 2, 2), 3)
    with raises(ValueError, name, "kernel (3, 1)", "2x5"):
        fn(tc.ones(1, 1, 2, 5), (3, 1))


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pool_other_bad_arguments(name):
    fn = getattr(F, name)
    with raises(ValueError, name, "4-D input", "(1, 4, 4)"):
        fn(tc.ones(1, 4, 4), 2)
    with raises(ValueError, name, "padding (2, 2)", "kernel size (2, 2)"):
        fn(tc.ones(1, 1, 4, 4), 2, padding=2)
    with raises(ValueError, name, ">= 1"):
        fn(tc.ones(1, 1, 4, 4), 2, stride=0)


# ---- losses ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.uint8])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_class_index_out_of_range(loss, dtype):
    fn = getattr(F, loss)
    with raises(IndexError, loss, "target[1] = 5", "4 classes"):
        fn(tc.ones(3, 4), np.array([0, 5, 1], dtype))
    if np.dtype(dtype).kind == "i":
        with raises(IndexError, loss, "target[2] = -1", "4 classes"):
            fn(tc.ones(3, 4), np.array([0, 1, -1], dtype))
        strided = np.array([0, 9, -1, 9, 3, 9], dtype)[::2]  # a view, not contiguous
        with raises(IndexError, loss, "target[1] = -1", "4 classes"):
            fn(tc.ones(3, 4), strided)
    assert np.isfinite(fn(tc.ones(3, 4), np.array([0, 3, 1], dtype)).item())  # in range: fine


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_non_integer_target(loss):
    with raises(TypeError, loss, "integer class indices", "float64"):
        getattr(F, loss)(tc.ones(3, 4), np.array([0.0, 1.0, 1.0]))
    with raises(TypeError, loss, "float32"):
        getattr(F, loss)(tc.ones(3, 4), tc.Tensor([0.0, 1.0, 1.0]))


def test_cross_entropy_shape_and_reduction_errors():
    with raises(ValueError, "cross_entropy", "(3,)", "(3, 4)", "(2,)"):
        F.cross_entropy(tc.ones(3, 4), np.array([0, 1]))
    with raises(ValueError, "cross_entropy", "(N, K)", "(4,)"):
        F.cross_entropy(tc.ones(4), np.array([0]))
    with raises(ValueError, "cross_entropy", "reduction", "'avg'"):
        F.cross_entropy(tc.ones(3, 4), np.array([0, 1, 1]), reduction="avg")


def test_mse_loss_shape_mismatch():
    with raises(ValueError, "mse_loss", "(2, 3)", "(3, 2)"):
        F.mse_loss(tc.ones(2, 3), tc.ones(3, 2))


# ---- autograd --------------------------------------------------------------------------


def test_backward_on_non_scalar_without_grad():
    with raises(RuntimeError, "backward", "one-element", "(2, 3)"):
        (tc.ones(2, 3, requires_grad=True) * 2).backward()


def test_backward_with_wrong_grad_shape():
    with raises(RuntimeError, "backward", "(3,)", "(2,)"):
        (tc.ones(2, requires_grad=True) * 2).backward(np.ones(3))


# ---- shapes of elementwise, matmul, movement -------------------------------------------


@pytest.mark.parametrize(
    "name, fn",
    [("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
     ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b),
     ("less", lambda a, b: a < b), ("equal", lambda a, b: a == b)],
)
def test_binary_ops_that_cannot_broadcast(name, fn):
    with raises(ValueError, f"{name}:", "(2, 3)", "(4,)", "broadcast"):
        fn(tc.ones(2, 3), tc.ones(4))
    with raises(ValueError, f"{name}:", "(2, 3)", "(4,)"):
        fn(tc.ones(2, 3), np.ones(4))


def test_matmul_misalignment():
    with raises(ValueError, "matmul", "(2, 3)", "(4, 5)", "(3)", "(4)"):
        tc.ones(2, 3) @ tc.ones(4, 5)
    with raises(ValueError, "matmul", "(3,)", "(4,)"):
        tc.ones(3) @ tc.ones(4)
    with raises(ValueError, "matmul", "(2, 3, 4)", "(3, 4, 5)", "batch"):
        tc.ones(2, 3, 4) @ tc.ones(3, 4, 5)
    with raises(ValueError, "matmul", "()"):
        tc.Tensor(1.0) @ tc.ones(4)


def test_linear_shape_errors():
    with raises(ValueError, "linear", "(2, 3)", "(4, 5)"):
        F.linear(tc.ones(2, 3), tc.ones(4, 5))
    with raises(ValueError, "linear", "bias", "(4,)", "(3,)"):
        F.linear(tc.ones(2, 3), tc.ones(4, 3), tc.ones(3))


def test_reshape_to_the_wrong_size():
    with raises(ValueError, "reshape", "(2, 3)", "6 elements", "(4, 2)"):
        tc.ones(2, 3).reshape(4, 2)


def test_movement_and_reduction_errors():
    with raises(ValueError, "sum", "axis 2", "(2, 3)"):
        tc.ones(2, 3).sum(axis=2)
    with raises(IndexError, "max", "dim -3", "(2, 3)"):  # PyTorch's type
        tc.ones(2, 3).max(axis=-3)
    with raises(ValueError, "max", "axis -3", "(2, 3)"):
        tc.ones(2, 3).amax(axis=-3)
    with raises(ValueError, "softmax", "axis 2", "(2, 3)"):
        F.softmax(tc.ones(2, 3), axis=2)
    with raises(ValueError, "permute", "(0, 0)"):
        tc.ones(2, 3).permute(0, 0)
    with raises(ValueError, "cat", "(2, 3)", "(2, 4)"):
        tc.cat([tc.ones(2, 3), tc.ones(2, 4)])
    with raises(ValueError, "broadcast", "(2, 3)", "(4, 3)"):
        tc.ones(2, 3).expand(4, 3)
    with raises(IndexError, "getitem", "(2, 3)"):
        tc.ones(2, 3)[5]
    with raises(IndexError, "getitem", "(2, 3)"):
        tc.ones(2, 3)[np.array([True, False, True])]
    with raises(ValueError, "pad", "non-negative"):
        F.pad(tc.ones(2), (-1, 1))
    with raises(ValueError, "max", "empty", "(0, 3)"):
        tc.ones(0, 3).max()


def test_other_functional_errors():
    with raises(ValueError, "dropout", "1.5"):
        F.dropout(tc.ones(2), 1.5)
    with raises(ValueError, "batch_norm", "running_mean", "(3,)", "(4,)"):
        F.batch_norm(tc.ones(2, 3), np.zeros(4), np.ones(4), training=True)
    with raises(ValueError, "batch_norm", "(1, 3)"):
        F.batch_norm(tc.ones(1, 3), np.zeros(3), np.ones(3), training=True)
    with raises(ValueError, "batch_norm", "running"):
        F.batch_norm(tc.ones(2, 3), None, None, training=False)


def test_conv2d_checks_hold_on_every_call_with_the_same_shapes():
    # the shape checks are cached per shapes: a bad call must fail each time, and a good
    # call after it (same shapes as an earlier good one) must still give the right settings
    w = tc.ones(4, 3, 3, 3, requires_grad=True)
    good = F.conv2d(tc.ones(1, 3, 5, 5), w, padding=1)
    for _ in range(2):
        with raises(ValueError, "conv2d", "3 channels"):
            F.conv2d(tc.ones(1, 3, 5, 5), tc.ones(4, 2, 3, 3))
    again = F.conv2d(tc.ones(1, 3, 5, 5), w, padding=1)
    assert again.shape == good.shape == (1, 4, 5, 5)
    assert again.op.attrs == good.op.attrs and again.op.attrs is not good.op.attrs


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pool_checks_hold_on_every_call_with_the_same_shapes(name):
    # pooling's shape checks are cached per shapes too (see the conv2d test above)
    fn = getattr(F, name)
    good = fn(tc.ones(1, 2, 4, 4, requires_grad=True), 2)
    for _ in range(2):
        with raises(ValueError, name, "larger than the padded input"):
            fn(tc.ones(1, 2, 1, 1), 2)
        with raises(TypeError, name, "float"):
            fn(tc.Tensor(np.ones((1, 2, 4, 4), np.int64)), 2)
    again = fn(tc.ones(1, 2, 4, 4, requires_grad=True), 2)
    assert again.shape == good.shape == (1, 2, 2, 2)
    assert again.op.attrs == good.op.attrs and again.op.attrs is not good.op.attrs
