"""Max and average pooling that pad with the network's padding mode.

Pools keep the padding of the reference architectures: ``(k - 1) // 2`` per side when the window is
wider than the stride (All-CNN's 3x3/s2 pools), none otherwise (VGG's 2x2/s2, Zhang's 2x2/s1).
``zeros`` keeps PyTorch's own pool padding: ``-inf`` for max pooling (equal to zero padding after a
ReLU, where every value is >= 0) and zeros counted in the mean for average pooling.
"""

from __future__ import annotations

import torch.nn as nn

from stridelab.layers.padding import Pad2d


def pool_padding(kernel_size: int, stride: int) -> int:
    return (kernel_size - 1) // 2 if kernel_size > stride else 0


def create_pool(kind: str, kernel_size: int, stride: int, mode: str) -> nn.Module:
    """``kind`` is ``max`` or ``avg``; ``mode`` a padding mode."""
    pad = pool_padding(kernel_size, stride)
    pool_cls = nn.MaxPool2d if kind == "max" else nn.AvgPool2d
    if pad == 0 or mode == "zeros":
        kwargs = {} if kind == "max" else {"count_include_pad": True}
        return pool_cls(kernel_size, stride=stride, padding=pad, **kwargs)
    return nn.Sequential(Pad2d((pad, pad, pad, pad), mode=mode), pool_cls(kernel_size, stride=stride, padding=0))
