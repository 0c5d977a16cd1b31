"""Aliasing share: how much of a map's power a stride-2 subsampling folds back.

Subsampling a map by 2 in both axes keeps the frequencies of the half-size grid, ``|f| <= 1/4``
cycles per pixel in each axis (its Nyquist frequency); the power at higher frequencies folds onto
them (aliases). At every stride-2 site of a network this module takes the map that is actually
subsampled and measures the fraction of its spectral power outside that band:

    share = sum_{|k_y| > H/4 or |k_x| > W/4} |X[k]|^2 / sum_k |X[k]|^2,   X = fft2(map)

summed over images and channels before the division (a ratio of sums), per site; ``aliasing/mean``
is the unweighted mean over sites. A constant map scores 0 (all its power is at DC), a one-pixel
checkerboard 1 (all its power is at the highest frequency). The band edge ``|k| = H/4`` counts as
kept, as FLC pooling keeps it.

"The map actually subsampled" depends on the layer: a stride-2 conv or pool subsamples its own
stride-1 output (computed with the layer's weights, window and padding at stride 1); a blur pool
its blurred map; APS/LPS/TIPS one of the input's polyphase components (the input itself: no filter
in between); FLC/ASAP and the ideal low-pass filter a band-limited map (share 0 by construction).
stridelab's layers say which through a ``before_subsampling(x)`` method; PyTorch's strided convs
and pools are run at stride 1.

The measure follows the aliasing analyses of the anti-aliasing literature (Zhang 2019, Sec. 2;
Grabinski et al., ECCV 2022, Sec. 3, who measure aliasing as power above the new Nyquist frequency;
Vasconcelos et al., "Impact of Aliasing on Generalization in Deep Convolutional Networks", ICCV
2021). Deviations, said in docs/metrics.md: the DFT treats the map as periodic, so a map whose left
and right (top and bottom) borders differ carries some high-frequency power from that seam alone;
the power includes DC (the share of a map with a large mean is small), as the issue defines it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stridelab.metrics.inference import evaluating

STRIDED_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def alias_band_share(maps: torch.Tensor) -> tuple[float, float]:
    """``(power outside the half-size band, total power)`` of ``maps`` (..., H, W), summed."""
    h, w = maps.shape[-2:]
    power = torch.fft.fft2(maps.float() if maps.dtype != torch.float64 else maps).abs().square().double()
    ky = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64, device=maps.device).abs()
    kx = torch.fft.fftfreq(w, d=1.0 / w, dtype=torch.float64, device=maps.device).abs()
    outside = (ky[:, None] > h / 4) | (kx[None, :] > w / 4)
    return float(power[..., outside].sum()), float(power.sum())


def aliasing_share(maps: torch.Tensor) -> float:
    """The aliasing share of ``maps`` (0 when they hold no power at all)."""
    out, total = alias_band_share(maps)
    return out / total if total > 0 else 0.0


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def subsampling_sites(model: nn.Module) -> dict[str, nn.Module]:
    """The modules that subsample by 2, by qualified name: stridelab's layers that expose
    ``before_subsampling`` and PyTorch's stride-2 convs and pools."""
    sites = {}
    for name, module in model.named_modules():
        if callable(getattr(module, "before_subsampling", None)):
            if 2 in _pair(getattr(module, "stride", 2)):  # a blur pool of stride 1 only filters
                sites[name] = module
        elif isinstance(module, STRIDED_TYPES) and 2 in _pair(module.stride):
            sites[name] = module
    return sites


def full_resolution(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The map ``module`` subsamples, at its input's resolution."""
    if callable(getattr(module, "before_subsampling", None)):
        return module.before_subsampling(x)
    stride = module.stride
    module.stride = (1, 1) if isinstance(module, nn.Conv2d) else 1
    try:
        return module.forward(x)  # forward, not __call__: the hooks (this metric's own) stay out
    finally:
        module.stride = stride


def aliasing_shares(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Per stride-2 site of ``model`` (in evaluation mode), the aliasing share of the map it
    subsamples, over ``images``; empty when the model has no such site."""
    sites = subsampling_sites(model)
    sums = {name: [0.0, 0.0] for name in sites}

    def hook(name):
        def measure(module, args):
            out, total = alias_band_share(full_resolution(module, args[0]))
            sums[name][0] += out
            sums[name][1] += total

        return measure

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in sites.items()]
    try:
        with torch.no_grad(), evaluating(model):
            for i in range(0, len(images), batch_size):
                model(images[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {name: (o / t if t > 0 else 0.0) for name, (o, t) in sums.items()}
