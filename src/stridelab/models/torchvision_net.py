"""A torchvision classification CNN by name, shaped for the data, ready for :func:`~stridelab.models.convert`.

:func:`torchvision_net` builds ``arch`` (any classification model torchvision lists: resnet*, resnext*,
wide_resnet*, vgg*, densenet*, mobilenet_v2/v3, efficientnet*, regnet*, convnext*) with ``num_classes``
outputs, never downloading weights; adapts its first conv to ``in_chans``; with ``cifar_stem`` gives a
ResNet-family network the stem of the CIFAR ResNet-18 of the APS and TIPS code (a 3x3 stride-1 conv, no
stem max pool) for 32 px images; and loads a local state dict (``weights``, read with
``weights_only=True``) before any conversion, so the parameter names are the original ones.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch
import torch.nn as nn

from stridelab.errors import ConfigError, DataError


def torchvision_archs() -> list[str]:
    """The classification models of the installed torchvision."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_net(
    arch: str,
    num_classes: int = 10,
    in_chans: int = 3,
    cifar_stem: bool = False,
    weights: str | os.PathLike | None = None,
) -> nn.Module:
    """The torchvision network ``arch``, randomly initialised (or from ``weights``), shaped for the data."""
    import torchvision

    archs = torchvision_archs()
    if arch not in archs:
        near = difflib.get_close_matches(arch, archs, n=4, cutoff=0.5)
        raise ConfigError(
            f"model.arch={arch} is not a torchvision classification model"
            + (f" (did you mean {' or '.join(near)}?)" if near else "")
            + f". torchvision {torchvision.__version__} has: {', '.join(archs)}."
        )
    model = torchvision.models.get_model(arch, weights=None, num_classes=int(num_classes))
    if cifar_stem:
        if not (isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")):
            raise ConfigError(
                f"model.cifar_stem=true is for the ResNet family (a conv1 and a stem max pool); {arch} has no such "
                "stem. Leave cifar_stem=false, or pick a resnet, resnext or wide_resnet."
            )
        model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    if int(in_chans) != 3:
        _set_in_chans(model, int(in_chans))
    if weights is not None:
        _load_weights(model, Path(weights))
    return model


def _set_in_chans(model: nn.Module, in_chans: int) -> None:
    """The first conv reads ``in_chans`` channels: a new conv of the same shape otherwise."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.groups != 1:
        raise ConfigError(f"cannot give {name} (a grouped conv) {in_chans} input channels; use 3-channel data.")
    new = nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _load_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise DataError(f"model.weights={path}: no such file. Give the path of a state dict saved with torch.save.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(
            f"model.weights={path} cannot be read as plain tensors (torch.load(weights_only=True): "
            f"{str(err).splitlines()[0][:200]}). It must be a state dict; a pickle that would run code is refused."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a Lightning checkpoint's
    try:
        model.load_state_dict(state)
    except Exception as err:
        raise DataError(
            f"model.weights={path} does not fit this network ({str(err).splitlines()[0][:300]}). Was it saved "
            "from the same arch, num_classes, in_chans and cifar_stem?"
        ) from None
