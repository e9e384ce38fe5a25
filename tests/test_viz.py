"""tinygrad_conv.viz: the DOT text against the graphs it draws, and rendering with Graphviz.

The DOT text is parsed back (nodes, edges, clusters) by the small parser below, so the tests
check structure (exact node and edge counts, labels, cluster membership), not formatting.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import nn, viz
from tinygrad_conv.engine import Op

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(
    not HAVE_DOT and os.environ.get("CI") != "true",
    reason="Graphviz's dot is not installed (in CI it must be, and these tests fail instead)",
)
KIND_OF_COLOR = {color: kind for kind, color in viz.COLORS.items()}
SVG = "{http://www.w3.org/2000/svg}"


# ---- a parser for the DOT text viz writes ---------------------------------------------------
@dataclass
class Parsed:
    nodes: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)  # id: kind,...
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (src, dst, label)
    clusters: dict[str, str] = field(default_factory=dict)  # cluster name -> title
    parent: dict[str, str | None] = field(default_factory=dict)  # cluster -> enclosing one
    where: dict[str, str | None] = field(default_factory=dict)  # node id -> its cluster

    def titles(self, kind: str | None = None) -> list[str]:
        return [t for k, t, _ in self.nodes.values() if kind is None or k == kind]

    def node(self, title: str) -> tuple[str, str, list[str]]:
        (found,) = [(nid, k, lines) for nid, (k, t, lines) in self.nodes.items() if t == title]
        return found

    def cluster_title_of(self, title: str) -> str | None:
        cluster = self.where[self.node(title)[0]]
        return None if cluster is None else self.clusters[cluster]


def _split_label(label: str) -> tuple[str, list[str]]:
    title = html.unescape(re.search(r"<b>(.*?)</b>", label).group(1))
    body = re.search(r'<font point-size="9">(.*)</font>', label)
    lines = [html.unescape(x) for x in re.split(r"<br[^>]*/>", body.group(1))] if body else []
    return title, lines


def parse(text: str) -> Parsed:
    assert text.startswith("digraph tinygrad_conv {\n") and text.endswith("}\n")
    out, stack = Parsed(), []
    for line in text.splitlines()[1:-1]:
        line = line.strip()
        if m := re.fullmatch(r"subgraph (cluster_\d+) \{", line):
            out.parent[m.group(1)] = stack[-1] if stack else None
            stack.append(m.group(1))
        elif line == "}":
            stack.pop()
        elif m := re.fullmatch(r"graph \[label=<(.*?)>, labeljust=l.*", line):
            out.clusters[stack[-1]] = _split_label(m.group(1))[0]
        elif m := re.fullmatch(r'(n\d+) \[label=<(.*)>, fillcolor="([^"]+)", style="[^"]+"\]',
                               line):
            title, lines = _split_label(m.group(2))
            out.nodes[m.group(1)] = (KIND_OF_COLOR[m.group(3)], title, lines)
            out.where[m.group(1)] = stack[-1] if stack else None
        elif m := re.fullmatch(r"(n\d+) -> (n\d+)(?: \[label=<(.*)>\])?", line):
            label = (m.group(3) or "").replace("<br/>", "\n")
            out.edges.append((m.group(1), m.group(2), html.unescape(label)))
    assert not stack
    return out


def named_edges(p: Parsed) -> list[tuple[str, str, str]]:
    return [(p.nodes[s][1], p.nodes[d][1], label) for s, d, label in p.edges]


# ---- graphs used below ------------------------------------------------------------------------
def abc_graph():
    a = tc.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    b = tc.Tensor(np.ones((2, 3)), requires_grad=True)
    c = tc.Tensor(np.full((2, 3), 2.0), requires_grad=True)
    return a, b, c, (a * b + c).sum()


def tiny_net_graph():
    """conv -> relu -> pool -> flatten -> linear -> cross-entropy, from F functions."""
    rng = np.random.default_rng(0)
    x = tc.Tensor(rng.standard_normal((2, 1, 6, 6)))
    w = tc.Tensor(rng.standard_normal((4, 1, 3, 3)), requires_grad=True)
    b = tc.Tensor(np.zeros(4), requires_grad=True)
    fw = tc.Tensor(rng.standard_normal((3, 36)), requires_grad=True)
    h = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2)
    logits = F.linear(h.flatten(1), fw)
    loss = F.cross_entropy(logits, np.array([0, 2]))
    return {"conv.weight": w, "conv.bias": b, "fc.weight": fw}, loss


class Net(nn.Module):
    """features (Conv2d, ReLU) -> flatten (an op of Net itself) -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def net_loss(seed: int = 0):
    tc.manual_seed(seed)
    net = Net()
    x = tc.randn(2, 1, 4, 4)
    return net, F.cross_entropy(net(x), np.array([1, 2]))


# ---- structure of small graphs ----------------------------------------------------------------
def test_sum_of_products_nodes_edges_and_labels():
    a, b, c, y = abc_graph()
    p = parse(viz.to_dot(y, params={"a": a, "b": b, "c": c}))
    assert len(p.nodes) == 7 and len(p.edges) == 6
    assert p.titles() == ["a", "b", "mul", "c", "add", "sum", "output"]
    assert p.titles("parameter") == ["a", "b", "c"]
    assert p.titles("op") == ["mul", "add", "sum"]
    assert p.node("a")[2] == ["(2, 3) float32"]
    assert p.node("output")[2] == ["scalar float32"]
    assert p.node("sum")[2] == ["axis all"]
    assert named_edges(p) == [
        ("a", "mul", ""), ("b", "mul", ""), ("mul", "add", "(2, 3)"), ("c", "add", ""),
        ("add", "sum", "(2, 3)"), ("sum", "output", ""),
    ]


def test_unnamed_leaves_are_inputs_and_constants_show_their_value():
    a, b, c, y = abc_graph()
    p = parse(viz.to_dot(y))
    assert p.titles("input") == ["input0", "input1", "input2"]
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    p = parse(viz.to_dot((x * 0.5).mean()))
    assert p.titles("input") == ["input"]
    assert p.titles("constant") == ["0.5"]
    assert p.titles() == ["input", "0.5", "mul", "mean", "output"]


def test_show_shapes_false_leaves_only_names():
    a, b, c, y = abc_graph()
    p = parse(viz.to_dot(y, params={"a": a, "b": b, "c": c}, show_shapes=False))
    assert all(lines == [] for k, _, lines in p.nodes.values() if k != "op")
    assert all(label == "" for _, _, label in p.edges)


def test_tiny_conv_net_ops_settings_and_params():
    params, loss = tiny_net_graph()
    p = parse(viz.to_dot(loss, params=params))
    assert p.titles("op") == ["conv2d", "relu", "max_pool2d", "reshape", "linear",
                              "log_softmax", "nll_loss"]
    assert p.titles("parameter") == ["conv.weight", "conv.bias", "fc.weight"]
    assert p.titles("input") == ["input"] and p.titles("output") == ["loss"]
    assert len(p.nodes) == 12 and len(p.edges) == 11
    assert p.node("conv2d")[2] == ["kernel 3x3, stride 1", "padding 1, dilation 1",
                                  "groups 1, algorithm im2col"]
    assert p.node("max_pool2d")[2] == ["kernel 2x2, stride 2"]  # padding 0 is not shown
    assert p.node("reshape")[2] == ["shape (2, -1)"]
    assert p.node("linear")[2] == ["in 36, out 3"]
    assert p.node("nll_loss")[2] == ["reduction mean"]  # the target array is not shown
    assert p.node("conv.weight")[2] == ["(4, 1, 3, 3) float32"]
    assert p.node("input")[2] == ["(2, 1, 6, 6) float32"]
    assert ("conv2d", "relu", "(2, 4, 6, 6)") in named_edges(p)
    assert ("max_pool2d", "reshape", "(2, 4, 3, 3)") in named_edges(p)


def test_op_settings_shown_and_bulky_ones_hidden():
    x = tc.Tensor(np.ones((1, 2, 6, 6)), requires_grad=True)
    w = tc.Tensor(np.ones((2, 1, 3, 3)), requires_grad=True)
    y = F.conv2d(x, w, stride=(2, 1), dilation=2, groups=2)
    y = F.avg_pool2d(y, 2, stride=1, padding=1)
    y = F.dropout(y.permute(0, 2, 3, 1), p=0.25)
    y = y[np.array([0, 0]), :, 1:3].mean(axis=1, keepdims=True).sum()
    text = viz.to_dot(y)
    p = parse(text)
    settings = {title: lines for _, title, lines in p.nodes.values()}
    assert settings["conv2d"] == ["kernel 3x3, stride (2, 1)", "padding 0, dilation 2",
                                  "groups 2, algorithm im2col"]
    assert settings["avg_pool2d"] == ["kernel 2x2, stride 1", "padding 1"]
    assert settings["permute"] == ["axes (0, 2, 3, 1)"]
    assert settings["dropout"] == ["p 0.25"]
    assert settings["getitem"] == ["index [int64[2], :, 1:3]"]
    assert settings["mean"] == ["axis 1, keepdims True"]
    for hidden in ("out_hw", "x_shape", "winner", "scale_mask", "array("):
        assert hidden not in text


def test_unknown_op_shows_small_settings_only():
    class Scale(Op):
        name = "my_scale"

        def forward(self, a):
            return a * self.attrs["alpha"]

    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    y = Scale(alpha=0.5, mode="fast", table=np.ones(100), note="x" * 100).apply(x)
    p = parse(viz.to_dot(y))
    assert p.node("my_scale")[2] == ["alpha 0.5, mode fast"]


def test_shared_input_and_multiple_outputs():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    p = parse(viz.to_dot(h.sum(), h.exp().sum()))
    assert p.titles() == ["input", "mul", "sum", "exp", "sum", "output0", "output1"]
    assert named_edges(p).count(("input", "mul", "")) == 2  # one arrow per input slot
    assert named_edges(p).count(("mul", "sum", "(2,)")) == 1
    leaf = parse(viz.to_dot(x))  # a leaf passed as the output is just its node
    assert leaf.titles() == ["input"] and leaf.edges == []


def test_bad_arguments():
    x = tc.Tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="at least one tensor"):
        viz.to_dot()
    with pytest.raises(TypeError, match="not a Tensor"):
        viz.to_dot(np.ones(2))
    with pytest.raises(ValueError, match="rankdir"):
        viz.to_dot(x, rankdir="sideways")
    assert "rankdir=LR" in viz.to_dot(x * 2, rankdir="LR")


def _legend_kinds(text: str) -> list[str]:
    (legend,) = [line for line in text.splitlines() if line.strip().startswith("legend ")]
    cells = re.findall(r'<td bgcolor="(#[0-9a-f]+)">(\w+)</td>', legend)
    assert all(viz.COLORS[kind] == color for color, kind in cells)
    return [kind for _, kind in cells]


def test_legend_lists_the_kinds_drawn():
    params, loss = tiny_net_graph()
    assert _legend_kinds(viz.to_dot(loss, params=params)) == [
        "input", "parameter", "op", "output"]
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    assert _legend_kinds(viz.to_dot((x * 2).sum())) == ["input", "constant", "op", "output"]
    net, loss = net_loss()
    assert _legend_kinds(viz.to_dot(loss, modules_only=True)) == [
        "input", "op", "module", "output"]
    assert "legend" not in viz.to_dot(loss, legend=False)


# ---- modules ------------------------------------------------------------------------------
def test_group_modules_clusters_are_named_and_nested():
    net, loss = net_loss()
    p = parse(viz.to_dot(loss, group_modules=True, model=net))
    assert sorted(p.clusters.values()) == [
        "classifier: Linear", "features.0: Conv2d", "features.1: ReLU", "features: Sequential",
    ]
    names = {title: name for name, title in p.clusters.items()}
    assert p.parent[names["features.0: Conv2d"]] == names["features: Sequential"]
    assert p.parent[names["classifier: Linear"]] is None
    assert p.cluster_title_of("conv2d") == "features.0: Conv2d"
    assert p.cluster_title_of("features.0.weight") == "features.0: Conv2d"  # params: own layer
    assert p.cluster_title_of("classifier.bias") == "classifier: Linear"
    assert p.cluster_title_of("relu") == "features.1: ReLU"
    for outside in ("input", "reshape", "log_softmax", "nll_loss", "loss"):
        assert p.cluster_title_of(outside) is None
    assert len(p.nodes) == 12 and len(p.edges) == 11


def test_root_model_and_parameter_names_are_inferred():
    net, loss = net_loss()
    explicit = viz.to_dot(loss, group_modules=True, model=net,
                          params=dict(net.named_parameters()))
    assert viz.to_dot(loss, group_modules=True) == explicit
    assert parse(explicit).titles("parameter") == [
        "features.0.weight", "features.0.bias", "classifier.weight", "classifier.bias",
    ]
    assert "cluster" not in viz.to_dot(loss)  # grouping only when asked


def test_loss_module_gets_its_own_cluster_and_names_the_output():
    net, _ = net_loss()
    loss = nn.CrossEntropyLoss()(net(tc.randn(2, 1, 4, 4)), np.array([0, 1]))
    p = parse(viz.to_dot(loss, group_modules=True))
    assert "CrossEntropyLoss" in p.clusters.values()
    assert p.cluster_title_of("nll_loss") == "CrossEntropyLoss"
    assert p.titles("output") == ["loss"]


def test_modules_only_one_node_per_layer():
    net, loss = net_loss()
    p = parse(viz.to_dot(loss, modules_only=True))
    assert p.titles() == ["input", "features.0: Conv2d", "features.1: ReLU", "reshape",
                          "classifier: Linear", "log_softmax", "nll_loss", "loss"]
    assert p.titles("module") == ["features.0: Conv2d", "features.1: ReLU",
                                  "classifier: Linear"]
    assert len(p.edges) == 7
    assert ("features.0: Conv2d", "features.1: ReLU", "(2, 2, 4, 4)") in named_edges(p)
    conv_lines = p.node("features.0: Conv2d")[2]
    assert "weight (2, 1, 3, 3) float32" in conv_lines and "bias (2,) float32" in conv_lines
    assert "kernel_size=(3, 3)" in " ".join(conv_lines)


@pytest.mark.usefixtures("fusing")
def test_reference_cnn_node_counts():
    model, loss = viz.reference_step()
    full = viz.build_graph(loss, model=model, group_modules=True)
    # each ReLU + MaxPool2d pair runs as one op, drawn in the pool's frame (nn.Sequential)
    assert [n.title for n in full.nodes if n.kind == "op"][:4] == [
        "conv2d", "relu_max_pool2d", "conv2d", "relu_max_pool2d"]
    assert (full.count(), full.count("op"), full.count("parameter")) == (20, 10, 8)
    assert len(full.edges) == 19 and len(full.clusters) == 8
    layers = viz.build_graph(loss, model=model, modules_only=True)
    assert (layers.count(), layers.count("module"), len(layers.edges)) == (12, 8, 11)


# ---- determinism and size ---------------------------------------------------------------------
def test_same_graph_same_text_and_ids_do_not_depend_on_memory():
    _, loss = net_loss(seed=0)
    first = viz.to_dot(loss, group_modules=True)
    assert viz.to_dot(loss, group_modules=True) == first
    _, other = net_loss(seed=1)  # built again, other values: the same structure
    assert viz.to_dot(other, group_modules=True) == first
    assert viz.to_dot(other, modules_only=True) == viz.to_dot(loss, modules_only=True)
    ids = [nid for nid in parse(first).nodes]
    assert ids == [f"n{i}" for i in range(len(ids))]


def test_deep_chain_of_100k_ops():
    x = tc.Tensor([1.0, -1.0], requires_grad=True)
    y = x
    for _ in range(100_000):
        y = -y
    start = time.perf_counter()
    graph = viz.build_graph(y)
    text = graph.source
    assert time.perf_counter() - start < 30
    assert graph.count() == 100_002 and graph.count("op") == 100_000
    assert len(graph.edges) == 100_001
    assert text.count(" -> ") == 100_001
    assert "n100001 [label=<<b>output</b>" in text


# ---- gradient norms and escaping ----------------------------------------------------------
def test_grad_norms_after_backward():
    a, b, c, y = abc_graph()
    params = {"a": a, "b": b, "c": c}
    assert "grad norm" not in viz.to_dot(y, params=params, show_grad_norm=True)
    h = a * b
    h.retain_grad()
    y = (h + c).sum()
    y.backward()
    p = parse(viz.to_dot(y, params=params, show_grad_norm=True))
    for name, t in params.items():
        expected = np.sqrt((t.grad.numpy().astype(np.float64) ** 2).sum())
        assert p.node(name)[2] == ["(2, 3) float32", f"grad norm {expected:.4g}"]
    assert ("mul", "add", f"(2, 3)\ngrad norm {np.sqrt(6):.4g}") in named_edges(p)
    assert "grad norm" not in viz.to_dot(y, params=params)


def test_labels_are_escaped():
    name = 'w<1> & "q" \\n \\ it\'s'
    w = tc.Tensor([1.0, 2.0], requires_grad=True)
    text = viz.to_dot((w * 2).sum(), params={name: w}, title="a <b> & c")
    assert "w&lt;1&gt; &amp; &quot;q&quot; \\n \\ it&#39;s" in text
    assert "<b>a &lt;b&gt; &amp; c</b>" in text
    assert parse(text).titles("parameter") == [name]


# ---- rendering ----------------------------------------------------------------------------
def test_missing_dot_gives_install_instructions(monkeypatch, tmp_path):
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    target = tmp_path / "g.svg"
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(RuntimeError) as err:
        viz.render(y, path=target)
    message = str(err.value)
    for hint in ("sudo apt-get install graphviz", "brew install graphviz",
                 "conda install -c conda-forge graphviz", "to_dot"):
        assert hint in message
    assert isinstance(err.value, viz.GraphvizNotFoundError)
    with pytest.raises(viz.GraphvizNotFoundError):  # before building the model
        viz.graph_command(target, fmt="png")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_missing_dot_at_render_time_from_the_digraph(monkeypatch, tmp_path):
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    g = viz.draw_graph((x * x).sum())
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot anywhere on PATH
    for attempt in (lambda: g.render(tmp_path / "g", format="png"),
                    lambda: g.pipe(format="svg"), g._repr_mimebundle_):
        with pytest.raises(viz.GraphvizNotFoundError, match="apt-get"):
            attempt()
    written = viz.render((x * x).sum(), path=tmp_path / "g", format="dot")  # needs no dot
    assert written.name == "g.dot" and written.read_text().startswith("digraph")


def test_draw_graph_is_a_digraph_with_the_same_source():
    import graphviz

    net, loss = net_loss()
    g = viz.draw_graph(loss, group_modules=True, format="png")
    assert isinstance(g, graphviz.Digraph) and g.format == "png"
    assert g.source == viz.to_dot(loss, group_modules=True)


def test_render_writes_atomically(monkeypatch, tmp_path):
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    target = tmp_path / "graph.dot"
    target.write_text("old")

    def crash(source: str, fmt: str) -> bytes:
        raise RuntimeError("dot crashed")

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/dot")
    monkeypatch.setattr(viz.rendering, "_run_dot", crash)
    with pytest.raises(RuntimeError, match="crashed"):
        viz.render(y, path=target, format="svg")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        viz.render(y, path=target)
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1
    monkeypatch.undo()
    assert viz.render(y, path=target) == target
    assert target.read_text() == viz.to_dot(y)
    fresh = viz.render(y, path=tmp_path / "sub" / "new.dot")  # folders made, mode as open()'s
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask


def _svg_nodes(svg: bytes) -> dict[str, list[str]]:
    """Node id -> the text lines Graphviz drew in it."""
    root = ET.fromstring(svg)
    nodes = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "node":
            title = g.find(f"{SVG}title").text
            nodes[title] = [t.text or "" for t in g.iter(f"{SVG}text")]
    return nodes


@needs_dot
@pytest.mark.parametrize("view", ["ops", "grouped", "modules"])
@pytest.mark.usefixtures("fusing")
def test_real_svg_shows_every_label(tmp_path, view):
    model, loss = viz.reference_step()
    options = {"ops": {}, "grouped": {"group_modules": True},
               "modules": {"modules_only": True}}[view]
    options.update(model=model, show_grad_norm=True, title="one step")
    path = viz.render(loss, path=tmp_path / "step.svg", **options)
    drawn = _svg_nodes(path.read_bytes())
    expected = parse(viz.to_dot(loss, **options))
    assert set(drawn) == set(expected.nodes) | {"legend"}
    for nid, (_, title, lines) in expected.nodes.items():
        assert drawn[nid] == [title] + lines
    if view == "grouped":
        svg = path.read_text()
        assert svg.count('class="cluster"') == 8 and "0: Conv2d" in svg


@needs_dot
def test_real_svg_keeps_escaped_text(tmp_path):
    name = 'w<1> & "q" \\n \\ it\'s é'
    w = tc.Tensor([1.0, 2.0], requires_grad=True)
    path = viz.render((w * 2).sum(), path=tmp_path / "esc.svg", params={name: w})
    assert name in _svg_nodes(path.read_bytes())["n0"]


@needs_dot
def test_draw_graph_renders_svg_and_png(tmp_path):
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    g = viz.draw_graph((x * x).sum())
    out = g.render(tmp_path / "g", format="png")
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert g._repr_mimebundle_()["image/svg+xml"].lstrip().startswith("<?xml")


@pytest.mark.usefixtures("fusing")
def test_graph_command_writes_dot_text(tmp_path, capsys):
    path = viz.graph_command(tmp_path / "step", fmt="dot")
    assert path == tmp_path / "step.dot"
    assert parse(path.read_text()).titles("output") == ["loss"]
    out = capsys.readouterr().out
    assert str(path) in out and "20 nodes" in out


@needs_dot
@pytest.mark.parametrize("modules,nodes", [(False, 20), (True, 12)])
@pytest.mark.usefixtures("fusing")
def test_graph_command_writes_svg(tmp_path, capsys, modules, nodes):
    path = viz.graph_command(tmp_path / "step", modules=modules, rankdir="LR")
    assert path.suffix == ".svg"
    drawn = _svg_nodes(path.read_bytes())
    assert len(drawn) == nodes + 1  # and the legend
    assert f"{nodes} nodes" in capsys.readouterr().out


@needs_dot
@pytest.mark.usefixtures("fusing")
def test_example_script_writes_dot_and_svg(tmp_path, monkeypatch, capsys):
    import runpy

    monkeypatch.chdir(tmp_path)
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "draw_graph.py")
    example = runpy.run_path(script, run_name="draw_graph_example")
    assert example["main"](["--out-dir", "pics", "--name", "g"]) == 0
    assert (tmp_path / "pics" / "g.dot").read_text().startswith("digraph")
    assert (tmp_path / "pics" / "g.svg").read_text().count('class="cluster"') == 8
    assert example["main"]([]) == 0  # the default folder is runs/graph, never where it runs
    assert sorted(p.name for p in (tmp_path / "runs" / "graph").iterdir()) == [
        "reference_cnn_graph.dot", "reference_cnn_graph.svg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pics", "runs"]


@needs_dot
def test_cli_graph(tmp_path, capsys):
    from tinygrad_conv import cli

    assert cli.main(["graph", "--out", str(tmp_path / "g.pdf"), "--modules"]) == 0
    assert (tmp_path / "g.pdf").read_bytes().startswith(b"%PDF")


# ---- one frame per call, captions, LR layouts, help --------------------------------------------
class _PoolTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(F.relu(self.pool(self.conv(x)))).sum()


def test_a_module_called_twice_gets_a_frame_per_call():
    net = _PoolTwice()
    loss = net(tc.randn(1, 1, 8, 8))
    text = viz.to_dot(loss, model=net, group_modules=True)
    assert text.count("subgraph cluster_") == 3
    assert "<b>pool: MaxPool2d</b>" in text and "<b>pool: MaxPool2d (call 2)</b>" in text
    graph = viz.build_graph(loss, model=net, modules_only=True)
    titles = [n.title for n in graph.nodes if n.kind == "module"]
    assert titles == ["conv: Conv2d", "pool: MaxPool2d", "pool: MaxPool2d (call 2)"]


def test_one_call_making_several_ops_stays_one_frame():
    class Twice(nn.Module):
        def forward(self, x):
            return (x * 2).relu() + x

    outer = nn.Sequential(Twice())
    x = tc.randn(3, requires_grad=True)
    text = viz.to_dot(outer(x).sum(), model=outer, group_modules=True)
    assert text.count("subgraph cluster_") == 1 and "(call 2)" not in text


def test_captions_give_each_line_its_own_cell():
    net = _PoolTwice()
    text = viz.to_dot(net(tc.randn(1, 1, 8, 8)), model=net, group_modules=True)
    caption = next(line for line in text.splitlines() if "conv: Conv2d" in line)
    assert '<tr><td align="left"><font point-size="9">1, 2, kernel_size=(3, 3)' in caption
    assert "<br" not in caption


@pytest.mark.parametrize("rankdir, loc", [("TB", "t"), ("LR", "b")])
def test_captions_sit_where_edges_do_not_enter(rankdir, loc):
    net = _PoolTwice()
    text = viz.to_dot(net(tc.randn(1, 1, 8, 8)), model=net, group_modules=True, rankdir=rankdir)
    assert text.count(f"labelloc={loc},") == 3


def test_graph_help_says_what_is_drawn(capsys):
    from tinygrad_conv.cli import main

    with pytest.raises(SystemExit):
        main(["graph", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "after the backward pass" in out and "gradient's norm" in out
