"""benchmarks/bench_frameworks.py still runs: its workers, the protocol and the table.

The end-to-end run uses tinygrad_conv (and torch where installed) at a tiny batch; JAX and
tinygrad are never needed here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "bench_frameworks.py"


@pytest.fixture
def bench(monkeypatch):
    """The script as a module (it imports its neighbours common and bench_step)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_frameworks

    return bench_frameworks


def table_rows(markdown: str) -> dict[tuple[str, str], list[str]]:
    """(batch, framework) -> the cells of the main table's rows."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0].isdigit():
            rows[(cells[0], cells[1])] = cells
    return rows


def test_interleaved_run_with_tinygrad_conv_and_torch_if_installed():
    frameworks = ["tinygrad_conv"]
    if importlib.util.find_spec("torch") is not None:
        frameworks.append("torch")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--frameworks", ",".join(frameworks), "--batches", "4",
         "--repeats", "2", "--warmup", "0", "--steps-per-turn", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    assert set(rows) == {("4", name) for name in frameworks}
    for name in frameworks:
        cells = rows[("4", name)]
        assert cells[-1].startswith("ok (rel"), cells  # both losses agree with ours
        loss1, loss2 = (float(v) for v in cells[-2].split(" / "))
        assert 0 < loss2 < loss1 < 5  # one SGD step on a batch of 4 lowers its loss
        assert float(cells[5].replace(",", "")) > 0  # img/s
    assert rows[("4", "tinygrad_conv")][-1] == "ok (rel 0)"  # the same code in both processes
    if "torch" in frameworks:
        assert rows[("4", "torch")][4] == "1.00x"
    assert "DISAGREES" not in out.stdout


def test_worker_reports_a_failed_command_and_exits(tmp_path):
    worker = subprocess.Popen([sys.executable, str(SCRIPT), "--worker", "tinygrad_conv"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    missing = tmp_path / "no-weights.npz"
    request = {"cmd": "build", "batch": 2, "optimizer": "SGD", "weights": str(missing), "seed": 0}
    out, err = worker.communicate(json.dumps(request) + "\n", timeout=60)
    hello, reply = (json.loads(line) for line in out.splitlines())
    assert hello["version"].startswith("0.") and "TINYGRAD_CONV_THREADS=" in hello["threads"]
    assert reply["error"].startswith("build failed: FileNotFoundError") and str(missing) in \
        reply["error"]
    assert worker.returncode == 0


def test_channel_reports_a_worker_that_is_gone(bench, tmp_path):
    channel = bench.Channel("tinygrad_conv", bench.worker_env("tinygrad_conv", 1, str(tmp_path)),
                            str(tmp_path))
    try:
        assert "version" in channel.receive(timeout=60)
        channel.proc.kill()
        channel.proc.wait()
        reply = channel.call("steps", n=1)
    finally:
        channel.close()
    assert reply["error"].startswith("worker exited: ")


def test_a_run_whose_only_framework_cannot_run_prints_its_row():
    env = {**os.environ, "CC": "no-such-compiler"}  # tinygrad: not installed, or no compiler
    out = subprocess.run([sys.executable, str(SCRIPT), "--frameworks", "tinygrad", "--batches",
                          "2", "--repeats", "1"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 0, out.stderr
    cells = table_rows(out.stdout)[("2", "tinygrad")]
    assert cells[2].startswith(("not installed (pip install tinygrad==0.14.0)",
                                "not runnable: its CPU backend compiles kernels with clang"))


def test_missing_framework_is_a_row_not_an_error(bench, monkeypatch):
    monkeypatch.setattr(bench.util, "find_spec", lambda name: None)
    reason = bench.missing_reason("jax")
    assert reason == 'not installed (pip install "jax==0.10.2" "jaxlib==0.10.2")'
    row = bench.table_row(64, bench.Result("jax", reason), {}, [2.3, 2.2])
    assert row[:3] == ["64", "jax", reason] and len(row) == len(bench.HEADERS)


def test_loss_check_flags_disagreement(bench):
    assert bench.loss_check([2.0, 1.5], [2.0, 1.5]) == "ok (rel 0)"
    assert bench.loss_check([2.0001, 1.5], [2.0, 1.5]).startswith("ok")  # 5e-5 relative
    flagged = bench.loss_check([2.0, 1.51], [2.0, 1.5])
    assert flagged.startswith("**DISAGREES") and "6.7e-03" in flagged


def test_flags_are_checked(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--frameworks", "torch,keras"])
    assert "unknown ['keras']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--batches", "64,big"])
    args = bench.parse_args(["--quick", "--optimizer", "adam"])
    assert (args.repeats, args.warmup, args.steps_per_turn) == (3, 1, 1)
    assert args.optimizer == "Adam" and args.batches == [64, 128]
