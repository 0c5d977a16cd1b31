"""Downsampling in the Fourier domain: FLC pooling and ASAP (Grabinski et al.).

FLC pooling (J. Grabinski, S. Jung, J. Keuper, M. Keuper, "FrequencyLowCut Pooling -- Plug & Play
against Catastrophic Overfitting", ECCV 2022) halves a map by keeping only the centred half of its
2-D spectrum: no frequency above the new Nyquist limit survives, so nothing aliases. ASAP (J.
Grabinski, J. Keuper, M. Keuper, "Fix your downsampling ASAP! Be natively more robust via Aliasing
and Spectral Artifact free Pooling", arXiv:2307.09804, 2023) multiplies the centred spectrum by a
Hamming window first, against the ringing (sinc interpolation) of a hard cut, and by default pads
the map with one row and column of zeros at the bottom and right (the reference's
``ASAP_padding_one``, the version its ResNet uses).

Both follow the authors' code (GeJulia/flc_pooling, ``flc_pooling.py`` and ``asap.py``, MIT):
``fft2(x, norm="forward")``, ``fftshift``, the slice ``[int(H/4):int(3H/4), int(W/4):int(3W/4)]`` (a 2k
map gives k; an odd map follows from the same slice: 33 gives 17), ``ifftshift``, ``ifft2(norm=
"forward")`` and the real part. The reference shifts every dimension, batch and channels too, and
shifts them back: the same as shifting the two spatial ones. The window is ``sqrt(outer(hamming(H),
hamming(W)))`` with numpy's symmetric Hamming window (``0.54 - 0.46 cos(2 pi n / (N - 1))``) of the
(padded) map's size. Deviations, none of which changes a value: the window is computed in float64
per map size and device (the reference keeps the first size's window, on ``cuda``); the plain
``ASAP`` variant's transpose of the map (``transpose=True``, which returns the map transposed) is
not reproduced; half-precision maps are transformed in fp32.

The spectrum is periodic, so both are exactly equivariant to circular shifts of even size (a shift
by 2 of the input is a shift by 1 of the output); ASAP's padded row and column break that (in any
padding mode: an odd map has no exact half-size grid), and ASAP with ``pad_one=False`` keeps it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stridelab.layers.padding import Pad2d


def low_frequencies(spectrum: torch.Tensor) -> torch.Tensor:
    """The centred half of a centred (``fftshift``-ed) spectrum, sliced as the reference slices it."""
    h, w = spectrum.shape[-2:]
    return spectrum[..., int(h / 4) : int(h / 4 * 3), int(w / 4) : int(w / 4 * 3)]


def hamming_window(h: int, w: int, device=None) -> torch.Tensor:
    """``sqrt(outer(hamming(h), hamming(w)))`` in float64 (numpy's symmetric Hamming window)."""
    rows = torch.hamming_window(h, periodic=False, dtype=torch.float64, device=device).abs()
    cols = torch.hamming_window(w, periodic=False, dtype=torch.float64, device=device).abs()
    return torch.sqrt(torch.outer(rows, cols))


def _centred_spectrum(x: torch.Tensor, window: torch.Tensor | None) -> torch.Tensor:
    source = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # FFTs in fp32 at least
    spectrum = torch.fft.fftshift(torch.fft.fft2(source, norm="forward"), dim=(-2, -1))
    return spectrum if window is None else spectrum * window.to(spectrum.real.dtype)


def fourier_pool(x: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the centred half of ``x``'s spectrum (times ``window``, centred like it) and go back."""
    low = low_frequencies(_centred_spectrum(x, window))
    return torch.fft.ifft2(torch.fft.ifftshift(low, dim=(-2, -1)), norm="forward").real.to(x.dtype)


def band_limited(x: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """What :func:`fourier_pool` keeps, at ``x``'s own size: the spectrum outside the centred half
    set to zero. Its power above the half-size map's Nyquist frequency is zero by construction; the
    aliasing metric reads it as the map these layers subsample."""
    spectrum = _centred_spectrum(x, window)
    kept = torch.zeros_like(spectrum)
    low_frequencies(kept).copy_(low_frequencies(spectrum))
    return torch.fft.ifft2(torch.fft.ifftshift(kept, dim=(-2, -1)), norm="forward").real.to(x.dtype)


class FLCPool2d(nn.Module):
    """FLC pooling (Grabinski et al., ECCV 2022): the low half of the spectrum, back in space."""

    def forward(self, x):
        return fourier_pool(x)

    def before_subsampling(self, x: torch.Tensor) -> torch.Tensor:
        return band_limited(x)


class ASAPPool2d(nn.Module):
    """ASAP (Grabinski et al. 2023): FLC pooling of a Hamming-windowed spectrum; ``pad_one``: pad
    one row and column at the bottom and right first (the reference's default version), with zeros
    as the reference (``mode="zeros"``) or another mode of the padding vocabulary."""

    def __init__(self, pad_one: bool = True, mode: str = "zeros") -> None:
        super().__init__()
        self.pad_one = bool(pad_one)
        self.pad = Pad2d((0, 1, 0, 1), mode) if self.pad_one else nn.Identity()
        self._windows: dict = {}  # per (H, W, device): cheap to rebuild, so not a buffer

    def window(self, h: int, w: int, device) -> torch.Tensor:
        key = (h, w, str(device))
        if key not in self._windows:
            self._windows[key] = hamming_window(h, w, device)
        return self._windows[key]

    def forward(self, x):
        x = self.pad(x)
        return fourier_pool(x, self.window(x.shape[-2], x.shape[-1], x.device))

    def before_subsampling(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)
        return band_limited(x, self.window(x.shape[-2], x.shape[-1], x.device))

    def extra_repr(self) -> str:
        return f"pad_one={self.pad_one}, mode={self.pad.mode!r}" if self.pad_one else "pad_one=False"
