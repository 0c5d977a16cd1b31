"""What the networks of other libraries (torchvision, timm) need to become stridelab models.

A network is built by name (:func:`check_arch` refuses an unknown one with its close matches),
shaped for the data (:func:`set_cifar_stem`, :func:`set_in_chans`), given local weights
(:func:`load_weights`, ``weights_only=True``) while its parameter names are still the original ones,
then converted to the run's strategy and padding and given stage taps (:func:`finish`).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch
import torch.nn as nn

from stridelab.errors import ConfigError, DataError
from stridelab.models.convert import convert
from stridelab.models.stages import add_stage_taps


def check_arch(arch: str, archs: list[str], library: str, version: str, lister: str) -> None:
    """Refuse an ``arch`` not in ``archs``, naming the close matches and the choices (``lister``: the
    call that prints them, when they are too many to list)."""
    if arch in archs:
        return
    near = difflib.get_close_matches(arch, archs, n=4, cutoff=0.5)
    listing = ", ".join(archs) if len(archs) <= 150 else f"{len(archs)} models ({lister} lists them)"
    raise ConfigError(
        f"model.arch={arch} is not a {library} classification model"
        + (f" (did you mean {' or '.join(near)}?)" if near else "")
        + f". {library} {version} has: {listing}."
    )


def build_checked(build, arch: str, kwargs: dict | None):
    """``build(**kwargs)``, the builder's own keyword arguments (``model.kwargs``: ``width_mult`` of
    MobileNetV2, ``width_per_group`` of ResNet-50, ``drop_rate`` of timm) checked in one paragraph."""
    kwargs = dict(kwargs or {})
    try:
        return build(**kwargs)
    except TypeError as err:
        if not kwargs:
            raise
        raise ConfigError(
            f"model.kwargs={kwargs} does not fit {arch}'s builder ({' '.join(str(err).split())[:200]}). "
            "model.kwargs passes keyword arguments to the library's builder of this arch: give only ones it takes."
        ) from None


def set_cifar_stem(model: nn.Module, arch: str) -> None:
    """The stem of the CIFAR ResNet-18 of the APS and TIPS code: a 3x3 stride-1 conv, no stem max pool."""
    if not (
        isinstance(getattr(model, "conv1", None), nn.Conv2d) and isinstance(getattr(model, "maxpool", None), nn.Module)
    ):
        raise ConfigError(
            f"model.cifar_stem=true is for the ResNet family (a conv1 and a stem max pool); {arch} has no such "
            "stem. Leave cifar_stem=false, or pick a resnet, resnext or wide_resnet."
        )
    model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()


def set_in_chans(model: nn.Module, in_chans: int) -> None:
    """The first conv reads ``in_chans`` channels: a new conv of the same shape otherwise."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_chans:
        return
    if conv.groups != 1:
        raise ConfigError(f"cannot give {name} (a grouped conv) {in_chans} input channels; use 3-channel data.")
    new = nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a local state dict (a Lightning checkpoint's ``state_dict`` too) read with ``weights_only=True``."""
    path = Path(path)
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


def native_padding(mode: str = "native", amount: str = "same") -> None:
    """``padding=native``: no padding spec, so a torchvision or timm network keeps its own padding and
    the filters the converter inserts pad reflect, as Zhang 2019's reference (built-in models: zeros)."""
    if amount != "same":
        raise ConfigError(f"padding=native keeps each layer's own amount of padding; padding.amount={amount} is not.")
    return None


def finish(model: nn.Module, in_chans: int, downsample, padding, stem: str, dense_max: str) -> nn.Module:
    """``model`` converted (:func:`~stridelab.models.convert`) with its stages found
    (:func:`~stridelab.models.stages.add_stage_taps`): a network every metric can measure."""
    converted = convert(
        model, downsample if downsample is not None else "conv", padding, stem=stem, dense_max=dense_max
    )
    tapped = add_stage_taps(converted, in_chans)
    tapped.stridelab_conversion = converted.stridelab_conversion
    return tapped


def library_model(build_net, library: str):
    """The model builder of a library (``model=torchvision``, ``model=timm``): ``build_net`` (``arch,
    num_classes, in_chans, cifar_stem, weights, kwargs`` -> the library's network) then :func:`finish`."""

    def model(
        arch: str,
        num_classes: int = 10,
        in_chans: int = 3,
        downsample=None,
        padding=None,
        cifar_stem: bool = False,
        weights: str | os.PathLike | None = None,
        stem: str = "keep",
        dense_max: str = "2x2",
        kwargs: dict | None = None,
    ) -> nn.Module:
        net = build_net(arch, num_classes, in_chans, cifar_stem, weights, kwargs)
        return finish(net, int(in_chans), downsample, padding, stem, dense_max)

    model.__name__ = model.__qualname__ = f"{library}_model"
    model.__doc__ = (
        f"The {library} network ``arch`` converted to ``downsample`` and ``padding`` (None: the network's own "
        "padding) by :func:`~stridelab.models.convert`, with its stages found (configs/model/"
        f"{library}.yaml)."
    )
    return model
