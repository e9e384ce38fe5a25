"""DOT text of a :class:`~.model.Graph`: HTML-like labels, clusters, the legend."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .model import CONST, INPUT, MODULE, OP, OUTPUT, PARAM, Edge, Node

if TYPE_CHECKING:
    from .model import Graph

COLORS = {  # fill colour per kind of node; the legend lists them
    INPUT: "#a6cee3", PARAM: "#fdd49e", CONST: "#f2f2f2", OP: "#e3e3e3",
    OUTPUT: "#b2df8a", MODULE: "#d9c8ec",
}
_STYLES = {
    INPUT: "filled,rounded", PARAM: "filled,rounded", CONST: "filled,rounded,dashed",
    OP: "filled", OUTPUT: "filled,rounded,bold", MODULE: "filled",
}
_CLUSTER_FILL, _CLUSTER_LINE = "#f5f7fb", "#8da0cb"


def _pack(items: list[str], width: int) -> list[str]:
    """Join items with ", " into lines of at most ``width`` characters (longer items alone)."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
        else:
            lines.append(item)
    return lines


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


def body_lines(graph: Graph) -> list[str]:
    """The DOT statements between the braces: header, nodes (in clusters), edges, legend."""
    lines = _header_lines(graph.rankdir, graph.title)
    # left to right, data enters a frame from above: the caption goes below, out of its way
    loc = "b" if graph.rankdir in ("LR", "RL") else "t"
    lines += _node_block(graph.nodes, graph.clusters, loc)
    lines += [_edge_line(e) for e in graph.edges]
    if graph.legend:
        lines.append(_legend_line({n.kind for n in graph.nodes}))
    return lines


_SPECIAL = re.compile(r"[&<>\"']")


def _escape(text: str) -> str:
    """Text for a Graphviz HTML-like label: &, <, >, quotes escaped; control chars as spaces."""
    if text.isprintable() and _SPECIAL.search(text) is None:
        return text
    text = "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace('"', "&quot;").replace("'", "&#39;")
    return text.replace("\n", "<br/>")


def _html_label(title: str, lines: list[str]) -> str:
    """``<<b>title</b><br/><font point-size="9">line<br/>line</font>>``."""
    label = f"<b>{_escape(title)}</b>"
    if lines:
        label += '<br/><font point-size="9">' + "<br/>".join(_escape(x) for x in lines) + "</font>"
    return f"<{label}>"


def _caption_label(title: str, lines: list[str]) -> str:
    """A cluster caption: a borderless table, one left-aligned cell per line, so each line
    gets its own box and a descender (the ``_`` of ``kernel_size``) never touches the next."""
    cells = [f"<b>{_escape(title)}</b>"]
    cells += [f'<font point-size="9">{_escape(x)}</font>' for x in lines]
    rows = "".join(f'<tr><td align="left">{c}</td></tr>' for c in cells)
    return f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">{rows}</table>>'


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


def _node_block(nodes: list[Node], clusters: list[tuple[str, str]], loc: str = "t") -> list[str]:
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
    return _cluster_lines(tree, clusters, "", loc)


def _cluster_lines(branch: dict, clusters: list[tuple[str, str]], indent: str,
                   loc: str) -> list[str]:
    lines = []
    for item in branch["items"]:
        if isinstance(item, Node):
            lines.append(indent + _node_line(item))
            continue
        title, detail = clusters[item]
        label = _caption_label(title, _split_top_level(detail, 48) if detail else [])
        inner = indent + "\t"
        lines.append(f"{indent}subgraph cluster_{item} {{")
        lines.append(f'{inner}graph [label={label}, labeljust=l, labelloc={loc}, '
                     f'style="rounded,filled", fillcolor="{_CLUSTER_FILL}", '
                     f'color="{_CLUSTER_LINE}", fontsize=10]')
        lines += _cluster_lines(branch["children"][item], clusters, inner, loc)
        lines.append(indent + "}")
    return lines


def _legend_line(kinds: set[str]) -> str:
    """One table node: a coloured cell per kind of node drawn, in a fixed order."""
    shown = [k for k in (INPUT, PARAM, CONST, OP, MODULE, OUTPUT) if k in kinds]
    rows = "".join(f'<tr><td bgcolor="{COLORS[k]}">{k}</td></tr>' for k in shown)
    table = ('<table border="0" cellborder="1" cellspacing="2" cellpadding="3">'
             f'<tr><td border="0"><b>legend</b></td></tr>{rows}</table>')
    return f'legend [shape=plaintext, style="", fontsize=9, label=<{table}>]'

