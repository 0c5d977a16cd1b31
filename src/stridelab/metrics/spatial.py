"""Analytic geometry metrics, no data needed: the uneven-padding audit and input coverage.

Both start from :func:`spatial_ops`, the network's windowed operations (convolutions, pools, blurs,
each with the padding that precedes it) recorded in forward order with their true input sizes.

References
----------
* Uneven padding: with stride ``s`` the last window may stop short of the right/bottom padding, so a
  3x3/s2/p1 layer on 32 px reads 1 padded pixel on the left and none on the right. Alsallakh et al.
  2021 ("Mind the Pad", ICLR 2021, Sec. 4) trace such asymmetries through ResNets and Inception.
* Coverage: A. Odena, V. Dumoulin, C. Olah. "Deconvolution and Checkerboard Artifacts." Distill, 2016:
  a kernel size not divisible by the stride covers input pixels unevenly (checkerboard); the
  transposed pass of ones counts, per input pixel, the paths that reach the output. The drop toward
  the border ("foveation") is discussed by Alsallakh et al. 2021, Sec. 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from stridelab.layers import BlurPool2d, Pad2d
from stridelab.layers.padding import F_PAD_MODE
from stridelab.layers.partial import PartialConv2d
from stridelab.layers.polyphase import ComponentScorer, PolyphaseSelect, TiedPolyphase

# Modules whose insides are not steps of the network's data path (a blur's own pad, LPS's scorer).
OPAQUE_LAYERS = (BlurPool2d, ComponentScorer)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


@dataclass
class SpatialOp:
    """One windowed operation. ``pad`` is ``(left, right, top, bottom)`` including a preceding
    :class:`Pad2d`; ``in_shape``/``out_shape`` are (C, H, W) of the unpadded input and the output."""

    name: str
    kind: str  # conv | maxpool | avgpool | blur | polyphase
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]
    pad_mode: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]


def _describe(mod: nn.Module, in_hw: tuple[int, int]):
    """(kind, kernel, stride, dilation, padding (left, right, top, bottom), padding mode) of a windowed
    module with an input of ``in_hw`` (H, W), or None.

    A polyphase selection (APS/LPS) is described by the 2x2 window it chooses from: which of its pixels
    is kept depends on the input, each can be."""
    if isinstance(mod, BlurPool2d):
        k = mod.filter_size
        return "blur", (k, k), _pair(mod.stride), (1, 1), mod.pad.padding, mod.pad.mode
    if isinstance(mod, (PolyphaseSelect, TiedPolyphase)):
        h, w = in_hw
        return "polyphase", (2, 2), (2, 2), (1, 1), (0, w % 2, 0, h % 2), mod.pad_mode
    if isinstance(mod, PartialConv2d):
        return "conv", _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.dilation), mod.pad, "partial"
    if isinstance(mod, nn.Conv2d):
        if isinstance(mod.padding, str):  # 'same'/'valid': PyTorch pads stride-1 convs only
            pad = (
                (0, 0)
                if mod.padding == "valid"
                else tuple((d * (k - 1)) // 2 for d, k in zip(mod.dilation, mod.kernel_size))
            )
        else:
            pad = _pair(mod.padding)
        return (
            "conv",
            _pair(mod.kernel_size),
            _pair(mod.stride),
            _pair(mod.dilation),
            (pad[1], pad[1], pad[0], pad[0]),
            mod.padding_mode,
        )
    if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "maxpool" if isinstance(mod, nn.MaxPool2d) else "avgpool"
        dil = _pair(getattr(mod, "dilation", 1))
        ph, pw = _pair(mod.padding)
        partial = kind == "avgpool" and any((ph, pw)) and not mod.count_include_pad
        return (
            kind,
            _pair(mod.kernel_size),
            _pair(mod.stride or mod.kernel_size),
            dil,
            (pw, pw, ph, ph),
            ("partial" if partial else "zeros"),
        )
    return None


def spatial_ops(model: nn.Module, input_shape: tuple[int, int, int]) -> list[SpatialOp]:
    """Windowed operations of ``model`` in forward order for one (C, H, W) input (eval mode, zeros)."""
    inner = {id(m) for mod in model.modules() if isinstance(mod, OPAQUE_LAYERS) for m in mod.modules() if m is not mod}
    ops: list[SpatialOp] = []
    pending: dict = {}
    handles = []

    def on_pad(mod, args, out):
        pending.update(
            out_shape=tuple(out.shape[1:]), in_shape=tuple(args[0].shape[1:]), pad=mod.padding, mode=mod.mode
        )

    def on_op(name):
        def hook(mod, args, out):
            x_shape = tuple(args[0].shape[1:])
            kind, k, s, d, pad, mode = _describe(mod, x_shape[1:])
            in_shape = x_shape
            if pending and pending["out_shape"] == x_shape and kind != "blur":
                pad = tuple(p + q for p, q in zip(pending["pad"], pad))
                in_shape, mode = pending["in_shape"], pending["mode"] if any(pending["pad"]) else mode
            pending.clear()
            ops.append(SpatialOp(name, kind, k, s, d, tuple(int(p) for p in pad), mode, in_shape, tuple(out.shape[1:])))

        return hook

    for name, mod in model.named_modules():
        if id(mod) in inner:
            continue
        if isinstance(mod, Pad2d):
            handles.append(mod.register_forward_hook(on_pad))
        elif _describe(mod, (0, 0)) is not None:
            handles.append(mod.register_forward_hook(on_op(name)))
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return ops


# -- uneven padding ------------------------------------------------------------------------------
def used_padding(
    n: int, kernel: int, stride: int, before: int, after: int, dilation: int = 1, out: int | None = None
) -> tuple[int, int, int]:
    """Along one axis: how many padded pixels the windows actually read before and after the input,
    and how many input pixels no window reads (``dropped``). ``out`` defaults to PyTorch's
    ``floor((n + before + after - d(k-1) - 1) / s) + 1``."""
    span = dilation * (kernel - 1) + 1
    if out is None:
        out = (n + before + after - span) // stride + 1
    read = torch.zeros(n + before + after, dtype=torch.bool)
    for o in range(max(out, 0)):
        start = o * stride
        read[start : start + span : dilation] = True
    used_before = int(read[:before].sum())
    used_after = int(read[before + n :].sum())
    dropped = int((~read[before : before + n]).sum())
    return used_before, used_after, dropped


@dataclass
class AuditRow:
    name: str
    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    size_in: tuple[int, int]
    size_out: tuple[int, int]
    declared: tuple[int, int, int, int]  # left, right, top, bottom
    used: tuple[int, int, int, int]
    dropped: tuple[int, int]  # input columns, rows that no window reads

    @property
    def uneven(self) -> bool:
        return self.used[0] != self.used[1] or self.used[2] != self.used[3]


def padding_audit(model: nn.Module, input_shape: tuple[int, int, int]) -> list[AuditRow]:
    """For every strided windowed layer: the padding it declares and the padding its windows read
    on the left/right and top/bottom at the true input size (see :func:`used_padding`)."""
    rows = []
    for op in spatial_ops(model, input_shape):
        if max(op.stride) < 2:
            continue  # stride 1 reads every padded pixel it declares
        (_, h, w), (_, oh, ow) = op.in_shape, op.out_shape
        left, right, top, bottom = op.pad
        ul, ur, dw = used_padding(w, op.kernel[1], op.stride[1], left, right, op.dilation[1], ow)
        ut, ub, dh = used_padding(h, op.kernel[0], op.stride[0], top, bottom, op.dilation[0], oh)
        rows.append(
            AuditRow(op.name, op.kind, op.kernel, op.stride, (h, w), (oh, ow), op.pad, (ul, ur, ut, ub), (dw, dh))
        )
    return rows


def audit_markdown(rows: list[AuditRow]) -> str:
    """The audit as a Markdown table (for TensorBoard's text tab and ``padding_audit.md``)."""
    lines = [
        "| layer | op | kernel/stride | in -> out | declared L/R, T/B | used L/R, T/B | dropped cols/rows | uneven |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.kind} | {r.kernel[0]}x{r.kernel[1]}/s{r.stride[0]} | "
            f"{r.size_in[0]}x{r.size_in[1]} -> {r.size_out[0]}x{r.size_out[1]} | "
            f"{r.declared[0]}/{r.declared[1]}, {r.declared[2]}/{r.declared[3]} | "
            f"{r.used[0]}/{r.used[1]}, {r.used[2]}/{r.used[3]} | {r.dropped[0]}/{r.dropped[1]} | "
            f"{'**yes**' if r.uneven else 'no'} |"
        )
    return "\n".join(lines) + "\n"


# -- coverage ------------------------------------------------------------------------------------
def main_path(ops: list[SpatialOp], input_shape: tuple[int, int, int]) -> list[SpatialOp]:
    """The chain from the input to the features: each op whose input is the previous op's output.

    Residual shortcuts read a block's input, not the previous op's output, so they drop out.
    """
    chain, current = [], tuple(input_shape)
    for op in ops:
        if op.in_shape == current:
            chain.append(op)
            current = op.out_shape
    return chain


def coverage_map(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
    """How often each input pixel is read through the network's main path: the transposed pass of a
    ones image through every windowed layer with all-ones kernels (padding as the layer pads; padded
    pixels that copy input pixels, as reflect/replicate/circular do, count for them).

    Returns the (H, W) map (float64) and the main path's total stride.
    """
    chain = main_path(spatial_ops(model, input_shape), input_shape)
    x = torch.ones((1, 1, *input_shape[1:]), dtype=torch.float64, requires_grad=True)
    y, total_stride = x, 1
    for op in chain:
        if any(op.pad):
            mode = F_PAD_MODE[op.pad_mode]
            y = F.pad(y, op.pad, mode=mode) if mode != "constant" else F.pad(y, op.pad)
        ones = torch.ones((1, 1, *op.kernel), dtype=torch.float64)
        y = F.conv2d(y, ones, stride=op.stride, dilation=op.dilation)
        total_stride *= op.stride[0]
    y.sum().backward()
    return x.grad[0, 0].detach(), total_stride


def coverage_stats(cov: torch.Tensor, total_stride: int) -> dict[str, float]:
    """``interior_ratio``: max / min of the coverage over the central half of the image (the
    checkerboard; 1 means even). ``border_ratio``: the mean over the outer band, one total stride
    wide, divided by the mean over the central half (< 1: the border is seen less, "foveation")."""
    h, w = cov.shape
    centre = cov[h // 4 : h - h // 4, w // 4 : w - w // 4]
    bw = max(1, min(total_stride, h // 4, w // 4))
    mask = torch.zeros_like(cov, dtype=torch.bool)
    mask[:bw], mask[-bw:], mask[:, :bw], mask[:, -bw:] = True, True, True, True
    lo, hi = float(centre.min()), float(centre.max())
    interior = hi / lo if lo > 0 else float("inf")
    centre_mean = float(centre.mean())
    border = float(cov[mask].mean()) / centre_mean if centre_mean > 0 else float("nan")
    return {"interior_ratio": interior, "border_ratio": border}
