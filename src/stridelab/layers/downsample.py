"""Downsampling strategies: one factory, one registry, three places in a network.

A CNN downsamples at three kinds of places, and each strategy says what goes there:

* ``block``: a conv block that also halves the resolution (ResNet's strided 3x3, the red-green net);
* ``pool``: a pooling position between stages (VGG / All-CNN);
* ``shortcut``: a residual projection that must match a downsampling ``block``.

=========  ========================  ===============================  ==========================
strategy   block                     pool position                    shortcut
=========  ========================  ===============================  ==========================
conv       conv(k, s2)+norm+act      conv(kernel_size, s2)+norm+act   conv1x1(s2)+norm
           (All-CNN-C: the pool becomes a stride-2 conv, Springenberg et al. 2014)
strided    conv(k, s2)+norm+act      nothing: the stage's last conv   conv1x1(s2)+norm
                                     gets stride 2 (Strided-CNN-C)
maxpool    conv(s1)+act+MaxPool(2)   MaxPool(pool, s2)                MaxPool(2)+conv1x1+norm
avgpool    conv(s1)+act+AvgPool(2)   AvgPool(pool, s2)                AvgPool(2)+conv1x1+norm
blurpool   conv(s1)+act+Blur(s2)     MaxPool(2, s1)+Blur(s2)          Blur(s2)+conv1x1+norm
aps        conv(s1)+act+APS          MaxPool(2, s1)+APS               APS(block's index)+conv1x1+norm
lps        conv(s1)+act+LPS          MaxPool(2, s1)+LPS               LPS(block's choice)+conv1x1+norm
flc        FLC+conv(s1)+norm+act     FLC                              FLC+conv1x1+norm
asap       ASAP+conv(s1)+norm+act    ASAP                             ASAP+conv1x1+norm
tips       conv(s1)+act+TIPS         MaxPool(2, s1)+TIPS              TIPS+conv1x1+norm
ddac       conv(s1)+act+DDAC         MaxPool(2, s1)+DDAC              DDAC+conv1x1+norm
=========  ========================  ===============================  ==========================

``blurpool`` follows Zhang 2019 (ICML), Sec. 3: MaxPool -> MaxBlurPool, StridedConv -> ConvBlurPool,
and Blur before the 1x1 projection of a residual shortcut. ``aps`` (Chaman & Dokmanic 2021) and
``lps`` (Rojas-Gomez et al. 2022) replace the stride-2 subsampling by a data-dependent choice of the
polyphase component (:mod:`stridelab.layers.polyphase`), optionally after a stride-1 binomial blur
(``filter_size`` > 1: "APS + LPF"); a residual shortcut takes the grid its block's main branch chose
(:meth:`Downsample.residual` ties the two). ``flc`` and ``asap`` (Grabinski et al. 2022/2023) pool
in the Fourier domain (:mod:`stridelab.layers.fourier`) *before* the conv, which then runs at stride
1, and replace a pooling position outright: the placement of the authors' ResNets
(GeJulia/flc_pooling, ``resnet_flc.py`` / ``resnet_asap.py``: ``conv3x3``/``conv1x1`` of stride 2
become the pooling then the conv; ASAP's ResNet replaces the stem's max pool by ASAP). The dense
2x2 max of ``blurpool``/``aps``/``lps`` pool positions is unpadded as in Zhang's reference, except
under circular padding
(:func:`~stridelab.layers.pool.create_dense_max`).

Underneath the three builders is one notion, :meth:`Downsample.subsampler`: the module that replaces
a stride-2 subsampling (the stride of a conv or pool, which then runs at stride 1), tied to a
block's choice or not. The builders are made of it, and so is :func:`stridelab.models.convert`,
which puts it at the downsampling sites of any CNN.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch.nn as nn

from stridelab.errors import ConfigError, choose
from stridelab.layers.adaptive import AdaptiveBlurPool2d
from stridelab.layers.blur import BlurPool2d, binomial_filter
from stridelab.layers.conv import ConvKit
from stridelab.layers.fourier import ASAPPool2d, FLCPool2d
from stridelab.layers.ideal import IdealLowPass2d
from stridelab.layers.polyphase import (
    POLYPHASE_NORMS,
    AdaptivePolyphase,
    ComponentScorer,
    LearnablePolyphase,
    PolyphaseTie,
    TiedPolyphase,
    check_temperatures,
)
from stridelab.layers.pool import create_dense_max, create_pool
from stridelab.layers.tips import TIPS2d
from stridelab.registry import Registry

DOWNSAMPLE_REGISTRY = Registry("downsample")
BLUR_FILTERS = ("binomial", "ideal")


@dataclass
class Downsample:
    """Base strategy. ``pool_size``: window of pooling positions (None: the model's own)."""

    name: ClassVar[str] = "base"
    # True when the network's own strides stay (conv, strided): no subsampler replaces them.
    keeps_strides: ClassVar[bool] = False
    # True when pooling positions are removed and the preceding conv takes the stride instead.
    strides_previous_conv: ClassVar[bool] = False
    # True when the subsampler chooses its grid from the data (APS, LPS): the strided ops of a
    # residual block must then share one choice (``tie``).
    adaptive_grid: ClassVar[bool] = False
    # True when the subsampler goes before the conv that loses its stride (FLC, ASAP), not after
    # the conv's norm and activation (blur pooling, APS, LPS), and a pooling position is replaced
    # by the subsampler alone (no dense max before it).
    before_conv: ClassVar[bool] = False
    pool_size: int | None = None

    def subsampler(
        self, kit: ConvKit, channels: int, tie: PolyphaseTie | None = None, follows: bool = False
    ) -> nn.Module | None:
        """What replaces a stride-2 subsampling of a ``channels``-channel map: the module that halves
        the map where a strided conv or pool did (which then runs at stride 1); None: the strategy
        keeps the stride (``conv``, ``strided``). ``tie``: the polyphase choice shared by the strided
        ops of one residual block (APS, LPS): the one that ``follows`` takes the grid the other chose;
        other strategies ignore it (their grid is fixed)."""
        return None

    def block(self, kit: ConvKit, in_chs: int, out_chs: int, kernel_size: int = 3) -> nn.Module:
        raise NotImplementedError

    def pool(self, kit: ConvKit, channels: int, pool_size: int) -> nn.Module | None:
        raise NotImplementedError

    def shortcut(self, kit: ConvKit, in_chs: int, out_chs: int) -> nn.Module:
        raise NotImplementedError

    def residual(self, kit: ConvKit, in_chs: int, out_chs: int, kernel_size: int = 3) -> tuple[nn.Module, nn.Module]:
        """A residual block's downsampling branch and its shortcut. Most strategies build the two
        independently; those whose shortcut must follow a choice of the main branch (APS, LPS) tie
        them here."""
        return self.block(kit, in_chs, out_chs, kernel_size), self.shortcut(kit, in_chs, out_chs)

    def _pool_size(self, model_default: int) -> int:
        return int(self.pool_size or model_default)


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class ConvDownsample(Downsample):
    """Stride-2 convolution (the all-convolutional choice). ``kernel_size`` for pool positions."""

    name: ClassVar[str] = "conv"
    keeps_strides: ClassVar[bool] = True
    kernel_size: int = 3

    def block(self, kit, in_chs, out_chs, kernel_size=3):
        return kit.conv_block(in_chs, out_chs, kernel_size, stride=2)

    def pool(self, kit, channels, pool_size):
        return kit.conv_block(channels, channels, self.kernel_size, stride=2)

    def shortcut(self, kit, in_chs, out_chs):
        return nn.Sequential(OrderedDict(conv=kit.conv(in_chs, out_chs, 1, stride=2), norm=kit.norm_layer(out_chs)))


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class StridedDownsample(ConvDownsample):
    """Springenberg's Strided-CNN: pooling removed, the conv before it strided."""

    name: ClassVar[str] = "strided"
    strides_previous_conv: ClassVar[bool] = True

    def pool(self, kit, channels, pool_size):
        return None


@dataclass
class _PoolDownsample(Downsample):
    kind: ClassVar[str] = "max"

    def subsampler(self, kit, channels, tie=None, follows=False, pool_size: int = 2):
        return create_pool(self.kind, pool_size, 2, kit.padding.mode)

    def block(self, kit, in_chs, out_chs, kernel_size=3):
        return nn.Sequential(
            OrderedDict(
                block=kit.conv_block(in_chs, out_chs, kernel_size, stride=1),
                pool=self.subsampler(kit, out_chs, pool_size=self._pool_size(2)),
            )
        )

    def pool(self, kit, channels, pool_size):
        return self.subsampler(kit, channels, pool_size=self._pool_size(pool_size))

    def shortcut(self, kit, in_chs, out_chs):
        return nn.Sequential(
            OrderedDict(
                pool=self.subsampler(kit, in_chs), conv=kit.conv(in_chs, out_chs, 1), norm=kit.norm_layer(out_chs)
            )
        )


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class MaxPoolDownsample(_PoolDownsample):
    name: ClassVar[str] = "maxpool"
    kind: ClassVar[str] = "max"


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class AvgPoolDownsample(_PoolDownsample):
    name: ClassVar[str] = "avgpool"
    kind: ClassVar[str] = "avg"


@dataclass
class _DenseMaxDownsample(_PoolDownsample):
    """Zhang's layout for a subsampler that replaces a stride: after a strided conv's norm and
    activation, before a shortcut's 1x1, and after a dense 2x2 max at pooling positions."""

    def pool(self, kit, channels, pool_size):
        # MaxBlurPool: max over a dense 2x2 window (stride 1), then blur and subsample.
        return nn.Sequential(OrderedDict(max=create_dense_max(kit.padding.mode), blur=self.subsampler(kit, channels)))


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class BlurPoolDownsample(_DenseMaxDownsample):
    """Anti-aliased downsampling (Zhang 2019) with a ``filter_size`` binomial filter, or with
    ``filter="ideal"`` the ideal low-pass filter of Alias-Free ConvNets (Michaeli et al. 2023; an FFT
    box mask at 1/stride, circular whatever the padding mode: :mod:`stridelab.layers.ideal`)."""

    name: ClassVar[str] = "blurpool"
    filter_size: int = 3
    filter: str = "binomial"

    def __post_init__(self):
        choose("downsample.filter", self.filter, BLUR_FILTERS)
        binomial_filter(int(self.filter_size))  # refuse unsupported sizes when the config is read

    def subsampler(self, kit, channels, tie=None, follows=False, pool_size=2):
        if self.filter == "ideal":
            return IdealLowPass2d(stride=2)
        return BlurPool2d(channels, self.filter_size, stride=2, padding=kit.padding)


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class DdacDownsample(_DenseMaxDownsample):
    """Content-adaptive low-pass filters (DDAC, Zou et al., BMVC 2020): per pixel and channel group a
    ``filter_size`` x ``filter_size`` filter predicted from the map (:mod:`stridelab.layers.adaptive`),
    placed as blur pooling (the authors' ResNets). ``group`` must divide every map's channels."""

    name: ClassVar[str] = "ddac"
    filter_size: int = 3
    group: int = 2  # the reference module's and CLI default; its released models use 8

    def __post_init__(self):
        if int(self.filter_size) < 1 or int(self.filter_size) % 2 == 0 or int(self.group) < 1:
            raise ConfigError(
                f"downsample=ddac needs an odd filter_size >= 1 and group >= 1 (got filter_size={self.filter_size}, "
                f"group={self.group}); the authors' models use filter_size=3 or 5 with group=8."
            )

    def subsampler(self, kit, channels, tie=None, follows=False, pool_size=2):
        return AdaptiveBlurPool2d(channels, int(self.filter_size), int(self.group), stride=2, padding=kit.padding)


@dataclass
class _PolyphaseDownsample(Downsample):
    """Conv(s1)+norm+act then a polyphase selection; see :mod:`stridelab.layers.polyphase`."""

    adaptive_grid: ClassVar[bool] = True

    filter_size: int = 1  # binomial blur (stride 1) before the selection; 1 = none

    def __post_init__(self):
        binomial_filter(int(self.filter_size))

    def _select(self, kit: ConvKit, channels: int, tie: PolyphaseTie | None) -> nn.Module:
        raise NotImplementedError

    def subsampler(self, kit, channels, tie=None, follows=False):
        # A follower takes its block's grid; the one that chooses (or an untied one) selects its own.
        select = TiedPolyphase(tie, kit.padding.mode) if follows else self._select(kit, channels, tie)
        if int(self.filter_size) == 1:
            return select
        return nn.Sequential(
            OrderedDict(blur=BlurPool2d(channels, int(self.filter_size), 1, kit.padding), select=select)
        )

    def block(self, kit, in_chs, out_chs, kernel_size=3, tie=None):
        # Conv(stride2)-Norm-Act --> Conv-Norm-Act-Select(stride2)
        return nn.Sequential(
            OrderedDict(
                block=kit.conv_block(in_chs, out_chs, kernel_size, stride=1),
                down=self.subsampler(kit, out_chs, tie),
            )
        )

    def pool(self, kit, channels, pool_size):
        # MaxPool(stride2) --> MaxPool(stride1)-Select(stride2), as MaxBlurPool does
        return nn.Sequential(OrderedDict(max=create_dense_max(kit.padding.mode), down=self.subsampler(kit, channels)))

    def shortcut(self, kit, in_chs, out_chs, tie=None):
        # Untied (no block beside it): a selection of its own on the block input.
        return nn.Sequential(
            OrderedDict(
                down=self.subsampler(kit, in_chs, tie, follows=tie is not None),
                conv=kit.conv(in_chs, out_chs, 1),
                norm=kit.norm_layer(out_chs),
            )
        )

    def residual(self, kit, in_chs, out_chs, kernel_size=3):
        tie = PolyphaseTie()
        return self.block(kit, in_chs, out_chs, kernel_size, tie=tie), self.shortcut(kit, in_chs, out_chs, tie=tie)


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class ApsDownsample(_PolyphaseDownsample):
    """Adaptive polyphase sampling (Chaman & Dokmanic 2021): the largest-``norm`` component."""

    name: ClassVar[str] = "aps"
    norm: str = "l2"

    def __post_init__(self):
        super().__post_init__()
        choose("downsample.norm", self.norm, POLYPHASE_NORMS)

    def _select(self, kit, channels, tie):
        return AdaptivePolyphase(self.norm, kit.padding.mode, tie)


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class LpsDownsample(_PolyphaseDownsample):
    """Learnable polyphase sampling (Rojas-Gomez et al. 2022): a scorer of ``hidden`` channels (None:
    the map's own, as the authors' CIFAR models), Gumbel-softmax mixing in training at a temperature
    annealed from ``tau_start`` to ``tau_end``."""

    name: ClassVar[str] = "lps"
    hidden: int | None = None
    tau_start: float = 1.0
    tau_end: float = 0.1
    anneal: str = "exp"

    def __post_init__(self):
        super().__post_init__()
        check_temperatures(self.tau_start, self.tau_end, self.anneal)
        if self.hidden is not None and int(self.hidden) < 1:
            raise ConfigError(f"downsample.hidden must be >= 1 (got {self.hidden}): the channels of LPS's scorer.")

    def _select(self, kit, channels, tie):
        hidden = int(self.hidden or channels)
        scorer = ComponentScorer(kit.conv(channels, hidden, 3, bias=True), kit.conv(hidden, hidden, 3, bias=True))
        return LearnablePolyphase(scorer, self.tau_start, self.tau_end, self.anneal, kit.padding.mode, tie)


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class TipsDownsample(_DenseMaxDownsample):
    """TIPS (Saha & Gokhale, WACV 2025): a learnt soft mixture of the four polyphase components
    (:mod:`stridelab.layers.tips`), placed as blur pooling (after the conv's norm and activation;
    its own TIPS before a shortcut's 1x1, untied as the reference's; a dense 2x2 max before it at
    pooling positions, as APS). Its training terms weigh the cross-entropy by ``1 - alpha`` and add
    the shift term (weight ``alpha``, from epoch ``wake_up_epoch``, 1-based; None: the share of the
    run the reference's README gives, 100 of 480 epochs) and the one-hot term."""

    name: ClassVar[str] = "tips"
    alpha: float = 0.35
    wake_up_epoch: int | None = None

    def __post_init__(self):
        if not 0.0 <= float(self.alpha) < 1.0:
            raise ConfigError(
                f"downsample.alpha must be in [0, 1) (got {self.alpha}): TIPS weighs the cross-entropy by "
                "1 - alpha and its shift term by alpha (the reference's 0.35)."
            )
        if self.wake_up_epoch is not None and int(self.wake_up_epoch) < 1:
            raise ConfigError(
                f"downsample.wake_up_epoch must be >= 1 (got {self.wake_up_epoch}): the 1-based epoch from which "
                "TIPS's shift term counts (1: from the start)."
            )

    def subsampler(self, kit, channels, tie=None, follows=False, pool_size=2):
        return TIPS2d(channels, self.alpha, self.wake_up_epoch, kit.padding)


@dataclass
class _FourierDownsample(_PoolDownsample):
    """Pooling in the Fourier domain before a stride-1 conv (see the module docstring)."""

    before_conv: ClassVar[bool] = True

    def block(self, kit, in_chs, out_chs, kernel_size=3):
        return nn.Sequential(
            OrderedDict(down=self.subsampler(kit, in_chs), block=kit.conv_block(in_chs, out_chs, kernel_size, stride=1))
        )

    def pool(self, kit, channels, pool_size):
        return self.subsampler(kit, channels)


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class FlcDownsample(_FourierDownsample):
    """FrequencyLowCut pooling (Grabinski et al., ECCV 2022): the centred half of the spectrum. It
    reads the whole map at once, so the padding mode does not reach it (its spectrum is periodic:
    it is circular by nature)."""

    name: ClassVar[str] = "flc"

    def subsampler(self, kit, channels, tie=None, follows=False, pool_size=2):
        return FLCPool2d()


@DOWNSAMPLE_REGISTRY.register()
@dataclass
class AsapDownsample(_FourierDownsample):
    """ASAP (Grabinski et al. 2023): FLC pooling of a Hamming-windowed spectrum; ``pad_one``: one
    row and column first (the reference's default, ``ASAP_padding_one``), padded as the network
    pads (zeros: the reference's; partial: zeros)."""

    name: ClassVar[str] = "asap"
    pad_one: bool = True

    def __post_init__(self):
        if not isinstance(self.pad_one, bool):
            raise ConfigError(f"downsample.pad_one must be true or false (got {self.pad_one!r}).")

    def subsampler(self, kit, channels, tie=None, follows=False, pool_size=2):
        return ASAPPool2d(pad_one=self.pad_one, mode=kit.padding.mode)


def create_downsample(name: str, **kwargs) -> Downsample:
    """Build a downsampling strategy by registry name (``conv``, ``strided``, ``maxpool``, ...)."""
    cls = DOWNSAMPLE_REGISTRY.get_checked(name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(
            f"downsample={name} does not take the options {sorted(kwargs)} ({err}). "
            f"Its options are: {', '.join(f for f in cls.__dataclass_fields__)}."
        ) from None
