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
import torch.nn.functional as F

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


def _pair(value) -> tuple[int, int]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def pool_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """The map size PyTorch's max/avg pool gives (its shape formula, ceil_mode's last-window rule too)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # a last window that would start in the padding
        out -= 1
    return out


class PoolSite(nn.Sequential):
    """A converted stride-2 pool: its layers in order (a dense max, the subsampler), then the map
    cropped or extended (replicating the last row / column) at the bottom and right to the size the
    original pool gives. Even maps need neither; odd maps (a 3x3/s2/p1 max pool of a 17 px map gives
    9, a 2x2 dense max + stride-2 subsampler 8) and ``ceil_mode`` pools do: the converted network keeps
    the original's sizes, as a network's later layers (or a fixed-size head) may expect."""

    def __init__(self, layers: dict, kernel_size, stride, padding, dilation=1, ceil_mode: bool = False) -> None:
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.dilation, self.ceil_mode = _pair(dilation), bool(ceil_mode)

    def forward(self, x):
        want = [
            pool_output_size(n, k, s, p, d, self.ceil_mode)
            for n, k, s, p, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.padding, self.dilation)
        ]
        y = super().forward(x)
        if list(y.shape[-2:]) == want:
            return y
        y = y[..., : want[0], : want[1]]
        short_h, short_w = want[0] - y.shape[-2], want[1] - y.shape[-1]
        return F.pad(y, (0, short_w, 0, short_h), mode="replicate") if short_h or short_w else y
