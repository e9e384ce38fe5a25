"""From tensors to a :class:`~.model.Graph`: walk the ops, name the leaves, label the ops
with their settings, group them by module, or fold each module into one node."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..engine import topological_order
from ..tensor import Tensor
from .dot import _pack, _split_top_level
from .model import CONST, INPUT, MODULE, OP, OUTPUT, PARAM, Edge, Graph, Node

_RANKDIRS = ("TB", "LR", "BT", "RL")

# default (0, False, None). Settings not listed (out_hw, x_shape, w_shape, winner, target...)
# are internal or bulky and never shown. An op not listed here shows its small scalar/tuple
# settings. Register your own op with e.g. ``viz.SHOWN_ATTRS["my_op"] = ("alpha",)``.
_CONV = ("kernel", "stride", "padding", "dilation", "groups", "algorithm?")
_POOL = ("kernel", "stride", "padding?")
_REDUCE = ("axis", "keepdims?")
SHOWN_ATTRS: dict[str, tuple[str, ...]] = {
    "conv2d": _CONV, "conv2d_grad_input": _CONV, "conv2d_grad_weight": _CONV,
    "max_pool2d": _POOL, "max_pool2d_backward": _POOL, "max_pool2d_gather": _POOL,
    "avg_pool2d": _POOL, "avg_pool2d_backward": _POOL,
    "relu_max_pool2d": _POOL, "relu_max_pool2d_backward": _POOL,
    "sum": _REDUCE, "mean": _REDUCE, "max": _REDUCE, "min": _REDUCE,
    "softmax": ("axis",), "log_softmax": ("axis",), "nll_loss": ("reduction",),
    "dropout": ("p",), "clip": ("lo", "hi"), "cast": ("dtype",),
    "reshape": ("shape",), "broadcast_to": ("shape",), "sum_to": ("shape",),
    "permute": ("axes",), "cat": ("axis",), "pad": ("pad_width", "value?"),
    "getitem": ("index",), "scatter_add": ("index", "shape"),
    "linear": (), "matmul": (), "batch_norm": ("training", "eps"),
}
_HIDDEN_ATTRS = {"out_hw", "x_shape", "w_shape", "winner", "target", "index", "weights"}
_LOSS_OPS = {"nll_loss"}
_LINE_WIDTH = 28  # settings are packed into lines of about this many characters


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
        group_modules: one cluster per call of an ``nn.Module`` that made ops, nested as the
            modules are (a second call's caption says "(call 2)").
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



# ---- walking the tensors ----------------------------------------------------------------------
def _build(outputs: list[Tensor], params: Any, show_shapes: bool, show_grad_norm: bool,
           group_modules: bool, modules_only: bool, model: Any) -> Graph:
    """Walk, name, then draw per op (with clusters), or collapse to one node per module."""
    order = topological_order(*outputs, every_input=True)
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
        self.calls: list[int] = []  # after split_calls: which call of its module a cluster is
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

    def split_calls(self, nodes: list[Node], edges: list[Edge]) -> None:
        """One cluster per call of a module: a module's ops that no edge inside the module
        joins (a pool used twice) come from different calls. Renumbers the op nodes' paths,
        outermost level first, so ``modules[i]`` is the module of cluster ``i``."""
        ops = [n for n in nodes if n.kind == OP and n.path]
        new_paths: dict[str, tuple[int, ...]] = {n.id: () for n in ops}
        modules: list[Any] = []
        calls: list[int] = []
        seen_calls: dict[int, int] = {}
        for depth in range(max((len(n.path) for n in ops), default=0)):
            groups: dict[tuple, list[Node]] = {}
            for n in ops:
                if len(n.path) > depth:
                    groups.setdefault((new_paths[n.id], n.path[depth]), []).append(n)
            for (_, old), members in groups.items():
                for component in _connected(members, edges):
                    module = self.modules[old]
                    seen_calls[id(module)] = seen_calls.get(id(module), 0) + 1
                    calls.append(seen_calls[id(module)])
                    modules.append(module)
                    for n in component:
                        new_paths[n.id] += (len(modules) - 1,)
        for n in ops:
            n.path = new_paths[n.id]
        self.modules, self.calls = modules, calls

    def title(self, index: int) -> str:
        """``"0: Conv2d"``, ``"features.conv1: Conv2d"``, or the class for an unnamed module;
        ``" (call 2)"`` after it for a module's second call."""
        module = self.modules[index]
        name = self.names.get(id(module), "")
        cls = type(module).__name__
        call = self.calls[index] if index < len(self.calls) else 1
        return (f"{name}: {cls}" if name else cls) + (f" (call {call})" if call > 1 else "")

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


def _connected(members: list[Node], edges: list[Edge]) -> list[list[Node]]:
    """``members`` split into the groups that edges between members join, in node order."""
    parent = {n.id: n.id for n in members}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for e in edges:
        if e.src in parent and e.dst in parent:
            parent[find(e.src)] = find(e.dst)
    groups: dict[str, list[Node]] = {}
    for n in members:
        groups.setdefault(find(n.id), []).append(n)
    return list(groups.values())


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
    scopes.split_calls(nodes, edges)
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
