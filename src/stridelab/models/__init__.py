"""Models: every model takes ``num_classes``, ``in_chans``, ``downsample`` and ``padding`` and registers
itself in :data:`MODEL_REGISTRY` where it is defined."""

from __future__ import annotations

from stridelab.models.allcnn import AllCNN, allcnn_c
from stridelab.models.base import MODEL_REGISTRY, StagedNet
from stridelab.models.convert import Conversion, convert
from stridelab.models.geometry import check_geometry, trace
from stridelab.models.redgreen import RedGreenNet
from stridelab.models.resnet import CifarResNet, resnet20
from stridelab.models.simple_cnn import SimpleCNN


def create_model(name: str, **kwargs) -> StagedNet:
    """Build a model by registry name (``simple_cnn``, ``resnet20``, ``allcnn_c``, ``redgreen_net``)."""
    return MODEL_REGISTRY.get_checked(name)(**kwargs)


__all__ = [
    "MODEL_REGISTRY",
    "create_model",
    "convert",
    "Conversion",
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
