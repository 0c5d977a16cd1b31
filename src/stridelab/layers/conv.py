"""Convolution blocks that honour the network's padding choice.

:class:`ConvKit` bundles what every conv block of a model shares (padding, normalisation,
activation) so models and downsampling strategies build layers the same way.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch.nn as nn

from stridelab.errors import choose
from stridelab.layers.padding import Pad2d, PaddingSpec
from stridelab.layers.partial import PartialConv2d

NORMS = ("batch", "none")
ACTS = ("relu", "gelu", "silu")


@dataclass
class ConvKit:
    """Factory for convolutions, norms and activations under one padding spec."""

    padding: PaddingSpec = field(default_factory=PaddingSpec)
    norm: str = "batch"
    act: str = "relu"
    bias: bool | None = None  # None: a bias only when there is no norm after the conv

    def __post_init__(self) -> None:
        choose("norm", self.norm, NORMS)
        choose("activation", self.act, ACTS)

    def conv(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, bias: bool | None = None) -> nn.Module:
        """A convolution padded per ``self.padding`` (native ``padding_mode`` when symmetric)."""
        if bias is None:
            bias = self.bias if self.bias is not None else self.norm == "none"
        before, after = self.padding.for_kernel(kernel_size)
        if self.padding.mode == "partial":
            return PartialConv2d(
                in_chs, out_chs, kernel_size, stride=stride, pad=(before, after, before, after), bias=bias
            )
        if before == after:
            return nn.Conv2d(
                in_chs, out_chs, kernel_size, stride=stride, padding=before, padding_mode=self.padding.mode, bias=bias
            )
        return nn.Sequential(
            Pad2d((before, after, before, after), mode=self.padding.mode),
            nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=0, bias=bias),
        )

    def norm_layer(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels) if self.norm == "batch" else nn.Identity()

    def act_layer(self) -> nn.Module:
        return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}[self.act]()

    def conv_block(
        self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, act: bool = True
    ) -> nn.Sequential:
        """conv -> norm -> act, as a Sequential with named children."""
        layers = [("conv", self.conv(in_chs, out_chs, kernel_size, stride)), ("norm", self.norm_layer(out_chs))]
        if act:
            layers.append(("act", self.act_layer()))
        return nn.Sequential(OrderedDict(layers))
