"""Model registry: every model takes ``num_classes``, ``in_chans``, ``downsample`` and ``padding``."""

from __future__ import annotations

from stridelab.errors import choose
from stridelab.models.allcnn import AllCNN, allcnn_c
from stridelab.models.base import StagedNet
from stridelab.models.geometry import check_geometry, trace
from stridelab.models.redgreen import RedGreenNet
from stridelab.models.resnet import CifarResNet, resnet20
from stridelab.models.simple_cnn import SimpleCNN

MODEL_REGISTRY = {
    "simple_cnn": SimpleCNN,
    "resnet20": resnet20,
    "allcnn_c": allcnn_c,
    "redgreen_net": RedGreenNet,
}


def create_model(name: str, **kwargs) -> StagedNet:
    choose("model", name, MODEL_REGISTRY)
    return MODEL_REGISTRY[name](**kwargs)


__all__ = [
    "MODEL_REGISTRY",
    "create_model",
    "check_geometry",
    "trace",
    "AllCNN",
    "CifarResNet",
    "RedGreenNet",
    "SimpleCNN",
    "StagedNet",
]
