"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2).

``6n + 2`` layers: a 3x3 conv with 16 channels, three stages of ``n`` basic blocks with 16/32/64
channels, the first block of stages 2 and 3 halving the resolution, global average pool, linear.
ResNet-20 is ``n = 3`` (0.27 M parameters in the paper).

Deviation from the paper, on purpose: the paper's CIFAR nets use identity shortcuts with stride-2
subsampling and zero-padded channels ("option A"). Plain subsampling is itself a downsampling
choice (and an aliasing one), so here the shortcut of a downsampling block is a 1x1 projection
built by the study's downsampling strategy (stride-2 1x1 conv, pool + 1x1, blur + 1x1 as in
Zhang 2019, or for APS/LPS the main branch's polyphase choice + 1x1 as in Chaman & Dokmanic 2021).
This adds about 2.9 k parameters to ResNet-20.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from stridelab.errors import ConfigError
from stridelab.models.base import MODEL_REGISTRY, ClassifierHead, StagedNet, resolve_parts


class BasicBlock(nn.Module):
    def __init__(self, kit, ds, in_chs: int, out_chs: int, downsample: bool) -> None:
        super().__init__()
        if downsample:  # the strategy may tie the shortcut to conv1's choice (APS, LPS)
            self.conv1, self.shortcut = ds.residual(kit, in_chs, out_chs, 3)
        else:
            self.conv1 = kit.conv_block(in_chs, out_chs, 3)
            self.shortcut = (
                nn.Identity()
                if in_chs == out_chs
                else nn.Sequential(OrderedDict(conv=kit.conv(in_chs, out_chs, 1), norm=kit.norm_layer(out_chs)))
            )
        self.conv2 = kit.conv_block(out_chs, out_chs, 3, act=False)
        self.act = kit.act_layer()

    def forward(self, x):
        out = self.conv2(self.conv1(x))  # conv1 first: a tied shortcut reads the grid conv1 chose
        return self.act(out + self.shortcut(x))


class CifarResNet(StagedNet):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        downsample=None,
        padding=None,
        blocks_per_stage: int = 3,
        widths=(16, 32, 64),
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__()
        ds, kit = resolve_parts(downsample, padding, norm, act)
        if kit.padding.amount != "same":
            raise ConfigError(
                f"padding.amount={kit.padding.amount} does not work with residual networks: a "
                f"{kit.padding.amount} 3x3 conv changes the map size, so the residual branch no longer "
                "matches its shortcut. Use padding.amount=same with model=resnet20, or a plain network "
                "(model=simple_cnn, allcnn_c, redgreen_net) to compare valid/same/full padding."
            )
        # ResNets have no pooling positions, so downsample=strided builds the same net as conv.
        self.stem = kit.conv_block(in_chans, widths[0], 3)
        chs = widths[0]
        stages = []
        self.stage_reductions = []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                down = i > 0 and j == 0
                blocks.append((f"block{j}", BasicBlock(kit, ds, chs, w, down)))
                chs = w
            stages.append((f"stage{i}", nn.Sequential(OrderedDict(blocks))))
            self.stage_reductions.append(2**i)
        self.stages = nn.Sequential(OrderedDict(stages))
        self.head = ClassifierHead(chs, num_classes, "avg")


@MODEL_REGISTRY.register("resnet20")
def resnet20(**kwargs) -> CifarResNet:
    return CifarResNet(blocks_per_stage=3, **kwargs)
