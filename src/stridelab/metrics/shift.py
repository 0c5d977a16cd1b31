"""Shift metrics: circular-shift consistency (Chaman & Dokmanic 2021) and crop consistency with its
stability curve (Zhang 2019). Plain functions over a model and model-ready image tensors.

References
----------
* A. Chaman, I. Dokmanic. "Truly shift-invariant convolutional neural networks." CVPR 2021, Sec. 5:
  circular-shift consistency, the fraction of test images whose predicted class is the same for two
  random circular shifts of the image.
* R. Zhang. "Making Convolutional Networks Shift-Invariant Again." ICML 2019, Sec. 4: consistency,
  ``E[1{argmax f(Shift_{h1,w1}(X)) = argmax f(Shift_{h2,w2}(X))}]`` with shifts realised as crops,
  and the classification stability as a function of diagonal shift (Fig. 5).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stridelab.data.augment import crop_images, pad_images
from stridelab.errors import ConfigError
from stridelab.metrics.inference import logits_of


def shift_values(max_shift: int, step: int = 1) -> torch.Tensor:
    """The shifts drawn from: multiples of ``step`` in ``{-max_shift..max_shift}``."""
    if max_shift < 0 or step < 1:
        raise ConfigError(
            f"shift range needs max_shift >= 0 and step >= 1 (got {max_shift}, {step}); "
            "set metrics.max_shift to a non-negative number of pixels."
        )
    return torch.arange(-(max_shift // step) * step, max_shift + 1, step)


def roll_images(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """``torch.roll(x[i], (dy[i], dx[i]), dims=(1, 2))`` for every image ``i`` at once."""
    b, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None, :] - dy.to(x.device)[:, None]) % h
    cols = (torch.arange(w, device=x.device)[None, :] - dx.to(x.device)[:, None]) % w
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def relative_logit_change(shifted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image ``||shifted - reference||_inf / ||reference||_inf`` (0 when both are 0)."""
    num = (shifted - reference).abs().amax(1)
    den = reference.abs().amax(1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), num)


def circular_shift_consistency(
    model: nn.Module,
    images: torch.Tensor,
    max_shift: int = 3,
    seed: int = 0,
    step: int = 1,
    batch_size: int = 500,
    amp_dtype: torch.dtype | None = None,
    base_logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """Circular-shift consistency and the logit-level change (Chaman & Dokmanic 2021).

    Per image two independent shifts ``s1, s2`` uniform on ``{-S..S}^2`` (``step`` > 1 keeps only its
    multiples), applied with ``torch.roll``:

    * ``consistency`` = mean over images of ``1{argmax f(roll_s1 x) = argmax f(roll_s2 x)}``;
    * ``logit_change`` = median over images and both shifts of
      ``||f(roll_s x) - f(x)||_inf / ||f(x)||_inf``: argmax agreement alone is trivially 1 for an
      untrained or flat network, this is not.

    ``base_logits``: ``f(x)`` when the caller has it already (it saves a pass).
    """
    values = shift_values(max_shift, step)
    gen = torch.Generator().manual_seed(int(seed))
    n = len(images)
    s = values[torch.randint(len(values), (4, n), generator=gen)]
    base = logits_of(model, images, batch_size, amp_dtype) if base_logits is None else base_logits
    first = logits_of(model, roll_images(images, s[0], s[1]), batch_size, amp_dtype)
    second = logits_of(model, roll_images(images, s[2], s[3]), batch_size, amp_dtype)
    agree = (first.argmax(1) == second.argmax(1)).double().mean()
    change = torch.cat([relative_logit_change(first, base), relative_logit_change(second, base)])
    return {"consistency": float(agree), "logit_change": float(change.median()), "images": n}


def _fill_color(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=(0, 2, 3))


def crop_consistency(
    model: nn.Module,
    images: torch.Tensor,
    padding: int = 4,
    fill: str = "mean",
    seed: int = 0,
    batch_size: int = 500,
    fill_color: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Crop consistency (Zhang 2019): pad each image by ``padding`` with ``fill`` (``mean``: the
    images' mean colour, ``reflect``, or ``zeros``), take two crops of the original size at
    independent offsets uniform on ``{0..2P}^2`` and report how often the predicted classes agree."""
    n, _, h, w = images.shape
    gen = torch.Generator().manual_seed(int(seed))
    o = torch.randint(0, 2 * padding + 1, (4, n), generator=gen).to(images.device)
    color = _fill_color(images) if fill_color is None else fill_color
    agree = 0
    with torch.no_grad():
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            xp = pad_images(images[sl], padding, fill, color)
            a = logits_of(model, crop_images(xp, o[0, sl], o[1, sl], h, w), batch_size, amp_dtype)
            b = logits_of(model, crop_images(xp, o[2, sl], o[3, sl], h, w), batch_size, amp_dtype)
            agree += int((a.argmax(1) == b.argmax(1)).sum())
    return {"consistency": agree / max(n, 1), "images": n}


def stability_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    padding: int = 4,
    fill: str = "mean",
    batch_size: int = 500,
    fill_color: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    base_logits: torch.Tensor | None = None,
) -> dict[int, float]:
    """Accuracy as a function of diagonal shift ``d`` in ``{-P..P}`` (Zhang 2019, Fig. 5): the image
    padded by ``P`` and cropped at offset ``(P + d, P + d)``, so its content moves by ``-d`` pixels
    along both axes. A shift-invariant network gives a flat curve. ``base_logits``: ``f(images)``
    when the caller has it already; it is the curve at ``d = 0``."""
    n, _, h, w = images.shape
    color = _fill_color(images) if fill_color is None else fill_color
    correct = {d: 0 for d in range(-padding, padding + 1)}
    labels = labels.to(images.device)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            xp = pad_images(images[sl], padding, fill, color)
            for d in correct:
                o = padding + d  # the same offset for every image: a plain slice
                if d == 0 and base_logits is not None:
                    pred = base_logits[sl].argmax(1)
                else:
                    crop = images[sl] if d == 0 else xp[:, :, o : o + h, o : o + w]
                    pred = logits_of(model, crop, batch_size, amp_dtype).argmax(1)
                correct[d] += int((pred == labels[sl]).sum())
    return {d: c / max(n, 1) for d, c in correct.items()}
