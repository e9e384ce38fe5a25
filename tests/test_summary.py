"""tc.summary: counts by hand always, and the same totals as torchinfo where it is installed."""

import numpy as np
import pytest

import tinygrad_conv as tc
from tinygrad_conv import nn
from tinygrad_conv.cli import main
from tinygrad_conv.models import reference_cnn


def test_reference_cnn_counts_by_hand():
    s = tc.summary(reference_cnn(), (2, 1, 28, 28), verbose=0)
    leaves = [r for r in s.rows if r.leaf]
    assert [r.kind for r in leaves] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU",
                                        "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    conv1, conv2, fc1, fc2 = (leaves[i] for i in (0, 3, 7, 9))
    assert conv1.output_shape == [2, 32, 28, 28] and fc2.output_shape == [2, 10]
    assert conv1.params == 32 * 1 * 9 + 32 and conv2.params == 64 * 32 * 9 + 64
    assert fc1.params == 3136 * 128 + 128 and fc2.params == 128 * 10 + 10
    # a conv's weights and bias act at every output position of every image
    assert conv1.mult_adds == (32 * 9 + 32) * 2 * 28 * 28
    assert conv2.mult_adds == (64 * 32 * 9 + 64) * 2 * 14 * 14
    assert fc1.mult_adds == (3136 * 128 + 128) * 2
    assert leaves[1].mult_adds == 0 and leaves[2].mult_adds == 0
    assert s.total_params == s.trainable_params == 421_642
    assert s.total_mult_adds == sum(r.mult_adds for r in (conv1, conv2, fc1, fc2))
    assert conv1.output_bytes == 2 * 32 * 28 * 28 * 4
    # twice (value and gradient) the outputs of the layers that hold parameters
    assert s.forward_backward_bytes == 2 * 4 * 2 * (32 * 28 * 28 + 64 * 14 * 14 + 128 + 10)
    assert s.param_bytes == 4 * 421_642 and s.input_bytes == 4 * 2 * 28 * 28


def test_frozen_params_shared_module_and_buffers():
    relu, conv = nn.ReLU(), nn.Conv2d(3, 4, 3)
    model = nn.Sequential(conv, relu, nn.BatchNorm2d(4), relu, nn.Flatten(), nn.Linear(4, 2))
    model[5].weight.requires_grad_(False)
    model[5].bias.requires_grad_(False)
    model.eval()  # summary must leave the mode and the running statistics alone
    before = model[2].running_mean.data.copy()
    s = tc.summary(model, (5, 3, 3, 3), verbose=0)
    assert model.training is False
    np.testing.assert_array_equal(model[2].running_mean.data, before)
    assert [r.name for r in s.rows[1:]] == ["0", "1", "2", "1", "4", "5"]  # first name
    assert s.rows[4].repeated and s.rows[4].params == 0  # relu's second call
    assert s.total_params == (4 * 27 + 4) + (4 + 4) + (2 * 4 + 2)  # buffers not counted
    assert s.non_trainable_params == 2 * 4 + 2
    assert s.rows[3].mult_adds == 5 * (4 + 4)  # batch norm: scale and shift per sample
    assert "(10)" in str(s)  # a frozen layer's count in parentheses


def test_bad_input_size_is_named():
    with pytest.raises(ValueError, match="input_size"):
        tc.summary(reference_cnn(), (0, 1, 28, 28), verbose=0)
    with pytest.raises(TypeError, match="input_size"):
        tc.summary(reference_cnn(), "28x28", verbose=0)


def test_summary_command_prints_the_table(capsys):
    assert main(["summary", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 421,642" in out and "Total mult-adds (M): 8.56" in out


def _torch_twin(torch_nn, model):
    """The equivalent torch model with the same layers (weights do not matter for counts)."""
    layers = []
    for m in model:
        name = type(m).__name__
        if name == "Conv2d":
            layers.append(torch_nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size,
                                          padding=m.padding, stride=m.stride))
        elif name == "Linear":
            layers.append(torch_nn.Linear(m.in_features, m.out_features))
        elif name == "BatchNorm2d":
            layers.append(torch_nn.BatchNorm2d(m.num_features))
        elif name == "MaxPool2d":
            layers.append(torch_nn.MaxPool2d(m.kernel_size))
        else:
            layers.append(getattr(torch_nn, name)())
    return torch_nn.Sequential(*layers)


@pytest.mark.parametrize("batch", [1, 4])
def test_same_totals_as_torchinfo(batch):
    torch = pytest.importorskip("torch")
    torchinfo = pytest.importorskip("torchinfo")
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10),
    )
    ours = tc.summary(model, (batch, 1, 28, 28), verbose=0)
    theirs = torchinfo.summary(_torch_twin(torch.nn, model), (batch, 1, 28, 28), verbose=0)
    assert ours.total_params == theirs.total_params
    assert ours.trainable_params == theirs.trainable_params
    assert ours.total_mult_adds == theirs.total_mult_adds
    assert ours.forward_backward_bytes == theirs.total_output_bytes
    assert ours.param_bytes == theirs.total_param_bytes
    # torchinfo takes sys.getsizeof of the input's storage: the data plus a Python header
    assert 0 <= theirs.total_input - ours.input_bytes <= 100
    torch_rows = [r for r in theirs.summary_list if r.depth == 1]
    assert [list(r.output_size) for r in torch_rows] == [r.output_shape for r in ours.rows[1:]]
    assert [r.macs for r in torch_rows] == [r.mult_adds for r in ours.rows[1:]]
