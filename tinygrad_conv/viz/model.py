"""The drawing as data: nodes, edges and module clusters (no Graphviz, no tensors)."""

from __future__ import annotations

from dataclasses import dataclass, field

GRAPH_NAME = "tinygrad_conv"
INPUT, PARAM, CONST, OP, OUTPUT, MODULE = (
    "input", "parameter", "constant", "op", "output", "module"
)


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
        from .dot import body_lines

        return [f"\t{line}\n" for line in body_lines(self)]

    @property
    def source(self) -> str:
        """The whole DOT text (the same as ``graphviz.Digraph(body=self.body()).source``)."""
        return f"digraph {GRAPH_NAME} {{\n" + "".join(self.body()) + "}\n"

