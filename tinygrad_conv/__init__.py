"""tinygrad_conv: a small, readable deep-learning framework on NumPy.

    import tinygrad_conv as tc
    from tinygrad_conv import nn, optim
    import tinygrad_conv.functional as F
"""

import builtins

# functional registers the conv, pool and loss ops
from . import autograd, functional, nn, optim, utils
from .backends import backend, set_backend, use_backend
from .engine import is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import gradcheck
from .rng import manual_seed
from .serialization import load, save
from .summary import summary
from .tensor import (
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
from .toplevel import *  # noqa: F403
from .toplevel import __all__ as _toplevel_names

# PyTorch's dtype names; ``tc.bool``, ``tc.float``, ``tc.int`` as in torch
bool = bool_  # noqa: A001,F405
float = float_  # noqa: A001,F405
int = int_  # noqa: A001,F405

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "zeros", "ones", "zeros_like", "ones_like", "randn", "rand", "arange",
    "cat", "stack", "no_grad", "is_grad_enabled", "set_grad_enabled", "manual_seed",
    "gradcheck", "functional", "nn", "optim", "save", "load", "backend", "set_backend",
    "use_backend", "summary", "autograd", "device", "utils",
    # a star import must not shadow Python's builtins (tc.sum, tc.max, tc.bool... stay
    # reachable as attributes)
    *(name for name in _toplevel_names if not hasattr(builtins, name)),
]
