"""Whole-batch augmentation on the training device: flip, translate (random crop), normalise.

Everything is a handful of tensor ops per batch, no per-image Python work. The crop fill is itself a
padding choice, so it is configurable: ``zeros`` (black, as torchvision's ``RandomCrop(padding=4)``),
``mean`` (the data set's mean colour, i.e. 0 after normalisation) or ``reflect``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stridelab.errors import choose

CROP_FILLS = ("zeros", "mean", "reflect")


def pad_images(x: torch.Tensor, pad: int, fill: str, fill_color: torch.Tensor | None = None) -> torch.Tensor:
    """Pad a (B, C, H, W) batch (float or uint8) by ``pad`` on every side with ``fill`` (zeros, mean,
    reflect). ``mean`` fills with ``fill_color`` (one value per channel, in the batch's units)."""
    choose("crop fill", fill, CROP_FILLS)
    if fill == "reflect":
        return F.pad(x, (pad,) * 4, mode="reflect")
    if fill == "zeros":
        return F.pad(x, (pad,) * 4)
    b, c, h, w = x.shape
    color = torch.as_tensor(fill_color, device=x.device).to(x.dtype).view(1, c, 1, 1)
    out = color.expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    out[:, :, pad : pad + h, pad : pad + w] = x
    return out


def crop_images(xp: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-image crops ``xp[i, :, oy[i]:oy[i]+h, ox[i]:ox[i]+w]`` in one gather (any dtype).

    The gather reads a sliding-window view of ``xp`` (B, C, rows, cols, h, w; no copy) at one
    (row, col) per image: about 4x faster on the CPU than indexing every pixel.
    """
    windows = xp.unfold(2, h, 1).unfold(3, w, 1)
    return windows[torch.arange(xp.shape[0], device=xp.device), :, oy, ox]


def flip_some(x: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """``x[i].flip(-1)`` where ``flipped[i]``, else ``x[i]``; one row gather (``torch.where`` over
    every pixel is 4x slower on the CPU)."""
    rows = torch.arange(x.shape[0], device=x.device)
    return torch.cat([x, x.flip(3)]).index_select(0, torch.where(flipped, rows + x.shape[0], rows))


def random_translate(x: torch.Tensor, pad: int, fill: str, fill_color: torch.Tensor | None = None) -> torch.Tensor:
    """Pad each image by ``pad`` and crop back at an independent uniform offset in ``[0, 2 pad]^2``.

    ``x`` is float (B, C, H, W); the result is (B, C, H, W) in channels_last memory layout.
    """
    return _translate(x, pad, fill, fill_color).contiguous(memory_format=torch.channels_last)


def _translate(x, pad, fill, fill_color, generator=None):
    b, c, h, w = x.shape
    xp = pad_images(x, pad, fill, fill_color)
    oy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=generator)
    return crop_images(xp, oy, ox, h, w)


class BatchTransform:
    """uint8 (B, C, H, W) batch on the device -> normalised float batch, channels_last.

    Flip and translation run on the uint8 batch (a quarter of the bytes of float), normalisation on
    the float batch in NCHW layout, and only then is it made channels_last: in that layout a
    per-channel broadcast is 10x slower on the CPU. About 2 ms for 256 CIFAR images on 2 CPU cores,
    against 8 ms for the same ops in float with per-pixel indexing. The ``mean`` crop fill is the
    mean colour rounded to the nearest of the 256 uint8 levels. ``generator``: the random draws'
    own generator (on the batch's device; the data module seeds it from the run's seed, so runs
    with the same seed draw the same flips and crops whatever their model); None: the global one.
    """

    def __init__(
        self,
        mean,
        std,
        normalize: bool = True,
        flip: bool = False,
        crop_padding: int = 0,
        crop_fill: str = "zeros",
        channels_last: bool = True,
    ) -> None:
        choose("crop fill", crop_fill, CROP_FILLS)
        self.mean = torch.as_tensor(mean, dtype=torch.float32) * 255
        self.std = torch.as_tensor(std, dtype=torch.float32) * 255
        self.normalize, self.flip = normalize, flip
        self.crop_padding, self.crop_fill = int(crop_padding), crop_fill
        self.channels_last = channels_last
        self.generator: torch.Generator | None = None

    def to(self, device) -> "BatchTransform":
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = flip_some(x, torch.rand(x.shape[0], device=x.device, generator=self.generator) < 0.5)
        if self.crop_padding:
            color = self.mean.round().clamp(0, 255) if x.dtype == torch.uint8 else self.mean
            x = _translate(x, self.crop_padding, self.crop_fill, color, self.generator)
        out = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # never the caller's tensor
        if self.normalize:
            out = out.sub_(self.mean.view(1, -1, 1, 1)).div_(self.std.view(1, -1, 1, 1))
        else:
            out = out.div_(255.0)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out
