"""The command line: ``tinygrad-conv train``, ``graph``, ``summary``, ``inspect``, ``export``.

    tinygrad-conv train --epochs 3                    # the reference CNN on MNIST
    tinygrad-conv train --resume --out runs/mnist     # continue a stopped run
    tinygrad-conv graph --out step.svg --modules      # draw one training step's graph
    tinygrad-conv summary                             # the reference CNN's layers, as a table

Also ``python -m tinygrad_conv ...``.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .training import DATASETS, DEFAULTS, LR_SCHEDULES, MAX_LR, OPTIMIZERS, TrainConfig

GRAPH_FORMATS = ("svg", "png", "pdf")


def _number(text: str, kind: type, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def _learning_rate(text: str) -> float:
    value = _number(text, float, f"a number in (0, {MAX_LR:g}]")
    if not (math.isfinite(value) and 0 < value <= MAX_LR):
        raise argparse.ArgumentTypeError(f"must be a number in (0, {MAX_LR:g}], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the ``train`` and ``graph`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="tinygrad-conv",
        description="tinygrad_conv: train the example CNN on MNIST, draw a training step's "
                    "computation graph, summarise the model, draw what a trained run learned, "
                    "or export its weights as safetensors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser(
        "train", help="train the reference CNN on MNIST",
        description="Train the reference CNN (2 conv layers, 2 linear) on MNIST with a progress "
                    "bar. After every epoch: print the test accuracy, save OUT/checkpoint.npz, "
                    "append a line to OUT/metrics.jsonl and draw OUT/curves.png (needs "
                    "matplotlib). Ctrl-C saves a checkpoint; --resume continues it exactly. "
                    "Under `mpiexec -n N` (pip install 'tinygrad_conv[mpi]') N processes train "
                    "together, each on its share of every --batch-size batch "
                    "(docs/distributed.md).",
    )
    d = DEFAULTS
    train.add_argument("--epochs", metavar="N", type=_positive_int, default=None,
                       help=f"total number of epochs to train (default {d['epochs']}; with "
                            "--resume, the checkpoint's)")
    train.add_argument("--batch-size", metavar="N", type=_positive_int, default=None,
                       help=f"training batch size (default {d['batch_size']})")
    train.add_argument("--lr", metavar="LR", type=_learning_rate, default=None,
                       help=f"learning rate: the constant one, or where the cosine schedule "
                            f"starts (default {d['lr']})")
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                       help="cosine: anneal the lr from --lr to 0 along half a cosine over "
                            "all the run's batches (--epochs times the batches per epoch, "
                            "after --limit-batches), updated after every batch; constant: keep "
                            f"--lr throughout (default {d['lr_schedule']}; with --resume, the "
                            "checkpoint's schedule continues and cannot be changed)")
    train.add_argument("--dataset", choices=DATASETS, default=None,
                       help="mnist (handwritten digits) or fashion-mnist (clothes, the same "
                            "format); default mnist, with --resume the checkpoint's")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                       help=f"optimizer; sgd uses momentum 0.9 (default {d['optimizer']})")
    train.add_argument("--seed", metavar="N", type=_non_negative_int, default=None,
                       help=f"random seed for initialisation and shuffling (default {d['seed']})")
    train.add_argument("--data-dir", metavar="DIR", default=None,
                       help="folder with the four MNIST IDX files (.gz or raw); default "
                            "$TINYGRAD_CONV_DATA, else ~/.cache/tinygrad_conv/mnist; missing "
                            "files are downloaded")
    train.add_argument("--out", default="runs/mnist", metavar="DIR",
                       help="output folder for checkpoint.npz, metrics.jsonl and curves.png "
                            "(default runs/mnist)")
    train.add_argument("--limit-batches", metavar="N", type=_positive_int, default=None,
                       help="train on at most this many batches per epoch (for quick runs)")
    train.add_argument("--limit-test", metavar="N", type=_positive_int, default=None,
                       help="evaluate on the first N test images only (default: all 10,000)")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.npz; the settings not given default "
                            "to the checkpoint's, and the result equals an uninterrupted run")
    train.add_argument("--no-verify", action="store_true",
                       help="load data files that are neither the published originals nor "
                            "listed in the data folder's MD5SUMS (a warning names each)")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar (the per-epoch summary lines are still printed)")
    train.set_defaults(handler=_train)

    graph = sub.add_parser(
        "graph", help="draw the computation graph of one training step",
        description="Draw the computation graph of one training step of the reference CNN "
                    "with Graphviz: the forward pass and cross-entropy loss on a random batch of "
                    "8 MNIST-shaped images, after the backward pass, so each parameter shows "
                    "its gradient's norm. Ops are grouped in one frame per call of a layer.",
    )
    graph.add_argument("--out", required=True, metavar="FILE",
                       help="the file to write, e.g. step.svg")
    graph.add_argument("--format", choices=GRAPH_FORMATS, default=None,
                       help="output format (default: from FILE's extension, else svg)")
    graph.add_argument("--modules", action="store_true",
                       help="one node per module (Conv2d, ReLU, ...) instead of one per op")
    graph.add_argument("--rankdir", choices=("TB", "LR"), default="TB",
                       help="layout direction: top to bottom or left to right (default TB)")
    graph.set_defaults(handler=_graph)
    _add_summary_command(sub)
    _add_export_command(sub)
    _add_inspect_command(sub)
    return parser


def _train(args: argparse.Namespace) -> int:
    from .data import MNISTError
    from .training import TrainingError, TrainingInterrupted, fit

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        seed=args.seed, limit_batches=args.limit_batches, limit_test=args.limit_test,
        lr_schedule=args.lr_schedule, dataset=args.dataset, data_dir=args.data_dir,
        out=args.out, resume=args.resume,
        progress=not args.no_progress, verify=not args.no_verify,
    )
    try:
        with warnings.catch_warnings():  # warnings as one "warning:" line each
            warnings.showwarning = _print_warning
            fit(config)
    except TrainingInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nInterrupted before training started; nothing was saved.", file=sys.stderr)
        return 130
    except (MNISTError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the machine's state: a full disk, a vanished folder...
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}; check the "
              "disk space and permissions of --out and --data-dir", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory; use a smaller --batch-size", file=sys.stderr)
        return 1
    return 0


def _print_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _graph(args: argparse.Namespace) -> int:
    try:
        from .viz import graph_command
    except ImportError as e:
        print(f"error: the graph command needs tinygrad_conv.viz, which failed to import: {e}",
              file=sys.stderr)
        return 1
    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lstrip(".").lower()
        fmt = suffix if suffix in GRAPH_FORMATS else "svg"
    try:
        result = graph_command(out=args.out, fmt=fmt, modules=args.modules, rankdir=args.rankdir)
    except (RuntimeError, OSError, ValueError) as e:  # e.g. Graphviz's `dot` not installed
        print(f"error: {e}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def _add_summary_command(sub: Any) -> None:
    summary = sub.add_parser(
        "summary", help="print the reference CNN's layers, parameters and multiply-adds",
        description="Print a table of the reference CNN's layers for one input batch: output "
                    "shape, parameters (in parentheses when not trainable), multiply-adds and "
                    "output memory per layer, and the totals, counted as torchinfo counts them.",
    )
    summary.add_argument("--batch-size", metavar="N", type=_positive_int, default=1,
                         help="the batch the input holds (default 1): (N, 1, 28, 28)")
    summary.set_defaults(handler=_summary)


def _summary(args: argparse.Namespace) -> int:
    from .models import reference_cnn
    from .summary import summary

    summary(reference_cnn(), (args.batch_size, 1, 28, 28))
    return 0


def _add_export_command(sub: Any) -> None:
    export = sub.add_parser(
        "export", help="write a trained run's model weights as a .safetensors file",
        description="Read RUN/checkpoint.npz (written by `tinygrad-conv train`) and write its "
                    "model's state dict to OUT in the safetensors format, which PyTorch loads "
                    "with safetensors.torch.load_file + load_state_dict into the same layers.",
    )
    export.add_argument("--run", default="runs/mnist", metavar="DIR",
                        help="the training run's folder (default runs/mnist)")
    export.add_argument("--out", default=None, metavar="FILE",
                        help="the file to write (default RUN/model.safetensors); a name not "
                             "ending in .safetensors is written in tc.save's .npz format")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from .serialization import load, save
    from .training import CHECKPOINT_NAME

    checkpoint = Path(args.run) / CHECKPOINT_NAME
    out = Path(args.out) if args.out else Path(args.run) / "model.safetensors"
    try:
        saved = load(checkpoint)
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
            raise ValueError(f"{checkpoint} is not a checkpoint of `tinygrad-conv train`")
        save(saved["model"], out)
    except (OSError, ValueError, ImportError) as e:
        print(f"error: export needs the run's checkpoint: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {len(saved['model'])} arrays of the model in {checkpoint}")
    return 0


def _add_inspect_command(sub: Any) -> None:
    inspect = sub.add_parser(
        "inspect", help="draw PNGs of what a trained run learned",
        description="Draw PNGs of a `tinygrad-conv train` run with matplotlib: the first conv "
                    "layer's filters, the feature maps of every conv layer for one test image, "
                    "the confusion matrix on the test set, a grid of misclassified digits with "
                    "true and predicted labels and the confidence, each layer's gradient and "
                    "weight norms over training, and the loss, accuracy and lr curves.",
    )
    inspect.add_argument("--run", default="runs/mnist", metavar="DIR",
                         help="the training run's folder (default runs/mnist)")
    inspect.add_argument("--out", default=None, metavar="DIR",
                         help="where to write the PNGs (default: the run's folder)")
    inspect.add_argument("--data-dir", metavar="DIR", default=None,
                         help="folder with the MNIST files (default as for train)")
    inspect.add_argument("--image", metavar="N", type=int, default=0,
                         help="index of the test image whose feature maps are drawn (default 0)")
    inspect.add_argument("--limit-test", metavar="N", type=_positive_int, default=None,
                         help="use the first N test images only (default: all 10,000)")
    inspect.set_defaults(handler=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from .data import MNISTError

    try:
        from .pictures import inspect_run

        written = inspect_run(args.run, data_dir=args.data_dir, out=args.out,
                              image_index=args.image, limit_test=args.limit_test)
    except (OSError, ValueError, ImportError, MNISTError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "train":  # under `mpiexec -n N`: N ranks train one model together
        from .distributed.training import run_command

        return run_command(args.handler, args)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
