"""Rendering through Graphviz: ``draw_graph`` (a ``graphviz.Digraph``), ``render`` (an atomic
file write) and the ``tinygrad-conv graph`` command's reference training step."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._files import write_atomic
from ..tensor import Tensor
from .build import build_graph, to_dot
from .model import GRAPH_NAME, Graph

if TYPE_CHECKING:
    import graphviz

_TEXT_FORMATS = ("dot", "gv")
_KNOWN_FORMATS = _TEXT_FORMATS + ("svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps")

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
    write_atomic(target, data)
    return target


def _run_dot(source: str, fmt: str) -> bytes:
    import graphviz

    try:
        return graphviz.pipe("dot", fmt, source.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound as e:
        raise GraphvizNotFoundError() from e
    except graphviz.CalledProcessError as e:
        raise RuntimeError(f"Graphviz dot failed to render {fmt}: {e.stderr!r}") from e


# ---- the reference training step (for the CLI and the docs) -----------------------------------
def reference_step(seed: int = 0, batch: int = 8) -> tuple[Any, Tensor]:
    """``(model, loss)``: the reference CNN after one forward, cross-entropy and backward on a
    random MNIST-shaped batch ``(batch, 1, 28, 28)`` with random labels (all from ``seed``)."""
    from .. import functional as F
    from ..models import reference_cnn
    from ..rng import manual_seed

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

