"""``tinygrad_conv.utils.data`` is ``tinygrad_conv.data`` under PyTorch's path
(``from torch.utils.data import DataLoader, TensorDataset``)."""

import sys

from .. import data

sys.modules[__name__ + ".data"] = data

__all__ = ["data"]
