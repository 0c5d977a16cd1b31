"""The ideal low-pass filter of Alias-Free ConvNets, followed by subsampling.

H. Michaeli, T. Michaeli, D. Soudry, "Alias-Free Convnets: Fractional Shift Invariance via Polynomial
Activations", CVPR 2023. The layer follows the authors' code (hmichaeli/alias_free_convnets,
``models/ideal_lpf.py``: ``create_lpf_rect`` and ``LPF_RFFT``; ``models/blurpool.py``: ``BlurPool`` with
``filter_type='ideal'``): the map's spectrum (``rfft2``, default norm) is multiplied by a separable box
mask and transformed back (``irfft2`` at the map's size), then every ``stride``-th row and column from
the first is kept. Per axis of length ``N``, with ``c = floor(N / (2 * stride))`` (the reference's
``floor(N * cutoff / 2)`` with ``cutoff = 1 / stride``), the mask keeps the signed frequencies
``|k| <= c``, less the two bins ``+-c`` when they are the Nyquist frequency of an even-sized output:
``N % 4 == 0`` for stride 2, the reference's rule. For stride 2: a 32-map keeps ``|k| <= 7``, 16 keeps
``|k| <= 3``, 14 and 15 keep ``|k| <= 3``, 7 keeps ``|k| <= 1``. The 2-D mask is the outer product of
the two axes' masks (a square box, not a disc).

Deviations, none of which changes the reference's stride-2 values on a square map: each axis uses its
own size (the reference uses the width for both and fails on non-square maps); the mask is built per
map size, device and dtype and cached (the reference builds it on the first call and fails on any
other size); half-precision maps are transformed in fp32. Other strides use ``cutoff = 1 / stride``
and remove the ``+-c`` bins when ``N % (2 * stride) == 0`` (an even output size); the reference applies
its stride-2 test ``N % 4 == 0`` to its stride-4 stem as well, which agrees at the usual sizes (224,
112, 56) but removes bins an odd-sized output could hold elsewhere (e.g. ``N = 28``, stride 4).

The filter is circular by nature: the DFT treats the map as one period of a periodic signal, so rows
near the top see rows near the bottom whatever the network's padding mode (which reaches only its
convs and pools; this layer pads nothing). A constant map stays constant (the DC bin is always kept),
and the layer is exactly equivariant to circular shifts by the stride: shifting the input by
``stride`` pixels (``torch.roll``) shifts the output by one, on maps whose sizes the stride divides.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stridelab.errors import ConfigError


def ideal_mask_1d(n: int, stride: int = 2, dtype=torch.float32, device=None) -> torch.Tensor:
    """The 0/1 mask of one axis of length ``n`` in FFT order (``k = 0 .. n-1``, negative frequencies last)."""
    index = torch.arange(n, device=device)
    magnitude = torch.minimum(index, n - index)  # |signed frequency| of each bin
    cutoff = n // (2 * stride)
    keep = magnitude <= cutoff
    if n % (2 * stride) == 0:  # +-cutoff is the output's Nyquist bin: removed, not halved (the reference's rule)
        keep &= magnitude != cutoff
    return keep.to(dtype)


class IdealLowPass2d(nn.Module):
    """Ideal (box-spectrum) low-pass filter with cutoff ``1 / stride`` of the band, then subsampling with
    ``stride`` (Michaeli et al., CVPR 2023). No parameters; circular by construction."""

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = int(stride)
        if self.stride < 2:
            raise ConfigError(
                f"The ideal low-pass downsampling needs a stride of at least 2, got {stride}: its cutoff is "
                "1 / stride of the band, and with stride 1 it would only remove the Nyquist frequency. "
                "Use stride 2 (the Alias-Free ConvNets' downsampling layers) or 4 (their stem)."
            )
        self._masks: dict = {}  # per (H, W, device, dtype): cheap to rebuild, so not a buffer

    def mask(self, h: int, w: int, device, dtype) -> torch.Tensor:
        """The 2-D mask of an ``h`` x ``w`` map, sliced to ``rfft2``'s ``w // 2 + 1`` columns."""
        key = (h, w, str(device), dtype)
        if key not in self._masks:
            rows = ideal_mask_1d(h, self.stride, dtype, device)
            cols = ideal_mask_1d(w, self.stride, dtype, device)[: w // 2 + 1]
            self._masks[key] = torch.outer(rows, cols)
        return self._masks[key]

    def before_subsampling(self, x: torch.Tensor) -> torch.Tensor:
        """The filtered map at full resolution: what ``forward`` subsamples (the aliasing metric reads it)."""
        source = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # FFTs in fp32 at least
        h, w = x.shape[-2:]
        spectrum = torch.fft.rfft2(source)
        spectrum = spectrum * self.mask(h, w, x.device, source.dtype)
        return torch.fft.irfft2(spectrum, s=(h, w)).to(x.dtype)

    def forward(self, x):
        return self.before_subsampling(x)[..., :: self.stride, :: self.stride]

    def extra_repr(self) -> str:
        return f"stride={self.stride}"
