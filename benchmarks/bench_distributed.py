"""Data-parallel training over MPI: one training step of the reference CNN on 1 and 2 ranks.

    python benchmarks/bench_distributed.py [--batch 64] [--steps 20] [--warmup 3] [--quick]

Rows, all over the same global batch (synthetic images, data loading not timed):

- 1 rank, 1 thread: one process, ``TINYGRAD_CONV_THREADS=1``, no wrapper;
- 1 rank, 2 threads: one process splitting its kernels over 2 threads;
- 2 ranks, 1 thread each: ``mpiexec -n 2``, each rank half the batch, inside
  ``DistributedDataParallel`` (gradients averaged by MPI allreduce).

Columns: median step time, images per second (global batch / step time), and the time per
step spent in MPI calls (``DistributedDataParallel.comm_seconds``: starting the bucket
allreduces and waiting for them at the end of backward, plus the small allreduce of the
loss). A last line times one allreduce of a buffer the size of the CNN's gradients alone.
Needs mpi4py and an mpiexec (``pip install -e '.[mpi]'``). docs/distributed.md reads the
numbers; on a machine with fewer than 2 free cores the 2-rank and 2-thread rows compete with
whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (default 3)")
    parser.add_argument("--quick", action="store_true", help="5 timed steps, 1 warm-up")
    parser.add_argument("--model", type=float, default=None, metavar="STEP_MS",
                        help="print only the scaling model for a one-machine step of STEP_MS "
                             "milliseconds (no timing, no MPI needed)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 5, 1
    if args.batch < 2 or args.batch % 2 or args.steps < 1 or args.warmup < 0:
        raise SystemExit("--batch must be an even number >= 2, --steps >= 1, --warmup >= 0")
    return args


# --------------------------------------------------------------------------- one process


def worker(args: argparse.Namespace) -> None:
    """Time ``args.steps`` training steps in this process (one rank of a run, or the only
    one); rank 0 prints one JSON line."""
    import numpy as np
    from bench_step import synthetic_batch

    import tinygrad_conv as tc
    import tinygrad_conv.distributed as dist
    import tinygrad_conv.functional as F
    from tinygrad_conv import models, optim

    ranks = (dist.launched_by_mpiexec() or (0, 1))[1]
    if ranks > 1:
        dist.init_process_group("mpi")
    rank = dist.get_rank() if ranks > 1 else 0
    tc.manual_seed(0)
    model = models.reference_cnn()
    net = model if ranks == 1 else tc.nn.parallel.DistributedDataParallel(model)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x_all, y_all = synthetic_batch(args.batch, np)
    local = args.batch // ranks
    x = tc.tensor(x_all[rank * local:(rank + 1) * local])
    y = tc.tensor(y_all[rank * local:(rank + 1) * local])
    loss_sum = tc.zeros(1, dtype=tc.float64)

    def step() -> None:
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        if ranks > 1:  # the trainer's per-step sums of loss, correct and images
            started = time.perf_counter()
            loss_sum.data[0] = loss.item()
            dist.all_reduce(loss_sum)
            net.comm_seconds += time.perf_counter() - started
        opt.step()

    times, comm = [], []
    for i in range(args.warmup + args.steps):
        if ranks > 1:
            dist.barrier()
            net.comm_seconds = 0.0
        started = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - started)
            comm.append(net.comm_seconds if ranks > 1 else 0.0)
    grad_bytes = sum(p.data.nbytes for p in model.parameters())
    allreduce = _time_allreduce(grad_bytes, dist) if ranks > 1 else None
    if rank == 0:
        print(json.dumps({"step": statistics.median(times), "comm": statistics.median(comm),
                          "grad_bytes": grad_bytes, "allreduce": allreduce}))


def _time_allreduce(nbytes: int, dist) -> float:
    """Median seconds of one in-place allreduce of ``nbytes`` of float32."""
    import numpy as np

    import tinygrad_conv as tc

    buf = tc.tensor(np.ones(nbytes // 4, dtype=np.float32))
    times = []
    for _ in range(20):
        dist.barrier()
        started = time.perf_counter()
        dist.all_reduce(buf)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# --------------------------------------------------------------------------- the model

REFERENCE_CNN_GRAD_BYTES = 421_642 * 4  # models.reference_cnn()'s parameters, float32
NETWORKS = {"1 Gbit/s Ethernet": (125e6, 50e-6), "10 Gbit/s Ethernet": (1.25e9, 20e-6)}
MODEL_RANKS = (1, 2, 4, 8, 16, 32)


def ring_allreduce_seconds(nbytes: float, ranks: int, bandwidth: float,
                           latency: float) -> float:
    """A ring allreduce of ``nbytes`` over ``ranks`` machines: 2 (N - 1) steps, each moving
    ``nbytes / N`` per link, each paying ``latency``: 2(N-1)/N * bytes / bandwidth +
    2(N-1) * latency."""
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def scaling_model(step_seconds: float, nbytes: float) -> str:
    """Markdown: predicted step time and speed-up on N machines for each network, with the
    global batch fixed (each machine computes 1/N of the step) and with the per-machine batch
    fixed (N times the images per step), communication not overlapped with compute."""
    lines = ["| network | N | comm (ms) | fixed global batch: step (ms) | speed-up | "
             "fixed batch per machine: efficiency |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, (bandwidth, latency) in NETWORKS.items():
        for n in MODEL_RANKS:
            comm = ring_allreduce_seconds(nbytes, n, bandwidth, latency)
            strong = step_seconds / n + comm
            lines.append(f"| {name} | {n} | {comm * 1e3:.1f} | {strong * 1e3:.1f} | "
                         f"{step_seconds / strong:.2f}x | "
                         f"{step_seconds / (step_seconds + comm):.0%} |")
    return "\n".join(lines)


def crossover(step_seconds: float, nbytes: float, bandwidth: float, latency: float) -> int:
    """The smallest N at which the allreduce takes longer than 1/N of the step."""
    n = 2
    while ring_allreduce_seconds(nbytes, n, bandwidth, latency) < step_seconds / n:
        n += 1
    return n


# --------------------------------------------------------------------------- the table


def mpiexec() -> str | None:
    """The mpich wheel's mpiexec beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def run_case(args: argparse.Namespace, ranks: int, threads: int) -> dict:
    env = {**os.environ, **{name: str(threads) for name in common.THREAD_ENV_VARS}}
    command = [sys.executable, str(HERE), "--worker", "--batch", str(args.batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks), *command]
    print(f"timing {ranks} rank(s) x {threads} thread(s)...", file=sys.stderr)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    if args.model is not None:
        print_model(args.model / 1e3, REFERENCE_CNN_GRAD_BYTES)
        return
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise SystemExit("mpi4py not installed: pip install -e '.[mpi]'") from None
    if mpiexec() is None:
        raise SystemExit("no mpiexec found: pip install mpich")
    cases = [("1 rank, 1 thread", 1, 1), ("1 rank, 2 threads", 1, 2),
             ("2 ranks, 1 thread each", 2, 1)]
    results = [(name, run_case(args, ranks, threads)) for name, ranks, threads in cases]
    base = results[0][1]["step"]
    print(f"Reference CNN, global batch {args.batch}, SGD; median of {args.steps} steps "
          f"after {args.warmup} warm-up; {common.machine_cores()} cores.\n")
    print("| run | step (ms) | images/s | speed-up | MPI per step (ms) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results:
        comm = f"{r['comm'] * 1e3:.2f}" if name.startswith("2 ranks") else "-"
        print(f"| {name} | {r['step'] * 1e3:.1f} | {args.batch / r['step']:.0f} | "
              f"{base / r['step']:.2f}x | {comm} |")
    last = results[-1][1]
    mb = last["grad_bytes"] / 1e6
    print(f"\nOne allreduce of the {mb:.2f} MB of gradients on 2 ranks of this machine: "
          f"{last['allreduce'] * 1e3:.2f} ms ({mb / last['allreduce'] / 1e3:.2f} GB/s "
          "of gradient).")
    print("\nModel (docs/distributed.md), from the 1-thread step above:")
    print_model(base, last["grad_bytes"])


def print_model(step_seconds: float, nbytes: int) -> None:
    """The scaling model's table and, per network, where communication starts to dominate."""
    print(f"\nOne-machine step {step_seconds * 1e3:.1f} ms, {nbytes / 1e6:.2f} MB of "
          "gradients, ring allreduce not overlapped with compute:\n")
    print(scaling_model(step_seconds, nbytes))
    for name, (bandwidth, latency) in NETWORKS.items():
        n = crossover(step_seconds, nbytes, bandwidth, latency)
        print(f"\n{name} ({bandwidth / 1e6:.0f} MB/s, {latency * 1e6:.0f} us per message): "
              f"the allreduce outlasts the compute from N = {n} machines (fixed global batch).")


if __name__ == "__main__":
    main()
