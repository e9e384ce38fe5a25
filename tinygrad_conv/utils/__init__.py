"""``tinygrad_conv.utils.data`` is ``tinygrad_conv.data`` under PyTorch's path
(``from torch.utils.data import DataLoader, TensorDataset``); ``tinygrad_conv.utils.data.
distributed`` holds ``DistributedSampler`` (``torch.utils.data.distributed``)."""

import sys

from .. import data
from ..distributed import sampler

sys.modules[__name__ + ".data"] = data
sys.modules[__name__ + ".data.distributed"] = sampler

__all__ = ["data"]
