"""Any timm CNN as a stridelab model: ``model=timm model.arch=resnet18``.

Built with ``timm.create_model(arch, pretrained=False)`` (never the hub: local weights go through
``model.weights``, read with ``weights_only=True``), shaped for the data (timm sets ``num_classes`` and
``in_chans`` itself; ``cifar_stem`` as for torchvision ResNets), then converted to the run's
downsampling and padding by :func:`~stridelab.models.convert`, with its stages found.
"""

from __future__ import annotations

import os

import torch.nn as nn

from stridelab.models.base import MODEL_REGISTRY
from stridelab.models.external import build_checked, check_arch, library_model, load_weights, set_cifar_stem


def timm_archs() -> list[str]:
    """The models of the installed timm."""
    import timm

    return sorted(timm.list_models())


def timm_net(
    arch: str,
    num_classes: int = 10,
    in_chans: int = 3,
    cifar_stem: bool = False,
    weights: str | os.PathLike | None = None,
    kwargs: dict | None = None,
) -> nn.Module:
    """The timm network ``arch``, randomly initialised (or from ``weights``), shaped for the data."""
    import timm

    check_arch(arch, timm_archs(), "timm", timm.__version__, "timm.list_models('resnet*')")
    model = build_checked(
        lambda **kw: timm.create_model(
            arch, pretrained=False, num_classes=int(num_classes), in_chans=int(in_chans), **kw
        ),
        arch,
        kwargs,
    )
    if cifar_stem:
        set_cifar_stem(model, arch)
    if weights is not None:
        load_weights(model, weights)
    return model


# model=timm: the config's target
timm_model = MODEL_REGISTRY.register("timm")(library_model(timm_net, "timm"))
