"""The red-green network of Kayhan & van Gemert, "On Translation Invariance in CNNs: Convolutional
Layers can Exploit Absolute Spatial Location", CVPR 2020, Sec. 4.1.

Four 3x3 convolutions with 32, 32, 64, 64 channels and strides 1, 2, 2, 2, no bias, each followed
by a ReLU; global max pooling; a linear classifier. The three stride-2 convolutions are the
network's downsampling points, so ``downsample=`` replaces them like any other strided block.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from stridelab.models.base import MODEL_REGISTRY, ClassifierHead, StagedNet, resolve_parts


@MODEL_REGISTRY.register("redgreen_net")
class RedGreenNet(StagedNet):
    def __init__(
        self,
        num_classes: int = 2,
        in_chans: int = 3,
        downsample=None,
        padding=None,
        widths=(32, 32, 64, 64),
        norm: str = "none",
        act: str = "relu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        ds, kit = resolve_parts(downsample, padding, norm, act, bias=bias)
        self.stem = kit.conv_block(in_chans, widths[0], 3)
        chs = widths[0]
        stages = []
        for i, w in enumerate(widths[1:]):
            stages.append((f"stage{i}", ds.block(kit, chs, w, 3)))
            chs = w
        self.stages = nn.Sequential(OrderedDict(stages))
        self.stage_reductions = [2 ** (i + 1) for i in range(len(stages))]
        self.head = ClassifierHead(chs, num_classes, "max")
