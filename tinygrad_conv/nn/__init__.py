"""``tinygrad_conv.nn``: modules, layers and initialisers, as ``torch.nn``.

    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 28 * 28, 10))
"""

import sys

from .. import functional
from . import init, parallel, utils
from .extra import (
    ELU,
    GELU,
    AdaptiveAvgPool2d,
    BCEWithLogitsLoss,
    Dropout2d,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ModuleDict,
    ModuleList,
    NLLLoss,
    SiLU,
    Softmax,
)
from .layers import (
    AvgPool2d,
    Conv2d,
    CrossEntropyLoss,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    MSELoss,
    ReLU,
    Sigmoid,
    Tanh,
)
from .module import IncompatibleKeys, Module, Parameter, Sequential
from .normalization import BatchNorm1d, BatchNorm2d

__all__ = [
    "Module", "Parameter", "Sequential", "IncompatibleKeys", "Conv2d", "Linear", "ReLU",
    "Sigmoid", "Tanh", "MaxPool2d", "AvgPool2d", "Flatten", "Dropout", "BatchNorm1d",
    "BatchNorm2d", "CrossEntropyLoss", "MSELoss", "init", "functional", "utils", "Identity",
    "ModuleList", "ModuleDict", "LeakyReLU", "ELU", "GELU", "SiLU", "Softmax", "LogSoftmax",
    "AdaptiveAvgPool2d", "Dropout2d", "NLLLoss", "BCEWithLogitsLoss", "parallel",
]

# ``import tinygrad_conv.nn.functional as F`` (PyTorch's spelling) finds the same module
sys.modules[__name__ + ".functional"] = functional
