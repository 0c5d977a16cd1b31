"""Border deviation on constant input (Alsallakh et al. 2021, "Mind the Pad").

Reference
---------
B. Alsallakh, N. Kokhlikyan, V. Miglani, J. Yuan, O. Reblitz-Richardson. "Mind the Pad -- CNNs Can
Develop Blind Spots." ICLR 2021, Sec. 2-3: a constant input (there: the mean image / a zero image)
should give constant feature maps; what a layer shows at the border instead is the padding's
artifact. The paper inspects the maps visually; the figure here quantifies the same effect:

    dev(F) = sqrt( mean_{c, p in band} (F[c, p] - med_c)^2 ) / sqrt( mean_{c, p} F[c, p]^2 )

with ``med_c`` the median of channel ``c`` over the interior (positions at least ``b`` from every
edge; the whole map when it has no interior), ``band`` the positions closer than ``b`` to an edge,
and ``dev = 0`` for a map that is identically zero. It is averaged over three constant images: the
data's mean colour and its per-channel minimum and maximum (in model-input units).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from stridelab.layers import BlurPool2d
from stridelab.layers.polyphase import PolyphaseSelect, TiedPolyphase
from stridelab.metrics.inference import autocast, evaluating
from stridelab.metrics.spatial import OPAQUE_LAYERS
from stridelab.models.stages import stage_modules

# Where a map is recorded: each convolution, each pooling/blur/polyphase layer, and the features
# before the head.
PROBED_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, BlurPool2d, PolyphaseSelect, TiedPolyphase)


def constant_images(images: torch.Tensor) -> torch.Tensor:
    """Three constant images shaped like ``images[0]``: the per-channel mean, minimum and maximum."""
    dims = (0, 2, 3)
    colors = torch.stack([images.mean(dims), images.amin(dims), images.amax(dims)])
    return colors[:, :, None, None].expand(-1, -1, *images.shape[2:]).contiguous()


def band_mask(h: int, w: int, band: int, device=None) -> torch.Tensor:
    """True on positions closer than ``band`` to an edge."""
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    near_r = (rows < band) | (rows >= h - band)
    near_c = (cols < band) | (cols >= w - band)
    return near_r[:, None] | near_c[None, :]


def deviation_map(fmap: torch.Tensor, band: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For maps (K, C, H, W): per-map deviation (K,) and per-position deviation (K, H, W), both
    divided by the map's RMS (see the module docstring)."""
    f = fmap.detach().double()
    k, c, h, w = f.shape
    border = band_mask(h, w, band, f.device)
    interior = ~border
    if not interior.any():
        interior, border = border, torch.ones_like(border)  # no interior: compare to the whole map
    med = f[:, :, interior].median(dim=2).values[:, :, None, None]
    sq = (f - med) ** 2
    rms = f.pow(2).mean(dim=(1, 2, 3)).sqrt()
    num = sq[:, :, border].mean(dim=(1, 2)).sqrt()
    safe = rms.clamp_min(torch.finfo(rms.dtype).tiny)
    per_map = torch.where(rms > 0, num / safe, torch.zeros_like(num))
    per_pos = torch.where(rms[:, None, None] > 0, sq.mean(1).sqrt() / safe[:, None, None], torch.zeros_like(sq[:, 0]))
    return per_map, per_pos


@dataclass
class BorderDeviation:
    """Per layer (in forward order), the mean over layers, the features' value and heat map."""

    per_layer: "OrderedDict[str, float]" = field(default_factory=OrderedDict)
    features: float = 0.0
    heatmap: torch.Tensor | None = None  # (H, W) of the features, mean over the constant images

    @property
    def mean(self) -> float:
        return sum(self.per_layer.values()) / max(len(self.per_layer), 1)

    @property
    def max(self) -> float:
        return max(self.per_layer.values(), default=0.0)


def border_deviation(
    model: nn.Module, constants: torch.Tensor, band: int = 1, amp_dtype: torch.dtype | None = None
) -> BorderDeviation:
    """Border deviation of every probed layer's map (:data:`PROBED_LAYERS`) for constant input
    images ``constants`` (K, C, H, W) (see :func:`constant_images`), averaged over the K images.

    The features are the input of ``model.head`` for stridelab models, the last stage's output for
    converted networks (:func:`~stridelab.models.stages.stage_modules`), else the last probed map.
    """
    maps: OrderedDict[str, torch.Tensor] = OrderedDict()
    handles = []
    # A layer inside a BlurPool2d (or LPS's scorer) is part of it, not a map of the network's own.
    inner = {id(m) for mod in model.modules() if isinstance(mod, OPAQUE_LAYERS) for m in mod.modules() if m is not mod}
    for name, mod in model.named_modules():
        if isinstance(mod, PROBED_LAYERS) and id(mod) not in inner:
            handles.append(
                mod.register_forward_hook(
                    lambda m, a, out, name=name: maps.__setitem__(name, out.detach()) if out.dim() == 4 else None
                )
            )
    head, stages = getattr(model, "head", None), stage_modules(model)
    if isinstance(head, nn.Module):
        handles.append(head.register_forward_pre_hook(lambda m, a: maps.__setitem__("features", a[0].detach())))
    elif stages:
        last = next(reversed(stages.values()))
        handles.append(last.register_forward_hook(lambda m, a, out: maps.__setitem__("features", out.detach())))
    try:
        with evaluating(model), torch.no_grad(), autocast(constants.device, amp_dtype):
            model(constants)
    finally:
        for h in handles:
            h.remove()
    result = BorderDeviation()
    if "features" not in maps and maps:
        maps["features"] = next(reversed(maps.values()))
    for name, fmap in maps.items():
        per_map, per_pos = deviation_map(fmap, band)
        if name == "features":
            result.features = float(per_map.mean())
            result.heatmap = per_pos.mean(0).float().cpu()
        else:
            result.per_layer[name] = float(per_map.mean())
    return result
