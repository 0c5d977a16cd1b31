"""Position-information probe (Islam, Jia & Bruce 2020): how much absolute position a linear
read-out recovers from a network's frozen feature maps.

Reference
---------
M. A. Islam, S. Jia, N. D. B. Bruce. "How Much Position Information Do Convolutional Neural Networks
Encode?" ICLR 2020. A frozen encoder's features are read out by a small trained network (PosENet)
into a content-free ground-truth position map, e.g. a horizontal gradient (0 at the left edge, 1 at
the right); how well the prediction matches the map on held-out images, measured by Spearman's rank
correlation (SPC) and the mean absolute error (MAE), is the position information the features
carry. Zero padding is the main source they find.

What is computed here
---------------------
For each probed layer (the output of each stage, ``stridelab.models.stages.stage_modules``; the last
one is the features) with maps ``F`` of C x H x W, every pixel ``p`` of every image is one sample ``x_p`` in R^C. Two
targets live on the map's own grid, at the cell centres:

    t_h(i, j) = j / (W - 1)        (0 at the left column, 1 at the right)
    t_v(i, j) = i / (H - 1)        (0 at the top row, 1 at the bottom)

The images are split deterministically: the first ``n // 2`` fit, the rest are scored. On the fit
half each channel is standardised with that half's mean and standard deviation (``z = (x - mu) /
sd``; channels constant on the fit half are left out) and a ridge regression with an unpenalised
bias is solved in closed form, per target:

    G = sum_p z_p z_p^T    (C x C),       lambda = ridge * tr(G) / C
    w = (G + lambda I)^-1 sum_p z_p (t_p - mean t),     b = mean t,     prediction  y_p = w . z_p + b

(the ridge is relative to the Gram matrix's scale, so one value fits any width and map size). On
each held-out image the prediction map is compared with the target: SPC is the Pearson correlation
of the two maps' ranks (ties averaged; the target has a tie per column or row), MAE the mean
``|y_p - t_p|`` in the target's [0, 1] units (the prediction is not clipped). Both are computed per
test image and then averaged over the test images. An image whose prediction is constant over the
map has no ranks to correlate: its SPC counts as 0. SPC has a ceiling below 1: a prediction that
orders the columns perfectly but is not constant within a column (any real network's) scores
``sqrt(H^2 (W^2 - 1) / (H^2 W^2 - 1))`` for the horizontal gradient (0.970 on 4 x 4, 0.992 on 8 x 8).

Headline figures are those of the features: ``spc = (spc_h + spc_v) / 2`` and ``mae = (mae_h +
mae_v) / 2``. A map axis of length 1 has no position to read: that axis' figures are NaN (a 1 x 1
map: all four and both means); :class:`stridelab.metrics.MeasurementSuite` leaves NaN keys out.

Deviations from the paper
-------------------------
* Read-out: theirs is PosENet, a trained convolutional module (3 x 3 and larger kernels, so it also
  sees neighbouring pixels) on multi-scale features upsampled to a common size; ours is a linear
  read-out of each pixel's C channels plus a bias, fitted in closed form at each layer's own
  resolution. It measures what is *linearly and locally* decodable: less than a trained
  convolutional read-out could find in the same features.
* Targets: the paper also uses Gaussian and horizontal/vertical stripe patterns; we use the two
  gradients only.
* Data: they train on DUT-S and test on PASCAL-S natural images with ImageNet-pretrained encoders;
  here the images are the measured run's own test subset, split in halves.

Cost: every image passes through the network once, in the batches of ``logits_of`` (so the suite
takes the shift metrics' reference logits from the same pass); forward hooks on the stages fit and
score each stage's maps as they are made. Per layer only a C x C Gram matrix and a C x H x W sum are
kept (float64), so memory does not grow with the number of images.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from stridelab.errors import ConfigError
from stridelab.metrics.inference import evaluating, full_precision
from stridelab.models.stages import stage_modules

# Most float64 values one chunk of a batch is converted to at once (32 MiB).
_CHUNK_ELEMENTS = 1 << 22


def position_targets(h: int, w: int, device=None) -> torch.Tensor:
    """(2, h, w) float64: the horizontal gradient (0 left -> 1 right) and the vertical one (0 top ->
    1 bottom) at the cell centres of an h x w grid; an axis of length 1 gives a constant 0."""
    cols = torch.arange(w, dtype=torch.float64, device=device) / max(w - 1, 1)
    rows = torch.arange(h, dtype=torch.float64, device=device) / max(h - 1, 1)
    return torch.stack([cols[None, :].expand(h, w), rows[:, None].expand(h, w)])


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1..n, float64) along the last dimension, ties given the mean of their ranks
    (``scipy.stats.rankdata(method="average")``)."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    rows, n = flat.shape
    if n == 0:
        return torch.zeros(shape, dtype=torch.float64, device=x.device)
    vals, order = flat.sort(dim=1)
    new = torch.ones_like(vals, dtype=torch.bool)
    new[:, 1:] = vals[:, 1:] != vals[:, :-1]
    group = new.long().cumsum(1) - 1 + torch.arange(rows, device=x.device)[:, None] * n  # unique per row
    pos = torch.arange(1, n + 1, dtype=torch.float64, device=x.device).expand(rows, n)
    sums = torch.zeros(rows * n, dtype=torch.float64, device=x.device).index_add_(0, group.reshape(-1), pos.reshape(-1))
    counts = torch.zeros(rows * n, dtype=torch.float64, device=x.device).index_add_(
        0, group.reshape(-1), torch.ones(rows * n, dtype=torch.float64, device=x.device)
    )
    mean_rank = (sums / counts.clamp_min(1))[group]
    ranks = torch.empty_like(mean_rank).scatter_(1, order, mean_rank)
    return ranks.reshape(shape)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last dimension (broadcast); 0 where either side is constant."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    num = (a * b).sum(-1)
    den = (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation along the last dimension, ties averaged; 0 where a side is constant."""
    return pearson(rankdata(a), rankdata(b))


class RidgeAccumulator:
    """Sufficient statistics of a per-pixel linear read-out from maps (B, C, H, W) into targets that
    are the same map for every image (K, H, W): the number of images, the C x C Gram matrix of the
    raw features and their per-pixel sum, all float64. :meth:`solve` standardises and solves."""

    def __init__(self, channels: int, h: int, w: int, device=None) -> None:
        self.images = 0
        self.gram = torch.zeros(channels, channels, dtype=torch.float64, device=device)
        self.sum = torch.zeros(channels, h, w, dtype=torch.float64, device=device)

    def add(self, feats: torch.Tensor) -> None:
        b, c, h, w = feats.shape
        step = max(1, _CHUNK_ELEMENTS // max(c * h * w, 1))
        for i in range(0, b, step):
            f = feats[i : i + step].to(self.gram.device, torch.float64)
            self.sum += f.sum(0)
            flat = f.transpose(0, 1).reshape(c, -1)
            self.gram += flat @ flat.T
        self.images += b

    def solve(self, targets: torch.Tensor, ridge: float) -> "Readout":
        """The ridge read-out for ``targets`` (K, H, W); see the module docstring."""
        c, h, w = self.sum.shape
        t = targets.to(self.gram.device, torch.float64)
        n = self.images * h * w
        mu = self.sum.sum((1, 2)) / n
        second = self.gram.diagonal() / n
        var = second - mu.pow(2)
        # Constant on the fit half (to rounding of the raw sums): no information, left out.
        live = var > 1e-10 * second.clamp_min(torch.finfo(torch.float64).tiny)
        sd = torch.where(live, var.clamp_min(0).sqrt(), torch.ones_like(var))
        t_mean = t.mean((1, 2))  # every image has the same target map
        xty = torch.einsum("chw,khw->ck", self.sum, t)  # sum_p x_p t_p
        cov = self.gram - n * torch.outer(mu, mu)
        gram_z = cov / torch.outer(sd, sd)
        cross_z = (xty - n * torch.outer(mu, t_mean)) / sd[:, None]
        weights = torch.zeros(c, len(t), dtype=torch.float64, device=self.gram.device)
        idx = live.nonzero().flatten()
        if len(idx):
            g = gram_z[idx][:, idx].cpu()
            lam = float(ridge) * float(g.diagonal().sum()) / len(idx)
            sol = torch.linalg.lstsq(
                g + lam * torch.eye(len(idx), dtype=torch.float64), cross_z[idx].cpu(), driver="gelsd"
            ).solution
            weights[idx] = sol.to(weights.device)
        return Readout(mu, sd, weights, t_mean)


@dataclass
class Readout:
    """``y = ((x - mean) / scale) . weights + bias`` per pixel, K outputs."""

    mean: torch.Tensor  # (C,)
    scale: torch.Tensor  # (C,)
    weights: torch.Tensor  # (C, K)
    bias: torch.Tensor  # (K,)

    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K, H, W), float64."""
        f = feats.to(self.weights.device, torch.float64)
        z = (f - self.mean[:, None, None]) / self.scale[:, None, None]
        return torch.einsum("bchw,ck->bkhw", z, self.weights) + self.bias[:, None, None]


def ridge_readout(features: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3) -> Readout:
    """Fit the probe's read-out on maps ``features`` (N, C, H, W) for target maps (K, H, W)."""
    acc = RidgeAccumulator(*features.shape[1:], device=_stat_device(features))
    acc.add(features)
    return acc.solve(targets, ridge)


@dataclass
class ProbeLayer:
    """The probe's figures for one layer's maps (C, H, W); NaN along an axis of length 1."""

    shape: tuple[int, int, int]
    spc_h: float = math.nan
    spc_v: float = math.nan
    mae_h: float = math.nan
    mae_v: float = math.nan

    @property
    def spc(self) -> float:
        return (self.spc_h + self.spc_v) / 2

    @property
    def mae(self) -> float:
        return (self.mae_h + self.mae_v) / 2

    def figures(self) -> dict[str, float]:
        """``spc``, ``mae`` and the four per-axis figures."""
        return {
            "spc": self.spc,
            "mae": self.mae,
            "spc_h": self.spc_h,
            "spc_v": self.spc_v,
            "mae_h": self.mae_h,
            "mae_v": self.mae_v,
        }


@dataclass
class ProbeResult:
    """Per probed stage (forward order, by stage name), and the features' headline figures."""

    layers: "OrderedDict[str, ProbeLayer]" = field(default_factory=OrderedDict)
    features_layer: str = ""
    fit_images: int = 0
    test_images: int = 0
    ridge: float = 0.0
    outputs: torch.Tensor | None = field(default=None, repr=False)  # the model's outputs (keep_outputs)

    @property
    def features(self) -> ProbeLayer:
        return self.layers[self.features_layer]

    @property
    def spc(self) -> float:
        return self.features.spc

    @property
    def mae(self) -> float:
        return self.features.mae


def _stat_device(t: torch.Tensor) -> torch.device:
    return torch.device("cpu") if t.device.type == "mps" else t.device  # MPS has no float64


def _stages(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    stages = stage_modules(model)
    if not stages:
        raise ConfigError(
            f"position_probe reads the outputs of the model's stages, and this {type(model).__name__} "
            "has none: use a stridelab model (stem -> stages -> head), a network of model=torchvision or "
            "model=timm, or stridelab.models.stages.add_stage_taps(network) to find its stages."
        )
    return stages


def position_probe(
    model: nn.Module,
    images: torch.Tensor,
    ridge: float = 1e-3,
    batch_size: int = 500,
    layers: list[str] | tuple[str, ...] | None = None,
    keep_outputs: bool = False,
) -> ProbeResult:
    """Position information in the outputs of ``model.stages`` (see the module docstring).

    ``images`` (N >= 2, model-input units): the first ``N // 2`` fit the read-out, the other
    ``N - N // 2`` are scored; SPC and MAE are per test image, averaged over the test images.
    ``ridge``: lambda relative to the Gram matrix's scale (``lambda = ridge * tr(G) / C``).
    ``layers``: names of the stages to probe (default: all); the last stage (the features) is always
    probed. The model runs in eval mode, without gradients, in float32 with TF32 off (or float64 for
    float64 images); each image goes through it once, in batches of ``batch_size`` from the first.
    ``keep_outputs``: also return the model's outputs for ``images`` (``result.outputs``), equal to
    :func:`stridelab.metrics.inference.logits_of` with the same batch size, so a caller that needs them
    anyway (the suite: the shift metrics' reference logits) saves a forward pass.
    """
    n = len(images)
    if n < 2:
        raise ConfigError(
            f"position_probe needs at least 2 images (half fit the read-out, half score it); got "
            f"{n}. Give it more images (metrics.subset_size >= 2)."
        )
    if float(ridge) < 0 or not math.isfinite(float(ridge)):
        raise ConfigError(
            f"The probe's ridge must be a finite number >= 0 (got {ridge}); metrics.probe_ridge=1e-3 is the default."
        )
    if int(batch_size) < 1:
        raise ConfigError(f"position_probe's batch_size must be >= 1 (got {batch_size}).")
    stages = _stages(model)
    last = next(reversed(stages))
    wanted = list(stages) if layers is None else list(layers)
    for name in wanted:
        if name not in stages:
            raise ConfigError(
                f"Unknown stage {name!r} for position_probe(layers=...). The model's stages are: {', '.join(stages)}."
            )
    wanted = [s for s in stages if s in wanted or s == last]  # forward order, features included

    n_fit = n // 2
    accs: dict[str, RidgeAccumulator | None] = {}
    readouts: dict[str, Readout] = {}
    targets: dict[str, torch.Tensor] = {}
    target_ranks: dict[str, torch.Tensor] = {}
    totals: dict[str, torch.Tensor] = {}  # per layer: sums over test images of (spc_h, spc_v, mae_h, mae_v)
    result = ProbeResult(features_layer=last, fit_images=n_fit, test_images=n - n_fit, ridge=float(ridge))
    batch = {"fit_rows": 0, "scores": False, "seen": set()}

    def consume(s: str, f) -> None:
        """One stage's maps of the current batch, read in its forward hook (before later layers run)."""
        if not isinstance(f, torch.Tensor) or f.dim() != 4:
            raise ConfigError(
                f"position_probe: stage {s!r} did not return one (N, C, H, W) feature map (got "
                f"{type(f).__name__}); the probe reads 4-d stage outputs only."
            )
        batch["seen"].add(s)
        f = f.detach()
        if s not in accs:
            c, h, w = f.shape[1:]
            result.layers[s] = ProbeLayer((c, h, w))
            accs[s] = RidgeAccumulator(c, h, w, _stat_device(f)) if h * w > 1 else None
        acc = accs[s]
        if acc is None:
            return
        rows = batch["fit_rows"]
        if rows:
            acc.add(f[:rows])
        if not batch["scores"]:
            return
        if s not in readouts:  # every fit row is in
            targets[s] = position_targets(*result.layers[s].shape[1:], device=acc.gram.device)
            readouts[s] = acc.solve(targets[s], ridge)
            target_ranks[s] = rankdata(targets[s].flatten(1))
            totals[s] = torch.zeros(4, dtype=torch.float64, device=acc.gram.device)
        pred = readouts[s].predict(f[rows:]).flatten(2)  # (B, 2, HW)
        spc = pearson(rankdata(pred), target_ranks[s])  # (B, 2)
        mae = (pred - targets[s].flatten(1)).abs().mean(2)
        totals[s] += torch.cat([spc.sum(0), mae.sum(0)])

    handles = [stages[s].register_forward_hook(lambda m, a, out, s=s: consume(s, out)) for s in wanted]
    outputs = []
    out_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32  # as logits_of
    try:
        with evaluating(model), torch.no_grad(), full_precision():
            # The batches of logits_of. The fit rows come first, so the read-out is solved inside the
            # batch that holds the last of them, before that batch's test rows are scored.
            for i in range(0, n, batch_size):
                j = min(i + batch_size, n)
                batch.update(fit_rows=max(0, min(j, n_fit) - i), scores=j > n_fit, seen=set())
                out = model(images[i:j])
                missing = [s for s in wanted if s not in batch["seen"]]
                if missing:
                    raise ConfigError(
                        f"position_probe: the forward pass did not run stage(s) {', '.join(missing)} "
                        "of model.stages; the probe reads the outputs of stages the model runs."
                    )
                if keep_outputs:
                    outputs.append(out.to(out_dtype))
    finally:
        for hd in handles:
            hd.remove()
    if keep_outputs:
        result.outputs = torch.cat(outputs)
    for s, tot in totals.items():
        layer = result.layers[s]
        vals = (tot / (n - n_fit)).tolist()
        for k, (axis_len, key) in enumerate(((layer.shape[2], "h"), (layer.shape[1], "v"))):
            if axis_len > 1:
                setattr(layer, f"spc_{key}", vals[k])
                setattr(layer, f"mae_{key}", vals[2 + k])
    return result
