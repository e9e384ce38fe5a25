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
- ``group_modules=True`` puts the ops of each call of an ``nn.Module`` in a cluster named as
  in ``model.named_modules()``; ``modules_only=True`` draws one box per layer call instead of
  one per op.

Node ids (``n0``, ``n1``...) follow a topological order of the graph found by an iterative
walk from the outputs, so the same graph always gives the same text and any depth works.

The package: ``model`` (Node, Edge, Graph: the drawing as data), ``build`` (tensors to a
Graph), ``dot`` (a Graph's DOT text) and ``rendering`` (Graphviz, files, the CLI's drawing).
"""

from .build import SHOWN_ATTRS, build_graph, to_dot
from .dot import COLORS
from .model import Edge, Graph, Node
from .rendering import (
    GraphvizNotFoundError,
    draw_graph,
    graph_command,
    reference_step,
    render,
)

__all__ = [
    "to_dot", "draw_graph", "render", "build_graph", "graph_command", "Graph", "Node", "Edge",
    "GraphvizNotFoundError", "SHOWN_ATTRS", "COLORS", "reference_step",
]
