"""The shift figures of recent papers: standard-shift consistency and stability (the LPS/TIPS protocol),
worst-case shift accuracy and sub-pixel shift consistency (Alias-Free ConvNets).

All of them shift the model-ready (normalised) images, as the authors' code does.

References
----------
* S. Saha, T. Gokhale. "Improving Shift Invariance in Convolutional Neural Networks with Translation
  Invariant Polyphase Sampling" (TIPS), WACV 2025; code sourajitcs/tips, ``train_test.py``
  ``evaluate_module`` and ``tips.py`` ``feat_transform``. Also R. Rojas-Gomez et al., "Learnable
  Polyphase Sampling for Shift Invariant and Equivariant Convolutional Networks", NeurIPS 2022.
* H. Michaeli, T. Michaeli, D. Soudry. "Alias-Free Convnets: Fractional Shift Invariance via
  Polynomial Activations", CVPR 2023; code hmichaeli/alias_free_convnets, ``shift_eval.py``
  (``evaluate_full_adversarial_shift_metrics``, ``evaluate_fraction_adversarial_shift_metrics``) and
  ``models/ideal_lpf.py`` (``subpixel_shift``).

Deviations, all said in docs/metrics.md: the TIPS code draws one shift pair per batch from
``{-H/4..H/4}``; we draw two shifts per image, each axis uniform on ``{low..high}`` (default
``{-3..2}``, the issue's protocol). Its stability line cannot run (a chained ``==`` on tensors); we
report both readings: ``stability`` (the three predictions agree: the code's intent) and
``stable_acc`` (they agree and are right: what its table's numbers are, C-Stab = accuracy where
C-Cons = 100). AFC's worst case tests the 961 circular shifts ``{1..31}^2`` of a 224 px image; ours
tests every shift in ``{-S..S}^2`` (both signs, one axis at zero too), S = ``metrics.max_shift``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from stridelab.errors import ConfigError
from stridelab.metrics.inference import logits_of
from stridelab.metrics.shift import roll_images

SHIFT_MODES = ("circular", "standard")


def standard_shift_images(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each image moved by ``(dy[i], dx[i])`` with zeros in the vacated pixels (TIPS's "standard"
    shift: zero in normalised space is the data set's mean colour)."""
    h, w = x.shape[-2:]
    rolled = roll_images(x, dy, dx)
    rows = torch.arange(h, device=x.device)[None, :] - dy.to(x.device)[:, None]  # source row of each row
    cols = torch.arange(w, device=x.device)[None, :] - dx.to(x.device)[:, None]
    keep = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    return rolled * keep[:, None].to(x.dtype)


def shift_images(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mode: str) -> torch.Tensor:
    return roll_images(x, dy, dx) if mode == "circular" else standard_shift_images(x, dy, dx)


def pair_shift_figures(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    low: int = -3,
    high: int = 2,
    seed: int = 0,
    batch_size: int = 500,
    base_logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """TIPS's table columns, per shift mode (``standard``: zero fill; ``circular``: roll): two shifts
    per image, each axis uniform on ``{low..high}``, and

    * ``<mode>_consistency``: the two shifted predictions agree (S-Cons, C-Cons);
    * ``<mode>_stability``: the unshifted and both shifted predictions agree (the code's intent);
    * ``<mode>_stable_acc``: ... and equal the label (the table's S-Stab, C-Stab).
    """
    if low > high:
        raise ConfigError(f"metrics.pair_shift must be [low, high] with low <= high (got [{low}, {high}]).")
    n = len(images)
    gen = torch.Generator().manual_seed(int(seed))
    labels = labels.to(images.device)
    base = (logits_of(model, images, batch_size) if base_logits is None else base_logits).argmax(1)
    out = {}
    for mode in SHIFT_MODES:
        s = torch.randint(int(low), int(high) + 1, (4, n), generator=gen)
        first = logits_of(model, shift_images(images, s[0], s[1], mode), batch_size).argmax(1)
        second = logits_of(model, shift_images(images, s[2], s[3], mode), batch_size).argmax(1)
        agree = first == second
        stable = agree & (first == base)
        out[f"{mode}_consistency"] = float(agree.double().mean())
        out[f"{mode}_stability"] = float(stable.double().mean())
        out[f"{mode}_stable_acc"] = float((stable & (base == labels)).double().mean())
    return out


def worst_case_shift(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_shift: int = 3,
    mode: str = "circular",
    batch_size: int = 500,
    base_logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """Worst case over every shift ``(dy, dx)`` in ``{-S..S}^2`` (AFC's adversarial shift accuracy):

    * ``acc``: the fraction of images classified correctly unshifted and under every shift;
    * ``consistency``: the fraction whose prediction is the unshifted one under every shift (1.0 for
      an exactly invariant network, whatever its accuracy).

    ``mode``: ``circular`` (roll) or ``standard`` (zero fill, the crop variant)."""
    shifts = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]
    return _worst_case(
        model, images, labels, [(dy, dx) for dy, dx in shifts if dy or dx], mode, batch_size, base_logits
    )


def _worst_case(model, images, labels, shifts, mode, batch_size, base_logits) -> dict[str, float]:
    """``acc`` and ``consistency`` over ``shifts`` (``(dy, dx)`` pixels, or ``(up, a, b)`` sub-pixel).
    An image that has already changed its prediction and been wrong under some shift cannot count
    for either figure any more: only the others are passed on (the figures are exact)."""
    labels = labels.to(images.device)
    base = (logits_of(model, images, batch_size) if base_logits is None else base_logits).argmax(1)
    correct, same = base == labels, torch.ones_like(labels, dtype=torch.bool)
    for shift in shifts:
        alive = torch.nonzero(correct | same).flatten()
        if len(alive) == 0:
            break
        x = images[alive]
        if len(shift) == 2:
            ones = torch.ones(len(alive), dtype=torch.long)
            moved = shift_images(x, shift[0] * ones, shift[1] * ones, mode)
        else:
            moved = subpixel_shift(x, *shift)
        pred = logits_of(model, moved, batch_size).argmax(1)
        same[alive] &= pred == base[alive]
        correct[alive] &= pred == labels[alive]
    return {"acc": float(correct.double().mean()), "consistency": float(same.double().mean())}


def subpixel_shift(images: torch.Tensor, up: int, sy: int, sx: int) -> torch.Tensor:
    """``images`` moved by ``-sy/up`` rows and ``-sx/up`` columns by band-limited (ideal) interpolation:
    AFC's ``subpixel_shift`` (zero insertion to ``up`` times the size, the ideal reconstruction filter
    with the old Nyquist bin halved, a roll by ``(-sy, -sx)`` and every ``up``-th pixel), computed in
    closed form: per axis a phase ramp ``exp(2 pi i k d / N)``, the Nyquist bin of an even axis times
    ``cos(pi d)``, ``d = s / up``. A whole-pixel ``d`` is a circular roll by ``-d``."""
    h, w = images.shape[-2:]
    spectrum = torch.fft.fft2(images.double())
    ramp_y = _phase(h, sy / up, images.device)
    ramp_x = _phase(w, sx / up, images.device)
    return torch.fft.ifft2(spectrum * ramp_y[:, None] * ramp_x[None, :]).real.to(images.dtype)


def _phase(n: int, d: float, device) -> torch.Tensor:
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=device)
    ramp = torch.exp(2j * math.pi * k * d / n)
    if n % 2 == 0:
        ramp[n // 2] = math.cos(math.pi * d)  # the Nyquist bin: real, as a real shifted image needs
    return ramp


def subpixel_factors(max_up: int) -> list[int]:
    """AFC's up-sampling factors: those of ``1..max_up`` that divide no larger one (4 -> [3, 4])."""
    ups = range(1, int(max_up) + 1)
    return [u for u in ups if u > 1 and not any(v > u and v % u == 0 for v in ups)]


def subpixel_shift_figures(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_up: int = 4,
    batch_size: int = 500,
    base_logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """Sub-pixel shift consistency and accuracy (AFC's fractional adversarial shifts): every shift
    ``(a/up, b/up)``, ``a, b`` in ``1..up-1``, for each factor of :func:`subpixel_factors` (13 shifts
    for ``max_up=4``). ``consistency``: the prediction is the unshifted one under all of them;
    ``acc``: correct unshifted and under all of them (AFC's ``sub_shift_robust_score``)."""
    ups = subpixel_factors(max_up)
    if not ups:
        raise ConfigError(f"metrics.subpixel_max_up must be >= 2 (got {max_up}): it shifts by 1/up pixels.")
    shifts = [(up, a, b) for up in ups for a in range(1, up) for b in range(1, up)]
    out = _worst_case(model, images, labels, shifts, "subpixel", batch_size, base_logits)
    return {**out, "shifts": len(shifts)}
