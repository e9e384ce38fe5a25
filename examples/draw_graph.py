"""Draw the computation graph of one training step of the reference CNN.

    python examples/draw_graph.py                        # runs/graph/reference_cnn_graph.svg, .dot
    python examples/draw_graph.py --modules --format png --out-dir /tmp/pictures --name layers

The DOT text needs nothing but this library; the picture needs Graphviz's `dot` program
(sudo apt-get install graphviz, brew install graphviz, or conda install -c conda-forge graphviz).
In Jupyter, end a cell with `viz.draw_graph(loss, ...)` to see the graph inline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import viz
from tinygrad_conv.models import reference_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="runs/graph", type=Path,
                        help="folder to write into, made if missing (default runs/graph)")
    parser.add_argument("--name", default="reference_cnn_graph",
                        help="file name without extension (default reference_cnn_graph)")
    parser.add_argument("--format", default="svg", choices=["svg", "png", "pdf"])
    parser.add_argument("--modules", action="store_true", help="one node per layer")
    args = parser.parse_args(argv)

    # One training step: forward, loss, backward (so the parameters have gradients to show).
    tc.manual_seed(0)
    model = reference_cnn()
    images = tc.randn(8, 1, 28, 28)                              # a batch shaped like MNIST
    labels = np.random.default_rng(0).integers(0, 10, size=8)    # and its labels
    loss = F.cross_entropy(model(images), labels)
    loss.backward()

    options = dict(
        params=dict(model.named_parameters()),  # names nodes "0.weight", "3.bias", ...
        group_modules=not args.modules,         # a box around the ops of each layer
        modules_only=args.modules,              # or one node per layer
        show_grad_norm=True,                    # the L2 norm of each parameter's .grad
    )

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / args.name
    dot_path = stem.with_suffix(".dot")
    dot_path.write_text(viz.to_dot(loss, **options))  # plain text, no Graphviz needed
    print(f"wrote {dot_path}")

    graph = viz.draw_graph(loss, **options)  # a graphviz.Digraph
    try:
        picture = graph.render(outfile=stem.with_suffix(f".{args.format}"), cleanup=True)
    except viz.GraphvizNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"wrote {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
