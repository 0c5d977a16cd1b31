"""Max and average pooling that pad with the network's padding mode.

Pools keep the padding of the reference architectures: ``(k - 1) // 2`` per side when the window is
wider than the stride (All-CNN's 3x3/s2 pools), none otherwise (VGG's 2x2/s2, Zhang's 2x2/s1).
``zeros`` keeps PyTorch's own pool padding: ``-inf`` for max pooling (equal to zero padding after a
ReLU, where every value is >= 0) and zeros counted in the mean for average pooling. ``partial``
(Liu et al. 2018) counts only in-image taps: ``-inf`` padding for max, ``count_include_pad=False``
for average pooling.
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
    if pad == 0 or mode in ("zeros", "partial"):
        kwargs = {} if kind == "max" else {"count_include_pad": mode == "zeros"}
        return pool_cls(kernel_size, stride=stride, padding=pad, **kwargs)
    return nn.Sequential(Pad2d((pad, pad, pad, pad), mode=mode), pool_cls(kernel_size, stride=stride, padding=0))


def create_dense_max(mode: str) -> nn.Module:
    """The dense 2x2 max (stride 1) before MaxBlurPool's blur and APS/LPS's selection.

    Zhang's reference layout leaves it unpadded (a 32 px map becomes 31 px); we keep that except under
    ``circular`` padding, where one wrapped row / column after the map keeps the size even and the
    layer commutes with circular shifts (``max(x[i], x[i+1 mod n])``), as exact equivariance needs.
    """
    if mode == "circular":
        return nn.Sequential(Pad2d((0, 1, 0, 1), mode="circular"), nn.MaxPool2d(2, stride=1))
    return nn.MaxPool2d(2, stride=1)
