"""Compute and print every number shown in docs/autograd.md, docs/conv2d.md and docs/pooling.md.

    python scripts/docs_examples.py            # all sections
    python scripts/docs_examples.py conv2d     # one doc: autograd, conv2d or pooling

Each ``*_example`` function runs tinygrad_conv and returns its numbers in a dict, so that
tests/test_docs_examples.py can check them; the ``print_*`` functions lay them out under the
headings the docs use. Everything is float64 with small integer inputs, so the numbers read
exactly.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import engine, naive
from tinygrad_conv.backends import reference as kernels
from tinygrad_conv.geometry import Window, conv_output_size

F64 = np.float64


def t64(data: Any, requires_grad: bool = False) -> tc.Tensor:
    """A float64 Tensor (readable numbers, no float32 rounding)."""
    return tc.tensor(data, requires_grad=requires_grad, dtype=F64)


def fmt(a: Any) -> str:
    """An array as aligned text; integers print without a trailing dot."""
    a = np.asarray(a.data if isinstance(a, tc.Tensor) else a)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    return np.array2string(a, separator=" ", max_line_width=100)


def flat(dout: np.ndarray) -> np.ndarray:
    """dout_flat: (N, F, H', W') -> (F, N*H'*W'), column (n, y, x) in row-major order."""
    return dout.transpose(1, 0, 2, 3).reshape(dout.shape[1], -1)


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


# ---------------------------------------------------------------------------------------------
# docs/autograd.md
# ---------------------------------------------------------------------------------------------


def diamond_graph() -> tuple[dict[str, tc.Tensor], tc.Tensor]:
    """x feeds L along two paths (x -> u -> v and x -> v): the diamond."""
    x = t64(2.0, requires_grad=True)
    w = t64(3.0, requires_grad=True)
    u = x * w
    v = u + x
    loss = v**2
    return {"x": x, "w": w, "u": u, "v": v, "L": loss}, loss


def walk_by_hand(root: tc.Tensor, names: dict[int, str]) -> list[tuple[str, str, str, float]]:
    """The loop of engine.run_backward, spelled out, logging each gradient it sends.

    Returns (from, op, to, value) rows; nothing is released, so the real backward can run after.
    """
    order = engine.topological_order(root)
    pending = {id(root): t64(1.0)}
    log = []
    with tc.no_grad():
        for node in reversed(order):
            g = pending.pop(id(node))
            if node.op is None:
                log.append((names[id(node)], "(leaf)", ".grad", g.item()))
                continue
            for parent, pg in zip(node.op.inputs, node.op.backward(g), strict=True):
                if pg is None or not parent.requires_grad:
                    continue
                pg = engine.sum_to_shape(pg, parent.shape)
                key = id(parent)
                pending[key] = pg if key not in pending else pending[key] + pg
                log.append((names[id(node)], node.op.name, names[key], pg.item()))
    return log


def diamond_example() -> dict[str, Any]:
    t, loss = diamond_graph()
    names = {id(v): k for k, v in t.items()}
    order = [names[id(n)] for n in engine.topological_order(loss)]
    log = walk_by_hand(loss, names)
    t["u"].retain_grad()
    t["v"].retain_grad()
    loss.backward()
    return {
        "values": {k: v.item() for k, v in t.items()},
        "ops": {k: v.op.name for k, v in t.items() if v.op is not None},
        "order": order,
        "log": log,
        "grads": {k: v.grad.item() for k, v in t.items() if k != "L"},
    }


def deep_chain_example(depth: int = 10_000) -> dict[str, Any]:
    """A chain far deeper than Python's recursion limit: the iterative sort handles it."""
    x = t64(1.0, requires_grad=True)
    y = x
    for _ in range(depth):
        y = y * 1.0 + 0.0
    y.backward()
    return {"depth": depth, "nodes": len(engine.topological_order(y)),
            "recursion_limit": sys.getrecursionlimit(), "grad": x.grad.item()}


def broadcast_example() -> dict[str, Any]:
    x = t64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = t64([10.0, 20.0, 30.0], requires_grad=True)  # (3,)  broadcast along rows
    c = t64([[1.0], [-1.0]], requires_grad=True)  # (2, 1) broadcast along columns
    y = x * b + c
    loss = y.sum()
    mul_op = y.parents[0].op
    raw_b = mul_op.backward(t64(np.ones((2, 3))))[1]  # what mul hands back for b, before sum_to
    loss.backward()
    return {"x": x.data, "b": b.data, "c": c.data, "y": y.data, "loss": loss.item(),
            "raw_grad_b": raw_b.data, "grad_b": b.grad.data, "grad_c": c.grad.data}


def retain_graph_example() -> dict[str, Any]:
    t, loss = diamond_graph()
    loss.backward(retain_graph=True)
    first = (t["x"].grad.item(), t["w"].grad.item())
    loss.backward()  # graph kept: runs again, grads accumulate
    second = (t["x"].grad.item(), t["w"].grad.item())
    try:
        loss.backward()  # the previous call released the graph
        error = None
    except RuntimeError as e:
        error = str(e)
    return {"first": first, "second": second, "error": error}


def higher_order_example() -> dict[str, Any]:
    """y = x**3 - 4x at x = 3: y, y', y'' and y''' by differentiating the grad again."""
    x = t64(3.0, requires_grad=True)
    y = x**3 - 4 * x
    y.backward(create_graph=True)
    d1 = x.grad
    x.grad = None  # keep the next derivative separate (grads accumulate otherwise)
    d1.backward(create_graph=True)
    d2 = x.grad
    x.grad = None
    d2.backward()
    d3 = x.grad
    return {"y": y.item(), "d1": d1.item(), "d2": d2.item(), "d3": d3.item(),
            "d1_op": d1.op.name, "d1_parents": [p.op.name if p.op else "leaf" for p in d1.parents]}


def print_autograd() -> None:
    section("autograd: the recorded graph (diamond)")
    r = diamond_example()
    for k, v in r["values"].items():
        op = r["ops"].get(k, "leaf")
        print(f"{k} = {fmt(v)}   op: {op}")
    print("topological order:", " ".join(r["order"]))
    section("autograd: the reverse walk")
    for src, op, dst, val in r["log"]:
        print(f"{src:>2} {op:>7} -> {dst:<5} {fmt(val)}")
    print("grads:", r["grads"])
    section("autograd: deep chain")
    print(deep_chain_example())
    section("autograd: broadcast reduction")
    r = broadcast_example()
    for k in ("x", "b", "c", "y"):
        print(f"{k} =\n{fmt(r[k])}")
    print("loss =", fmt(r["loss"]))
    print(f"mul's grad for b before sum_to  {r['raw_grad_b'].shape} =\n{fmt(r['raw_grad_b'])}")
    print(f"b.grad {r['grad_b'].shape} = {fmt(r['grad_b'])}")
    print(f"c.grad {r['grad_c'].shape} =\n{fmt(r['grad_c'])}")
    section("autograd: retain_graph")
    r = retain_graph_example()
    print("after 1st backward (x.grad, w.grad):", r["first"])
    print("after 2nd backward (x.grad, w.grad):", r["second"])
    print("3rd backward raises:", r["error"])
    section("autograd: create_graph")
    print(higher_order_example())


# ---------------------------------------------------------------------------------------------
# docs/conv2d.md
# ---------------------------------------------------------------------------------------------


def output_size_rows() -> list[dict[str, int]]:
    """H' from the formula next to the H' that F.conv2d actually produces."""
    cases = [  # H, kernel, stride, pad, dilation
        (4, 3, 1, 0, 1), (4, 3, 1, 1, 1), (5, 3, 2, 1, 1), (6, 3, 2, 0, 1),
        (28, 5, 1, 2, 1), (7, 3, 2, 0, 2),
    ]
    rows = []
    for h, k, s, p, d in cases:
        x = tc.zeros(1, 1, h, h, dtype=F64)
        w = tc.zeros(1, 1, k, k, dtype=F64)
        out = F.conv2d(x, w, stride=s, padding=p, dilation=d)
        rows.append({"H": h, "k": k, "s": s, "p": p, "d": d,
                     "numerator": h + 2 * p - d * (k - 1) - 1,
                     "formula": conv_output_size(h, k, s, p, d), "actual": out.shape[2]})
    return rows


def im2col(x: np.ndarray, kernel, stride, padding, dilation) -> np.ndarray:
    """The reference backend's X_col of x for one group: (C*HH*WW, N*H'*W')."""
    window = Window(x.shape, kernel, stride, padding, dilation)
    return kernels.im2col(x, window)[0]


def col2im(cols: np.ndarray, x_shape, kernel, stride, padding, dilation) -> np.ndarray:
    """The reference backend's col2im for one group: (C*HH*WW, N*H'*W') -> x_shape."""
    window = Window(tuple(x_shape), kernel, stride, padding, dilation)
    return kernels.col2im(cols[None], window)


def small_conv_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 4x4 example: pixels 1..16, a box filter and a 'centre' filter, bias (1, -1)."""
    x = np.arange(1, 17, dtype=F64).reshape(1, 1, 4, 4)
    w = np.zeros((2, 1, 3, 3))
    w[0] = 1.0  # box: sums the window
    w[1, 0, 1, 1] = 1.0  # centre: picks the window's middle pixel
    b = np.array([1.0, -1.0])
    return x, w, b


def im2col_example() -> dict[str, Any]:
    x, w, b = small_conv_inputs()
    cols = im2col(x, (3, 3), (1, 1), (0, 0), (1, 1))
    w_row = w.reshape(2, -1)
    gemm = w_row @ cols + b[:, None]
    out = F.conv2d(t64(x), t64(w), t64(b))
    return {"x": x[0, 0], "X_col": cols, "W_row": w_row, "gemm": gemm, "out": out.data}


def conv_backward_example() -> dict[str, Any]:
    """The three formulas on the 4x4 example with dout = 1 everywhere, against the op."""
    x, w, b = small_conv_inputs()
    xt, wt, bt = t64(x, True), t64(w, True), t64(b, True)
    out = F.conv2d(xt, wt, bt)
    dout = np.ones(out.shape)
    out.backward(dout)
    cols = im2col(x, (3, 3), (1, 1), (0, 0), (1, 1))
    dout_flat = flat(dout)  # (F, N*H'*W')
    db = dout.sum((0, 2, 3))
    dw = (dout_flat @ cols.T).reshape(w.shape)
    dcols = w.reshape(2, -1).T @ dout_flat
    dx = col2im(dcols, x.shape, (3, 3), (1, 1), (0, 0), (1, 1))
    loops = naive.conv2d_backward(dout, x, w)
    return {"dout_flat": dout_flat, "db": db, "dW": dw, "dcols": dcols, "dX": dx,
            "op": (xt.grad.data, wt.grad.data, bt.grad.data), "naive": loops}


def rotated_view(dout: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...], stride: int,
                 pad: int) -> dict[str, np.ndarray]:
    """dX as the loop tutorial derives it, step by step (groups 1, dilation 1, square sizes).

    1. dilate: put stride-1 zeros between the rows and columns of dout;
    2. frame:  pad by k-1-pad on every side (plus the rows/columns the floored forward never
               reached, at the bottom and right);
    3. rotate: flip the kernel 180 degrees and swap its in/out channels;
    4. convolve with stride 1: the result has the input's shape.
    """
    k, h = w.shape[2], x_shape[2]
    ho = dout.shape[2]
    n, f = dout.shape[:2]
    dilated = np.zeros((n, f, (ho - 1) * stride + 1, (ho - 1) * stride + 1))
    dilated[:, :, ::stride, ::stride] = dout
    extra = h + 2 * pad - k - (ho - 1) * stride  # rows the floored forward never read
    edge = k - 1 - pad
    framed = np.pad(dilated, ((0, 0), (0, 0), (edge, edge + extra), (edge, edge + extra)))
    rotated = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    dx = F.conv2d(t64(framed), t64(rotated)).data
    return {"dilated": dilated, "framed": framed, "rotated": rotated, "dX": dx}


def col2im_view(dout: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...], stride: int,
                pad: int) -> dict[str, np.ndarray]:
    """dX = col2im(W_flat.T @ dout_flat), with the library's kernels."""
    k = w.shape[2]
    dcols = w.reshape(w.shape[0], -1).T @ flat(dout)  # one channel: row order is (i, j)
    dx = col2im(dcols, x_shape, (k, k), (stride, stride), (pad, pad), (1, 1))
    return {"dcols": dcols, "dX": np.ascontiguousarray(dx)}


def op_input_grad(dout: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...], stride: int,
                  pad: int) -> np.ndarray:
    """dX from conv2d's own backward (the conv2d_grad_input op)."""
    x = tc.zeros(*x_shape, requires_grad=True, dtype=F64)
    out = F.conv2d(x, t64(w), stride=stride, padding=pad)
    out.backward(dout)
    return x.grad.data


def stride2_inputs() -> tuple[np.ndarray, np.ndarray, tuple[int, ...], int, int]:
    """5x5 input, 3x3 kernel, stride 2, padding 1 -> 3x3 output; one channel in and out."""
    w = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 3.0]]).reshape(1, 1, 3, 3)
    dout = np.array([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0], [1.0, 0.0, 1.0]]).reshape(1, 1, 3, 3)
    return dout, w, (1, 1, 5, 5), 2, 1


def stride2_example() -> dict[str, Any]:
    dout, w, x_shape, s, p = stride2_inputs()
    a = col2im_view(dout, w, x_shape, s, p)
    b = rotated_view(dout, w, x_shape, s, p)
    return {"W": w, "dout": dout, "col2im": a, "rotated": b,
            "op": op_input_grad(dout, w, x_shape, s, p),
            "naive_rotated": naive.conv2d_input_grad_rotated(dout, w, x_shape, (s, s), (p, p)),
            "max_diff": float(np.abs(a["dX"] - b["dX"]).max())}


def floor_example() -> dict[str, Any]:
    """6x6 input, 3x3 kernel, stride 2, no padding: 1 + 3 // 2 = 2 outputs; row 5 is never read."""
    dout, w = np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))
    a = col2im_view(dout, w, (1, 1, 6, 6), 2, 0)
    b = rotated_view(dout, w, (1, 1, 6, 6), 2, 0)
    return {"col2im": a["dX"], "rotated": b["dX"], "framed_shape": b["framed"].shape}


def random_views_agree(seed: int = 0) -> float:
    """Largest |difference| between dX from conv2d's backward (the col2im view), the rotated
    view and the loop reference, over random cases with several channels and images."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for h, k, s, p in [(5, 3, 2, 1), (6, 3, 2, 0), (7, 3, 3, 1), (8, 5, 2, 2), (6, 2, 1, 0)]:
        x_shape = (2, 3, h, h)
        w = rng.standard_normal((4, 3, k, k))
        ho = conv_output_size(h, k, s, p, 1)
        dout = rng.standard_normal((2, 4, ho, ho))
        a = op_input_grad(dout, w, x_shape, s, p)
        b = rotated_view(dout, w, x_shape, s, p)["dX"]
        c = naive.conv2d_backward(dout, np.zeros(x_shape), w, (s, s), (p, p))[0]
        worst = max(worst, float(np.abs(a - b).max()), float(np.abs(a - c).max()))
    return worst


def dilation_example() -> dict[str, Any]:
    """4x4 pixels 1..16, 2x2 kernel with dilation 2: each window spans 3x3, taps its corners."""
    x = np.arange(1, 17, dtype=F64).reshape(1, 1, 4, 4)
    cols = im2col(x, (2, 2), (1, 1), (0, 0), (2, 2))
    out = F.conv2d(t64(x), tc.ones(1, 1, 2, 2, dtype=F64), dilation=2)
    return {"X_col": cols, "out": out.data}


def groups_example() -> dict[str, Any]:
    """groups=2: the same as two separate convolutions on the two halves of the channels."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 5, 5))
    w = rng.standard_normal((6, 2, 3, 3))  # 6 filters, each sees 4 / 2 = 2 channels
    together = F.conv2d(t64(x), t64(w), groups=2).data
    halves = [F.conv2d(t64(x[:, 2 * g:2 * g + 2]), t64(w[3 * g:3 * g + 3])).data for g in (0, 1)]
    cols = im2col(x, (3, 3), (1, 1), (0, 0), (1, 1))
    return {"w_shape": w.shape, "X_col_shape": cols.shape, "out_shape": together.shape,
            "max_diff": float(np.abs(together - np.concatenate(halves, axis=1)).max())}


def layout_example() -> dict[str, Any]:
    """How the fast backend's conv2d output (N, F, H', W') sits in memory: axes by stride."""
    x = t64(np.ones((2, 3, 6, 6)))
    w = t64(np.ones((4, 3, 3, 3)))
    with tc.use_backend("fast"):
        out = F.conv2d(x, w).data
    order = tuple(int(a) for a in np.argsort(out.strides)[::-1])  # outermost axis first
    buffer = out.transpose(order)
    return {"shape": out.shape, "strides": out.strides, "itemsize": out.itemsize,
            "c_contiguous": out.flags.c_contiguous,
            "memory_order": "".join("NFHW"[a] for a in order),
            "buffer_shape": buffer.shape, "buffer_c_contiguous": buffer.flags.c_contiguous}


def double_backward_example() -> dict[str, Any]:
    """A gradient penalty: P = sum((dL/dx)**2) for L = sum(conv2d(x, W)**2), differentiated
    with respect to W, against central finite differences."""

    def penalty(w_data: np.ndarray, keep: list | None = None) -> tc.Tensor:
        x = t64(np.arange(9.0).reshape(1, 1, 3, 3) / 4, requires_grad=True)
        w = t64(w_data, requires_grad=True)
        loss = (F.conv2d(x, w) ** 2).sum()
        loss.backward(create_graph=True)
        if keep is not None:
            keep.extend([w, x.grad])
        return (x.grad**2).sum()

    w0 = np.array([[1.0, -1.0], [2.0, 0.5]]).reshape(1, 1, 2, 2)
    keep: list = []
    p = penalty(w0, keep)
    w, gx = keep
    w.grad = None  # drop dL/dW from the first backward; keep only dP/dW
    p.backward()
    numeric, eps = np.zeros(4), 1e-6
    for i in range(4):
        step = np.zeros(4)
        step[i] = eps
        hi = penalty(w0 + step.reshape(w0.shape)).item()
        lo = penalty(w0 - step.reshape(w0.shape)).item()
        numeric[i] = (hi - lo) / (2 * eps)
    # x.grad is the leaf's own copy (a clone op) of what conv2d_grad_input produced
    return {"P": p.item(), "grad_x_op": gx.parents[0].op.name, "grad_x_wrapper": gx.op.name,
            "dP_dW": w.grad.data.reshape(2, 2),
            "numeric": numeric.reshape(2, 2),
            "max_diff": float(np.abs(w.grad.data.ravel() - numeric).max())}


def print_conv2d() -> None:
    section("conv2d: output size")
    print(" H  k  s  p  d  H+2p-d(k-1)-1  H' formula  H' conv2d")
    for r in output_size_rows():
        print(f"{r['H']:>2} {r['k']:>2} {r['s']:>2} {r['p']:>2} {r['d']:>2} "
              f"{r['numerator']:>14} {r['formula']:>11} {r['actual']:>9}")
    section("conv2d: im2col on 4x4")
    r = im2col_example()
    print(f"x =\n{fmt(r['x'])}\nX_col {r['X_col'].shape} =\n{fmt(r['X_col'])}")
    print(f"W_row {r['W_row'].shape} =\n{fmt(r['W_row'])}")
    print(f"W_row @ X_col + b =\n{fmt(r['gemm'])}\nF.conv2d(x, w, b) =\n{fmt(r['out'])}")
    section("conv2d: backward on 4x4, dout = 1")
    r = conv_backward_example()
    print(f"db = {fmt(r['db'])}\ndW (2, 1, 3, 3) =\n{fmt(r['dW'])}")
    print(f"dcols = W_flat.T @ dout_flat {r['dcols'].shape} =\n{fmt(r['dcols'])}")
    print(f"dX = col2im(dcols) =\n{fmt(r['dX'][0, 0])}")
    section("conv2d: two views of dX, stride 2")
    r = stride2_example()
    print(f"W =\n{fmt(r['W'][0, 0])}\ndout =\n{fmt(r['dout'][0, 0])}")
    print(f"view 1, dcols {r['col2im']['dcols'].shape} =\n{fmt(r['col2im']['dcols'])}")
    print(f"view 1, dX = col2im(dcols) =\n{fmt(r['col2im']['dX'][0, 0])}")
    rv = r["rotated"]
    print(f"view 2, dilated dout =\n{fmt(rv['dilated'][0, 0])}")
    print(f"view 2, framed (pad k-1-p = 1) =\n{fmt(rv['framed'][0, 0])}")
    print(f"view 2, rotated kernel =\n{fmt(rv['rotated'][0, 0])}")
    print(f"view 2, dX = conv2d(framed, rotated) =\n{fmt(rv['dX'][0, 0])}")
    print(f"conv2d's backward dX =\n{fmt(r['op'][0, 0])}")
    print(f"naive.conv2d_input_grad_rotated =\n{fmt(r['naive_rotated'][0, 0])}")
    print("max |view 1 - view 2| =", r["max_diff"])
    section("conv2d: the floor case")
    r = floor_example()
    print(f"framed shape {r['framed_shape']}\ncol2im view =\n{fmt(r['col2im'][0, 0])}")
    print(f"rotated view =\n{fmt(r['rotated'][0, 0])}")
    print("random multi-channel cases, max |difference| =", random_views_agree())
    section("conv2d: dilation")
    r = dilation_example()
    print(f"X_col (dilation 2) =\n{fmt(r['X_col'])}\nout (ones kernel) =\n{fmt(r['out'][0, 0])}")
    section("conv2d: groups")
    print(groups_example())
    section("conv2d: memory layout")
    print(layout_example())
    section("conv2d: second derivatives")
    r = double_backward_example()
    print(f"P = {r['P']}   dL/dx made by op: {r['grad_x_op']}")
    print(f"dP/dW =\n{r['dP_dW']}\nfinite differences =\n{r['numeric']}")
    print("max |difference| =", r["max_diff"])


# ---------------------------------------------------------------------------------------------
# docs/pooling.md
# ---------------------------------------------------------------------------------------------


def pool_input() -> np.ndarray:
    """4x4 with a tie (two 7s) in the top-right window."""
    return np.array([[1.0, 3.0, 7.0, 7.0],
                     [4.0, 2.0, 0.0, 5.0],
                     [0.0, 6.0, 1.0, 2.0],
                     [5.0, 1.0, 8.0, 3.0]]).reshape(1, 1, 4, 4)


POOL_DOUT = np.array([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 1, 2, 2)


def max_pool_example() -> dict[str, Any]:
    x = t64(pool_input(), requires_grad=True)
    out = F.max_pool2d(x, 2)
    out.backward(POOL_DOUT)
    return {"x": x.data[0, 0], "out": out.data[0, 0],
            "dX": x.grad.data[0, 0], "backward_op": "max_pool2d_backward"}


def avg_pool_example() -> dict[str, Any]:
    x = t64(pool_input(), requires_grad=True)
    out = F.avg_pool2d(x, 2)
    out.backward(POOL_DOUT)
    return {"out": out.data[0, 0], "dX": x.grad.data[0, 0]}


def overlap_example() -> dict[str, Any]:
    """kernel 3, stride 1 on the same 4x4: windows overlap, so pixels collect several shares."""
    x = t64(pool_input(), requires_grad=True)
    y = t64(pool_input(), requires_grad=True)
    m = F.max_pool2d(x, 3, stride=1)
    a = F.avg_pool2d(y, 3, stride=1)
    m.sum().backward()
    a.sum().backward()
    return {"max_out": m.data[0, 0], "max_dX": x.grad.data[0, 0],
            "avg_out": a.data[0, 0], "avg_dX": y.grad.data[0, 0]}


def padding_example() -> dict[str, Any]:
    """padding 1 around an all-negative 2x2: max ignores the border, the average counts it."""
    x = -np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    return {"x": x[0, 0], "max": F.max_pool2d(t64(x), 2, stride=1, padding=1).data[0, 0],
            "avg": F.avg_pool2d(t64(x), 2, stride=1, padding=1).data[0, 0]}


def graph_op_names(t: tc.Tensor) -> list[str]:
    """The names of the ops in the graph that made ``t``, in topological order, once each."""
    names: list[str] = []
    for node in engine.topological_order(t):
        if node.op is not None and node.op.name not in names:
            names.append(node.op.name)
    return names


def pool_graph_example() -> dict[str, dict[str, list[str]]]:
    """Which ops a pool's first and second derivatives are made of (create_graph=True)."""
    found = {}
    for pool in (F.max_pool2d, F.avg_pool2d):
        x = t64(pool_input(), requires_grad=True)
        (pool(x, 2) ** 2).sum().backward(create_graph=True)
        g1 = x.grad  # d/dx sum(pool(x)**2), itself a recorded tensor
        x.grad = None
        (g1 * g1).sum().backward(create_graph=True)
        found[pool.__name__] = {"first": graph_op_names(g1), "second": graph_op_names(x.grad)}
    return found


def print_pooling() -> None:
    section("pooling: max")
    r = max_pool_example()
    print(f"x =\n{fmt(r['x'])}\nmax_pool2d(x, 2) =\n{fmt(r['out'])}")
    print(f"dout =\n{fmt(POOL_DOUT[0, 0])}\ndX =\n{fmt(r['dX'])}")
    section("pooling: average")
    r = avg_pool_example()
    print(f"avg_pool2d(x, 2) =\n{fmt(r['out'])}\ndX =\n{fmt(r['dX'])}")
    section("pooling: overlapping windows (kernel 3, stride 1), dout = 1")
    r = overlap_example()
    for k in ("max_out", "max_dX", "avg_out", "avg_dX"):
        print(f"{k} =\n{fmt(r[k])}")
    print(f"avg_dX * 9 =\n{fmt(np.round(r['avg_dX'] * 9, 12))}")
    section("pooling: padding")
    r = padding_example()
    print(f"x =\n{fmt(r['x'])}\nmax pad 1 =\n{fmt(r['max'])}\navg pad 1 =\n{fmt(r['avg'])}")
    section("pooling: backward ops")
    print(pool_graph_example())


SECTIONS = {"autograd": print_autograd, "conv2d": print_conv2d, "pooling": print_pooling}


def main(argv: list[str]) -> None:
    np.set_printoptions(linewidth=100)
    for name in argv or list(SECTIONS):
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        SECTIONS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
