"""``tc.summary(model, input_size)``: a table of a model's layers, as torchinfo prints it.

    import tinygrad_conv as tc
    from tinygrad_conv.models import reference_cnn
    stats = tc.summary(reference_cnn(), (1, 1, 28, 28))   # prints the table, returns it

One row per call of a module (a module called twice has two rows), with the output shape,
the parameters it holds (in parentheses when none of them is trainable), its multiply-adds
and the memory of its output. The numbers are counted by torchinfo's rules, so the same model
gives the same totals in both:

- parameters: every parameter once (a shared one once), trainable when ``requires_grad``;
  buffers (batch norm's running statistics) are not parameters;
- multiply-adds of a layer without children, per parameter named ``weight`` or ``bias``:
  ``numel * N * H_out * W_out`` (every output position) for a layer whose class name has
  "Conv" in it, ``numel * N`` for any other (a linear layer, a batch norm's scale and shift);
  layers without such parameters (ReLU, pooling) count 0;
- "forward/backward pass size": twice (output and its gradient) the output bytes of every
  call of a childless layer that has parameters; "params size": the parameters' bytes; "input
  size": the input's data bytes (torchinfo adds the few dozen bytes of the Python object that holds
  its storage). Megabytes are 10**6 bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .engine import no_grad
from .tensor import Tensor

__all__ = ["summary", "ModelSummary", "LayerRow"]


@dataclass
class LayerRow:
    """One call of one module: ``name`` as in ``named_modules()`` (``""`` for the root),
    ``kind`` its class name, ``depth`` (0 for the root), ``output_shape``, the parameters it
    holds (``params``, of which ``trainable``; 0 for a second call of the same module),
    ``mult_adds`` and ``output_bytes``. ``leaf``: the module has no children."""

    name: str
    kind: str
    depth: int
    leaf: bool
    output_shape: list[int] = field(default_factory=list)
    params: int = 0
    trainable: int = 0
    param_bytes: int = 0
    mult_adds: int = 0
    output_bytes: int = 0
    repeated: bool = False
    holds_params: bool = False

    @property
    def title(self) -> str:
        """E.g. ``"0 (Conv2d)"``, indented two spaces per level below the root."""
        label = f"{self.name} ({self.kind})" if self.name else self.kind
        return "  " * max(self.depth - 1, 0) + label if self.depth else label


@dataclass
class ModelSummary:
    """What :func:`summary` found: the rows and the totals (bytes and counts); ``str()`` is
    the table."""

    rows: list[LayerRow]
    input_shape: tuple[int, ...]
    input_bytes: int
    total_params: int
    trainable_params: int
    param_bytes: int
    total_mult_adds: int
    forward_backward_bytes: int

    @property
    def non_trainable_params(self) -> int:
        """Parameters with ``requires_grad=False``."""
        return self.total_params - self.trainable_params

    @property
    def total_bytes(self) -> int:
        """Input, forward/backward pass and parameter bytes together."""
        return self.input_bytes + self.forward_backward_bytes + self.param_bytes

    def __str__(self) -> str:
        return _table(self)

    def __repr__(self) -> str:
        return _table(self)


def summary(model: Any, input_size: Sequence[int], dtype: Any = np.float32,
            verbose: int = 1) -> ModelSummary:
    """Run ``model`` on zeros of shape ``input_size`` (batch included, e.g. ``(1, 1, 28, 28)``)
    and count, per module call, the output shape, parameters, multiply-adds and output memory.

    The model runs once in eval mode under ``no_grad`` (so batch norm's running statistics and
    the random generator are left as they were) and is put back in its previous mode.
    ``verbose=1`` prints the table; ``0`` only returns it. Returns a :class:`ModelSummary`.
    """
    shape = _check_input_size(input_size)
    x = Tensor(np.zeros(shape, dtype=dtype))
    rows = _record_calls(model, x)
    return _totals(model, rows, x, verbose)


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in input_size)
    except (TypeError, ValueError):
        raise TypeError(f"summary: input_size must be a sequence of ints such as (1, 1, 28, 28), "
                        f"got {input_size!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"summary: input_size must be positive sizes with the batch first, "
                         f"e.g. (1, 1, 28, 28); got {input_size!r}")
    return shape


def run_watched(model: Any, x: Any, enter: Callable[[str, Any], Any],
                leave: Callable[[Any, Any, Any], None]) -> Any:
    """Run ``model(x)`` once in eval mode under ``no_grad``, calling ``enter(name, module)``
    before every module call and ``leave(token, module, output)`` after it (``token`` is what
    ``enter`` returned). Each module's ``forward`` is wrapped for the run and unwrapped after;
    the model's mode is restored. Returns the model's output."""
    names = {id(m): name for name, m in model.named_modules()}

    def wrap(module: Any) -> None:
        forward = module.forward

        def watched_forward(*args: Any, **kwargs: Any) -> Any:
            token = enter(names[id(module)], module)
            out = forward(*args, **kwargs)
            leave(token, module, out)
            return out

        object.__setattr__(module, "forward", watched_forward)

    modules = list(model.modules())
    was_training = model.training
    try:
        for m in modules:
            wrap(m)
        model.eval()
        with no_grad():
            return model(x)
    finally:
        for m in modules:
            m.__dict__.pop("forward", None)
        model.train(was_training)


def _record_calls(model: Any, x: Tensor) -> list[LayerRow]:
    """A row per module call, in call order (a parent before its children)."""
    rows: list[LayerRow] = []
    depth = [0]
    counted: set[int] = set()

    def enter(name: str, module: Any) -> LayerRow:
        row = LayerRow(name, type(module).__name__, depth[0],
                       leaf=not any(True for _ in module.children()))
        rows.append(row)
        depth[0] += 1
        return row

    def leave(row: LayerRow, module: Any, out: Any) -> None:
        depth[0] -= 1
        _fill_row(row, module, out, counted)

    run_watched(model, x, enter, leave)
    return rows


def _fill_row(row: LayerRow, module: Any, out: Any, counted: set[int]) -> None:
    shapes = [t.shape for t in _tensors(out)]
    row.output_shape = list(shapes[0]) if len(shapes) == 1 else [list(s) for s in shapes]
    row.output_bytes = sum(t.data.nbytes for t in _tensors(out))
    own = list(module.named_parameters())
    row.holds_params = bool(own)
    row.repeated = id(module) in counted
    counted.add(id(module))
    if not row.repeated:
        row.params = sum(p.data.size for _, p in own)
        row.trainable = sum(p.data.size for _, p in own if p.requires_grad)
        row.param_bytes = sum(p.data.nbytes for _, p in own)
    if row.leaf and shapes:
        row.mult_adds = _mult_adds(row.kind, own, shapes[0])


def _tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _tensors(item)]
    return []


def _mult_adds(kind: str, params: list[tuple[str, Tensor]], out_shape: tuple[int, ...]) -> int:
    """torchinfo's count: a conv's weight and bias are used at every output position; any other
    layer's ``weight``/``bias`` once per sample (the first output axis)."""
    total = 0
    batch = out_shape[0] if out_shape else 1
    for name, p in params:
        if name in ("weight", "bias"):
            positions = batch * math.prod(out_shape[2:]) if "Conv" in kind else batch
            total += p.data.size * positions
        elif "weight" in name or "bias" in name:  # e.g. recurrent layers' weight_ih_l0
            total += p.data.size * math.prod(out_shape[:2])
    return total


def _totals(model: Any, rows: list[LayerRow], x: Tensor, verbose: int) -> ModelSummary:
    params = list(model.parameters())
    result = ModelSummary(
        rows=rows,
        input_shape=x.shape,
        input_bytes=x.data.nbytes,
        total_params=sum(p.data.size for p in params),
        trainable_params=sum(p.data.size for p in params if p.requires_grad),
        param_bytes=sum(p.data.nbytes for p in params),
        total_mult_adds=sum(r.mult_adds for r in rows if r.leaf),
        forward_backward_bytes=sum(2 * r.output_bytes for r in rows
                                   if r.leaf and r.holds_params),
    )
    if verbose:
        print(result)
    return result


# ---- the table --------------------------------------------------------------------------------
_HEADERS = ("Layer (type)", "Output shape", "Param #", "Mult-adds", "Output memory")


def _table(s: ModelSummary) -> str:
    cells = [_row_cells(r) for r in s.rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) + 2 for i, h in enumerate(_HEADERS)]
    line = "=" * sum(widths)

    def fmt(items: Sequence[str]) -> str:
        first = items[0].ljust(widths[0])
        return (first + "".join(c.rjust(w) for c, w in zip(items[1:], widths[1:]))).rstrip()

    mb = 1e6
    return "\n".join([
        line, fmt(_HEADERS), line, *(fmt(c) for c in cells), line,
        f"Total params: {s.total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"Total mult-adds (M): {s.total_mult_adds / mb:.2f}",
        line,
        f"Input size (MB): {s.input_bytes / mb:.2f}",
        f"Forward/backward pass size (MB): {s.forward_backward_bytes / mb:.2f}",
        f"Params size (MB): {s.param_bytes / mb:.2f}",
        f"Estimated total size (MB): {s.total_bytes / mb:.2f}",
        line,
    ])


def _row_cells(r: LayerRow) -> list[str]:
    if r.repeated:
        params = "(recursive)"
    elif not r.leaf and r.params:
        params = "--"
    elif r.params:
        params = f"{r.params:,}" if r.trainable else f"({r.params:,})"
    else:
        params = "--"
    mult_adds = f"{r.mult_adds:,}" if r.leaf and r.mult_adds else "--"
    return [r.title, str(r.output_shape), params, mult_adds, _bytes_text(r.output_bytes)]


def _bytes_text(n: int) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
