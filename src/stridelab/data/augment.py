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
    """Pad a float (B, C, H, W) batch by ``pad`` on every side with ``fill`` (zeros, mean, reflect).

    ``mean`` fills with ``fill_color`` (one value per channel).
    """
    choose("crop fill", fill, CROP_FILLS)
    if fill == "reflect":
        return F.pad(x, (pad,) * 4, mode="reflect")
    if fill == "mean":
        color = torch.as_tensor(fill_color, dtype=x.dtype, device=x.device).view(1, x.shape[1], 1, 1)
        return F.pad(x - color, (pad,) * 4) + color
    return F.pad(x, (pad,) * 4)


def crop_images(xp: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-image crops ``xp[i, :, oy[i]:oy[i]+h, ox[i]:ox[i]+w]`` in one indexing op (channels_last)."""
    b = xp.shape[0]
    rows = (oy[:, None] + torch.arange(h, device=xp.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=xp.device))[:, None, :]
    batch = torch.arange(b, device=xp.device)[:, None, None]
    # Advanced indexing around a slice puts the indexed dims first: (B, H, W, C), i.e. NHWC memory.
    return xp[batch, :, rows, cols].permute(0, 3, 1, 2)


def random_translate(x: torch.Tensor, pad: int, fill: str, fill_color: torch.Tensor | None = None) -> torch.Tensor:
    """Pad each image by ``pad`` and crop back at an independent uniform offset in ``[0, 2 pad]^2``.

    ``x`` is float (B, C, H, W); the result is (B, C, H, W) in channels_last memory layout.
    """
    b, c, h, w = x.shape
    xp = pad_images(x, pad, fill, fill_color)
    oy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    return crop_images(xp, oy, ox, h, w)


class BatchTransform:
    """uint8 (B, C, H, W) batch on the device -> normalised float batch, channels_last."""

    def __init__(self, mean, std, normalize: bool = True, flip: bool = False, crop_padding: int = 0,
                 crop_fill: str = "zeros", channels_last: bool = True) -> None:
        choose("crop fill", crop_fill, CROP_FILLS)
        self.mean = torch.as_tensor(mean, dtype=torch.float32) * 255
        self.std = torch.as_tensor(std, dtype=torch.float32) * 255
        self.normalize, self.flip = normalize, flip
        self.crop_padding, self.crop_fill = int(crop_padding), crop_fill
        self.channels_last = channels_last

    def to(self, device) -> "BatchTransform":
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.flip:
            flipped = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flipped[:, None, None, None], x.flip(3), x)
        if self.crop_padding:
            x = random_translate(x, self.crop_padding, self.crop_fill, self.mean)
        if self.normalize:
            x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        else:
            x = x / 255.0
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
