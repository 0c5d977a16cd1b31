"""Anti-aliasing blur pool (Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019).

A fixed low-pass binomial filter applied depthwise before subsampling. The filter of size ``m`` is
the normalised outer product of the binomial coefficients ``C(m-1, i)``: [1,1]/2, [1,2,1]/4,
[1,3,3,1]/8, ... Its border is padded with the network's padding mode (Zhang uses reflect; here the
study's ``padding=`` choice applies, so a zeros-padded network also has zero-padded blurs). Under
``partial`` padding (Liu et al. 2018) the filter is normalised by its weight mass inside the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from stridelab.errors import ConfigError
from stridelab.layers.padding import Pad2d, PaddingSpec
from stridelab.layers.partial import inside_mass

MAX_FILTER_SIZE = 7


def binomial_filter(size: int, dtype=torch.float32) -> torch.Tensor:
    """2-D binomial low-pass filter of ``size`` x ``size`` taps, summing to 1."""
    if not 1 <= size <= MAX_FILTER_SIZE:
        raise ConfigError(
            f"Blur filter size {size} is not supported: use 1 (no blur) to {MAX_FILTER_SIZE} taps "
            "(Zhang 2019 compares 2 to 7; 3 is the usual choice). Set downsample.filter_size accordingly."
        )
    taps = torch.tensor([math.comb(size - 1, i) for i in range(size)], dtype=torch.float64)
    kernel = torch.outer(taps, taps)
    return (kernel / kernel.sum()).to(dtype)


class BlurPool2d(nn.Module):
    """Depthwise binomial blur followed by subsampling with ``stride`` (1: blur only)."""

    def __init__(
        self, channels: int, filter_size: int = 3, stride: int = 2, padding: PaddingSpec | None = None
    ) -> None:
        super().__init__()
        padding = padding or PaddingSpec(mode="reflect")
        self.channels = int(channels)
        self.filter_size = int(filter_size)
        self.stride = int(stride)
        before, after = padding.for_kernel(self.filter_size)
        self.pad = Pad2d((before, after, before, after), mode=padding.mode)
        self.partial = padding.mode == "partial"
        self._mass: dict = {}
        kernel = binomial_filter(self.filter_size)
        self.register_buffer("filter", kernel[None, None].repeat(self.channels, 1, 1, 1), persistent=False)

    def forward(self, x):
        y = F.conv2d(self.pad(x), self.filter.to(dtype=x.dtype), stride=self.stride, groups=self.channels)
        if self.partial and any(self.pad.padding):
            y = y / self._inside_mass(x.shape[-2:], x.device, y.dtype)
        return y

    def before_subsampling(self, x: torch.Tensor) -> torch.Tensor:
        """The blurred map at full resolution: what ``forward`` subsamples (the aliasing metric reads it)."""
        y = F.conv2d(self.pad(x), self.filter.to(dtype=x.dtype), groups=self.channels)
        if self.partial and any(self.pad.padding):
            kernel = binomial_filter(self.filter_size, torch.float64).to(x.device)
            y = y / inside_mass(tuple(x.shape[-2:]), kernel, 1, self.pad.padding).to(y.dtype)
        return y

    def _inside_mass(self, size, device, dtype) -> torch.Tensor:
        """The filter's weight inside the image at each output (partial padding's normaliser)."""
        key = (tuple(size), str(device), dtype)
        if key not in self._mass:
            kernel = binomial_filter(self.filter_size, torch.float64).to(device)
            self._mass[key] = inside_mass(tuple(size), kernel, self.stride, self.pad.padding).to(dtype)
        return self._mass[key]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filter_size={self.filter_size}, stride={self.stride}"
