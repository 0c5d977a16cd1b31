"""Partial-convolution-based padding (Liu et al., "Partial Convolution based Padding", arXiv:1811.11718,
2018, Eq. 1-2).

The border is padded with zeros, and each window's result is re-scaled by the share of its taps that
fall inside the image, so the border no longer sees a darker image:

    y = W^T (X * M) * sum(1) / sum(M) + b

with ``M`` the window of the in-image mask (1 on the image, 0 on the padding) and ``sum(1)`` the
window size. The bias is added after the re-scaling, as in the paper. What ``padding=partial`` means
for the other padded operations (our choice, documented in docs/metrics.md): an average pool averages
over its in-image taps only (``count_include_pad=False``), a max pool takes the max over them (padding
never wins), and a blur filter is normalised by its weight mass inside the image (for a box filter
that is the paper's ratio; for a binomial filter it keeps a constant image constant, which the count
ratio would not).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def inside_mass(
    size: tuple[int, int],
    kernel: torch.Tensor,
    stride: int | tuple[int, int],
    pad: tuple[int, int, int, int],
    dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """Per output position, the sum of ``kernel``'s taps (a (kh, kw) tensor) that fall inside an image
    of ``size`` (H, W) padded by ``pad`` = (left, right, top, bottom); shape (1, 1, Ho, Wo)."""
    mask = torch.ones((1, 1, *size), dtype=kernel.dtype, device=kernel.device)
    return F.conv2d(F.pad(mask, pad), kernel[None, None], stride=stride, dilation=dilation)


class PartialConv2d(nn.Conv2d):
    """A zero-padded convolution re-scaled by window size / in-image taps (Liu et al. 2018).

    ``pad`` is ``(left, right, top, bottom)`` as in ``F.pad``; ``padding_mode`` stays ``zeros`` for
    PyTorch (it is what the padded pixels hold), ``pad_mode`` says ``partial`` for reports.
    """

    pad_mode = "partial"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        pad: tuple[int, int, int, int] = (0, 0, 0, 0),
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.pad = tuple(int(p) for p in pad)
        self._ratios: dict = {}  # per input size, device and dtype; cheap to rebuild, so not a buffer

    @classmethod
    def of(cls, conv: nn.Conv2d) -> PartialConv2d:
        """A partial conv computing what zero-padded ``conv`` computes inside the image, sharing its
        parameters (so their names and values stay): the converter's ``padding=partial``."""
        pad_h, pad_w = conv.padding
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            (pad_w, pad_w, pad_h, pad_h),
            conv.dilation,
            bias=conv.bias is not None,
            groups=conv.groups,
        )
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def ratio(self, size: tuple[int, int], device, dtype) -> torch.Tensor:
        key = (tuple(size), str(device), dtype)
        if key not in self._ratios:
            ones = torch.ones(self.kernel_size, dtype=torch.float64, device=device)
            counts = inside_mass(tuple(size), ones, self.stride, self.pad, self.dilation)
            self._ratios[key] = (ones.numel() / counts).to(dtype)
        return self._ratios[key]

    def forward(self, x):
        left, right, top, bottom = self.pad
        if left == right and top == bottom:  # symmetric: the conv pads itself (one kernel, no padded copy)
            y = F.conv2d(x, self.weight, None, self.stride, (top, left), self.dilation, self.groups)
        else:
            y = F.conv2d(F.pad(x, self.pad), self.weight, None, self.stride, 0, self.dilation, self.groups)
        if any(self.pad):
            y = y * self.ratio(x.shape[-2:], x.device, y.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)[None, :, None, None]
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad={self.pad}, pad_mode='partial'"
