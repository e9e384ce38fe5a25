"""Shared helpers for the benchmark scripts: arguments, thread control, timing, machine info,
memory measurement and Markdown tables.

Thread control must happen before NumPy's BLAS starts its thread pool: the scripts import
NumPy only after :func:`setup` has set ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/
``MKL_NUM_THREADS`` (and kin). With ``threadpoolctl`` installed the pool is also resized at run
time; without it, if NumPy was somehow imported already, the script re-executes itself once
with the variables set.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import gc
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
    "TINYGRAD_CONV_THREADS",  # our own thread pool (it holds BLAS to one thread meanwhile)
)
_REEXEC_FLAG = "TINYGRAD_CONV_BENCH_REEXEC"
TORCH_MISSING = "torch not installed: pip install torch==2.13.0"
_KEEP_ALIVE: list[object] = []  # the threadpoolctl limiter, kept for the process's lifetime


# --------------------------------------------------------------------------- arguments


def machine_cores() -> int:
    """CPUs this process may run on (the affinity mask), falling back to os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_parser(description: str, repeats: int, warmup: int) -> argparse.ArgumentParser:
    """The flags every script takes: --repeats, --warmup, --threads, --quick, --no-torch."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed runs per measurement (default {repeats}; --quick: fewer)")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed runs before timing (default {warmup}; --quick: 1)")
    parser.add_argument("--threads", type=int, default=machine_cores(),
                        help="threads for NumPy's BLAS and for torch (default: the machine's "
                             f"cores, {machine_cores()} here)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and smaller workloads (about 30 s)")
    parser.add_argument("--interleave", action="store_true",
                        help="time the cases of a row round-robin instead of one after "
                             "another (steadier ratios on a busy machine)")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip the PyTorch columns even if torch is installed")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run N competing CPU-bound processes for the whole run, as on a "
                             "user's busy machine (both frameworks time under the same load)")
    parser.set_defaults(default_repeats=repeats, default_warmup=warmup)
    return parser


def resolve_counts(args: argparse.Namespace, quick_repeats: int = 3) -> argparse.Namespace:
    """Fill in --repeats / --warmup from the script's defaults or the --quick ones."""
    if args.repeats is None:
        args.repeats = quick_repeats if args.quick else args.default_repeats
    if args.warmup is None:
        args.warmup = 1 if args.quick else args.default_warmup
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        raise SystemExit("--repeats and --threads must be >= 1, --warmup >= 0")
    return args


# --------------------------------------------------------------------------- threads


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl


def set_threads(n: int) -> str:
    """Make NumPy's BLAS use ``n`` threads; returns how it was done (for the header).

    Sets the thread environment variables (they also reach torch's OpenMP and MKL, imported
    later). With threadpoolctl installed, also resizes the BLAS pool at run time. Without it
    the variables only work if NumPy is not imported yet: if it is and they had other values,
    the process re-executes itself (same interpreter and arguments) with them set.
    """
    wanted = str(n)
    already = all(os.environ.get(v) == wanted for v in THREAD_ENV_VARS)
    numpy_loaded = "numpy" in sys.modules
    os.environ.update(dict.fromkeys(THREAD_ENV_VARS, wanted))
    tpc = _threadpoolctl()
    if tpc is not None:
        import numpy  # noqa: F401  (load its BLAS so threadpoolctl can find it)

        _KEEP_ALIVE.append(tpc.threadpool_limits(limits=n))
        return f"threadpoolctl {tpc.__version__}: threadpool_limits({n})"
    method = f"environment ({', '.join(THREAD_ENV_VARS[:3])}={n}) set before importing numpy"
    if already or not numpy_loaded:
        return method
    if os.environ.get(_REEXEC_FLAG):
        raise RuntimeError("thread environment variables did not survive the re-exec")
    os.environ[_REEXEC_FLAG] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]]
    os.execv(sys.executable, argv)
    raise AssertionError("unreachable")  # pragma: no cover


def import_torch(threads: int, disabled: bool = False):
    """torch with ``threads`` intra-op threads, or None (printing how to install it)."""
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        print(TORCH_MISSING)
        return None
    torch.set_num_threads(threads)
    return torch


def setup(args: argparse.Namespace) -> str:
    """Apply --threads (possibly re-executing the script) and start --load's competing
    processes; returns the method description."""
    method = set_threads(args.threads)
    start_load(getattr(args, "load", 0))
    return method


# a busy loop that also ends within an hour, or when the benchmark is gone (orphaned: ppid 1)
_BUSY_LOOP = ("import os, time\nend = time.time() + 3600\n"
              "while time.time() < end and os.getppid() != 1: pass")


def start_load(count: int) -> list[subprocess.Popen]:
    """Start ``count`` CPU-bound processes (a Python busy loop each), ended at exit."""
    if count <= 0:
        return []
    procs = [subprocess.Popen([sys.executable, "-c", _BUSY_LOOP]) for _ in range(count)]

    def stop() -> None:
        for proc in procs:
            proc.kill()
            proc.wait()

    atexit.register(stop)
    time.sleep(0.5)  # let them take their cores
    return procs


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Wall-clock samples of repeated runs, in seconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr(self) -> float:
        """Interquartile range (q3 - q1); 0 for fewer than 2 samples."""
        if len(self.samples) < 2:
            return 0.0
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def median_ms(self) -> float:
        return self.median * 1e3

    @property
    def iqr_ms(self) -> float:
        return self.iqr * 1e3

    def ms(self) -> str:
        """"median ± IQR" in milliseconds, e.g. "12.3 ± 0.4"."""
        return f"{fmt(self.median_ms)} ± {fmt(self.iqr_ms, 2)}"


@dataclass
class Case:
    """Something to time: ``fn`` is timed; ``before`` (optional, untimed) runs ahead of it."""

    fn: Callable[[], object]
    before: Callable[[], object] | None = None


WARM_SECONDS = 0.025  # --interleave: untimed runs of a case, this long, before each timed run


def warm(fn: Callable[[], object], seconds: float = WARM_SECONDS,
         before: Callable[[], object] | None = None) -> None:
    """Run ``fn`` untimed (``before`` ahead of each call) until ``seconds`` have passed,
    at least once."""
    end = time.perf_counter() + seconds
    while True:
        if before is not None:
            before()
        fn()
        if time.perf_counter() >= end:
            return


def _run_once(case: Case) -> float:
    if case.before is not None:
        case.before()
    gc.collect()  # so that one call's garbage is not charged to the next
    start = time.perf_counter()
    case.fn()
    return time.perf_counter() - start


def time_cases(cases: dict[str, Case], repeats: int, warmup: int,
               interleave: bool = False) -> dict[str, Timing]:
    """Time each case: ``warmup`` untimed runs, then ``repeats`` timed runs.

    By default the cases run one after another, each after its own warm-up, so that one
    framework's idle worker threads (OpenBLAS and OpenMP spin for a while after a parallel
    call) have settled before the next is timed. With ``interleave`` they run round-robin
    instead, so that bursts of load from other processes hit every case alike. Each timed run
    then comes right after WARM_SECONDS of untimed runs of the same case: the previous
    case's spinning threads (torch's OpenMP workers spin about 12 ms after a step) have
    stopped by then, and the case's own threads and cores are as warm as in the middle of its
    own training loop. (A pause instead of those runs let this VM's idle vCPUs go cold: the
    first calls after a 50-200 ms pause took 1.5x to 20x their usual time, in both
    frameworks, docs/performance.md.)
    """
    if interleave:
        timings = {name: Timing() for name in cases}
        for i in range(warmup + repeats):
            for name, case in cases.items():
                warm(case.fn, before=case.before)
                elapsed = _run_once(case)
                if i >= warmup:
                    timings[name].samples.append(elapsed)
        return timings
    return {name: Timing([_run_once(case) for i in range(warmup + repeats)][warmup:])
            for name, case in cases.items()}


def time_fn(fn: Callable[[], object], repeats: int, warmup: int,
            before: Callable[[], object] | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` timed runs (``before`` untimed
    ahead of every call, e.g. to clear grads)."""
    return time_cases({"fn": Case(fn, before)}, repeats, warmup)["fn"]


# --------------------------------------------------------------------------- memory


def traced_peak_bytes(fn: Callable[[], object], prime: Callable[[], object] | None = None) -> int:
    """Peak minus baseline of the memory traced by tracemalloc while ``fn`` runs.

    NumPy reports its array buffers to tracemalloc, so this counts every array a NumPy-based
    step allocates (and Python objects). ``prime`` runs first, traced but not measured, so that
    memory freed during ``fn`` but allocated earlier (e.g. last step's grads) is known to
    tracemalloc and counted as freed.
    """
    gc.collect()
    tracemalloc.start()
    try:
        if prime is not None:
            prime()
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - baseline


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc), so a later peak is not hidden by reuse."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def rss_peak_delta_bytes(fn: Callable[[], object]) -> tuple[int | None, str]:
    """Peak resident set size while ``fn`` runs, minus the RSS just before it.

    Frees cached heap memory first (malloc_trim), resets the kernel's high-water mark
    (/proc/self/clear_refs) and reads VmHWM afterwards; where that is not possible a thread
    samples VmRSS every millisecond instead. Returns (bytes or None, method).
    """
    gc.collect()
    _malloc_trim()
    base = _proc_status_kb("VmRSS")
    if base is None:
        fn()
        return None, "unavailable (no /proc)"
    if _reset_peak_rss():
        fn()
        return (_proc_status_kb("VmHWM") - base) * 1024, "VmHWM after clear_refs"
    return _sampled_rss_peak(fn, base), "VmRSS sampled every 1 ms"


def _sampled_rss_peak(fn: Callable[[], object], base_kb: int) -> int:
    peak = [base_kb]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _proc_status_kb("VmRSS") or 0)
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return (max(peak[0], _proc_status_kb("VmRSS") or 0) - base_kb) * 1024


# --------------------------------------------------------------------------- machine info


def _cpuinfo() -> dict[str, str] | None:
    """The first CPU's fields in /proc/cpuinfo (None where there is no such file)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return None
    return info


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    info = _cpuinfo() or {}
    return info.get("model name") or platform.processor() or "unknown"


def cpu_details() -> str:
    """Family/model, the widest x86 vector extension and the per-core L2 cache, which
    tell apart machines that share a model name (an EPYC VM may be Zen 3 or Zen 5)."""
    info = _cpuinfo()
    if info is None:
        return "details unknown"
    flags = set(info.get("flags", "").split())
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"),
                                        ("avx", "AVX")) if flag in flags), "no AVX")
    parts = [f"family {info.get('cpu family', '?')} model {info.get('model', '?')}", isa]
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            parts.append(f"L2 {f.read().strip()} per core")
    except OSError:
        pass
    return ", ".join(parts)


def blas_info() -> str:
    """NumPy's BLAS: build-time name/version from numpy.show_config, and the runtime library
    and thread count from threadpoolctl when installed."""
    import numpy as np

    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        text = f"{deps.get('name', '?')} {deps.get('version', '?')}"
        config = deps.get("openblas configuration")
        if config:
            text += f" ({' '.join(config.split())})"
    except Exception:  # older NumPy: no dict mode
        text = "unknown (numpy.show_config() has no dict mode)"
    tpc = _threadpoolctl()
    if tpc is not None:
        pools = [p for p in tpc.threadpool_info() if p.get("user_api") == "blas"]
        text += "; runtime: " + ", ".join(
            f"{p.get('internal_api')} {p.get('version')} {p.get('num_threads')} threads"
            for p in pools
        )
    return text


def backend_info() -> str:
    """The tinygrad_conv backend the ops run on (TINYGRAD_CONV_BACKEND, tc.set_backend)."""
    import tinygrad_conv

    return tinygrad_conv.backend()


def gemm_info() -> str:
    """The fast backend's GEMM (backends/fast/gemm.py) and, for oneDNN, its package version."""
    from tinygrad_conv.backends.fast import gemm

    if gemm.backend() == "numpy":
        return "NumPy's matmul (the BLAS above)"
    try:
        from importlib import metadata

        version = f" (onednn-cpu-gomp {metadata.version('onednn-cpu-gomp')})"
    except Exception:  # a system libdnnl: no package metadata
        version = ""
    return f"oneDNN sgemm{version}, one thread per call on tinygrad_conv's own threads"


def torch_info(torch) -> str:
    """torch's version, threads and math backends."""
    if torch is None:
        return "not installed (" + TORCH_MISSING.split(": ")[1] + ")"
    backends = []
    if torch.backends.mkl.is_available():
        backends.append("MKL")
    if torch.backends.mkldnn.is_available():
        backends.append("oneDNN")
    return (f"{torch.__version__}, {torch.get_num_threads()} intra-op threads"
            + (f", {' + '.join(backends)}" if backends else ""))


def load_text() -> str:
    """The 1-minute load average, with a warning when other work competes for the cores."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "unknown"
    text = f"{load:.2f} on {machine_cores()} cores"
    if load > 0.5 * machine_cores():
        text += " (busy: other processes compete for the cores; timings are noisy)"
    return text


def _load_line(args: argparse.Namespace) -> str:
    count = getattr(args, "load", 0)
    if not count:
        return "none started by the script"
    return f"{count} CPU-bound process(es) (a Python busy loop) running for the whole run"


def header(title: str, args: argparse.Namespace, thread_method: str, torch) -> str:
    """The Markdown header every script prints: what ran, on what, with which versions."""
    import numpy as np

    import tinygrad_conv

    command = " ".join(["python", *sys.argv])
    order = "round-robin (--interleave)" if args.interleave else "one case after another"
    lines = [
        f"## {title}",
        "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {cpu_model()} ({cpu_details()}), {machine_cores()} cores available "
        f"({os.cpu_count()} online), {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"NumPy {np.__version__}, tinygrad_conv {getattr(tinygrad_conv, '__version__', '?')}",
        f"- BLAS (NumPy's): {blas_info()}",
        f"- tinygrad_conv backend: {backend_info()}; GEMM: {gemm_info()}",
        f"- torch: {'skipped (--no-torch)' if args.no_torch else torch_info(torch)}",
        f"- threads: {args.threads} ({thread_method}; torch.set_num_threads({args.threads}))",
        f"- timing: median of {args.repeats} runs after {args.warmup} warm-up runs; "
        f"± is the interquartile range; cases timed {order}",
        f"- load average before the run: {load_text()}",
        f"- competing load: {_load_line(args)}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- formatting


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits, without scientific notation for
    everyday magnitudes; "n/a" for None."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    if abs(x) < 1e-3:
        return f"{x:.1e}"
    decimals = max(0, digits - 1 - int(f"{abs(x):e}".split("e")[1]))
    return f"{x:.{decimals}f}"


def fmt_mb(n_bytes: float | None) -> str:
    """Bytes as megabytes (10^6)."""
    return "n/a" if n_bytes is None else fmt(n_bytes / 1e6)


def fmt_sci(x: float | None) -> str:
    """A number in scientific notation with two digits ("0" for zero, "n/a" for None)."""
    if x is None:
        return "n/a"
    return "0" if x == 0 else f"{x:.1e}"


def pass_miss(ok: bool | None) -> str:
    """PASS / MISS, or n/a when the comparison could not be made."""
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                   right: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``right`` marks right-aligned columns
    (default: every column but the first)."""
    if right is None:
        right = [i > 0 for i in range(len(headers))]
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
              for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w)
                 for v, w, r in zip(values, widths, right, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if r else "-" * w
                              for w, r in zip(widths, right, strict=True)) + " |"
    return "\n".join([line([str(h) for h in headers]), rule, *(line(r) for r in cells)])


def progress(message: str) -> None:
    """A progress note on stderr (stdout stays pure Markdown)."""
    print(message, file=sys.stderr, flush=True)
