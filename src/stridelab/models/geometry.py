"""Trace feature-map sizes through a network and refuse geometries that cannot work.

``check_geometry`` runs one zero image through the network on the CPU before training, with hooks
that know which layer is running, so a map that shrinks to nothing or a padding wider than the map
is reported with the layer's name and sizes instead of a bare PyTorch error mid-training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from stridelab.errors import GeometryError
from stridelab.models.stages import stage_modules


@dataclass
class LayerTrace:
    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def trace(model: nn.Module, input_shape: tuple[int, int, int], leaves_only: bool = True) -> list[LayerTrace]:
    """Run a zero batch of one image through ``model`` (eval mode, no grad); list each module's
    input and output shapes. Raises :class:`GeometryError` naming the layer that failed.
    """
    records: list[LayerTrace] = []
    stack: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    handles = []

    def pre(name):
        def hook(mod, args):
            shape = tuple(args[0].shape) if args and torch.is_tensor(args[0]) else ()
            stack.append((name, mod, shape))
            stride = getattr(mod, "stride", 1)
            stride = max(stride) if isinstance(stride, tuple) else int(stride or 1)
            if stride > 1 and len(shape) == 4 and min(shape[2:]) < stride:
                # Zero padding lets a strided conv "halve" a 1x1 map forever; that is no downsampling.
                raise RuntimeError(f"a stride-{stride} layer cannot downsample a map smaller than its stride")

        return hook

    def post(name):
        def hook(mod, args, out):
            _, _, in_shape = stack.pop()
            if not leaves_only or not any(True for _ in mod.children()):
                records.append(LayerTrace(name, mod, in_shape, tuple(out.shape) if torch.is_tensor(out) else ()))

        return hook

    for name, mod in model.named_modules():
        if name:
            handles.append(mod.register_forward_pre_hook(pre(name)))
            handles.append(mod.register_forward_hook(post(name)))
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    except (RuntimeError, ValueError, IndexError) as err:
        if not stack:
            raise
        name, mod, shape = stack[-1]
        size = "x".join(map(str, shape[2:])) if len(shape) >= 4 else str(shape)
        detail = str(err).strip().splitlines()[0]
        raise GeometryError(
            f"This network cannot process {'x'.join(map(str, input_shape))} inputs: layer '{name}' "
            f"({mod.__class__.__name__}: {mod.extra_repr() or '-'}) receives a {size} feature map, "
            f"which is too small for it ({detail}). Use fewer downsampling stages (e.g. model.stages), "
            "a smaller blur filter (downsample.filter_size), padding.amount=same, or larger images."
        ) from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return records


def check_geometry(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Refuse a network/input pair that cannot work; return the last feature map's shape (C, H, W)."""
    records = trace(model, input_shape, leaves_only=False)
    features = next(reversed(stage_modules(model).values()), None)  # the last stage's output
    stages = [r for r in records if r.name == "stages" or (features is not None and r.module is features)]
    last = stages[-1] if stages else records[-1]
    return last.out_shape[1:]
