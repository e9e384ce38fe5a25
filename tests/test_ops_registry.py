"""The op registry: every op is one class, registered under the name its class spells."""

import tinygrad_conv  # noqa: F401  (importing the package registers every op)
from tinygrad_conv.engine import OPS, Op


def test_registered_names_spell_their_class_names():
    """conv2d_grad_input is Conv2dGradInput, relu_backward is ReluBackward: a reader who
    sees a name in a graph drawing finds its class by that name."""
    assert len(OPS) > 30
    for name, cls in OPS.items():
        assert name.replace("_", "") == cls.__name__.lower(), (name, cls.__name__)
        assert cls.name == name


def test_every_op_has_a_forward_and_a_backward_of_its_own():
    for name, cls in OPS.items():
        assert cls.forward is not Op.forward and cls.backward is not Op.backward, name


def test_every_backward_names_its_upstream_gradient_grad():
    """One name for the gradient arriving at an op's output, in every op."""
    import inspect

    for name, cls in OPS.items():
        params = list(inspect.signature(cls.backward).parameters)
        assert params == ["self", "grad"], (name, params)
