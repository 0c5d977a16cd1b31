"""Any torchvision classification CNN as a stridelab model: ``model=torchvision model.arch=resnet18``.

:func:`torchvision_net` builds ``arch`` (any classification model torchvision lists: resnet*, resnext*,
wide_resnet*, vgg*, densenet*, mobilenet_v2/v3, efficientnet*, regnet*, convnext*) with ``num_classes``
outputs, never downloading weights; adapts its first conv to ``in_chans``; with ``cifar_stem`` gives a
ResNet-family network the stem of the CIFAR ResNet-18 of the APS and TIPS code (a 3x3 stride-1 conv, no
stem max pool) for 32 px images; and loads a local state dict (``weights``, read with
``weights_only=True``) before any conversion, so the parameter names are the original ones.
:func:`torchvision_model` (the config's target) then converts it to the run's downsampling and padding.
"""

from __future__ import annotations

import os

import torch.nn as nn

from stridelab.models.base import MODEL_REGISTRY
from stridelab.models.external import (
    build_checked,
    check_arch,
    library_model,
    load_weights,
    set_cifar_stem,
    set_in_chans,
)


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
    kwargs: dict | None = None,
) -> nn.Module:
    """The torchvision network ``arch``, randomly initialised (or from ``weights``), shaped for the data."""
    import torchvision

    check_arch(arch, torchvision_archs(), "torchvision", torchvision.__version__, "torchvision.models.list_models()")
    model = build_checked(
        lambda **kw: torchvision.models.get_model(arch, weights=None, num_classes=int(num_classes), **kw), arch, kwargs
    )
    if cifar_stem:
        set_cifar_stem(model, arch)
    set_in_chans(model, int(in_chans))
    if weights is not None:
        load_weights(model, weights)
    return model


# model=torchvision: the config's target
torchvision_model = MODEL_REGISTRY.register("torchvision")(library_model(torchvision_net, "torchvision"))
