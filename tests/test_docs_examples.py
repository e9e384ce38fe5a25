"""The numbers in docs/autograd.md, docs/conv2d.md and docs/pooling.md, checked.

scripts/docs_examples.py computes every number the docs show; here its functions run and the
key facts are asserted against values written out by hand from the definitions (not pasted
from the script's output), so a change in the library that moves a documented number fails.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "docs_examples.py"


def _load():
    spec = importlib.util.spec_from_file_location("docs_examples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_examples", module)
    spec.loader.exec_module(module)
    return module


ex = _load()


# ---- docs/autograd.md ------------------------------------------------------------------------


def test_diamond_values_order_and_grads():
    r = ex.diamond_example()
    assert r["values"] == {"x": 2.0, "w": 3.0, "u": 6.0, "v": 8.0, "L": 64.0}
    assert r["ops"] == {"u": "mul", "v": "add", "L": "pow"}
    assert r["order"] == ["x", "w", "u", "v", "L"]
    # L = (x*w + x)**2: dL/dv = 2v = 16, dL/dx = 16*(w + 1) = 64, dL/dw = 16*x = 32
    assert r["grads"] == {"x": 64.0, "w": 32.0, "u": 16.0, "v": 16.0}


def test_walk_by_hand_sends_both_diamond_contributions_to_x():
    log = ex.diamond_example()["log"]
    assert log == [
        ("L", "pow", "v", 16.0),
        ("v", "add", "u", 16.0),
        ("v", "add", "x", 16.0),
        ("u", "mul", "x", 48.0),
        ("u", "mul", "w", 32.0),
        ("w", "(leaf)", ".grad", 32.0),
        ("x", "(leaf)", ".grad", 64.0),  # 16 + 48, summed before x is visited
    ]


def test_deep_chain_needs_no_recursion():
    r = ex.deep_chain_example()
    assert r["depth"] > r["recursion_limit"]
    assert r["nodes"] == 2 * r["depth"] + 1
    assert r["grad"] == 1.0


def test_broadcast_reduction():
    r = ex.broadcast_example()
    assert r["raw_grad_b"].shape == (2, 3)
    np.testing.assert_array_equal(r["grad_b"], [1 + 4, 2 + 5, 3 + 6])
    np.testing.assert_array_equal(r["grad_c"], [[3.0], [3.0]])
    assert r["loss"] == 11 + 41 + 91 + 39 + 99 + 179


def test_retain_graph_then_release():
    r = ex.retain_graph_example()
    assert r["first"] == (64.0, 32.0)
    assert r["second"] == (128.0, 64.0)
    assert r["error"] is not None and "retain_graph=True" in r["error"]


def test_higher_order_derivatives():
    r = ex.higher_order_example()
    x = 3.0
    assert r["y"] == x**3 - 4 * x
    assert r["d1"] == 3 * x**2 - 4
    assert r["d2"] == 6 * x
    assert r["d3"] == 6.0
    assert r["d1_op"] == "clone"  # each leaf gets its own copy of its grad
    assert r["d1_parents"] == ["add"]  # the sum of the two paths from x


# ---- docs/conv2d.md --------------------------------------------------------------------------


def test_output_size_formula_matches_conv2d():
    rows = ex.output_size_rows()
    for r in rows:
        assert r["formula"] == r["actual"] == 1 + r["numerator"] // r["s"]
    floor_case = [r for r in rows if (r["H"], r["k"], r["s"], r["p"]) == (6, 3, 2, 0)][0]
    assert floor_case["actual"] == 2  # (6 - 3) / 2 = 1.5, floored


def test_im2col_of_the_4x4_example():
    # x[r, c] = 4r + c + 1; row (i, j) of X_col, column (y, x): x[y + i, x + j],
    # columns in the order (0,0), (0,1), (1,0), (1,1).
    expected = np.array([
        [1, 2, 5, 6],  # (i, j) = (0, 0)
        [2, 3, 6, 7],  # (0, 1)
        [3, 4, 7, 8],  # (0, 2)
        [5, 6, 9, 10],  # (1, 0)
        [6, 7, 10, 11],  # (1, 1)
        [7, 8, 11, 12],  # (1, 2)
        [9, 10, 13, 14],  # (2, 0)
        [10, 11, 14, 15],  # (2, 1)
        [11, 12, 15, 16],  # (2, 2)
    ], dtype=float)
    r = ex.im2col_example()
    np.testing.assert_array_equal(r["X_col"], expected)
    # box filter: the sum of each 3x3 window, + 1; centre filter: the middle pixel, - 1
    np.testing.assert_array_equal(r["out"][0, 0], [[54 + 1, 63 + 1], [90 + 1, 99 + 1]])
    np.testing.assert_array_equal(r["out"][0, 1], [[6 - 1, 7 - 1], [10 - 1, 11 - 1]])
    np.testing.assert_array_equal(r["gemm"], r["out"].reshape(2, 4))


def test_three_backward_formulas_on_the_4x4_example():
    r = ex.conv_backward_example()
    np.testing.assert_array_equal(r["db"], [4.0, 4.0])
    window_sums = np.array([[14, 18, 22], [30, 34, 38], [46, 50, 54]], dtype=float)
    np.testing.assert_array_equal(r["dW"][0, 0], window_sums)
    np.testing.assert_array_equal(r["dW"][1, 0], window_sums)
    # how many windows cover each pixel, plus 1 where a window's centre sits
    coverage = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]], dtype=float)
    centres = np.zeros((4, 4))
    centres[1:3, 1:3] = 1
    np.testing.assert_array_equal(r["dX"][0, 0], coverage + centres)
    for mine, op, loops in zip((r["dX"], r["dW"], r["db"]), r["op"], r["naive"], strict=True):
        np.testing.assert_allclose(op, mine, atol=1e-12)
        np.testing.assert_allclose(loops, mine, atol=1e-12)


def test_two_views_of_dx_agree_on_the_stride2_example():
    r = ex.stride2_example()
    a, b = r["col2im"]["dX"], r["rotated"]["dX"]
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(r["op"], a, atol=1e-6)
    np.testing.assert_allclose(r["naive_rotated"], a, atol=1e-6)
    # a few entries by hand: input (r, c) is padded (r+1, c+1), seen by output (y, x) at
    # kernel offset (r+1-2y, c+1-2x)
    dx = a[0, 0]
    assert dx[0, 0] == 1.0 * 1.0  # W[1,1] * dout[0,0]
    assert dx[0, 4] == 1.0 * 2.0  # W[1,1] * dout[0,2]
    assert dx[1, 1] == 3 * 1 + (-1) * 0 + 0 * 0 + 1 * (-1)  # four windows meet at (2, 2)
    # the rotated kernel is W flipped in both directions
    np.testing.assert_array_equal(r["rotated"]["rotated"][0, 0], [[3, 0, -1], [0, 1, 0],
                                                                  [0, 2, 1]])
    assert r["rotated"]["framed"].shape[2:] == (7, 7)  # 5 dilated + 2 * (3 - 1 - 1)


def test_floor_case_gets_zero_gradient_where_the_forward_never_looked():
    r = ex.floor_example()
    np.testing.assert_allclose(r["col2im"], r["rotated"], atol=1e-12)
    assert np.all(r["col2im"][0, 0, 5, :] == 0) and np.all(r["col2im"][0, 0, :, 5] == 0)
    assert r["col2im"][0, 0, 2, 2] == 4.0  # the pixel all four windows share


def test_two_views_agree_on_random_multichannel_cases():
    assert ex.random_views_agree() < 1e-9


def test_dilation_im2col():
    r = ex.dilation_example()
    # kernel offsets (0,0), (0,2), (2,0), (2,2) of each 3x3 span
    expected = np.array([[1, 2, 5, 6], [3, 4, 7, 8], [9, 10, 13, 14], [11, 12, 15, 16]])
    np.testing.assert_array_equal(r["X_col"], expected)
    np.testing.assert_array_equal(r["out"][0, 0], [[1 + 3 + 9 + 11, 2 + 4 + 10 + 12],
                                                   [5 + 7 + 13 + 15, 6 + 8 + 14 + 16]])


def test_groups_are_separate_convolutions():
    r = ex.groups_example()
    assert r["max_diff"] < 1e-12
    assert r["out_shape"] == (1, 6, 3, 3)


def test_layout_facts():
    r = ex.layout_example()
    assert r["shape"] == (2, 4, 4, 4)
    assert r["buffer_c_contiguous"]  # the output is a transposed view of one dense buffer
    # docs/conv2d.md section 7: channels last in memory, (N, H', W', F)
    assert r["memory_order"] == "NHWF"
    assert r["strides"] == (512, 8, 128, 32)


def test_double_backward_through_conv_matches_finite_differences():
    r = ex.double_backward_example()
    assert r["grad_x_op"] == "conv2d_grad_input"
    assert r["grad_x_wrapper"] == "clone"
    assert r["max_diff"] < 1e-5


# ---- docs/pooling.md -------------------------------------------------------------------------


def test_max_pool_routes_to_the_first_maximum():
    r = ex.max_pool_example()
    np.testing.assert_array_equal(r["out"], [[4, 7], [6, 8]])
    expected = np.zeros((4, 4))
    expected[1, 0] = 10  # 4 wins the top-left window
    expected[0, 2] = 20  # the first of the two 7s wins the tie
    expected[2, 1] = 30
    expected[3, 2] = 40
    np.testing.assert_array_equal(r["dX"], expected)


def test_avg_pool_spreads_evenly():
    r = ex.avg_pool_example()
    np.testing.assert_array_equal(r["out"], [[10 / 4, 19 / 4], [12 / 4, 14 / 4]])
    quarter = np.kron(np.array([[10, 20], [30, 40]]) / 4, np.ones((2, 2)))
    np.testing.assert_array_equal(r["dX"], quarter)


def test_overlapping_windows_accumulate():
    r = ex.overlap_example()
    np.testing.assert_array_equal(r["max_out"], [[7, 7], [8, 8]])
    assert r["max_dX"][0, 2] == 2 and r["max_dX"][3, 2] == 2 and r["max_dX"].sum() == 4
    coverage = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]) / 9
    np.testing.assert_allclose(r["avg_dX"], coverage, atol=1e-15)


def test_padding_never_wins_the_max_but_counts_in_the_average():
    r = ex.padding_example()
    assert r["max"][0, 0] == -1.0  # a window of three pads and -1
    assert r["avg"][0, 0] == -1.0 / 4


def test_pool_backward_ops():
    r = ex.pool_graph_example()
    assert "max_pool2d_backward" in r["max_pool2d"]["first"]
    assert "max_pool2d_gather" in r["max_pool2d"]["second"]
    assert "avg_pool2d_backward" in r["avg_pool2d"]["first"]


# ---- the script itself, and PyTorch as an outside referee ------------------------------------


def test_script_prints_every_section(capsys):
    ex.main([])
    text = capsys.readouterr().out
    for heading in ("autograd: the reverse walk", "conv2d: two views of dX, stride 2",
                    "pooling: max"):
        assert heading in text


def test_stride2_example_against_pytorch():
    torch = pytest.importorskip("torch")
    dout, w, x_shape, s, p = ex.stride2_inputs()
    x = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.conv2d(x, torch.tensor(w), stride=s, padding=p)
    out.backward(torch.tensor(dout))
    np.testing.assert_allclose(x.grad.numpy(), ex.stride2_example()["op"], atol=1e-12)


def test_pooling_examples_against_pytorch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = torch.tensor(ex.pool_input(), requires_grad=True)
    tf.max_pool2d(x, 2).backward(torch.tensor(ex.POOL_DOUT))
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], ex.max_pool_example()["dX"])
    x.grad = None
    tf.max_pool2d(x, 3, stride=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], ex.overlap_example()["max_dX"])
    r = ex.padding_example()
    xt = torch.tensor(r["x"][None, None])
    np.testing.assert_allclose(tf.max_pool2d(xt, 2, stride=1, padding=1)[0, 0].numpy(), r["max"])
    np.testing.assert_allclose(tf.avg_pool2d(xt, 2, stride=1, padding=1)[0, 0].numpy(), r["avg"])
