"""The All-CNN family of Springenberg et al., "Striving for Simplicity: The All Convolutional Net",
ICLR 2015 workshop (arXiv:1412.6806), Tables 1-2, base model C:

    input 32x32 (dropout 0.2) | 3x3 conv 96 | 3x3 conv 96 | 3x3 max-pool /2 (dropout 0.5)
    | 3x3 conv 192 | 3x3 conv 192 | 3x3 max-pool /2 (dropout 0.5)
    | 3x3 conv 192 (valid) | 1x1 conv 192 | 1x1 conv 10 | global average over 6x6 | softmax

The paper's four variants are: ``downsample=maxpool`` (C), ``downsample=strided`` (Strided-CNN-C),
``downsample=maxpool model.conv_before_pool=true`` (ConvPool-CNN-C) and ``downsample=conv``
(All-CNN-C: each pool replaced by a 3x3 stride-2 conv). ReLU follows every conv, the class conv
included, as in the paper. Deviation: ``norm=batch`` by default (the paper predates batch norm);
``model.norm=none`` gives the original.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import torch.nn as nn

from stridelab.models.base import MODEL_REGISTRY, StagedNet, resolve_parts


class AllCNN(StagedNet):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        downsample=None,
        padding=None,
        width: int = 96,
        conv_before_pool: bool = False,
        valid_last_conv: bool = True,
        dropout_input: float = 0.2,
        dropout: float = 0.5,
        pool_size: int = 3,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__()
        ds, kit = resolve_parts(downsample, padding, norm, act)
        self.stem = nn.Dropout(dropout_input) if dropout_input else nn.Identity()
        stages = []
        chs = in_chans
        for i, w in enumerate((width, 2 * width)):
            n_convs = 3 if conv_before_pool else 2
            layers = []
            for j in range(n_convs):
                if j == n_convs - 1 and ds.strides_previous_conv:
                    layers.append((f"conv{j}", ds.block(kit, chs, w, 3)))
                else:
                    layers.append((f"conv{j}", kit.conv_block(chs, w, 3)))
                chs = w
            if not ds.strides_previous_conv:
                layers.append(("down", ds.pool(kit, chs, pool_size)))
            if dropout:
                layers.append(("drop", nn.Dropout(dropout)))
            stages.append((f"stage{i}", nn.Sequential(OrderedDict(layers))))
        self.stage_reductions = [2, 4, 4]
        # Classifier stage: the paper's valid 3x3 conv, then 1x1 convs down to the class scores.
        last_kit = replace(kit, padding=replace(kit.padding, amount="valid")) if valid_last_conv else kit
        stages.append(
            (
                "stage2",
                nn.Sequential(
                    OrderedDict(
                        conv0=last_kit.conv_block(chs, 2 * width, 3),
                        conv1=kit.conv_block(2 * width, 2 * width, 1),
                        classes=kit.conv_block(2 * width, num_classes, 1),
                    )
                ),
            )
        )
        self.stages = nn.Sequential(OrderedDict(stages))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    def forward(self, x):
        return self.head(self.forward_features(x))


@MODEL_REGISTRY.register("allcnn_c")
def allcnn_c(**kwargs) -> AllCNN:
    return AllCNN(**kwargs)


__all__ = ["AllCNN", "allcnn_c"]
