"""What every stridelab model shares: named stages, a classifier head, a ``forward_features``."""

from __future__ import annotations

import torch
import torch.nn as nn

from stridelab.errors import choose
from stridelab.layers import ConvKit, Downsample, PaddingSpec, create_downsample
from stridelab.registry import Registry

# Every model takes num_classes, in_chans, downsample and padding; each model file registers its own.
MODEL_REGISTRY = Registry("model")


def resolve_parts(downsample, padding, norm: str, act: str, bias=None) -> tuple[Downsample, ConvKit]:
    """Accept strategy/spec objects or plain names, so models work from a notebook too."""
    if downsample is None:
        downsample = create_downsample("conv")
    elif isinstance(downsample, str):
        downsample = create_downsample(downsample)
    if padding is None:
        padding = PaddingSpec()
    elif isinstance(padding, str):
        padding = PaddingSpec(mode=padding)
    return downsample, ConvKit(padding=padding, norm=norm, act=act, bias=bias)


class ClassifierHead(nn.Module):
    """Global pooling (``avg`` or ``max``), optional dropout, linear classifier."""

    def __init__(self, in_chs: int, num_classes: int, pool: str = "avg", dropout: float = 0.0) -> None:
        super().__init__()
        choose("global pool", pool, ("avg", "max"))
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(in_chs, num_classes)

    def forward(self, x):
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class StagedNet(nn.Module):
    """A network as ``stem`` -> named ``stages`` -> ``head``; stages are where resolution changes.

    ``stage_reductions`` records each stage's cumulative downsampling factor, so tests and metrics
    can check feature-map sizes without knowing the architecture.
    """

    stem: nn.Module
    stages: nn.Sequential
    head: nn.Module
    stage_reductions: list[int]

    def forward_features(self, x):
        return self.stages(self.stem(x))

    def forward(self, x):
        return self.head(self.forward_features(x))

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
