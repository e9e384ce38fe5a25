"""nn: layers against NumPy / naive references, init bounds, names and order, state dicts."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import engine, naive, nn, optim


class Net(nn.Module):
    """A small nested model: features (Sequential) then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(conv1=nn.Conv2d(1, 4, 3, padding=1), bn1=nn.BatchNorm2d(4),
                        relu1=nn.ReLU(), pool1=nn.MaxPool2d(2))
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.flatten(self.features(x)))


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


# ---- layers against references ---------------------------------------------------------
def test_linear_is_x_wt_plus_b(rng):
    layer = nn.Linear(5, 3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    expected = x @ layer.weight.data.T + layer.bias.data
    np.testing.assert_allclose(layer(tc.Tensor(x)).data, expected, rtol=1e-5, atol=1e-6)
    assert layer(x).op.name == "linear"
    no_bias = nn.Linear(5, 3, bias=False)
    assert no_bias.bias is None and len(list(no_bias.parameters())) == 1
    np.testing.assert_allclose(no_bias(x).data, x @ no_bias.weight.data.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride, padding, dilation, groups",
                         [(1, 0, 1, 1), (2, 1, 1, 1), ((1, 2), (2, 0), (2, 1), 2)])
def test_conv2d_matches_naive(rng, stride, padding, dilation, groups):
    layer = nn.Conv2d(4, 6, (3, 2), stride=stride, padding=padding, dilation=dilation,
                      groups=groups)
    x = rng.standard_normal((2, 4, 7, 8)).astype(np.float32)
    out = layer(x)
    expected = naive.conv2d(x, layer.weight.data, layer.bias.data, layer.stride, layer.padding,
                            layer.dilation, groups)
    np.testing.assert_allclose(out.data, expected, rtol=1e-4, atol=1e-5)
    assert out.op.name == "conv2d"


def test_conv2d_keeps_pairs_and_shapes():
    layer = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2)
    assert layer.kernel_size == (3, 3) and layer.stride == (2, 2)
    assert layer.padding == (1, 1) and layer.dilation == (1, 1)
    assert layer.weight.shape == (8, 3, 3, 3) and layer.bias.shape == (8,)
    assert layer.weight.dtype == np.float32 and layer.weight.requires_grad


def test_pools_activations_flatten_match_numpy(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(nn.MaxPool2d(2)(x).data, naive.max_pool2d(x, (2, 2)), rtol=1e-6)
    np.testing.assert_allclose(nn.AvgPool2d(3, stride=2, padding=1)(x).data,
                               naive.avg_pool2d(x, (3, 3), (2, 2), (1, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nn.ReLU()(x).data, np.maximum(x, 0))
    np.testing.assert_allclose(nn.Sigmoid()(x).data, 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(nn.Tanh()(x).data, np.tanh(x), rtol=1e-6, atol=1e-7)
    assert nn.Flatten()(x).shape == (2, 108)
    assert nn.Flatten(0, 1)(x).shape == (6, 6, 6)


def test_losses_match_numpy(rng):
    logits = rng.standard_normal((5, 4)).astype(np.float32)
    target = np.array([0, 3, 1, 1, 2])
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    expected = -log_probs[np.arange(5), target].mean()
    assert nn.CrossEntropyLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)
    other = rng.standard_normal((5, 4)).astype(np.float32)
    mse = nn.MSELoss()(tc.Tensor(logits), tc.Tensor(other)).item()
    assert mse == pytest.approx(((logits - other) ** 2).mean(), rel=1e-5)


def test_dropout_train_and_eval(rng):
    tc.manual_seed(0)
    layer = nn.Dropout(0.25)
    x = rng.uniform(1, 2, (200, 50)).astype(np.float32)
    y = layer(x).data
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    layer.eval()
    np.testing.assert_array_equal(layer(x).data, x)
    tc.manual_seed(0)
    np.testing.assert_array_equal(layer.train()(x).data, y)  # the seed decides the mask
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_batchnorm_train_eval_and_running_stats(rng):
    bn = nn.BatchNorm2d(3, momentum=0.1, eps=1e-5)
    bn.weight.data[...] = [1.0, 2.0, 0.5]
    bn.bias.data[...] = [0.0, -1.0, 3.0]
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(2):
        x = rng.normal(2.0, 3.0, (4, 3, 5, 5)).astype(np.float32)
        out = bn(x).data
        m, v = x.mean((0, 2, 3)), x.var((0, 2, 3))
        norm = (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-5)
        expected = norm * bn.weight.data[None, :, None, None] + bn.bias.data[None, :, None, None]
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
        n = x.size // 3
        mean = 0.9 * mean + 0.1 * m
        var = 0.9 * var + 0.1 * v * n / (n - 1)
    np.testing.assert_allclose(bn.running_mean.data, mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.data, var, rtol=1e-5)
    assert bn.num_batches_tracked.data.dtype == np.int64 and int(bn.num_batches_tracked.data) == 2
    bn.eval()
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    expected = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    expected = expected * bn.weight.data[None, :, None, None] + bn.bias.data[None, :, None, None]
    np.testing.assert_allclose(bn(x).data, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.data, mean, rtol=1e-5)  # eval leaves them alone
    assert int(bn.num_batches_tracked.data) == 2


def test_batchnorm_defaults_and_buffers():
    bn = nn.BatchNorm2d(5)
    assert (bn.eps, bn.momentum) == (1e-5, 0.1)
    np.testing.assert_array_equal(bn.weight.data, np.ones(5))
    np.testing.assert_array_equal(bn.bias.data, np.zeros(5))
    np.testing.assert_array_equal(bn.running_mean.data, np.zeros(5))
    np.testing.assert_array_equal(bn.running_var.data, np.ones(5))
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var",
                                                   "num_batches_tracked"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    assert bn.state_dict()["num_batches_tracked"].dtype == np.int64


def test_layers_name_themselves_in_shape_errors():
    with pytest.raises(ValueError) as info:
        nn.Conv2d(1, 32, 3)(tc.zeros(64, 3, 28, 28))
    assert str(info.value) == (
        "Conv2d(1, 32, ...): expected input with 1 channels (N, 1, H, W), "
        "got shape (64, 3, 28, 28)"
    )
    with pytest.raises(ValueError, match=r"Linear\(784, 10\).*784.*\(64, 100\)"):
        nn.Linear(784, 10)(tc.zeros(64, 100))
    with pytest.raises(ValueError, match=r"flatten it first"):
        nn.Linear(784, 10)(tc.zeros(64, 1, 28, 28))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4\).*\(2, 3, 5, 5\)"):
        nn.BatchNorm2d(4)(tc.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=2.*4-D.*\(2, 3\)"):
        nn.MaxPool2d(2)(tc.zeros(2, 3))


# ---- initialisation --------------------------------------------------------------------
def test_default_init_within_pytorch_bounds():
    tc.manual_seed(0)
    layer = nn.Linear(1000, 400)
    bound = math.sqrt(2 / (1 + 5)) * math.sqrt(3 / 1000)  # kaiming_uniform_(a=sqrt(5))
    assert bound == pytest.approx(1 / math.sqrt(1000))
    w = layer.weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(w.mean()) < 0.01 * bound
    assert np.abs(layer.bias.data).max() <= 1 / math.sqrt(1000)
    conv = nn.Conv2d(8, 16, 3, groups=2)  # fan_in = 8/2 * 3 * 3 = 36
    assert np.abs(conv.weight.data).max() <= 1 / 6 and np.abs(conv.bias.data).max() <= 1 / 6
    assert layer.weight.dtype == np.float32 and conv.bias.dtype == np.float32


def test_init_functions():
    t = nn.Parameter(np.zeros((300, 200, 3, 3), np.float32))  # fan_in 1800, fan_out 2700
    nn.init.kaiming_uniform_(t, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / 1800)
    assert np.abs(t.data).max() <= bound
    assert t.data.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
    assert t.data.std() == pytest.approx(math.sqrt(2 / 2700), rel=0.01)
    nn.init.xavier_uniform_(t)
    assert np.abs(t.data).max() <= math.sqrt(6 / (1800 + 2700))
    nn.init.xavier_normal_(t, gain=2.0)
    assert t.data.std() == pytest.approx(2 * math.sqrt(2 / 4500), rel=0.01)
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert nn.init.zeros_(t) is t and not t.data.any()
    with pytest.raises(ValueError, match="at least 2 dims"):
        nn.init.kaiming_uniform_(nn.Parameter(np.zeros(3, np.float32)))


def test_init_is_reproducible_from_manual_seed():
    tc.manual_seed(7)
    a = small_cnn().state_dict()
    tc.manual_seed(7)
    b = small_cnn().state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["0.weight"], small_cnn().state_dict()["0.weight"])


# ---- names, order and tree walks -------------------------------------------------------
def test_parameter_names_and_order_are_pytorchs():
    model = Net()
    assert [n for n, _ in model.named_parameters()] == [
        "features.conv1.weight", "features.conv1.bias", "features.bn1.weight",
        "features.bn1.bias", "fc.weight", "fc.bias",
    ]
    assert list(model.state_dict()) == [
        "features.conv1.weight", "features.conv1.bias", "features.bn1.weight",
        "features.bn1.bias", "features.bn1.running_mean", "features.bn1.running_var",
        "features.bn1.num_batches_tracked", "fc.weight", "fc.bias",
    ]
    assert [p is q for p, q in zip(model.parameters(), Net.parameters(model))] == [True] * 6
    assert [n for n, _ in small_cnn().named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]


def test_modules_children_and_shared_parameters():
    model = Net()
    assert [n for n, _ in model.named_modules()] == [
        "", "features", "features.conv1", "features.bn1", "features.relu1", "features.pool1",
        "flatten", "fc",
    ]
    assert list(model.children()) == [model.features, model.flatten, model.fc]
    assert len(list(model.modules())) == 8
    shared = nn.Linear(3, 3)
    tied = nn.Sequential(shared, nn.ReLU(), shared)
    assert [n for n, _ in tied.named_parameters()] == ["0.weight", "0.bias"]
    assert list(tied.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_parameter_is_a_float32_tensor_requiring_grad():
    p = nn.Parameter(np.arange(6.0).reshape(2, 3))
    assert isinstance(p, tc.Tensor) and p.requires_grad and p.dtype == np.float32
    assert repr(p).startswith("Parameter containing:\ntensor(")
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="nn.Parameter or None expected"):
        layer.weight = tc.zeros(2, 2)


def test_train_eval_recursive_and_zero_grad(rng):
    model = Net()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    model(x).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_sequential_len_index_slice_iter():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4), nn.Tanh()]
    seq = nn.Sequential(*layers)
    assert len(seq) == 4 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[3] and seq[-4] is layers[0]
    tail = seq[1:3]
    assert isinstance(tail, nn.Sequential) and list(tail) == layers[1:3]
    assert list(tail.state_dict()) == ["2.weight", "2.bias"]  # names kept, as PyTorch
    with pytest.raises(IndexError):
        seq[4]
    x = tc.ones(5, 2)
    np.testing.assert_allclose(seq(x).data, seq[2:](seq[:2](x)).data)


def test_repr_shows_the_layer_tree():
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.BatchNorm2d(32), nn.Dropout(0.25), nn.Flatten(),
                          nn.Linear(32 * 14 * 14, 10, bias=False),
                          nn.Sequential(nn.Conv2d(2, 4, (3, 1), stride=2, dilation=2, groups=2,
                                                  bias=False)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n"
        "  (1): ReLU()\n"
        "  (2): MaxPool2d(kernel_size=2, stride=2, padding=0)\n"
        "  (3): BatchNorm2d(32, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (4): Dropout(p=0.25)\n"
        "  (5): Flatten(start_dim=1, end_dim=-1)\n"
        "  (6): Linear(in_features=6272, out_features=10, bias=False)\n"
        "  (7): Sequential(\n"
        "    (0): Conv2d(2, 4, kernel_size=(3, 1), stride=(2, 2), dilation=(2, 2), groups=2, "
        "bias=False)\n"
        "  )\n"
        ")"
    )


def test_call_records_the_module_scope_of_each_op(rng):
    model = Net()
    out = model(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    assert out.op.scope == (model, model.fc)
    conv_out = out.op.inputs[0].op.inputs[0]  # linear <- flatten(reshape) <- pool
    assert conv_out.op.scope == (model, model.features, model.features.pool1)
    assert engine.module_stack() == []

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        nn.Sequential(Broken())(1)
    assert engine.module_stack() == []


# ---- state dicts -----------------------------------------------------------------------
def test_state_dict_holds_copies():
    model = small_cnn()
    sd = model.state_dict()
    assert isinstance(sd, OrderedDict) and all(isinstance(v, np.ndarray) for v in sd.values())
    sd["0.weight"][...] = 0
    assert model[0].weight.data.any()


def test_load_state_dict_copies_in_place_and_optimizer_keeps_working(rng):
    tc.manual_seed(1)
    source, target = small_cnn(), small_cnn()
    opt = optim.SGD(target.parameters(), lr=0.1)
    weight_array = target[0].weight.data
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target[0].weight.data is weight_array
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(target(x).data, source(x).data)
    target(x).sum().backward()
    opt.step()  # updates the same arrays the model uses
    assert not np.array_equal(target[0].weight.data, source[0].weight.data)


def test_load_state_dict_names_every_bad_key():
    model = small_cnn()
    sd = model.state_dict()
    del sd["0.bias"], sd["1.running_var"]
    sd["extra.weight"] = np.zeros(3)
    sd["5.weight"] = np.zeros((3, 10), np.float32)
    before = model.state_dict()
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(sd)
    message = str(info.value)
    assert "Error(s) in loading state_dict for Sequential" in message
    assert 'Missing key(s) in state_dict: "0.bias", "1.running_var"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    assert "size mismatch for 5.weight" in message and "(3, 10)" in message
    assert "(3, 64)" in message
    for key, value in model.state_dict().items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_non_strict():
    model = small_cnn()
    sd = model.state_dict()
    del sd["0.bias"]
    sd["extra"] = np.zeros(1)
    sd["0.weight"] = np.full((4, 1, 3, 3), 0.5, np.float32)
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["extra"]
    assert (model[0].weight.data == 0.5).all()
    sd["0.weight"] = np.zeros((4, 1, 3, 2))
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        model.load_state_dict(sd, strict=False)


def test_functional_and_module_agree(rng):
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    conv = nn.Conv2d(1, 2, 3)
    np.testing.assert_array_equal(conv(x).data, F.conv2d(x, conv.weight, conv.bias).data)
