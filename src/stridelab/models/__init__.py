"""Models: every model takes ``num_classes``, ``in_chans``, ``downsample`` and ``padding`` and registers
itself in :data:`MODEL_REGISTRY` where it is defined."""

from __future__ import annotations

from stridelab.models.allcnn import AllCNN, allcnn_c
from stridelab.models.base import MODEL_REGISTRY, StagedNet
from stridelab.models.convert import Conversion, convert
from stridelab.models.external import native_padding
from stridelab.models.geometry import check_geometry, trace
from stridelab.models.redgreen import RedGreenNet
from stridelab.models.resnet import CifarResNet, resnet20
from stridelab.models.simple_cnn import SimpleCNN
from stridelab.models.stages import add_stage_taps, stage_modules
from stridelab.models.timm_net import timm_model, timm_net
from stridelab.models.torchvision_net import torchvision_model, torchvision_net


def create_model(name: str, **kwargs) -> StagedNet:
    """Build a model by registry name (``simple_cnn``, ``resnet20``, ``allcnn_c``, ``redgreen_net``,
    ``torchvision``, ``timm``)."""
    return MODEL_REGISTRY.get_checked(name)(**kwargs)


__all__ = [
    "MODEL_REGISTRY",
    "create_model",
    "convert",
    "Conversion",
    "add_stage_taps",
    "stage_modules",
    "native_padding",
    "torchvision_model",
    "torchvision_net",
    "timm_model",
    "timm_net",
    "check_geometry",
    "trace",
    "AllCNN",
    "allcnn_c",
    "resnet20",
    "CifarResNet",
    "RedGreenNet",
    "SimpleCNN",
    "StagedNet",
]
