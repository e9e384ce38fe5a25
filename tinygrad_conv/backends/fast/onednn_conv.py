"""oneDNN's own convolutions: the JIT-compiled direct kernels PyTorch's CPU conv2d runs.

The same ``libdnnl`` whose sgemm ``gemm.py`` calls also has convolution primitives: forward,
backward data (dX) and backward weights (dW), compiled for the machine's vector width at
first use. Where they beat im2col + GEMM (few input channels, strides, 5x5 windows; see
docs/performance.md) the fast backend runs them as the algorithm ``onednn``.

How it is called, through ctypes and oneDNN's C API:

- each thread of the pool runs the primitive on its slice of the batch with one OpenMP
  thread (as the GEMMs do), so no OpenMP team is ever started: the process can fork, and no
  OpenMP threads spin beside ours. dW's per-thread sums are added in a fixed order;
- the primitive chooses its own memory layouts (format ``any``); our arrays are described
  by their strides, and reorders copy to and from the chosen layouts where they differ;
- a plan (primitive descriptors, primitives, memory objects) is made once per pass, shapes,
  strides and thread, and kept for the process: later calls only set the data pointers.
  Plans are made at one OpenMP thread too: oneDNN sizes a primitive's work split when it is
  made, and one made at two threads started an OpenMP team of two for every call (its
  threads then spun beside ours: a batch-64 step took 23 ms instead of 12).

``available()`` is False without oneDNN (or with ``TINYGRAD_CONV_GEMM=numpy``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import threading

import numpy as np

from ...geometry import Window
from . import gemm
from .kernels import channels_first
from .parallel import over_batch

_P = ctypes.c_void_p
_DIMS = ctypes.c_int64 * 12  # dnnl_dims_t
_F32, _FORMAT_ANY, _CPU, _STREAM_DEFAULT = 3, 1, 1, 1
_FORWARD_TRAINING, _DIRECT = 64, 1
_QUERY = {"src": 129, "diff_src": 130, "weights": 131, "diff_weights": 132, "dst": 133,
          "diff_dst": 134}
_ARG = {"src": 1, "dst": 17, "weights": 33, "bias": 41, "diff_src": 129, "diff_dst": 145,
        "diff_weights": 161}
_ALLOCATE = _P(ctypes.c_void_p(-1).value)  # DNNL_MEMORY_ALLOCATE: oneDNN owns the buffer


class _Arg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", _P)]


_SIGNATURES = {
    "dnnl_engine_create": [ctypes.POINTER(_P), ctypes.c_int, ctypes.c_size_t],
    "dnnl_stream_create": [ctypes.POINTER(_P), _P, ctypes.c_uint],
    "dnnl_memory_desc_create_with_strides": [ctypes.POINTER(_P), ctypes.c_int, _DIMS,
                                             ctypes.c_int, _DIMS],
    "dnnl_memory_desc_create_with_tag": [ctypes.POINTER(_P), ctypes.c_int, _DIMS,
                                         ctypes.c_int, ctypes.c_int],
    "dnnl_convolution_forward_primitive_desc_create": [
        ctypes.POINTER(_P), _P, ctypes.c_int, ctypes.c_int, _P, _P, _P, _P,
        _DIMS, _DIMS, _DIMS, _DIMS, _P],
    "dnnl_convolution_backward_data_primitive_desc_create": [
        ctypes.POINTER(_P), _P, ctypes.c_int, _P, _P, _P, _DIMS, _DIMS, _DIMS, _DIMS, _P, _P],
    "dnnl_convolution_backward_weights_primitive_desc_create": [
        ctypes.POINTER(_P), _P, ctypes.c_int, _P, _P, _P, _P, _DIMS, _DIMS, _DIMS, _DIMS,
        _P, _P],
    "dnnl_reorder_primitive_desc_create": [ctypes.POINTER(_P), _P, _P, _P, _P, _P],
    "dnnl_primitive_create": [ctypes.POINTER(_P), _P],
    "dnnl_memory_create": [ctypes.POINTER(_P), _P, _P, _P],
    "dnnl_memory_set_data_handle": [_P, _P],
    "dnnl_primitive_execute": [_P, _P, ctypes.c_int, ctypes.POINTER(_Arg)],
    "dnnl_stream_wait": [_P],
}

_state: dict[str, object] = {}
_lock = threading.Lock()
_plans: dict[tuple, object] = {}


def available() -> bool:
    """Whether oneDNN's convolutions can run here (oneDNN loaded, as for its sgemm)."""
    if gemm.backend() != "onednn":
        return False
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state.update(_loaded())
    return _state["lib"] is not None


def _loaded() -> dict[str, object]:
    try:
        lib = ctypes.CDLL(gemm._find_dnnl() or "libdnnl.so.3")
        for name, argtypes in _SIGNATURES.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, ctypes.c_int
        lib.dnnl_primitive_desc_query_md.argtypes = [_P, ctypes.c_int, ctypes.c_int]
        lib.dnnl_primitive_desc_query_md.restype = _P
        lib.dnnl_memory_desc_equal.argtypes = [_P, _P]
        lib.dnnl_memory_desc_equal.restype = ctypes.c_int
        engine, stream = _P(), _P()
        _check(lib.dnnl_engine_create(ctypes.byref(engine), _CPU, 0), "engine_create")
        _check(lib.dnnl_stream_create(ctypes.byref(stream), engine, _STREAM_DEFAULT),
               "stream_create")
    except (OSError, AttributeError, RuntimeError):
        return {"lib": None}
    return {"lib": lib, "engine": engine, "stream": stream}


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"oneDNN's dnnl_{what} failed with status {status}")


def supports(geo: Window, dtype: np.dtype) -> bool:
    """float32 convolutions without groups, any window, stride, padding and dilation."""
    return (dtype == np.float32 and geo.groups == 1 and min(geo.x_shape) > 0
            and geo.filters > 0 and available())


# ---- memory descriptors and plans ------------------------------------------------------


def _dims(values) -> _DIMS:
    return _DIMS(*values)


def _desc(shape, strides=None) -> _P:
    """A float32 memory descriptor: of these element strides, or of format ``any``."""
    lib, md = _state["lib"], _P()
    if strides is None:
        _check(lib.dnnl_memory_desc_create_with_tag(ctypes.byref(md), len(shape), _dims(shape),
                                                    _F32, _FORMAT_ANY), "memory_desc_create")
    else:
        _check(lib.dnnl_memory_desc_create_with_strides(
            ctypes.byref(md), len(shape), _dims(shape), _F32, _dims(strides)),
            "memory_desc_create")
    return md


def _strides(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


def _usable(a: np.ndarray) -> np.ndarray:
    """a as float32 with positive, element-aligned strides (oneDNN's plain layouts)."""
    if (a.dtype != np.float32 or any(s <= 0 or s % 4 for s in a.strides)
            or not a.flags.aligned):
        return np.ascontiguousarray(a, dtype=np.float32)
    return a


def _primitive(pd: _P) -> _P:
    primitive = _P()
    _check(_state["lib"].dnnl_primitive_create(ctypes.byref(primitive), pd), "primitive_create")
    return primitive


class _Side:
    """One of our arrays as the primitive sees it: its memory and, where the primitive
    chose another layout, a buffer in that layout with the reorders between them."""

    def __init__(self, shape, strides, wanted: _P) -> None:
        lib, engine = _state["lib"], _state["engine"]
        ours = _desc(shape, strides)
        self.ours = _P()
        _check(lib.dnnl_memory_create(ctypes.byref(self.ours), ours, engine, None),
               "memory_create")
        self.same = bool(lib.dnnl_memory_desc_equal(ours, wanted))
        self.theirs = self.ours
        if not self.same:
            self.theirs = _P()
            _check(lib.dnnl_memory_create(ctypes.byref(self.theirs), wanted, engine, _ALLOCATE),
                   "memory_create")
            self.inward, self.outward = _reorder(ours, wanted), _reorder(wanted, ours)

    def point_at(self, a: np.ndarray) -> None:
        _check(_state["lib"].dnnl_memory_set_data_handle(self.ours, a.ctypes.data),
               "memory_set_data_handle")

    def bring_in(self) -> None:
        if not self.same:
            _execute(self.inward, [("src", self.ours), ("dst", self.theirs)])

    def take_out(self) -> None:
        if not self.same:
            _execute(self.outward, [("src", self.theirs), ("dst", self.ours)])


def _reorder(source: _P, target: _P) -> _P:
    lib, engine, pd = _state["lib"], _state["engine"], _P()
    _check(lib.dnnl_reorder_primitive_desc_create(ctypes.byref(pd), source, engine, target,
                                                  engine, None), "reorder_primitive_desc_create")
    return _primitive(pd)


def _execute(primitive: _P, args: list[tuple[str, _P]]) -> None:
    array = (_Arg * len(args))(*[_Arg(_ARG[name], memory) for name, memory in args])
    _check(_state["lib"].dnnl_primitive_execute(primitive, _state["stream"], len(args), array),
           "primitive_execute")


def _window(geo: Window) -> tuple[_DIMS, _DIMS, _DIMS, _DIMS]:
    """strides, dilations (oneDNN counts the gaps: d - 1), left and right padding."""
    (ho, wo), (h, w), (kh, kw) = geo.out_hw, geo.x_shape[2:], geo.kernel
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    right = ((ho - 1) * sh + (kh - 1) * dh + 1 - h - ph, (wo - 1) * sw + (kw - 1) * dw + 1 - w - pw)
    return _dims(geo.stride), _dims((dh - 1, dw - 1)), _dims(geo.padding), _dims(right)


def _forward_pd(x_shape, geo: Window, bias: bool) -> _P:
    lib, pd = _state["lib"], _P()
    out_shape = (x_shape[0], geo.filters, *geo.out_hw)
    bias_desc = _desc((geo.filters,), (1,)) if bias else None
    _check(lib.dnnl_convolution_forward_primitive_desc_create(
        ctypes.byref(pd), _state["engine"], _FORWARD_TRAINING, _DIRECT, _desc(x_shape),
        _desc(geo.w_shape), bias_desc, _desc(out_shape), *_window(geo), None),
        "convolution_forward_primitive_desc_create")
    return pd


class _Plan:
    """One pass of one convolution for one slice shape: primitive and sides, made once."""

    def __init__(self, pass_name: str, geo: Window, arrays: dict[str, np.ndarray]) -> None:
        lib, engine = _state["lib"], _state["engine"]
        x_shape = arrays["src"].shape if "src" in arrays else arrays["diff_src"].shape
        hint = _forward_pd(x_shape, geo, bias="bias" in arrays)
        if pass_name == "conv2d_forward":
            pd = hint
        elif pass_name == "conv2d_grad_input":
            pd = _P()
            _check(lib.dnnl_convolution_backward_data_primitive_desc_create(
                ctypes.byref(pd), engine, _DIRECT, _desc(x_shape), _desc(geo.w_shape),
                _desc(arrays["diff_dst"].shape), *_window(geo), hint, None),
                "convolution_backward_data_primitive_desc_create")
        else:
            pd = _P()
            _check(lib.dnnl_convolution_backward_weights_primitive_desc_create(
                ctypes.byref(pd), engine, _DIRECT, _desc(x_shape), _desc(geo.w_shape), None,
                _desc(arrays["diff_dst"].shape), *_window(geo), hint, None),
                "convolution_backward_weights_primitive_desc_create")
        self.sides = {}
        for name, a in arrays.items():
            if name == "bias":
                self.sides[name] = _Side(a.shape, (1,), _desc(a.shape, (1,)))
            else:
                wanted = lib.dnnl_primitive_desc_query_md(pd, _QUERY[name], 0)
                self.sides[name] = _Side(a.shape, _strides(a), wanted)
        self.primitive = _primitive(pd)
        self.outputs = [name for name in arrays if name in ("dst", "diff_src", "diff_weights")]

    def run(self, arrays: dict[str, np.ndarray]) -> None:
        for name, a in arrays.items():
            self.sides[name].point_at(a)
            if name not in self.outputs:
                self.sides[name].bring_in()
        _execute(self.primitive, [(name, side.theirs) for name, side in self.sides.items()])
        for name in self.outputs:
            self.sides[name].take_out()
        _check(_state["lib"].dnnl_stream_wait(_state["stream"]), "stream_wait")


def _run(pass_name: str, geo: Window, arrays: dict[str, np.ndarray]) -> None:
    """Run one pass on these arrays (float32, usable strides), on the calling thread."""
    if not available():
        raise RuntimeError("oneDNN's convolutions need oneDNN (pip install onednn-cpu-gomp, "
                           "Linux x86-64) and TINYGRAD_CONV_GEMM unset or 'onednn'")
    key = (pass_name, geo, threading.get_ident(),
           tuple((name, a.shape, _strides(a)) for name, a in arrays.items()))
    with gemm.one_openmp_thread():  # made at one thread too (see the module's docstring)
        plan = _plans.get(key)
        if plan is None:
            plan = _plans[key] = _Plan(pass_name, geo, arrays)
        plan.run(arrays)


def _sliced(geo: Window, images: int) -> Window:
    """The same window over ``images`` images (one thread's slice of the batch)."""
    return dataclasses.replace(geo, x_shape=(images, *geo.x_shape[1:]))


# ---- the three passes ------------------------------------------------------------------


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geo: Window) -> np.ndarray:
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) or None -> (N, F, H', W'), a channels-first
    view of channels-last memory."""
    x, w = _usable(x), np.ascontiguousarray(w, dtype=np.float32)
    out = np.empty((len(x), *geo.out_hw, geo.filters), np.float32)
    out_view = channels_first(out)
    extra = {} if b is None else {"bias": np.ascontiguousarray(b, dtype=np.float32)}

    def work(s: slice) -> None:
        _run("conv2d_forward", _sliced(geo, s.stop - s.start),
             {"src": x[s], "weights": w, **extra, "dst": out_view[s]})

    over_batch(work, len(x), out.size * geo.x_shape[1] * geo.kernel[0] * geo.kernel[1])
    return out_view


def conv2d_grad_input(dout: np.ndarray, w: np.ndarray, geo: Window) -> np.ndarray:
    """dX (N, C, H, W) from dout (N, F, H', W') and w: a channels-first view of
    channels-last memory."""
    dout, w = _usable(dout), np.ascontiguousarray(w, dtype=np.float32)
    n, c, h, wd = geo.x_shape
    dx = channels_first(np.empty((n, h, wd, c), np.float32))

    def work(s: slice) -> None:
        _run("conv2d_grad_input", _sliced(geo, s.stop - s.start),
             {"diff_dst": dout[s], "weights": w, "diff_src": dx[s]})

    over_batch(work, n, dout.size * c * geo.kernel[0] * geo.kernel[1])
    return dx


def conv2d_grad_weight(dout: np.ndarray, x: np.ndarray, geo: Window) -> np.ndarray:
    """dW (F, C, KH, KW) from dout (N, F, H', W') and x (N, C, H, W); each thread's sum over
    its images, added in a fixed order."""
    dout, x = _usable(dout), _usable(x)
    sums: dict[int, np.ndarray] = {}

    def work(s: slice) -> None:
        dw = np.empty(geo.w_shape, np.float32)
        _run("conv2d_grad_weight", _sliced(geo, s.stop - s.start),
             {"src": x[s], "diff_dst": dout[s], "diff_weights": dw})
        sums[s.start] = dw

    over_batch(work, len(x), dout.size * geo.x_shape[1] * geo.kernel[0] * geo.kernel[1])
    return sum(sums[start] for start in sorted(sums))
