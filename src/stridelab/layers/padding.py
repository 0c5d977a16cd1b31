"""Padding: one vocabulary for every padded operation of a network.

Modes are ``nn.Conv2d``'s ``padding_mode`` values (zeros, reflect, replicate, circular) plus
``partial``: partial-convolution-based padding (Liu et al., "Partial Convolution based Padding",
arXiv:1811.11718, 2018), zero padding whose windows are re-normalised over the taps that fall inside
the image (:mod:`stridelab.layers.partial`). Amounts follow the valid / same / full
terminology of Kayhan & van Gemert (CVPR 2020, Fig. 2) for a kernel of size ``k``:

* ``valid``: no padding; the map shrinks by ``k - 1``.
* ``same``: ``k - 1`` in total, ``(k - 1) // 2`` before and the rest after (symmetric for odd ``k``;
  for even ``k`` the extra pixel goes after, as in Zhang 2019's blur layers).
* ``full``: ``k - 1`` on each side, so every filter tap meets every input pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F

from stridelab.errors import choose

CONV_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")  # nn.Conv2d's own
PADDING_MODES = (*CONV_PADDING_MODES, "partial")
PADDING_AMOUNTS = ("valid", "same", "full")

# F.pad's names for nn.Conv2d's padding modes.
F_PAD_MODE = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
    "partial": "constant",
}  # partial pads zeros; its layers re-normalise over in-image taps


def pad_amounts(kernel_size: int, amount: str) -> tuple[int, int]:
    """Padding (before, after) along one axis for a kernel of ``kernel_size`` taps."""
    choose("padding amount", amount, PADDING_AMOUNTS)
    k = int(kernel_size)
    if amount == "valid":
        return 0, 0
    if amount == "same":
        before = (k - 1) // 2
        return before, k - 1 - before
    return k - 1, k - 1


@dataclass(frozen=True)
class PaddingSpec:
    """How a network pads: ``mode`` (what the border holds) and ``amount`` (how much).

    ``amount`` applies to convolutions and blur filters. Max/average pools keep the padding of the
    reference architectures (``(k - 1) // 2`` per side when the window is wider than the stride,
    none otherwise) but use ``mode`` for what the border holds.
    """

    mode: str = "zeros"
    amount: str = "same"

    def __post_init__(self) -> None:
        choose("padding mode", self.mode, PADDING_MODES)
        choose("padding amount", self.amount, PADDING_AMOUNTS)

    def for_kernel(self, kernel_size: int) -> tuple[int, int]:
        return pad_amounts(kernel_size, self.amount)


class Pad2d(nn.Module):
    """Explicit, possibly asymmetric padding: ``(left, right, top, bottom)`` as in ``F.pad``.

    ``zeros`` (and ``partial``, whose layers re-normalise after it) pads with ``value`` (0 unless a
    pool needs ``-inf``).
    """

    def __init__(self, padding: tuple[int, int, int, int], mode: str = "zeros", value: float = 0.0) -> None:
        super().__init__()
        choose("padding mode", mode, PADDING_MODES)
        self.padding = tuple(int(p) for p in padding)
        self.mode = mode
        self.value = float(value)

    def forward(self, x):
        if not any(self.padding):
            return x
        if self.mode in ("zeros", "partial"):
            return F.pad(x, self.padding, mode="constant", value=self.value)
        return F.pad(x, self.padding, mode=F_PAD_MODE[self.mode])

    def extra_repr(self) -> str:
        return f"padding={self.padding}, mode={self.mode!r}"
