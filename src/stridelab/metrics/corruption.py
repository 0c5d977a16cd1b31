"""CIFAR-10-C-style common corruptions, generated in torch on uint8 test images.

Reference
---------
D. Hendrycks, T. Dietterich. "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations." ICLR 2019. The definitions and the CIFAR severity constants below are those of
``ImageNet-C/create_c/make_cifar_c.py`` in github.com/hendrycks/robustness (Apache-2.0), which built
CIFAR-10-C; this is an independent torch implementation, not a copy. Like that script, every
corruption works on ``x / 255`` in float64, clips to [0, 1], multiplies by 255 and truncates to uint8
(``np.uint8`` of a float truncates; it does not round).

Corruptions and their CIFAR constants (severity 1 to 5)
-------------------------------------------------------
=================  ====================================================  ===============================
name               constant c (severity 1, 2, 3, 4, 5)                   definition on x in [0, 1]
=================  ====================================================  ===============================
gaussian_noise     0.04, 0.06, 0.08, 0.09, 0.10                          x + N(0, c^2)
shot_noise         500, 250, 100, 75, 50                                 Poisson(c x) / c
impulse_noise      0.01, 0.02, 0.03, 0.05, 0.07                          salt & pepper, amount c
speckle_noise      0.06, 0.10, 0.12, 0.16, 0.20                          x + x N(0, c^2)
gaussian_blur      sigma 0.4, 0.6, 0.7, 0.8, 1.0                         gaussian, 'nearest' border
defocus_blur       (radius, alias_blur) (0.3, 0.4), (0.4, 0.5),          disk kernel, reflect-101
                   (0.5, 0.6), (1, 0.2), (1.5, 0.1)
contrast           0.75, 0.50, 0.40, 0.30, 0.15                          (x - m) c + m, m channel mean
brightness         0.05, 0.10, 0.15, 0.20, 0.30                          HSV: V + c
saturate           (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)    HSV: S c0 + c1
pixelate           0.95, 0.90, 0.85, 0.75, 0.65                          BOX down to int(size c), BOX up
jpeg_compression   quality 80, 65, 58, 50, 40                            JPEG round trip
=================  ====================================================  ===============================

(speckle_noise, gaussian_blur and saturate are three of the script's four extra corruptions. Glass,
motion and zoom blur, snow, frost, fog, elastic and spatter are not implemented: they need ImageMagick,
OpenCV, frost photographs, or per-pixel loops whose exact replication is not cheap.)

Semantics replicated, and every deviation from the reference
-------------------------------------------------------------
The deterministic corruptions (blurs, contrast, brightness, saturate, pixelate, JPEG) were checked
bit-exact, all five severities, on 422 synthetic 32x32 images (random, smooth, flat, saturated)
against the script's functions run with scikit-image 0.26 (``channel_axis=-1`` for the old
``multichannel=True``), scipy 1.17, OpenCV 5.0 and Pillow 13; the 2018 dataset used older versions.

* Randomness: a ``torch.Generator`` replaces numpy's global state, so the distributions are the
  reference's but the draws (hence the images) are not those of the published CIFAR-10-C arrays.
  Their statistics (mean change, mean absolute change, fraction changed) agree with the reference's
  within sampling error. impulse_noise follows ``skimage.util.random_noise(mode='s&p')``: each value
  (per element, over all channels) is flipped with probability c, then a flipped value is salt (1) or
  pepper (0) with probability 1/2 each.
* gaussian_blur: ``skimage.filters.gaussian(sigma=c, multichannel=True)`` is scipy's
  ``gaussian_filter`` over H then W, mode 'nearest' (replicate padding), truncate 4, radius
  ``int(4 sigma + 0.5)``; done here with scipy's kernel, its normalisation (numpy's pairwise sum) and
  its summation order, so the float results are the same.
* defocus_blur: the reference's ``disk`` kernel (a 17x17 disk mask of the radius, normalised, blurred
  by ``cv2.GaussianBlur`` with ksize 3 and sigma alias_blur) is built in float32 as OpenCV does (its
  values match exactly), then applied per channel with reflect-101 padding (``cv2.filter2D``'s default
  border). Deviation: the kernel is cropped to its non-zero rows and columns (3x3 or 5x5 at the CIFAR
  constants; the rest are exact zeros) and applied directly, where OpenCV filters with the 17x17 kernel
  through a DFT; the float results may differ in the last bits (no uint8 difference was seen).
* contrast: the per-channel mean sums pixels in numpy's order (one after the other) on the CPU.
* brightness, saturate: the HSV round trip of ``skimage.color.rgb2hsv``/``hsv2rgb``, written out
  in torch with the same operations in the same order (ties of the maximum to blue, then green, then
  red; H = S = 0 for grey). Adding c to V only scales each pixel, ``x' = x min(V + c, 1) / V`` (grey
  ``c`` where V = 0), but the round trip is kept: its float rounding is what the truncation exposes.
* pixelate: Pillow's ``resize(BOX)`` down to ``int(size c)`` and back, replicated exactly: Pillow's
  BOX gives each source pixel, with equal weights, to the one destination pixel whose footprint holds
  its centre (not area weights); its 8-bit path uses 22-bit fixed-point coefficients, rounds, and
  stores a uint8 image between the horizontal and the vertical pass. Images of other sizes than
  32x32 use their own height and width, ``int(H c)`` and ``int(W c)`` (the script has 32 built in).
* jpeg_compression: ``torchvision.io.encode_jpeg(quality=c)`` and ``decode_jpeg`` instead of Pillow's
  ``save(quality=c)`` and ``open``. Both drive libjpeg(-turbo) with ``jpeg_set_quality`` (the standard
  IJG quantisation tables scaled by the quality), baseline, 4:2:0 chroma subsampling and the integer
  (islow) DCT; the outputs matched Pillow's exactly, and the test suite compares the two. Images on
  another device go through the CPU.
* All corruptions compute in float64 as the reference does. On a GPU, reductions and convolutions sum
  in another order, which can change a uint8 value by 1 where the float result lies within about
  1e-12 of an integer; the noise is drawn on the generator's device (the CPU for :func:`corrupt`), so
  it is the same for images on any device.
* Noise constants are in [0, 1] units and blur constants in pixels whatever the image size, as in the
  reference (on larger images a blur of the same sigma is relatively weaker).
"""

from __future__ import annotations

import numbers
import zlib
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from stridelab.errors import ConfigError, choose

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

SEVERITIES = (1, 2, 3, 4, 5)

# The CIFAR constants of make_cifar_c.py, indexed by severity - 1 (not the ImageNet-C ones).
SEVERITY_CONSTANTS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}

# corrupt() works through large sets in chunks of this many images (bounded float64 memory); the
# noise of an image then depends only on the seed and its position, not on any caller's batch size.
CHUNK = 1024


def _constant(name: str, severity: int):
    # numpy integers (numbers.Integral) are accepted; True and 2.0 are not severities.
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or severity not in SEVERITIES:
        raise ConfigError(
            f"Unknown corruption severity {severity!r} for {name}. Valid severities are the integers "
            f"{', '.join(map(str, SEVERITIES))} (Hendrycks & Dietterich 2019, 1 mildest, 5 strongest). "
            "Pick some of these (for example severities=[1, 3, 5])."
        )
    return SEVERITY_CONSTANTS[name][int(severity) - 1]


def validate_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"corruptions take uint8 NCHW images (0..255), got {images.dtype} of shape {tuple(images.shape)}"
        )


def _unit(images: torch.Tensor) -> torch.Tensor:
    validate_images(images)
    return images.double() / 255.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    # np.uint8(float) truncates: so does a torch cast of values in [0, 255].
    return (x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _randn(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the generator's device, so that a CPU generator gives the same noise for images on any device.
    out = torch.randn(like.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return out.to(like.device)


def _rand(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    out = torch.rand(like.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return out.to(like.device)


# ---------------------------------------------------------------------------------------------- noise


def gaussian_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``clip(x + N(0, c^2))`` (Hendrycks & Dietterich 2019; make_cifar_c.py ``gaussian_noise``)."""
    c = _constant("gaussian_noise", severity)
    x = _unit(images)
    return _to_uint8(x + _randn(x, generator) * c)


def shot_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``clip(Poisson(c x) / c)``: photon noise with c photons at full scale (make_cifar_c.py ``shot_noise``)."""
    c = _constant("shot_noise", severity)
    x = _unit(images)
    counts = torch.poisson((x * c).to(generator.device), generator=generator).to(x.device)
    return _to_uint8(counts / c)


def impulse_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper with amount c, as ``skimage.util.random_noise(mode='s&p')`` (make_cifar_c.py
    ``impulse_noise``): each value is flipped with probability c, to 255 or 0 with probability 1/2."""
    c = _constant("impulse_noise", severity)
    validate_images(images)
    flipped = _rand(images, generator) <= c  # skimage draws the flips first, then salt vs pepper
    salted = _rand(images, generator) <= 0.5
    # (k / 255) * 255 truncates back to k for every k in 0..255, so uint8 arithmetic is the reference's.
    salt_or_pepper = salted.to(torch.uint8) * 255
    return torch.where(flipped, salt_or_pepper, images)


def speckle_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``clip(x + x N(0, c^2))``: multiplicative noise (make_cifar_c.py ``speckle_noise``)."""
    c = _constant("speckle_noise", severity)
    x = _unit(images)
    return _to_uint8(x + x * (_randn(x, generator) * c))


# ----------------------------------------------------------------------------------------------- blur


def _separable(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with ``kernel`` (odd length) along H, then along W."""
    r = (len(kernel) - 1) // 2
    c = x.shape[1]
    k = kernel.to(x)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def numpy_sum(values: Sequence[float]) -> float:
    """numpy's pairwise float sum of a contiguous 1-D array (``pairwise_sum`` of loops_utils), so that a
    kernel normalised here is bit-identical to scipy's."""
    n = len(values)
    if n < 8:
        total = 0.0
        for v in values:
            total += v
        return total
    if n <= 128:
        acc = list(values[:8])
        i = 8
        while i < n - n % 8:
            for j in range(8):
                acc[j] += values[i + j]
            i += 8
        total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
        for v in values[i:]:
            total += v
        return total
    half = n // 2
    half -= half % 8
    return numpy_sum(values[:half]) + numpy_sum(values[half:])


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's 1-D gaussian: radius ``int(truncate sigma + 0.5)``, weights summing to 1 (float64)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 / (sigma * sigma) * t**2)
    return phi / numpy_sum(phi.tolist())


def _correlate_symmetric(x: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """scipy's ``correlate1d`` with a symmetric kernel and mode 'nearest' along ``dim`` (2 or 3), summed
    in its order: ``x w[0]``, then ``(x[-j] + x[+j]) w[j]`` from the outermost j inwards."""
    r = (len(weights) - 1) // 2
    w = weights.tolist()
    padded = F.pad(x, (0, 0, r, r) if dim == 2 else (r, r, 0, 0), mode="replicate")
    n = x.shape[dim]
    out = padded.narrow(dim, r, n) * w[r]
    for j in range(r, 0, -1):
        out = out + (padded.narrow(dim, r - j, n) + padded.narrow(dim, r + j, n)) * w[r + j]
    return out


def gaussian_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur of sigma c pixels with 'nearest' (replicate) border, as ``skimage.filters.gaussian``,
    i.e. scipy's ``gaussian_filter`` over H then W (make_cifar_c.py ``gaussian_blur``)."""
    sigma = _constant("gaussian_blur", severity)
    kernel = gaussian_kernel(sigma)
    return _to_uint8(_correlate_symmetric(_correlate_symmetric(_unit(images), kernel, 2), kernel, 3))


def _cv2_gaussian_kernel(ksize: int, sigma: float) -> torch.Tensor:
    """``cv2.getGaussianKernel(ksize, sigma, CV_32F)``: exp(-x^2 / 2 sigma^2), rounded to float32, then
    normalised and rounded again, as OpenCV does for float32 images."""
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) * 0.5
    w = torch.exp(-0.5 / (sigma * sigma) * t * t).float()
    total = w.double().sum()
    return (w.double() * (1.0 / total)).float()


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's ``disk(radius, alias_blur)`` (float32 values, float64 tensor): the pixels within
    ``radius`` of the centre of a 17x17 grid (wider for radius > 8), normalised, blurred by a 3x3
    (5x5 for radius > 8) gaussian of sigma ``alias_blur`` to antialias it; then cropped to its non-zero
    rows and columns, which changes no value."""
    if radius <= 8:
        grid, ksize = torch.arange(-8, 9, dtype=torch.float64), 3
    else:
        grid, ksize = torch.arange(-radius, radius + 1, dtype=torch.float64), 5
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    mask = (xx**2 + yy**2 <= radius**2).float()
    mask = mask / mask.sum()
    g = _cv2_gaussian_kernel(ksize, alias_blur)
    # cv2.GaussianBlur is separable, with a reflect-101 border; the disk sits far from the grid's edge.
    kernel = _separable(mask[None, None], g, mode="reflect")[0, 0]
    rows = kernel.abs().sum(1).nonzero().flatten()
    lo, hi = int(rows.min()), int(rows.max())
    lo, hi = min(lo, len(grid) - 1 - hi), max(hi, len(grid) - 1 - lo)  # keep the centre in the middle
    return kernel[lo : hi + 1, lo : hi + 1].double()


def defocus_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Per-channel filtering with the antialiased disk kernel, reflect-101 border as ``cv2.filter2D``
    (make_cifar_c.py ``defocus_blur``, ``disk``)."""
    radius, alias_blur = _constant("defocus_blur", severity)
    x = _unit(images)
    kernel = disk_kernel(radius, alias_blur).to(x.device)
    r, c = (kernel.shape[0] - 1) // 2, x.shape[1]
    out = F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), kernel.expand(c, 1, -1, -1), groups=c)
    return _to_uint8(out)


# ---------------------------------------------------------------------------------------------- digital


def contrast(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``(x - m) c + m`` with m each image's per-channel mean (make_cifar_c.py ``contrast``)."""
    c = _constant("contrast", severity)
    x = _unit(images)
    # numpy sums an HWC image's pixels one after the other per channel; a CPU cumsum does the same.
    means = x.flatten(2).cumsum(-1)[..., -1:, None] / (x.shape[-2] * x.shape[-1])
    return _to_uint8((x - means) * c + means)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``skimage.color.rgb2hsv`` on N3HW floats in [0, 1]: the same operations, ties to blue, then
    green, then red, and H = S = 0 for grey pixels."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    grey = delta == 0
    safe = torch.where(grey, torch.ones_like(delta), delta)  # the grey pixels' H and S are set to 0 below
    s = torch.where(grey, torch.zeros_like(v), delta / torch.where(grey, torch.ones_like(v), v))
    h = torch.where(b == v, 4.0 + (r - g) / safe, torch.where(g == v, 2.0 + (b - r) / safe, (g - b) / safe))
    h = torch.where(grey, torch.zeros_like(h), torch.remainder(h / 6.0, 1.0))
    return torch.stack((h, s, v), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``skimage.color.hsv2rgb`` on N3HW floats, with its operations."""
    h, s, v = hsv.unbind(1)
    hi = torch.floor(h * 6.0)
    f = h * 6.0 - hi
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    sector = (hi.to(torch.uint8) % 6).long()
    choices = torch.stack(
        [torch.stack(rgb, 1) for rgb in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    )  # 6 N 3 H W
    index = sector[None, :, None].expand(1, -1, 3, -1, -1)
    return choices.gather(0, index)[0]


def brightness(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """HSV value ``V + c`` clipped to 1 (make_cifar_c.py ``brightness``). RGB images only."""
    c = _constant("brightness", severity)
    hsv = rgb_to_hsv(_unit(_rgb(images)))
    hsv[:, 2] = (hsv[:, 2] + c).clamp(0.0, 1.0)
    return _to_uint8(hsv_to_rgb(hsv))


def saturate(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """HSV saturation ``S c0 + c1`` clipped to [0, 1] (make_cifar_c.py ``saturate``). RGB images only."""
    scale, shift = _constant("saturate", severity)
    hsv = rgb_to_hsv(_unit(_rgb(images)))
    hsv[:, 1] = (hsv[:, 1] * scale + shift).clamp(0.0, 1.0)
    return _to_uint8(hsv_to_rgb(hsv))


def _rgb(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"brightness and saturate take RGB images (N3HW), got shape {tuple(images.shape)}")
    return images


PIL_PRECISION_BITS = 22  # Pillow's Resample.c: 32 - 8 - 2


def pil_box_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's fixed-point BOX resampling coefficients (``precompute_coeffs`` and
    ``normalize_coeffs_8bpc`` of Resample.c) as an ``out_size x in_size`` float64 matrix of integers."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        # box_filter(t) is 1 on (-0.5, 0.5]: a source pixel belongs to the footprint holding its centre
        taps = [1.0 if -0.5 < (x - center + 0.5) / filterscale <= 0.5 else 0.0 for x in range(xmin, xmax)]
        total = sum(taps)
        for x, w in zip(range(xmin, xmax), taps):
            weights[xx, x] = int(0.5 + (w / total if total else w) * (1 << PIL_PRECISION_BITS))
    return weights


def _pil_resample(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One 8-bit Pillow pass along the last axis: integer sums (exact in float64), rounded, clipped."""
    acc = x @ weights.to(x.device).T + (1 << (PIL_PRECISION_BITS - 1))
    return torch.floor(acc / (1 << PIL_PRECISION_BITS)).clamp(0, 255)


def pil_box_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``PIL.Image.resize((w, h), Image.BOX)`` on uint8 NCHW images, bit-exact: the horizontal pass,
    rounded to uint8, then the vertical pass (a pass is skipped where that size does not change)."""
    validate_images(images)
    h, w = size
    x = images.double()
    if w != x.shape[-1]:
        x = _pil_resample(x, pil_box_weights(x.shape[-1], w))
    if h != x.shape[-2]:
        x = _pil_resample(x.transpose(-1, -2), pil_box_weights(x.shape[-2], h)).transpose(-1, -2)
    return x.to(torch.uint8)


def pixelate(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Pillow BOX resize to ``int(size c)`` and back to the image's size (make_cifar_c.py ``pixelate``)."""
    c = _constant("pixelate", severity)
    validate_images(images)
    h, w = images.shape[-2:]
    small = pil_box_resize(images, (max(int(h * c), 1), max(int(w * c), 1)))
    return pil_box_resize(small, (h, w))


def jpeg_compression(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """JPEG round trip at quality c with libjpeg through torchvision (make_cifar_c.py
    ``jpeg_compression`` uses Pillow, which drives libjpeg the same way). 1 or 3 channels."""
    from torchvision.io import decode_jpeg, encode_jpeg

    quality = _constant("jpeg_compression", severity)
    validate_images(images)
    if len(images) == 0:
        return images.clone()
    cpu = images.cpu()
    decoded = decode_jpeg(encode_jpeg(list(cpu.contiguous().unbind(0)), quality=quality))
    return torch.stack(decoded).to(images.device)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "defocus_blur": defocus_blur,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


def corruption_seed(name: str, severity: int, seed: int = 0) -> int:
    """The generator seed of one (corruption, severity, seed): stable across processes (unlike ``hash``)."""
    return zlib.crc32(f"{int(seed)}/{name}/{severity}".encode())


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (uint8 NCHW) under corruption ``name`` at ``severity`` (1..5), with a generator seeded
    by (name, severity, seed): every model variant evaluated with the same seed sees the same images.
    Large sets are processed in chunks of :data:`CHUNK` images drawn in turn from that generator."""
    choose("corruption", name, CORRUPTIONS)
    _constant(name, severity)
    validate_images(images)
    generator = torch.Generator().manual_seed(corruption_seed(name, severity, seed))
    fn = CORRUPTIONS[name]
    if len(images) <= CHUNK:
        return fn(images, severity, generator)
    return torch.cat([fn(part, severity, generator) for part in images.split(CHUNK)])


def check_choice(names: Iterable[str] | None, severities: Sequence[int]) -> tuple[list[str], list[int]]:
    """The corruptions (None: all) and severities asked for, or a clear error naming the choices."""
    names = list(CORRUPTIONS) if names is None else list(names)
    if not names:
        raise ConfigError(
            f"No corruption names given (metrics.corruptions). Pick some of: {', '.join(CORRUPTIONS)}, or null for all."
        )
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ConfigError(
            f"metrics.corruptions names {unknown}, which are not corruptions stridelab generates. Pick from: "
            f"{', '.join(CORRUPTIONS)}; e.g. metrics.corruptions=[gaussian_noise,contrast], or null for all."
        )
    bad = [k for k in severities if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k not in SEVERITIES]
    if bad:
        raise ConfigError(
            f"metrics.corruption_severities has {bad}: the CIFAR-10-C severities are the integers 1-5 (1 mildest); "
            "e.g. metrics.corruption_severities=[1,3,5]."
        )
    return names, severities
