"""Content-adaptive anti-aliasing: DDAC's pixel-adaptive group softmax filter (PASA).

X. Zou, F. Xiao, Z. Yu, Y. J. Lee, "Delving Deeper into Anti-aliasing in ConvNets", BMVC 2020. The
layer follows the authors' code (MaureenZOU/Adaptive-anti-Aliasing, ``models_lpf/layers/pasa.py``,
``Downsample_PASA_group_softmax``, the version of the released group-8 models). For a map ``x`` of
``C`` channels, ``G`` groups and ``k`` taps per axis (``xp``: ``x`` padded by ``k // 2`` on every side)::

    logits = BN(conv_kxk(xp))                          # dense C -> G*k*k, no bias
    sigma  = softmax(logits) over all G*k*k channels   # per sample and pixel
    y_full[n, c, i, j] = sum_{u,v} sigma[n, g(c)*k*k + u*k + v, i, j] * xp[n, c, i+u, j+v]
    y = y_full[..., ::stride, ::stride]

``g(c) = c // (C / G)``: groups are contiguous blocks of ``C / G`` channels, which share one filter
per pixel; taps are ordered as ``F.unfold`` orders them (row ``u``, then column ``v``). The softmax
runs over the G*k*k logits jointly, as the reference's ``nn.Softmax(dim=1)`` does, not over the k*k
taps of each group (which the paper's wording suggests): each group's filter is non-negative and sums
to a per-pixel gain ``a_g`` with ``sum_g a_g = 1`` (about 1/G at initialisation), which the next conv
and norm absorb. The logits (and their BatchNorm's batch statistics) are computed at full resolution,
as in the reference; the filter itself is evaluated only where ``forward`` samples.

Deviations: the border is padded in the network's padding mode (reference: reflect, which is the
default here, as for :class:`~stridelab.layers.blur.BlurPool2d`); ``partial`` padding pads with
zeros and re-normalises nothing (the filter is learned per pixel: there is no fixed kernel whose
in-image mass could re-scale the border). The amount is always the reference's ``k // 2`` per side,
whatever the padding amount, so the per-pixel filters are those of the input's pixels and the output
has ``ceil(H / stride)`` rows and ``ceil(W / stride)`` columns like the other subsamplers. The taps are
summed one at a time instead of through ``F.unfold``'s ``k*k``-fold copy of the map (same values, less
memory); the filter is applied in the input's dtype (the softmax may run in fp32 under autocast).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stridelab.errors import ConfigError
from stridelab.layers.padding import Pad2d, PaddingSpec


def _divisor_below(channels: int, group: int) -> int:
    """The largest divisor of ``channels`` not above ``group`` (a group count that fits)."""
    return max(d for d in range(1, min(channels, group) + 1) if channels % d == 0)


class AdaptiveBlurPool2d(nn.Module):
    """DDAC's content-adaptive low-pass filter (Zou et al., BMVC 2020) followed by subsampling with
    ``stride`` (1: filter only): ``group`` groups of channels, each with its own ``filter_size`` x
    ``filter_size`` filter per pixel, predicted from the map by a conv, BatchNorm and a joint softmax."""

    def __init__(
        self,
        channels: int,
        filter_size: int = 3,
        group: int = 8,
        stride: int = 2,
        padding: PaddingSpec | None = None,
    ) -> None:
        super().__init__()
        padding = padding or PaddingSpec(mode="reflect")
        self.channels, self.filter_size = int(channels), int(filter_size)
        self.group, self.stride = int(group), int(stride)
        self._check()
        k, half = self.filter_size, self.filter_size // 2
        # partial padding has no in-image re-normalisation here: its border holds zeros
        self.pad = Pad2d((half,) * 4, mode="zeros" if padding.mode == "partial" else padding.mode)
        taps = self.group * k * k
        self.conv = nn.Conv2d(self.channels, taps, kernel_size=k, bias=False)
        self.bn = nn.BatchNorm2d(taps)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")  # as the reference

    def _check(self) -> None:
        problems = []
        if self.channels < 1:
            problems.append(f"the channel count is {self.channels}; it must be at least 1")
        if self.filter_size < 1 or self.filter_size % 2 == 0:
            problems.append(
                f"filter_size is {self.filter_size}; it must be odd and at least 1 (k // 2 padding keeps the "
                "map's size only for odd k; the released models use 3 or 5), e.g. downsample.filter_size=3"
            )
        if self.group < 1:
            problems.append(f"group is {self.group}; it must be at least 1 (the released models use 8)")
        elif self.channels >= 1 and self.channels % self.group:
            problems.append(
                f"{self.channels} channels cannot be split into {self.group} equal groups; use a group count "
                f"that divides {self.channels}, e.g. downsample.group={_divisor_below(self.channels, self.group)}"
            )
        if self.stride < 1:
            problems.append(f"stride is {self.stride}; it must be at least 1")
        if problems:
            raise ConfigError(
                "The adaptive blur pool (DDAC, Zou et al. 2020) cannot be built: " + "; ".join(problems) + "."
            )

    def weights(self, xp: torch.Tensor) -> torch.Tensor:
        """The per-pixel filters ``sigma`` (n, G*k*k, H, W) of a padded map, summing to 1 over all
        G*k*k channels at each pixel."""
        return torch.softmax(self.bn(self.conv(xp)), dim=1)

    def _filter(self, xp: torch.Tensor, sigma: torch.Tensor, step: int) -> torch.Tensor:
        """Apply the per-pixel filters ``sigma`` (already at the output's grid) to ``xp``, at every
        ``step``-th position."""
        n, c, hp, wp = xp.shape
        g, k = self.group, self.filter_size
        ho, wo = sigma.shape[-2:]
        sigma = sigma.to(xp.dtype).view(n, g, 1, k * k, ho, wo)  # one filter per group, broadcast over its channels
        xg = xp.view(n, g, c // g, hp, wp)
        out = None
        for u in range(k):
            for v in range(k):
                tap = xg[..., u : u + step * (ho - 1) + 1 : step, v : v + step * (wo - 1) + 1 : step]
                term = sigma[:, :, :, u * k + v] * tap
                out = term if out is None else out + term
        return out.reshape(n, c, ho, wo)

    def forward(self, x):
        xp = self.pad(x)
        s = self.stride
        # logits at full resolution (BatchNorm's batch statistics see every pixel, as in the reference);
        # the softmax is per pixel, so only the sampled pixels need it
        logits = self.bn(self.conv(xp))[..., ::s, ::s]
        return self._filter(xp, torch.softmax(logits, dim=1), s)

    def before_subsampling(self, x: torch.Tensor) -> torch.Tensor:
        """The filtered map at full resolution: what ``forward`` subsamples (the aliasing metric reads it).
        In training mode it updates the BatchNorm's running statistics, as ``forward`` does."""
        xp = self.pad(x)
        return self._filter(xp, self.weights(xp), 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filter_size={self.filter_size}, group={self.group}, stride={self.stride}"
