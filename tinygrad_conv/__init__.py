"""tinygrad_conv: a small, readable deep-learning framework on NumPy.

    import tinygrad_conv as tc
    from tinygrad_conv import nn, optim
    import tinygrad_conv.functional as F
"""

import builtins

from ._memory import tune_allocator

tune_allocator()  # before the first large array is allocated

# functional registers the conv, pool and loss ops
from . import autograd, functional, nn, optim, utils  # noqa: E402
from .engine import is_grad_enabled, no_grad, set_grad_enabled  # noqa: E402
from .gradcheck import gradcheck  # noqa: E402
from .rng import manual_seed  # noqa: E402
from .serialization import load, save  # noqa: E402
from .tensor import (  # noqa: E402
    Tensor,
    arange,
    cat,
    device,
    ones,
    ones_like,
    rand,
    randn,
    stack,
    tensor,
    zeros,
    zeros_like,
)
from .toplevel import *  # noqa: E402,F403
from .toplevel import __all__ as _toplevel_names  # noqa: E402

# PyTorch's dtype names; ``tc.bool``, ``tc.float``, ``tc.int`` as in torch
bool = bool_  # noqa: A001,F405
float = float_  # noqa: A001,F405
int = int_  # noqa: A001,F405

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "zeros", "ones", "zeros_like", "ones_like", "randn", "rand", "arange",
    "cat", "stack", "no_grad", "is_grad_enabled", "set_grad_enabled", "manual_seed",
    "gradcheck", "functional", "nn", "optim", "save", "load", "autograd", "device", "utils",
    # a star import must not shadow Python's builtins (tc.sum, tc.max, tc.bool... stay
    # reachable as attributes)
    *(name for name in _toplevel_names if not hasattr(builtins, name)),
]
