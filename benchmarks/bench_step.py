"""A full training step of the reference CNN: tinygrad_conv beside the same network in PyTorch.

    python benchmarks/bench_step.py [--repeats N] [--warmup N] [--threads N] [--quick]

One step = optimizer.zero_grad(), forward, F.cross_entropy, backward, optimizer.step(), on a
fixed synthetic batch (random images, random labels: data loading is not timed). Rows: SGD
(lr 0.01) and Adam (lr 1e-3) at batch 64 and 128. The PyTorch twin is built layer by layer
from our model and starts from our weights (our state_dict loaded into it). A second table
gives the step's peak memory above its baseline. See benchmarks/README.md for the columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import common

BATCHES = (64, 128)
OPTIMIZERS = {"SGD": {"lr": 0.01}, "Adam": {"lr": 1e-3}}
EPOCH_IMAGES = 60_000
STEP_TARGET = 0.7  # our step time / torch's, at most (issue 19)
MEMORY_TARGET = 1.0  # our extra memory / torch's, at most (issue 19)


# --------------------------------------------------------------------------- building


def synthetic_batch(batch: int, np, seed: int = 0):
    """(images (B, 1, 28, 28) float32 standard normal, labels (B,) int64 in 0..9)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=batch, dtype=np.int64)
    return x, y


def make_ours(optimizer: str, seed: int = 0):
    """(model, optimizer): models.reference_cnn() and optim.SGD/Adam over its parameters."""
    import tinygrad_conv as tc
    from tinygrad_conv import models, optim

    tc.manual_seed(seed)
    model = models.reference_cnn()
    opt = getattr(optim, optimizer)(model.parameters(), **OPTIMIZERS[optimizer])
    return model, opt


def ours_step_fn(model, opt, x_arr, y_arr):
    """A zero-argument callable doing one training step of our model on the fixed batch."""
    import tinygrad_conv as tc
    import tinygrad_conv.functional as F

    x, y = tc.Tensor(x_arr), tc.Tensor(y_arr)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def torch_layer(module, torch):
    """The torch.nn twin of one of our modules (same hyper-parameters, fresh weights)."""
    tnn, kind = torch.nn, type(module).__name__
    if kind == "Sequential":
        return tnn.Sequential(*(torch_layer(m, torch) for m in module.children()))
    if kind == "Conv2d":
        return tnn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                          module.stride, module.padding, module.dilation, module.groups,
                          bias=module.bias is not None)
    if kind == "Linear":
        out_features, in_features = module.weight.shape
        return tnn.Linear(in_features, out_features, bias=module.bias is not None)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return getattr(tnn, kind)(module.kernel_size, module.stride, module.padding)
    if kind == "Flatten":
        return tnn.Flatten(module.start_dim, module.end_dim)
    if kind == "Dropout":
        return tnn.Dropout(module.p)
    if kind == "BatchNorm2d":
        return tnn.BatchNorm2d(module.num_features, module.eps, module.momentum)
    if kind in ("ReLU", "Sigmoid", "Tanh"):
        return getattr(tnn, kind)()
    raise NotImplementedError(f"bench_step.torch_layer: no torch twin for {kind}; add one")


def make_torch(model, optimizer: str, torch):
    """(torch model, torch optimizer): our architecture with our current weights copied in."""
    twin = torch_layer(model, torch)
    state = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    opt = getattr(torch.optim, optimizer)(twin.parameters(), **OPTIMIZERS[optimizer])
    return twin, opt


def torch_step_fn(model, opt, x_arr, y_arr, torch):
    """A zero-argument callable doing one training step of the torch twin."""
    x, y = torch.from_numpy(x_arr), torch.from_numpy(y_arr)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


# --------------------------------------------------------------------------- checks


def agreement(ours, twin, x_arr, np, torch) -> float:
    """Max |our logits - torch's| on the batch, in eval mode (so dropout is off)."""
    import tinygrad_conv as tc

    ours.eval()
    twin.eval()
    with tc.no_grad():
        a = ours(tc.Tensor(x_arr)).numpy()
    with torch.no_grad():
        b = twin(torch.from_numpy(x_arr)).numpy()
    ours.train()
    twin.train()
    return float(np.max(np.abs(a - b)))


def param_agreement(ours, twin, np) -> float:
    """Max |our parameter - torch's| over every parameter (after the same steps)."""
    theirs = twin.state_dict()
    return max(float(np.max(np.abs(v - theirs[k].numpy()))) for k, v in
               ours.state_dict().items() if v.dtype.kind == "f")


# --------------------------------------------------------------------------- one row


@dataclass
class Row:
    """Time and memory measurements of one (optimizer, batch) case."""

    optimizer: str
    batch: int
    ours: common.Timing
    torch: common.Timing | None = None
    logits_diff: float | None = None
    param_diff: float | None = None
    memory: dict[str, int | None] = field(default_factory=dict)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(EPOCH_IMAGES / self.batch)

    @property
    def ratio(self) -> float | None:
        return self.ours.median / self.torch.median if self.torch else None


def measure_memory(ours_step, torch_step) -> dict[str, int | None]:
    """Peak extra memory of one step: ours by tracemalloc and by RSS, torch's by RSS."""
    memory = {"ours traced": common.traced_peak_bytes(ours_step, prime=ours_step)}
    memory["ours rss"], _ = common.rss_peak_delta_bytes(ours_step)
    memory["torch rss"] = None
    if torch_step is not None:
        memory["torch rss"], _ = common.rss_peak_delta_bytes(torch_step)
    return memory


def bench_case(optimizer: str, batch: int, args, np, torch) -> Row:
    """Build both models from the same weights, check they agree, time them, then measure
    memory."""
    model, opt = make_ours(optimizer)
    x_arr, y_arr = synthetic_batch(batch, np)
    ours_step = ours_step_fn(model, opt, x_arr, y_arr)
    cases = {"ours": common.Case(ours_step)}
    twin = torch_step = logits_diff = param_diff = None
    if torch is not None:
        twin, twin_opt = make_torch(model, optimizer, torch)
        torch_step = torch_step_fn(twin, twin_opt, x_arr, y_arr, torch)
        logits_diff = agreement(model, twin, x_arr, np, torch)
        ours_step()
        torch_step()
        param_diff = param_agreement(model, twin, np)
        cases["torch"] = common.Case(torch_step)
    timings = common.time_cases(cases, args.repeats, args.warmup, args.interleave)
    row = Row(optimizer, batch, timings["ours"], timings.get("torch"), logits_diff, param_diff)
    row.memory = measure_memory(ours_step, torch_step)
    return row


# --------------------------------------------------------------------------- report


def epoch_text(timing: common.Timing | None, steps: int) -> str:
    """Extrapolated epoch time in seconds."""
    return "n/a" if timing is None else f"{common.fmt(timing.median * steps)} s"


def time_row(row: Row) -> list[str]:
    """One row of the time table."""
    t = row.torch
    ratio = row.ratio
    return [
        str(row.batch), row.optimizer, row.ours.ms(), common.fmt(row.batch / row.ours.median),
        t.ms() if t else "n/a", common.fmt(row.batch / t.median) if t else "n/a",
        f"{common.fmt(ratio)}x" if ratio else "n/a",
        common.pass_miss(None if ratio is None else ratio <= STEP_TARGET),
        epoch_text(row.ours, row.steps_per_epoch), epoch_text(t, row.steps_per_epoch),
        f"{common.fmt_sci(row.logits_diff)} / {common.fmt_sci(row.param_diff)}",
    ]


TIME_HEADERS = ["batch", "optimizer", "ours ms/step", "ours img/s", "torch ms/step",
                "torch img/s", "ours/torch", f"target ≤{STEP_TARGET:g}x", "epoch ours",
                "epoch torch", "max abs diff logits / params"]


def memory_row(row: Row) -> list[str]:
    """One row of the memory table."""
    m = row.memory
    ratio = m["ours traced"] / m["torch rss"] if m.get("torch rss") else None
    rss_ratio = m["ours rss"] / m["torch rss"] if m.get("torch rss") and m["ours rss"] else None
    return [
        str(row.batch), row.optimizer, common.fmt_mb(m["ours traced"]),
        common.fmt_mb(m["ours rss"]), common.fmt_mb(m["torch rss"]),
        f"{common.fmt(ratio)}x" if ratio else "n/a",
        f"{common.fmt(rss_ratio)}x" if rss_ratio else "n/a",
        common.pass_miss(None if ratio is None else ratio <= MEMORY_TARGET),
    ]


MEMORY_HEADERS = ["batch", "optimizer", "ours MB (tracemalloc)", "ours MB (RSS)", "torch MB (RSS)",
                  "ours/torch", "ours/torch (RSS both)", f"target ≤{MEMORY_TARGET:g}x"]

NOTES = """\
One step = zero_grad, forward, cross_entropy, backward, optimizer.step() on a fixed synthetic
batch. Epoch = ceil(60000 / batch) steps x the median step time (extrapolated; no data
loading, no evaluation). max abs diff: logits of the two models from the same weights (eval
mode), then parameters after one identical training step. Memory = peak during one step minus
the memory held just before it (weights, optimizer state, last step's grads): ours from
tracemalloc (NumPy reports every array buffer to it), and for both frameworks the peak resident
set size (VmHWM after resetting it through /proc/self/clear_refs, following malloc_trim) minus
the RSS before the step. ours/torch uses our tracemalloc figure against torch's RSS figure."""


def main() -> None:
    """Parse flags, set threads, run every (optimizer, batch) case and print both tables."""
    args = common.make_parser(__doc__.splitlines()[0], repeats=10, warmup=3).parse_args()
    args = common.resolve_counts(args, quick_repeats=5)
    method = common.setup(args)
    import numpy as np

    torch = common.import_torch(args.threads, args.no_torch)
    print(common.header("Training step of the reference CNN: tinygrad_conv vs PyTorch", args,
                        method, torch))
    rows = []
    for batch in BATCHES:
        for optimizer in OPTIMIZERS:
            common.progress(f"step: batch {batch}, {optimizer} ...")
            rows.append(bench_case(optimizer, batch, args, np, torch))
    print(common.markdown_table(TIME_HEADERS, [time_row(r) for r in rows],
                                right=[True, False] + [True] * 5 + [False] + [True] * 3))
    print()
    print(common.markdown_table(MEMORY_HEADERS, [memory_row(r) for r in rows],
                                right=[True, False] + [True] * 5 + [False]))
    print()
    print(NOTES)


if __name__ == "__main__":
    main()
