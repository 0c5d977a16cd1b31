"""A plain VGG-style CNN: ``stages`` x (``depth`` 3x3 conv blocks, then a downsampling point)."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from stridelab.errors import ConfigError
from stridelab.models.base import MODEL_REGISTRY, ClassifierHead, StagedNet, resolve_parts


@MODEL_REGISTRY.register("simple_cnn")
class SimpleCNN(StagedNet):
    """Stage ``i`` has ``width * width_mult**i`` channels (or ``widths[i]``) and downsamples after its
    conv ``down_after`` (default: the last) with the downsampling strategy's pool position
    (``pool_size`` x ``pool_size`` window); with ``downsample=strided`` that conv takes the stride
    instead. The stem has ``stem_width`` channels (default ``width``). Global average pool and a
    linear layer classify.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        downsample=None,
        padding=None,
        width: int = 32,
        stages: int = 3,
        depth: int = 2,
        width_mult: float = 2.0,
        pool_size: int = 2,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
        widths: list[int] | None = None,
        stem_width: int | None = None,
        down_after: int = -1,
    ) -> None:
        super().__init__()
        ds, kit = resolve_parts(downsample, padding, norm, act)
        widths = list(widths) if widths else [int(round(width * width_mult**i)) for i in range(stages)]
        if not -depth <= down_after < depth:
            raise ConfigError(
                f"model.down_after={down_after} names no conv of a {depth}-conv stage: use "
                f"0..{depth - 1} (or -1, the last)."
            )
        down_after %= depth
        chs = stem_width or width
        self.stem = kit.conv_block(in_chans, chs, 3)
        blocks = []
        self.stage_reductions = []
        for i, out in enumerate(widths):
            layers = []
            for j in range(depth):
                if j == down_after and ds.strides_previous_conv:
                    layers.append((f"conv{j}", ds.block(kit, chs, out, 3)))
                else:
                    layers.append((f"conv{j}", kit.conv_block(chs, out, 3)))
                chs = out
                if j == down_after and not ds.strides_previous_conv:
                    layers.append(("down", ds.pool(kit, chs, pool_size)))
            blocks.append((f"stage{i}", nn.Sequential(OrderedDict(layers))))
            self.stage_reductions.append(2 ** (i + 1))
        self.stages = nn.Sequential(OrderedDict(blocks))
        self.head = ClassifierHead(chs, num_classes, "avg", dropout)
