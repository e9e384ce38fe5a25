"""Redraw the pictures the README and docs/learned.md show, from a full training run.

    python scripts/make_pictures.py --data-dir ../shared/data/mnist
    python scripts/make_pictures.py --run runs/mnist --data-dir ../shared/data/mnist  # no training

Trains the reference CNN with the defaults of `tinygrad-conv train` (3 epochs, seed 0) into
--run unless it already holds a finished checkpoint, then writes into docs/img/mnist/ the
PNGs `tinygrad-conv inspect` draws, and redraws docs/img/reference_cnn_graph.svg and
reference_cnn_modules.svg.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinygrad_conv.pictures import inspect_run
from tinygrad_conv.serialization import load
from tinygrad_conv.training import CHECKPOINT_NAME, DEFAULTS, TrainConfig, fit
from tinygrad_conv.viz import graph_command

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/mnist", help="the run folder (default runs/mnist)")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST files")
    parser.add_argument("--image", type=int, default=0, help="test image for the feature maps")
    args = parser.parse_args(argv)

    checkpoint = Path(args.run) / CHECKPOINT_NAME
    done = checkpoint.exists() and load(checkpoint).get("epoch") == DEFAULTS["epochs"]
    if not done:
        fit(TrainConfig(data_dir=args.data_dir, out=args.run, resume=checkpoint.exists()))
    for path in inspect_run(args.run, data_dir=args.data_dir, out=DOCS_IMG / "mnist",
                            image_index=args.image):
        print(f"wrote {path}")
    graph_command(DOCS_IMG / "reference_cnn_graph.svg")
    graph_command(DOCS_IMG / "reference_cnn_modules.svg", modules=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
