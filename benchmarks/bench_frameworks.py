"""A training step of the reference CNN in tinygrad_conv, PyTorch, JAX and tinygrad, interleaved.

    python benchmarks/bench_frameworks.py [--quick] [--repeats N] [--warmup N] [--threads N]
        [--batches 64,128] [--frameworks tinygrad_conv,torch,jax,tinygrad] [--optimizer sgd]
        [--steps-per-turn K] [--load N]

Every framework runs in a worker process of its own (this file with ``--worker NAME``), which
the parent drives over a pipe with one JSON line per command: build the model from our
weights and take the first step (timed alone: it includes JIT compilation), warm up, then
round after round "run K steps" to each worker in turn, so that load from other processes hits
every framework alike; at the end each reports its memory. Frameworks that are not installed
get a row saying so. See benchmarks/README.md for the columns.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import util

import bench_step
import common

FRAMEWORKS = ("tinygrad_conv", "torch", "jax", "tinygrad")
INSTALL = {
    "tinygrad_conv": 'pip install -e .',
    "torch": "pip install torch==2.13.0",
    "jax": 'pip install "jax==0.10.2" "jaxlib==0.10.2"',
    "tinygrad": "pip install tinygrad==0.14.0",
}
LOSS_RTOL = 1e-4  # each framework's first two losses against ours (same weights, same batch)
COMMAND_TIMEOUT = 900.0  # seconds one worker command may take before the worker is given up

# The reference CNN (tinygrad_conv.models.reference_cnn()) as a layer table every framework
# below builds from; the parent checks it against our model's modules before running.
# (kind, state_dict prefix): conv 3x3 padding 1, 2x2 max pooling, linear y = x W^T + b.
LAYERS = (("Conv2d", "0"), ("ReLU", ""), ("MaxPool2d", ""), ("Conv2d", "3"), ("ReLU", ""),
          ("MaxPool2d", ""), ("Flatten", ""), ("Linear", "7"), ("ReLU", ""), ("Linear", "9"))


# --------------------------------------------------------------------------- the models


def build_tinygrad_conv(weights: dict, x, y, optimizer: str) -> Callable[[], float]:
    """One training step of models.reference_cnn() with our weights; returns the loss."""
    from tinygrad_conv import models, optim

    model = models.reference_cnn()
    model.load_state_dict(weights)
    opt = getattr(optim, optimizer)(model.parameters(), **bench_step.OPTIMIZERS[optimizer])
    step = bench_step.ours_step_fn(model, opt, x, y)
    return lambda: float(step().item())


def build_torch(weights: dict, x, y, optimizer: str) -> Callable[[], float]:
    """The same step in PyTorch eager mode (torch.nn layers, torch.optim)."""
    import torch

    make = {"Conv2d": lambda w: torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1),
            "Linear": lambda w: torch.nn.Linear(w.shape[1], w.shape[0]),
            "ReLU": lambda w: torch.nn.ReLU(), "MaxPool2d": lambda w: torch.nn.MaxPool2d(2),
            "Flatten": lambda w: torch.nn.Flatten()}
    model = torch.nn.Sequential(*(make[kind](weights.get(f"{key}.weight"))
                                  for kind, key in LAYERS))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    opt = getattr(torch.optim, optimizer)(model.parameters(), **bench_step.OPTIMIZERS[optimizer])
    step = bench_step.torch_step_fn(model, opt, x, y, torch)
    return lambda: float(step().item())


def _jax_optimizer(optimizer: str, jnp):
    """(init, update) of optax's SGD/Adam, or a hand-written SGD where optax is missing;
    update(grads, state, params) -> (new params, new state)."""
    settings = bench_step.OPTIMIZERS[optimizer]
    try:
        import optax
    except ImportError:
        optax = None
    if optax is not None:
        tx = getattr(optax, optimizer.lower())(settings["lr"])

        def update(grads, state, params):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return tx.init, update
    if optimizer != "SGD":
        raise RuntimeError(f"JAX with {optimizer} needs optax: pip install optax")
    import jax

    return (lambda params: ()), (lambda grads, state, params: (
        jax.tree.map(lambda p, g: p - settings["lr"] * g, params, grads), state))


def build_jax(weights: dict, x, y, optimizer: str) -> Callable[[], float]:
    """The same step in JAX: forward, jax.value_and_grad and the update in one jax.jit."""
    import functools

    import jax
    import jax.numpy as jnp
    from jax import lax

    def forward(params, h):
        for kind, key in LAYERS:
            if kind == "Conv2d":
                h = lax.conv_general_dilated(h, params[f"{key}.weight"], (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
                h = h + params[f"{key}.bias"][None, :, None, None]
            elif kind == "Linear":
                h = h @ params[f"{key}.weight"].T + params[f"{key}.bias"]
            elif kind == "ReLU":
                h = jnp.maximum(h, 0)
            elif kind == "MaxPool2d":
                h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            else:
                h = h.reshape(h.shape[0], -1)
        return h

    def loss_fn(params, images, labels):
        logp = jax.nn.log_softmax(forward(params, images))
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    init, update = _jax_optimizer(optimizer, jnp)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        params, state = update(grads, state, params)
        return params, state, loss

    params = {k: jnp.asarray(v) for k, v in weights.items()}
    carry = [params, init(params)]
    images, labels = jnp.asarray(x), jnp.asarray(y.astype("int32"))

    def step() -> float:
        carry[0], carry[1], loss = train_step(carry[0], carry[1], images, labels)
        return float(loss)

    return step


def build_tinygrad(weights: dict, x, y, optimizer: str) -> Callable[[], float]:
    """The same step in tinygrad: forward, backward and the update captured by TinyJit."""
    from tinygrad import Context, Tensor, TinyJit
    from tinygrad.nn import optim

    params = {k: Tensor(v).realize() for k, v in weights.items()}
    opt = getattr(optim, optimizer)(list(params.values()), **bench_step.OPTIMIZERS[optimizer])

    def forward(h):
        for kind, key in LAYERS:
            if kind == "Conv2d":
                h = h.conv2d(params[f"{key}.weight"], params[f"{key}.bias"], padding=1)
            elif kind == "Linear":
                h = h.linear(params[f"{key}.weight"].T, params[f"{key}.bias"])
            elif kind == "ReLU":
                h = h.relu()
            elif kind == "MaxPool2d":
                h = h.max_pool2d(2)
            else:
                h = h.flatten(1)
        return h

    @TinyJit
    def train_step(images, labels):
        with Context(TRAINING=1):  # tinygrad's optimizers refuse to step outside training mode
            opt.zero_grad()
            loss = forward(images).sparse_categorical_crossentropy(labels).backward()
            # the loss is realized with the update: left lazy, it would be computed afterwards
            # from the updated weights
            Tensor.realize(loss, *opt.schedule_step())
        return loss

    images, labels = Tensor(x).realize(), Tensor(y.astype("int32")).realize()
    return lambda: float(train_step(images, labels).item())


BUILDERS = {"tinygrad_conv": build_tinygrad_conv, "torch": build_torch, "jax": build_jax,
            "tinygrad": build_tinygrad}


# --------------------------------------------------------------------------- versions, threads


def info_tinygrad_conv(threads: str) -> tuple[str, str]:
    """(version, how its threads are set) in tinygrad_conv's worker."""
    import tinygrad_conv as tc

    gemm = common.gemm_info().split(",")[0]
    return (f"{tc.__version__} ({common.backend_info()} backend, GEMM: {gemm})",
            f"TINYGRAD_CONV_THREADS={threads}")


def info_torch(threads: str) -> tuple[str, str]:
    """PyTorch's version; sets and reports its intra-op threads."""
    import torch

    torch.set_num_threads(int(threads))
    return torch.__version__, (f"torch.set_num_threads({threads}): {torch.get_num_threads()} "
                               f"intra-op, {torch.get_num_interop_threads()} inter-op threads")


def info_jax(threads: str) -> tuple[str, str]:
    """JAX's, jaxlib's and optax's versions, XLA_FLAGS and the devices."""
    import jax
    import jaxlib

    try:
        import optax

        update = f"optax {optax.__version__}"
    except ImportError:
        update = "hand-written SGD (optax not installed)"
    devices = ", ".join(str(d) for d in jax.devices())
    return (f"{jax.__version__} (jaxlib {jaxlib.__version__}, {update})",
            f"XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}', XLA's pool sized by the CPUs the "
            f"process may use ({common.machine_cores()}); devices: {devices}")


def info_tinygrad(threads: str) -> tuple[str, str]:
    """tinygrad's version and device, and its thread setting."""
    import tinygrad
    from tinygrad import Device

    version = getattr(tinygrad, "__version__", None) or _dist_version("tinygrad")
    return (f"{version} ({Device.DEFAULT}, TinyJit)",
            f"NUM_CPU_THREADS={os.environ.get('NUM_CPU_THREADS')}, DEV={os.environ.get('DEV')}")


INFO = {"tinygrad_conv": info_tinygrad_conv, "torch": info_torch, "jax": info_jax,
        "tinygrad": info_tinygrad}


def _dist_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def worker_env(name: str, threads: int, cache_dir: str) -> dict[str, str]:
    """The environment of a framework's worker: the same thread count for every library."""
    env = dict(os.environ)
    env.update(dict.fromkeys(common.THREAD_ENV_VARS, str(threads)))
    if name == "jax":
        env["JAX_PLATFORMS"] = "cpu"
        if threads == 1:  # XLA's documented way to one thread; above 1 only the CPU mask
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                " intra_op_parallelism_threads=1").strip()
    if name == "tinygrad":
        env.update(DEV="CPU", NUM_CPU_THREADS=str(threads),
                   CACHEDB=os.path.join(cache_dir, "tinygrad-cache.db"))  # cold: compile timed
    return env


def missing_reason(name: str) -> str | None:
    """Why a framework cannot run here (not installed, no compiler), or None."""
    module = {"jax": "jaxlib"}.get(name, name)
    if util.find_spec(name) is None or util.find_spec(module) is None:
        return f"not installed ({INSTALL[name]})"
    if name == "tinygrad" and shutil.which(os.environ.get("CC", "clang")) is None:
        return "not runnable: its CPU backend compiles kernels with clang (apt-get install clang)"
    return None


# --------------------------------------------------------------------------- the worker


def _rss_kb() -> int:
    return common._proc_status_kb("VmRSS") or 0


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fresh_peak() -> int | None:
    """Free what can be freed, restart the peak RSS at the current RSS; returns that RSS
    (None where the kernel does not let the peak be restarted)."""
    gc.collect()
    common._malloc_trim()
    return _rss_kb() if common._reset_peak_rss() else None


class Worker:
    """One framework's side of the protocol: build, warmup, steps, finish."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.step: Callable[[], float] | None = None
        self.memory: dict[str, int | None] = {}

    def build(self, batch: int, optimizer: str, weights: str, seed: int) -> dict:
        """Build the model and take the first two steps (the first timed: compile)."""
        import numpy as np

        x, y = bench_step.synthetic_batch(batch, np, seed)
        with np.load(weights) as archive:
            arrays = {k: archive[k] for k in archive.files}
        self.memory["baseline kB"] = _fresh_peak()
        self.step = BUILDERS[self.name](arrays, x, y, optimizer)
        start = time.perf_counter()
        loss1 = self.step()
        first = time.perf_counter() - start
        return {"first_step_s": first, "losses": [loss1, self.step()]}

    def warmup(self, n: int) -> dict:
        """``n`` untimed steps; then the peak so far is kept and a new one started."""
        for _ in range(n):
            self.step()
        self.memory["build peak kB"] = _maxrss_kb()
        self.memory["held kB"] = _fresh_peak()
        return {}

    def steps(self, n: int) -> dict:
        """Untimed steps for common.WARM_SECONDS (the framework's threads and cores awake,
        the previous framework's spinning threads stopped), then ``n`` timed ones."""
        common.warm(self.step)
        times, cpu, wall = [], _cpu_seconds(), time.perf_counter()
        for _ in range(n):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return {"times": times, "cpu_s": _cpu_seconds() - cpu,
                "wall_s": time.perf_counter() - wall}

    def finish(self) -> dict:
        """Memory (kB; none where the peak could not be restarted) and the OS threads the
        process ended with."""
        self.memory["steady peak kB"] = _maxrss_kb()
        if None in self.memory.values():
            self.memory = {}
        return {"memory": self.memory, "os_threads": len(os.listdir("/proc/self/task"))}


def worker_main(name: str) -> None:
    """Serve the parent's JSON-line commands on stdin; replies go to the original stdout
    (fd 1 is pointed at stderr, so whatever the libraries print stays off the pipe)."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(obj: dict) -> None:
        replies.write(json.dumps(obj) + "\n")

    try:
        version, threads = INFO[name](os.environ.get("OMP_NUM_THREADS",
                                                     str(common.machine_cores())))
    except Exception as exc:  # reported as the framework's row, not a crash of the run
        send({"error": f"import failed: {type(exc).__name__}: {exc}"})
        return
    send({"version": version, "threads": threads})
    worker = Worker(name)
    for line in sys.stdin:
        message = json.loads(line)
        command = message.pop("cmd")
        try:
            send(getattr(worker, command)(**message))
        except Exception as exc:
            send({"error": f"{command} failed: {type(exc).__name__}: {exc}"})
            return
        if command == "finish":
            return


# --------------------------------------------------------------------------- the parent


@dataclass
class Result:
    """What one framework measured at one batch size (or why it did not)."""

    name: str
    problem: str | None = None
    version: str = ""
    threads: str = ""
    first_step_s: float | None = None
    losses: list[float] = field(default_factory=list)
    timing: common.Timing = field(default_factory=common.Timing)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    memory: dict[str, int] = field(default_factory=dict)
    os_threads: int | None = None

    @property
    def cores_busy(self) -> float | None:
        """CPU time / wall time of the process over the timed steps."""
        return self.cpu_s / self.wall_s if self.wall_s else None

    @property
    def peak_bytes(self) -> int | None:
        """Peak RSS minus the RSS before the model was built (build, compile, all steps)."""
        m = self.memory
        if "steady peak kB" not in m:
            return None
        return (max(m["build peak kB"], m["steady peak kB"]) - m["baseline kB"]) * 1024

    @property
    def step_bytes(self) -> int | None:
        """Peak RSS over the timed steps minus the RSS held before them."""
        m = self.memory
        if "steady peak kB" not in m:
            return None
        return max(0, m["steady peak kB"] - m["held kB"]) * 1024  # RSS may dip below "held"


class Channel:
    """The parent's end of one worker process."""

    def __init__(self, name: str, env: dict[str, str], log_dir: str) -> None:
        self.name = name
        self.log = open(os.path.join(log_dir, f"{name}.log"), "w+")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", name],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, text=True)

    def send(self, cmd: str, **kwargs) -> None:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float = COMMAND_TIMEOUT) -> dict:
        """The worker's next reply; {"error": ...} if it died or did not answer in time."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        self._stop()
        reason = f"no reply within {timeout:.0f} s" if not ready else "worker exited"
        return {"error": f"{reason}: {self.stderr_tail()}"}

    def call(self, cmd: str, **kwargs) -> dict:
        """Send a command and wait for its reply."""
        try:
            self.send(cmd, **kwargs)
        except OSError:  # a worker that is gone: receive() says so, with its last words
            pass
        return self.receive()

    def stderr_tail(self, lines: int = 3) -> str:
        """The last non-empty lines the worker wrote to stderr, on one line."""
        self.log.seek(0)
        tail = [t for t in self.log.read().splitlines() if t.strip()][-lines:]
        return " / ".join(tail) or "(no output)"

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """End the worker (if still running) and its log."""
        self._stop()
        self.log.close()


def _failed(result: Result, reply: dict, channel: Channel) -> bool:
    if "error" not in reply:
        return False
    message = " ".join(reply["error"].split())
    result.problem = f"failed: {message[:200]}"
    channel.close()
    return True


def run_batch(batch: int, args: argparse.Namespace, weights: str, tmp: str) -> list[Result]:
    """Every framework at one batch size: workers started, built one at a time, warmed up,
    timed round-robin (each round in a rotated order), then asked for their memory."""
    results = {name: Result(name, missing_reason(name)) for name in args.frameworks}
    channels = {name: Channel(name, worker_env(name, args.threads, tmp), tmp)
                for name, r in results.items() if r.problem is None}
    for name, channel in list(channels.items()):
        reply, result = channel.receive(), results[name]
        if _failed(result, reply, channel):
            del channels[name]
            continue
        result.version, result.threads = reply["version"], reply["threads"]
    for name, channel in list(channels.items()):
        common.progress(f"batch {batch}: {name} first step ...")
        reply = channel.call("build", batch=batch, optimizer=args.optimizer, weights=weights,
                             seed=args.seed)
        if _failed(results[name], reply, channel) or _failed(
                results[name], channel.call("warmup", n=args.warmup), channel):
            del channels[name]
            continue
        results[name].first_step_s, results[name].losses = reply["first_step_s"], reply["losses"]
    names = list(channels)
    for round_ in range(args.repeats if names else 0):
        common.progress(f"batch {batch}: round {round_ + 1}/{args.repeats}")
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            if name not in channels:
                continue
            reply = channels[name].call("steps", n=args.steps_per_turn)
            if _failed(results[name], reply, channels[name]):
                del channels[name]
                continue
            result = results[name]
            result.timing.samples += reply["times"]
            result.cpu_s += reply["cpu_s"]
            result.wall_s += reply["wall_s"]
    for name, channel in channels.items():
        reply = channel.call("finish")
        if not _failed(results[name], reply, channel):
            results[name].memory, results[name].os_threads = reply["memory"], reply["os_threads"]
            channel.close()
    return list(results.values())


def reference_weights(path: str) -> None:
    """Our model's initial weights (seed 0) into an .npz file every worker loads."""
    import numpy as np

    import tinygrad_conv as tc
    from tinygrad_conv import models

    tc.manual_seed(0)
    model = models.reference_cnn()
    kinds = tuple(type(m).__name__ for m in model.children())
    if kinds != tuple(kind for kind, _ in LAYERS):
        raise SystemExit(f"bench_frameworks.LAYERS {[k for k, _ in LAYERS]} no longer matches "
                         f"models.reference_cnn() {list(kinds)}: update the layer table")
    np.savez(path, **model.state_dict())


def reference_losses(batch: int, args: argparse.Namespace, weights: str) -> list[float]:
    """tinygrad_conv's first two losses, computed in this process: every row is checked
    against them (our worker's too)."""
    import numpy as np

    x, y = bench_step.synthetic_batch(batch, np, args.seed)
    with np.load(weights) as archive:
        step = build_tinygrad_conv({k: archive[k] for k in archive.files}, x, y, args.optimizer)
    return [step(), step()]


# --------------------------------------------------------------------------- report


def loss_check(losses: list[float], reference: list[float]) -> str:
    """"ok (rel 3e-07)" when both losses agree with ours within LOSS_RTOL, else a loud flag."""
    if len(losses) != len(reference):
        return "n/a"
    rel = max(abs(a - b) / abs(b) for a, b in zip(losses, reference))
    if rel <= LOSS_RTOL:
        return f"ok (rel {common.fmt_sci(rel)})"
    return f"**DISAGREES (rel {common.fmt_sci(rel)} > {LOSS_RTOL:g})**"


HEADERS = ["batch", "framework", "first step s", "ms/step", "x PyTorch", "img/s", "peak MB",
           "step MB", "cores busy", "loss 1 / loss 2", "vs tinygrad_conv"]


def table_row(batch: int, result: Result, results: dict[str, Result],
              reference: list[float]) -> list[str]:
    """One row of the table: a measurement, or the reason there is none."""
    if result.problem is not None or not result.timing.samples:
        problem = result.problem or "no timed steps"
        return [str(batch), result.name, problem] + [""] * (len(HEADERS) - 3)
    torch = results.get("torch")
    ratio = (result.timing.median / torch.timing.median
             if torch is not None and torch.timing.samples else None)
    busy = result.cores_busy
    return [
        str(batch), result.name, common.fmt(result.first_step_s), result.timing.ms(),
        f"{common.fmt(ratio)}x" if ratio else "n/a", common.fmt(batch / result.timing.median),
        common.fmt_mb(result.peak_bytes), common.fmt_mb(result.step_bytes),
        "n/a" if busy is None else common.fmt(busy, 2),
        " / ".join(f"{loss:.6f}" for loss in result.losses),
        loss_check(result.losses, reference),
    ]


def header(args: argparse.Namespace, pinned: str) -> str:
    """What ran, where, and how."""
    import numpy as np

    return "\n".join([
        "## Training step of the reference CNN in four frameworks (interleaved)",
        "",
        f"- command: `{' '.join(['python', *sys.argv])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {common.cpu_model()} ({common.cpu_details()}), {common.machine_cores()} "
        f"cores available ({os.cpu_count()} online), {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, NumPy {np.__version__}",
        f"- step: zero_grad, forward, cross-entropy, backward, {args.optimizer}"
        f"({bench_step.OPTIMIZERS[args.optimizer]}) on a fixed synthetic batch; a step ends "
        "when its loss is a Python float on the host",
        f"- threads: {args.threads} for every framework ({pinned}); each framework's own "
        "setting is in the table below",
        f"- timing: each framework in its own process; first step timed alone; {args.warmup} "
        f"warm-up steps; then {args.repeats} rounds, each giving every framework in turn (order "
        f"rotated per round) {common.WARM_SECONDS * 1e3:.0f} ms of untimed steps and "
        f"{args.steps_per_turn} timed steps; ms/step is the median ± the interquartile range",
        f"- load average before the run: {common.load_text()}",
        f"- competing load: {common._load_line(args)}",
        "",
    ])


def frameworks_table(results: list[Result]) -> str:
    """Versions and thread settings, one row per framework (from its first batch)."""
    seen: dict[str, Result] = {}
    for r in results:
        if r.name not in seen or (seen[r.name].version == "" and r.version):
            seen[r.name] = r
    rows = [[r.name, r.version or r.problem or "", r.threads or "",
             "" if r.os_threads is None else str(r.os_threads)] for r in seen.values()]
    return common.markdown_table(["framework", "version", "threads (as set)", "OS threads"],
                                 rows, right=[False, False, False, True])


NOTES = """\
first step s: the first training step alone, including tracing and compiling (jax.jit, \
TinyJit's kernels; tinygrad's kernel cache starts empty each run). x PyTorch: median step \
time / PyTorch's median in the same run. peak MB: peak resident set size minus the RSS just \
before the model was built (weights, optimizer state, compilation and every step). step MB: \
peak RSS during the timed steps minus the RSS held before them. cores busy: the process's CPU \
time / wall time over the timed steps. loss 1 / loss 2: the losses of the first two steps (the \
second checks the gradients and the update); vs tinygrad_conv: both within relative \
{rtol:g} of tinygrad_conv's, computed again in the parent process."""


def _optimizer_name(text: str) -> str:
    """"sgd" -> "SGD", "adam" -> "Adam" (bench_step.OPTIMIZERS' spelling), else unchanged."""
    return {k.lower(): k for k in bench_step.OPTIMIZERS}.get(text.lower(), text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags (see the module docstring); --quick sets fewer rounds and warm-up steps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds of 1 timed step, 1 warm-up step")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of timed steps (default 10; --quick 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps after the first two (default 3; --quick 1)")
    parser.add_argument("--steps-per-turn", type=int, default=None,
                        help="timed steps per framework per round (default 2; --quick 1)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for every framework (default 2)")
    parser.add_argument("--batches", default="64,128", help="comma-separated batch sizes")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help=f"comma-separated, from {','.join(FRAMEWORKS)}")
    parser.add_argument("--optimizer", default="SGD", type=_optimizer_name,
                        choices=list(bench_step.OPTIMIZERS),
                        help="SGD (lr 0.01, default) or Adam (lr 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run N competing CPU-bound processes for the whole run")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, default, fast in (("repeats", 10, 3), ("warmup", 3, 1), ("steps_per_turn", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, fast if quick else default)
    args.frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = [f for f in args.frameworks if f not in FRAMEWORKS]
    if unknown or not args.frameworks:
        parser.error(f"--frameworks: unknown {unknown}; choose from {','.join(FRAMEWORKS)}")
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches takes comma-separated integers, got {args.batches!r}")
    if min(args.batches) < 1 or args.repeats < 1 or args.steps_per_turn < 1 \
            or args.warmup < 0 or args.threads < 1:
        parser.error("--batches, --repeats, --steps-per-turn and --threads must be >= 1, "
                     "--warmup >= 0")
    return args


def cpu_plan(threads: int) -> tuple[list[int] | None, str]:
    """(CPUs to restrict this process and so every worker to, or None; what it says): with
    fewer threads than usable CPUs, ``threads`` of them, since XLA has no other documented
    knob for 2+ threads."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus or threads >= len(cpus):
        return None, f"not pinned: {len(cpus) or os.cpu_count()} CPUs usable"
    return cpus[:threads], f"every worker pinned to CPUs {cpus[:threads]} of {cpus}"


def main(argv: list[str] | None = None) -> None:
    """Run every batch size, print the header, the tables and the notes."""
    args = parse_args(argv)
    common.set_threads(args.threads)  # for the reference losses computed in this process
    common.start_load(args.load)  # before pinning: the load may run on every CPU
    cpus, pinned = cpu_plan(args.threads)
    print(header(args, pinned))  # the machine's cores, before pinning
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench_frameworks_") as tmp:
        weights = os.path.join(tmp, "weights.npz")
        reference_weights(weights)
        rows = []
        for batch in args.batches:
            reference = reference_losses(batch, args, weights)
            batch_results = run_batch(batch, args, weights, tmp)
            by_name = {r.name: r for r in batch_results}
            rows += [table_row(batch, r, by_name, reference) for r in batch_results]
            results += batch_results
    print(frameworks_table(results))
    print()
    print(common.markdown_table(HEADERS, rows, right=[True, False] + [True] * 7 + [False] * 2))
    print()
    print(NOTES.format(rtol=LOSS_RTOL))
    disagree = [r for r in rows if "DISAGREES" in r[-1]]
    if disagree:
        print(f"\n**WARNING: {len(disagree)} row(s) disagree with tinygrad_conv's losses.**")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2])
    else:
        main()
