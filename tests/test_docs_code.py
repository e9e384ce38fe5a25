"""Every fenced ``python`` block in docs/*.md and README.md runs, in order, page by page.

The blocks of one page share one namespace (a later block uses the names an earlier one made),
and run in a temporary folder, so files they write land there. A block that imports PyTorch
runs where PyTorch is installed. A ``python`` block followed by
a plain fenced block whose first line is ``SomeError: message`` must raise that error, with a
message that starts as the page shows it.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # a block that plots must not open a window

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
OPTIONAL = ("torch",)  # blocks that use it run where it is installed
ERROR = re.compile(r"^(\w+(?:Error|Exception)): (.*)")


def blocks(page: Path) -> list[tuple[str, str | None, str]]:
    """(code, expected error class or None, expected message start) for each python block."""
    found = list(FENCE.finditer(page.read_text()))
    out = []
    for i, m in enumerate(found):
        if m.group(1) != "python":
            continue
        error, message = None, ""
        nxt = found[i + 1] if i + 1 < len(found) else None
        if nxt is not None and nxt.group(1) == "" and not page.read_text()[m.end():nxt.start()]\
                .strip():
            first = ERROR.match(nxt.group(2))
            if first:
                error, message = first.group(1), first.group(2)
        out.append((m.group(2), error, message))
    return out


def test_the_pages_have_python_blocks():
    counts = {p.name: len(blocks(p)) for p in PAGES}
    assert counts["autograd.md"] >= 5 and counts["README.md"] >= 1 and counts["graph.md"] >= 1


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_every_python_block_runs(page, tmp_path, monkeypatch):
    if "viz.draw_graph" in page.read_text() and shutil.which("dot") is None:
        pytest.skip("this page renders with Graphviz's dot, which is not installed")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for n, (code, error, message) in enumerate(blocks(page), start=1):
        if any(f"import {name}" in code and importlib.util.find_spec(name) is None
               for name in OPTIONAL):
            continue  # a block showing PyTorch's side, where PyTorch is not installed
        compiled = compile(code, f"{page.name} block {n}", "exec")
        if error is None:
            exec(compiled, namespace)
            continue
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the class is checked by name
            exec(compiled, namespace)
        assert type(caught.value).__name__ == error
        assert str(caught.value).startswith(message.strip())
