"""Drawing the computation graph: DOT text in pure Python, rendering through Graphviz.

    import tinygrad_conv.viz as viz
    text = viz.to_dot(loss, params=dict(model.named_parameters()))    # no Graphviz needed
    viz.draw_graph(loss, model=model, group_modules=True)              # shows inline in Jupyter
    viz.render(loss, path="step.svg", model=model)                     # atomic file write

What the drawing shows:
- an op (``conv2d``, ``relu``...) is a grey box: its name in bold, its settings below;
- a leaf tensor is a rounded box: a parameter (named from ``params``, e.g. ``0.weight``),
  an input (``input``, ``input0``...) or a small constant; each output tensor (``loss`` or
  ``output``) is a rounded box with a bold border; each shows its shape and dtype;
- intermediate tensors are not boxes: the arrow from the op that made one to each op that uses
  it carries its shape (as torchviz draws them);
- ``group_modules=True`` puts the ops of each ``nn.Module`` in a cluster named as in
  ``model.named_modules()``; ``modules_only=True`` draws one box per layer instead of per op.

Node ids (``n0``, ``n1``...) follow a topological order of the graph found by an iterative
walk from the outputs, so the same graph always gives the same text and any depth works.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .tensor import Tensor

if TYPE_CHECKING:
    import graphviz

__all__ = [
    "to_dot", "draw_graph", "render", "build_graph", "graph_command", "Graph", "Node", "Edge",
    "GraphvizNotFoundError", "SHOWN_ATTRS", "COLORS", "reference_step",
]

GRAPH_NAME = "tinygrad_conv"
INPUT, PARAM, CONST, OP, OUTPUT, MODULE = (
    "input", "parameter", "constant", "op", "output", "module"
)
COLORS = {  # fill colour per kind of node; the legend lists them
    INPUT: "#a6cee3", PARAM: "#fdd49e", CONST: "#f2f2f2", OP: "#e3e3e3",
    OUTPUT: "#b2df8a", MODULE: "#d9c8ec",
}
_STYLES = {
    INPUT: "filled,rounded", PARAM: "filled,rounded", CONST: "filled,rounded,dashed",
    OP: "filled", OUTPUT: "filled,rounded,bold", MODULE: "filled",
}
_CLUSTER_FILL, _CLUSTER_LINE = "#f5f7fb", "#8da0cb"
_RANKDIRS = ("TB", "LR", "BT", "RL")
_TEXT_FORMATS = ("dot", "gv")
_KNOWN_FORMATS = _TEXT_FORMATS + ("svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps")

# Which op settings a node shows, per op name. "key?" shows the setting only when it is not a
# default (0, False, None). Settings not listed (out_hw, x_shape, w_shape, winner, target...)
# are internal or bulky and never shown. An op not listed here shows its small scalar/tuple
# settings. Register your own op with e.g. ``viz.SHOWN_ATTRS["my_op"] = ("alpha",)``.
_CONV = ("kernel", "stride", "padding", "dilation", "groups")
_POOL = ("kernel", "stride", "padding?")
_REDUCE = ("axis", "keepdims?")
SHOWN_ATTRS: dict[str, tuple[str, ...]] = {
    "conv2d": _CONV, "conv2d_grad_input": _CONV, "conv2d_grad_weight": _CONV,
    "max_pool2d": _POOL, "max_pool2d_backward": _POOL, "max_pool2d_gather": _POOL,
    "avg_pool2d": _POOL, "avg_pool2d_backward": _POOL,
    "sum": _REDUCE, "mean": _REDUCE, "max": _REDUCE, "min": _REDUCE,
    "softmax": ("axis",), "log_softmax": ("axis",), "nll_loss": ("reduction",),
    "dropout": ("p",), "clip": ("lo", "hi"), "cast": ("dtype",),
    "reshape": ("shape",), "broadcast_to": ("shape",), "sum_to": ("shape",),
    "permute": ("axes",), "cat": ("axis",), "pad": ("pad_width", "value?"),
    "getitem": ("index",), "scatter_add": ("index", "shape"),
    "linear": (), "matmul": (),
}
_HIDDEN_ATTRS = {"out_hw", "x_shape", "w_shape", "winner", "target", "index", "weights"}
_LOSS_OPS = {"nll_loss"}
_LINE_WIDTH = 28  # settings are packed into lines of about this many characters

_INSTALL_HINT = (
    "Rendering the graph needs the Graphviz 'dot' program, which was not found on PATH "
    "(the 'graphviz' Python package alone is not enough). Install it with one of:\n"
    "  Debian/Ubuntu:  sudo apt-get install graphviz\n"
    "  macOS:          brew install graphviz\n"
    "  conda:          conda install -c conda-forge graphviz\n"
    "and open a new shell. Without it, tinygrad_conv.viz.to_dot(...) still gives the DOT text "
    "(save it as a .dot file, or render it elsewhere with `dot -Tsvg graph.dot -o graph.svg`)."
)


class GraphvizNotFoundError(RuntimeError):
    """The Graphviz ``dot`` program is missing; the message says how to install it."""

    def __init__(self, message: str = _INSTALL_HINT) -> None:
        super().__init__(message)


# ---- the graph as data ------------------------------------------------------------------------
@dataclass
class Node:
    """One drawn node: ``id`` (``n0``...), ``kind`` (a legend entry), a bold ``title`` line,
    smaller ``lines`` below it, and ``path``: the module clusters it sits in, outermost first
    (indices into ``Graph.clusters``)."""

    id: str
    kind: str
    title: str
    lines: list[str] = field(default_factory=list)
    path: tuple[int, ...] = ()


@dataclass
class Edge:
    """An arrow ``src -> dst`` (node ids), optionally labelled (the shape of the tensor)."""

    src: str
    dst: str
    label: str = ""


@dataclass
class Graph:
    """The drawing as data: nodes, edges and module clusters; ``source`` is its DOT text."""

    nodes: list[Node]
    edges: list[Edge]
    clusters: list[tuple[str, str]] = field(default_factory=list)  # (title, detail) per module
    rankdir: str = "TB"
    title: str | None = None
    legend: bool = True

    def count(self, kind: str | None = None) -> int:
        """How many nodes (of ``kind``, e.g. ``"op"``) the drawing has; the legend is not one."""
        return sum(1 for n in self.nodes if kind is None or n.kind == kind)

    def summary(self) -> str:
        """E.g. ``"23 nodes (12 op, 9 parameter, 1 input, 1 output), 22 edges"``."""
        kinds = [k for k in (OP, MODULE, PARAM, INPUT, CONST, OUTPUT) if self.count(k)]
        parts = ", ".join(f"{self.count(k)} {k}" for k in kinds)
        return f"{self.count()} nodes ({parts}), {len(self.edges)} edges"

    def body(self) -> list[str]:
        """The DOT statements between the braces, one per item, each ``"\\t...\\n"``."""
        lines = _header_lines(self.rankdir, self.title)
        lines += _node_block(self.nodes, self.clusters)
        lines += [_edge_line(e) for e in self.edges]
        if self.legend:
            lines.append(_legend_line({n.kind for n in self.nodes}))
        return [f"\t{line}\n" for line in lines]

    @property
    def source(self) -> str:
        """The whole DOT text (the same as ``graphviz.Digraph(body=self.body()).source``)."""
        return f"digraph {GRAPH_NAME} {{\n" + "".join(self.body()) + "}\n"


# ---- public functions -------------------------------------------------------------------------
def build_graph(
    *tensors: Tensor,
    params: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None = None,
    show_shapes: bool = True,
    show_grad_norm: bool = False,
    group_modules: bool = False,
    modules_only: bool = False,
    rankdir: str = "TB",
    model: Any = None,
    title: str | None = None,
    legend: bool = True,
) -> Graph:
    """The graph that produced ``tensors``, as a :class:`Graph` (see :func:`to_dot`)."""
    outputs = _check_outputs(tensors)
    if rankdir not in _RANKDIRS:
        raise ValueError(f"rankdir must be one of {_RANKDIRS}, got {rankdir!r}")
    with _gc_paused():  # many small objects, none cyclic: the collector only slows this down
        graph = _build(outputs, params, show_shapes, show_grad_norm, group_modules,
                       modules_only, model)
    graph.rankdir, graph.title, graph.legend = rankdir, title, legend
    return graph


def to_dot(
    *tensors: Tensor,
    params: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None = None,
    show_shapes: bool = True,
    show_grad_norm: bool = False,
    group_modules: bool = False,
    modules_only: bool = False,
    rankdir: str = "TB",
    model: Any = None,
    title: str | None = None,
    legend: bool = True,
) -> str:
    """The DOT source of the graph that produced ``tensors`` (needs no Graphviz at all).

    Args:
        tensors: one or more output Tensors (e.g. the loss); each gets an output node.
        params: names for leaf tensors, ``dict(model.named_parameters())`` or such pairs;
            defaults to the parameters of ``model`` (given or inferred from the ops' modules).
        show_shapes: shapes and dtypes on tensor nodes, shapes on the op -> op edges.
        show_grad_norm: after a backward, the L2 norm of each drawn tensor's ``.grad``
            (leaves, outputs and, on edges, intermediates that called ``retain_grad``).
        group_modules: one cluster per ``nn.Module`` that made ops, nested as the modules are.
        modules_only: one node per innermost module instead of per op (for big models).
        rankdir: ``"TB"`` (top to bottom) or ``"LR"`` (left to right); also BT, RL.
        model: the root ``nn.Module`` whose ``named_modules()`` name the clusters; when None,
            the outermost module seen in the ops' scopes.
        title: a caption drawn above the graph.
        legend: add the colour legend node (id ``legend``).

    Returns:
        str: ``digraph tinygrad_conv { ... }``, byte-for-byte the same for the same graph.
    """
    return build_graph(
        *tensors, params=params, show_shapes=show_shapes, show_grad_norm=show_grad_norm,
        group_modules=group_modules, modules_only=modules_only, rankdir=rankdir, model=model,
        title=title, legend=legend,
    ).source


def draw_graph(*tensors: Tensor, format: str = "svg",  # noqa: A002
               **options: Any) -> graphviz.Digraph:
    """The graph as a ``graphviz.Digraph``, for ``.render(path, format=...)`` or Jupyter.

    ``options`` are those of :func:`to_dot`; ``format`` is the default render format (svg,
    png, pdf...). Building it needs only the ``graphviz`` Python package; rendering or
    displaying it needs the ``dot`` program, and raises :class:`GraphvizNotFoundError` (a
    RuntimeError saying how to install it) when that is missing.
    """
    graph = build_graph(*tensors, **options)
    return _digraph_class()(name=GRAPH_NAME, body=graph.body(), format=format)


def render(*tensors: Tensor, path: str | os.PathLike, format: str | None = None,  # noqa: A002
           **options: Any) -> Path:
    """Draw the graph of ``tensors`` into the file ``path``, atomically; returns the path.

    ``format`` is svg, png, pdf (any Graphviz output format), or ``dot`` for the DOT text
    (which needs no Graphviz); by default the suffix of ``path`` if it names one, else svg.
    When ``path`` has no suffix, ``.<format>`` is added. ``options`` are those of
    :func:`to_dot`. The file is written under a temporary name beside ``path``, then moved over
    it: a crash never leaves a half-written file. Raises :class:`GraphvizNotFoundError` before
    any work when ``dot`` is needed and missing.
    """
    target, fmt = _target_and_format(path, format)
    return _write_drawing(to_dot(*tensors, **options), target, fmt)


def graph_command(out: str | os.PathLike, fmt: str = "svg", modules: bool = False,
                  rankdir: str = "TB") -> Path:
    """``tinygrad-conv graph --out FILE``: draw one training step of the reference CNN.

    Builds ``models.reference_cnn()`` (seed 0), runs a random MNIST-shaped batch (8, 1, 28, 28)
    with random labels through it, takes the cross-entropy loss and its backward, and writes
    the drawing (per op, grouped by layer; per layer with ``modules``). Prints where it wrote
    and the node count; returns the path written.
    """
    graph, path = _reference_step_graph(out, fmt, modules, rankdir)
    print(f"wrote {path}: {graph.summary()}")
    return path


# ---- walking the tensors ----------------------------------------------------------------------
def _build(outputs: list[Tensor], params: Any, show_shapes: bool, show_grad_norm: bool,
           group_modules: bool, modules_only: bool, model: Any) -> Graph:
    """Walk, name, then draw per op (with clusters), or collapse to one node per module."""
    order = _walk(outputs)
    scopes = _Scopes(order, model)
    if params is None:
        params = scopes.default_params()
    names = _tensor_names(params)
    graph = _op_graph(order, outputs, names, scopes, show_shapes, show_grad_norm)
    if modules_only:
        graph = _module_graph(graph, scopes)
    elif not group_modules:
        for node in graph.nodes:
            node.path = ()
        graph.clusters = []
    return graph


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_outputs(tensors: tuple[Any, ...]) -> list[Tensor]:
    if not tensors:
        raise ValueError("to_dot: pass at least one tensor (e.g. the loss)")
    outputs: list[Tensor] = []
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"to_dot: argument {i} is a {type(t).__name__}, not a Tensor")
        if all(t is not o for o in outputs):
            outputs.append(t)
    return outputs


def _walk(outputs: list[Tensor]) -> list[Tensor]:
    """Every tensor the outputs depend on, each once, inputs before the ops that use them.

    Iterative depth-first post-order (no recursion limit); the first output's inputs in input
    order come first, so the order depends only on the graph's structure.
    """
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(t, False) for t in reversed(outputs)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        if tensor.op is not None:
            stack.extend((p, False) for p in reversed(tensor.op.inputs) if id(p) not in seen)
    return order


def _tensor_names(params: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]) -> dict[int, str]:
    pairs = params.items() if isinstance(params, Mapping) else params
    names: dict[int, str] = {}
    for name, t in pairs:
        names.setdefault(id(t), str(name))  # a shared tensor keeps its first name
    return names


class _Scopes:
    """Which modules made each op: the root model, module names, and cluster paths."""

    def __init__(self, order: list[Tensor], model: Any) -> None:
        ops = [t.op for t in order if t.op is not None]
        self.root = model if model is not None else _infer_root(ops)
        self.names: dict[int, str] = {}
        if self.root is not None and hasattr(self.root, "named_modules"):
            self.names = {id(m): name for name, m in self.root.named_modules()}
        self.modules: list[Any] = []  # every module that made an op, first seen first
        self._index: dict[int, int] = {}
        self.paths = {id(op): self._path(op) for op in ops}

    def default_params(self) -> list[tuple[str, Tensor]]:
        if self.root is None or not hasattr(self.root, "named_parameters"):
            return []
        return list(self.root.named_parameters())

    def _path(self, op: Any) -> tuple[int, ...]:
        scope = tuple(op.scope)
        for depth, module in enumerate(scope):
            if module is self.root:
                scope = scope[depth + 1:]
                break
        path = []
        for module in scope:
            if id(module) not in self._index:
                self._index[id(module)] = len(self.modules)
                self.modules.append(module)
            path.append(self._index[id(module)])
        return tuple(path)

    def path_of(self, op: Any) -> tuple[int, ...]:
        return self.paths[id(op)]

    def title(self, index: int) -> str:
        """``"0: Conv2d"``, ``"features.conv1: Conv2d"``, or the class for an unnamed module."""
        module = self.modules[index]
        name = self.names.get(id(module), "")
        cls = type(module).__name__
        return f"{name}: {cls}" if name else cls

    def detail(self, index: int) -> str:
        """The module's ``extra_repr()`` (its settings), or ``""``."""
        extra = getattr(self.modules[index], "extra_repr", None)
        text = extra() if callable(extra) else ""
        return text if isinstance(text, str) and "\n" not in text else ""

    def short_name(self, index: int, qualified: str) -> str:
        """``"0.weight"`` inside module ``"0"`` -> ``"weight"``."""
        prefix = self.names.get(id(self.modules[index]), "")
        return qualified[len(prefix) + 1:] if prefix and qualified.startswith(prefix + ".") \
            else qualified


def _infer_root(ops: list[Any]) -> Any:
    """The outermost module of the scopes that made the most ops (first seen on a tie)."""
    counts: dict[int, int] = {}
    first: dict[int, Any] = {}
    for op in ops:
        if op.scope:
            outer = op.scope[0]
            first.setdefault(id(outer), outer)
            counts[id(outer)] = counts.get(id(outer), 0) + 1
    if not counts:
        return None
    best = max(counts.values())
    return next(m for key, m in first.items() if counts[key] == best)


# ---- the per-op graph -------------------------------------------------------------------------
def _op_graph(order: list[Tensor], outputs: list[Tensor], names: dict[int, str],
              scopes: _Scopes, show_shapes: bool, show_grad_norm: bool) -> Graph:
    """One node per leaf tensor, per op and per output; edges in consumer, then input, order."""
    leaf_labels = _leaf_labels([t for t in order if t.op is None], names, show_shapes,
                               show_grad_norm)
    node_of: dict[int, str] = {}  # id(tensor) -> the node that made it (leaf or op)
    nodes: list[Node] = []
    edges: list[Edge] = []
    for t in order:
        nid = f"n{len(nodes)}"
        node_of[id(t)] = nid
        if t.op is None:
            kind, title, lines = leaf_labels[id(t)]
            nodes.append(Node(nid, kind, title, lines))
            continue
        nodes.append(Node(nid, OP, t.op.name, _op_lines(t.op), scopes.path_of(t.op)))
        for parent in t.op.inputs:
            label = _edge_label(parent, show_shapes, show_grad_norm) if parent.op else ""
            edges.append(Edge(node_of[id(parent)], nid, label))
    for i, out in enumerate(o for o in outputs if o.op is not None):
        nid = f"n{len(nodes)}"
        title = names.get(id(out)) or _output_name(out, i, outputs, scopes)
        nodes.append(Node(nid, OUTPUT, title, _tensor_lines(out, show_shapes, show_grad_norm)))
        edges.append(Edge(node_of[id(out)], nid))
    _place_leaves_with_users(nodes, edges)
    clusters = [(scopes.title(i), scopes.detail(i)) for i in range(len(scopes.modules))]
    return Graph(nodes, edges, clusters)


def _leaf_labels(leaves: list[Tensor], names: dict[int, str], show_shapes: bool,
                 show_grad_norm: bool) -> dict[int, tuple[str, str, list[str]]]:
    """kind, title and lines of each leaf; unnamed inputs are ``input`` or ``input0, 1...``."""
    kinds = {id(t): _leaf_kind(t, names) for t in leaves}
    unnamed = [t for t in leaves if kinds[id(t)] == INPUT and id(t) not in names]
    unnamed_params = [t for t in leaves if kinds[id(t)] == PARAM and id(t) not in names]
    auto = {id(t): "input" if len(unnamed) == 1 else f"input{i}" for i, t in enumerate(unnamed)}
    auto.update({id(t): f"parameter{i}" for i, t in enumerate(unnamed_params)})
    labels = {}
    for t in leaves:
        kind = kinds[id(t)]
        lines = _tensor_lines(t, show_shapes, show_grad_norm)
        title = names.get(id(t)) or auto.get(id(t)) or _constant_text(t)
        labels[id(t)] = (kind, title, lines)
    return labels


def _constant_text(t: Tensor) -> str:
    """A one-element constant's value, e.g. ``"0.5"``."""
    if t.numel() != 1:
        return "constant"
    return _format_value(t.data.reshape(-1)[0]) or "constant"


def _leaf_kind(t: Tensor, names: dict[int, str]) -> str:
    """parameter: an nn.Parameter, or a named leaf that requires grad; constant: a one-element
    leaf without grad and without a name; everything else is an input."""
    if type(t).__name__ == "Parameter" or (id(t) in names and t.requires_grad):
        return PARAM
    if not t.requires_grad and t.numel() <= 1 and id(t) not in names:
        return CONST
    return INPUT


def _output_name(out: Tensor, i: int, outputs: list[Tensor], scopes: _Scopes) -> str:
    """``loss`` for a one-element tensor made by a loss op or inside a ``*Loss`` module."""
    op = out.op
    in_loss_module = bool(op.scope) and type(op.scope[-1]).__name__.endswith("Loss")
    if out.numel() == 1 and (op.name in _LOSS_OPS or in_loss_module):
        return "loss"
    return "output" if len(outputs) == 1 else f"output{i}"


def _place_leaves_with_users(nodes: list[Node], edges: list[Edge]) -> None:
    """A parameter or constant used only inside one module goes into that module's cluster."""
    if not any(n.path for n in nodes):
        return
    by_id = {n.id: n for n in nodes}
    user_paths: dict[str, set[tuple[int, ...]]] = {}
    for e in edges:
        user_paths.setdefault(e.src, set()).add(by_id[e.dst].path)
    for node in nodes:
        paths = user_paths.get(node.id, set())
        if node.kind in (PARAM, CONST) and len(paths) == 1:
            node.path = next(iter(paths))


# ---- labels -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _format_shape(shape: tuple[int, ...]) -> str:
    return "scalar" if shape == () else str(tuple(int(s) for s in shape))


def _grad_norm(t: Tensor) -> float | None:
    grad = t.grad
    if grad is None:
        return None
    data = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=np.float64)
    return float(np.sqrt(np.sum(np.square(data))))


def _grad_text(t: Tensor) -> str | None:
    norm = _grad_norm(t)
    return None if norm is None else f"grad norm {norm:.4g}"


def _tensor_lines(t: Tensor, show_shapes: bool, show_grad_norm: bool) -> list[str]:
    lines = [f"{_format_shape(t.shape)} {t.dtype}"] if show_shapes else []
    grad = _grad_text(t) if show_grad_norm else None
    return lines + ([grad] if grad else [])


def _edge_label(t: Tensor, show_shapes: bool, show_grad_norm: bool) -> str:
    parts = [_format_shape(t.shape)] if show_shapes else []
    grad = _grad_text(t) if show_grad_norm else None
    return "\n".join(parts + ([grad] if grad else []))


def _op_lines(op: Any) -> list[str]:
    """The op's settings, packed into short lines, e.g. ``["kernel 3x3, stride 1", ...]``."""
    return _pack(_op_settings(op), _LINE_WIDTH)


def _pack(items: list[str], width: int) -> list[str]:
    """Join items with ", " into lines of at most ``width`` characters (longer items alone)."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
        else:
            lines.append(item)
    return lines


def _op_settings(op: Any) -> list[str]:
    attrs = op.attrs
    if op.name == "linear" and len(op.inputs) >= 2:
        out_f, in_f = op.inputs[1].shape[:2]
        return [f"in {in_f}", f"out {out_f}"] + (["bias"] if len(op.inputs) == 3 else [])
    keys = SHOWN_ATTRS.get(op.name)
    if keys is None:  # generic fallback: small settings only
        keys = tuple(k + "?" for k in attrs if k not in _HIDDEN_ATTRS)
    items = []
    for key in keys:
        optional, key = key.endswith("?"), key.rstrip("?")
        if key not in attrs or (optional and _is_default(attrs[key])):
            continue
        text = _format_setting(key, attrs[key], strict=key not in SHOWN_ATTRS.get(op.name, ()))
        if text is not None:
            items.append(f"{key} {text}")
    return items


def _is_default(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_is_default(v) for v in value)
    return value is None or (isinstance(value, (bool, int, float)) and not value)


_SCALARS = (bool, int, float, str, np.integer, np.floating, np.bool_)


def _format_setting(key: str, value: Any, strict: bool = True) -> str | None:
    """A setting as short text; None for bulky values (arrays, long strings, big tuples)."""
    if isinstance(value, np.ndarray):
        return None
    if key == "index":
        return _format_index(value)
    if key == "kernel" and isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    if key == "axis" and value is None:
        return "all"
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return str(np.dtype(value))
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1] \
            and key in ("stride", "padding", "dilation"):
        return str(value[0])
    text = _format_value(value)
    if text is None or (strict and len(text) > 40):
        return None
    return text


def _format_value(value: Any) -> str | None:
    if value is None or isinstance(value, _SCALARS):
        if isinstance(value, (float, np.floating)):
            return f"{float(value):g}"
        if isinstance(value, np.generic):
            value = value.item()
        text = str(value)
        return text if len(text) <= 40 else None
    if isinstance(value, tuple) and len(value) <= 8:
        parts = [_format_value(v) for v in value]
        if all(p is not None for p in parts):
            return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    return None


def _format_index(index: Any) -> str:
    """A getitem index in NumPy's notation, arrays shown only by their shape."""
    items = index if isinstance(index, tuple) else (index,)
    parts = []
    for item in items:
        if isinstance(item, slice):
            bounds = ["" if v is None else str(v) for v in (item.start, item.stop, item.step)]
            parts.append(":".join(bounds if item.step is not None else bounds[:2]))
        elif item is Ellipsis:
            parts.append("...")
        elif isinstance(item, np.ndarray):
            parts.append(f"{item.dtype}{list(item.shape)}")
        else:
            parts.append(str(item))
    return "[" + ", ".join(parts) + "]"


# ---- the per-module graph ---------------------------------------------------------------------
def _module_graph(full: Graph, scopes: _Scopes) -> Graph:
    """Collapse each innermost module's ops (and the parameters only it uses) into one node."""
    unit_of: dict[str, str] = {}  # node id -> unit key: "m<module index>" or the node's id
    for node in full.nodes:
        folds = node.kind in (OP, PARAM, CONST) and node.path
        unit_of[node.id] = f"m{node.path[-1]}" if folds else node.id
    members: dict[str, list[Node]] = {}
    for node in full.nodes:
        members.setdefault(unit_of[node.id], []).append(node)
    new_id = {key: f"n{i}" for i, key in enumerate(members)}
    nodes = [_unit_node(new_id[key], group, scopes) for key, group in members.items()]
    edges: list[Edge] = []
    seen: set[tuple[str, str]] = set()
    for e in full.edges:
        src, dst = new_id[unit_of[e.src]], new_id[unit_of[e.dst]]
        if src != dst and (src, dst) not in seen:
            seen.add((src, dst))
            edges.append(Edge(src, dst, e.label))
    return Graph(nodes, edges)


def _unit_node(nid: str, group: list[Node], scopes: _Scopes) -> Node:
    ops = [n for n in group if n.kind == OP]
    if not ops or not ops[0].path:  # a single node outside any module: kept as it is
        node = group[0]
        return Node(nid, node.kind, node.title, list(node.lines))
    index = ops[0].path[-1]
    detail = scopes.detail(index)
    lines = _split_top_level(detail) if detail else [line for n in ops for line in n.lines]
    if len(ops) > 1:
        names = list(dict.fromkeys(n.title for n in ops))
        more = ", ..." if len(names) > 4 else ""
        lines.append(f"{len(ops)} ops: " + ", ".join(names[:4]) + more)
    for leaf in (n for n in group if n.kind in (PARAM, CONST)):  # "weight (32, 1, 3, 3) ..."
        short = scopes.short_name(index, leaf.title)
        grads = [line for line in leaf.lines if line.startswith("grad norm")]
        shape = [line for line in leaf.lines if line not in grads]
        lines.append(" ".join([short] + shape))
        lines += [f"{short}.{line}" for line in grads]
    return Node(nid, MODULE, scopes.title(index), lines)


def _split_top_level(text: str, width: int = 30) -> list[str]:
    """Wrap ``"1, 32, kernel_size=(3, 3), ..."`` at commas outside brackets."""
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            pieces.append(text[start:i].strip())
            start = i + 1
    pieces.append(text[start:].strip())
    return _pack(pieces, width)


# ---- DOT text ---------------------------------------------------------------------------------
_SPECIAL = re.compile(r"[&<>\"']")


def _escape(text: str) -> str:
    """Text for a Graphviz HTML-like label: &, <, >, quotes escaped; control chars as spaces."""
    if text.isprintable() and _SPECIAL.search(text) is None:
        return text
    text = "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace('"', "&quot;").replace("'", "&#39;")
    return text.replace("\n", "<br/>")


def _html_label(title: str, lines: list[str], align: str = "") -> str:
    """``<<b>title</b><br/><font point-size="9">line<br/>line</font>>``; ``align="left"``
    left-aligns every line (cluster captions)."""
    br = f'<br align="{align}"/>' if align else "<br/>"
    label = f"<b>{_escape(title)}</b>"
    if lines:
        label += br + '<font point-size="9">' + br.join(_escape(x) for x in lines) + "</font>"
    return f"<{label}{br if align else ''}>"


def _header_lines(rankdir: str, title: str | None) -> list[str]:
    font = 'fontname="Helvetica"'
    graph = f'graph [rankdir={rankdir}, {font}, fontsize=12, nodesep=0.25, ranksep=0.3'
    if title:
        graph += f", labelloc=t, label=<<b>{_escape(title)}</b>>"
    return [
        graph + "]",
        f'node [shape=box, {font}, fontsize=10, margin="0.1,0.04", height=0.3, penwidth=1]',
        f'edge [{font}, fontsize=8, color="#666666", fontcolor="#444444", arrowsize=0.6]',
    ]


def _node_line(node: Node) -> str:
    return (f"{node.id} [label={_html_label(node.title, node.lines)}, "
            f'fillcolor="{COLORS[node.kind]}", style="{_STYLES[node.kind]}"]')


def _edge_line(edge: Edge) -> str:
    if not edge.label:
        return f"{edge.src} -> {edge.dst}"
    return f"{edge.src} -> {edge.dst} [label=<{_escape(edge.label)}>]"


def _node_block(nodes: list[Node], clusters: list[tuple[str, str]]) -> list[str]:
    """Node statements in id order; a module's nodes sit in a (nested) ``subgraph cluster_<i>``
    block, written where its first node comes."""
    tree: dict = {"items": [], "children": {}}
    for node in nodes:
        branch = tree
        for index in node.path:
            if index not in branch["children"]:
                branch["children"][index] = {"items": [], "children": {}}
                branch["items"].append(index)
            branch = branch["children"][index]
        branch["items"].append(node)
    return _cluster_lines(tree, clusters, indent="")


def _cluster_lines(branch: dict, clusters: list[tuple[str, str]], indent: str) -> list[str]:
    lines = []
    for item in branch["items"]:
        if isinstance(item, Node):
            lines.append(indent + _node_line(item))
            continue
        title, detail = clusters[item]
        label = _html_label(title, _split_top_level(detail, 48) if detail else [], "left")
        inner = indent + "\t"
        lines.append(f"{indent}subgraph cluster_{item} {{")
        lines.append(f'{inner}graph [label={label}, labeljust=l, style="rounded,filled", '
                     f'fillcolor="{_CLUSTER_FILL}", color="{_CLUSTER_LINE}", fontsize=10]')
        lines += _cluster_lines(branch["children"][item], clusters, inner)
        lines.append(indent + "}")
    return lines


def _legend_line(kinds: set[str]) -> str:
    """One table node: a coloured cell per kind of node drawn, in a fixed order."""
    shown = [k for k in (INPUT, PARAM, CONST, OP, MODULE, OUTPUT) if k in kinds]
    rows = "".join(f'<tr><td bgcolor="{COLORS[k]}">{k}</td></tr>' for k in shown)
    table = ('<table border="0" cellborder="1" cellspacing="2" cellpadding="3">'
             f'<tr><td border="0"><b>legend</b></td></tr>{rows}</table>')
    return f'legend [shape=plaintext, style="", fontsize=9, label=<{table}>]'


# ---- rendering --------------------------------------------------------------------------------
@functools.cache
def _digraph_class() -> type:
    """A ``graphviz.Digraph`` whose render/pipe (and so Jupyter display) explain a missing dot."""
    try:
        import graphviz
    except ImportError as e:  # pragma: no cover - graphviz is a dependency
        raise ImportError("draw_graph needs the graphviz package: pip install graphviz; "
                          "viz.to_dot works without it") from e

    class Digraph(graphviz.Digraph):
        """graphviz.Digraph that raises GraphvizNotFoundError when ``dot`` is missing."""

        def render(self, *args: Any, **kwargs: Any) -> str:
            try:
                return super().render(*args, **kwargs)
            except graphviz.ExecutableNotFound as e:
                raise GraphvizNotFoundError() from e

        def pipe(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().pipe(*args, **kwargs)
            except graphviz.ExecutableNotFound as e:
                raise GraphvizNotFoundError() from e

    Digraph.__module__, Digraph.__qualname__ = __name__, "Digraph"
    return Digraph


def _target_and_format(path: str | os.PathLike, format: str | None) -> tuple[Path, str]:  # noqa: A002
    """The file to write (``.<format>`` added when ``path`` has no suffix) and the format
    (default: ``path``'s suffix if Graphviz knows it, else svg); checks for ``dot`` first."""
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    fmt = (format or (suffix if suffix in _KNOWN_FORMATS else "svg")).lower().lstrip(".")
    if not suffix:
        target = target.with_name(f"{target.name}.{fmt}")
    if fmt not in _TEXT_FORMATS and shutil.which("dot") is None:
        raise GraphvizNotFoundError()
    return target, fmt


def _write_drawing(source: str, target: Path, fmt: str) -> Path:
    data = source.encode("utf-8") if fmt in _TEXT_FORMATS else _run_dot(source, fmt)
    _write_atomic(target, data)
    return target


def _run_dot(source: str, fmt: str) -> bytes:
    import graphviz

    try:
        return graphviz.pipe("dot", fmt, source.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound as e:
        raise GraphvizNotFoundError() from e
    except graphviz.CalledProcessError as e:
        raise RuntimeError(f"Graphviz dot failed to render {fmt}: {e.stderr!r}") from e


def _file_mode(target: Path) -> int:
    """The mode the file would get from a plain open(): the old file's, else 0666 & ~umask."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target``, then move it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode(target))  # mkstemp makes it private (0600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---- the reference training step (for the CLI and the docs) -----------------------------------
def reference_step(seed: int = 0, batch: int = 8) -> tuple[Any, Tensor]:
    """``(model, loss)``: the reference CNN after one forward, cross-entropy and backward on a
    random MNIST-shaped batch ``(batch, 1, 28, 28)`` with random labels (all from ``seed``)."""
    from . import functional as F
    from .models import reference_cnn
    from .rng import manual_seed

    manual_seed(seed)
    model = reference_cnn()
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
    y = rng.integers(0, 10, size=batch)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return model, loss


def _reference_step_graph(out: str | os.PathLike, fmt: str, modules: bool,
                          rankdir: str) -> tuple[Graph, Path]:
    target, fmt = _target_and_format(out, fmt)  # a missing dot fails here, before any work
    model, loss = reference_step()
    title = "reference_cnn: one training step" + (" (one node per layer)" if modules else "")
    graph = build_graph(loss, model=model, params=dict(model.named_parameters()),
                        show_grad_norm=True, group_modules=not modules, modules_only=modules,
                        rankdir=rankdir, title=title)
    return graph, _write_drawing(graph.source, target, fmt)

