"""tinygrad_conv: a small, readable deep-learning framework on NumPy.

    import tinygrad_conv as tc
    from tinygrad_conv import nn, optim
    import tinygrad_conv.functional as F
"""

from .engine import is_grad_enabled, no_grad, set_grad_enabled
from .rng import manual_seed
from .tensor import (
    Tensor,
    arange,
    cat,
    ones,
    ones_like,
    rand,
    randn,
    stack,
    tensor,
    zeros,
    zeros_like,
)
from . import functional  # noqa: E402,I001  (registers the conv, pool and loss ops)
from .gradcheck import gradcheck

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "zeros", "ones", "zeros_like", "ones_like", "randn", "rand", "arange",
    "cat", "stack", "no_grad", "is_grad_enabled", "set_grad_enabled", "manual_seed",
    "gradcheck", "functional",
]
