"""Data: CIFAR-10/100 and image folders from disk, generated probe sets, device-resident batching and augmentation.

Exports are loaded lazily, so ``stridelab.data.cifar10`` (numpy only) can be used to check for the
data set before torch and Lightning are imported.
"""

import importlib

_EXPORTS = (
    "DATA_REGISTRY",
    "Cifar10DataModule",
    "Cifar100DataModule",
    "DeviceBatches",
    "DeviceDataModule",
    "ImageFolderDataModule",
    "RedGreenDataModule",
    "Shapes10DataModule",
    "Splits",
)

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:  # e.g. a submodule about to be imported
        raise AttributeError(f"module 'stridelab.data' has no attribute {name!r}")
    module = {"ImageFolderDataModule": "imagefolder", "DeviceBatches": "batches"}.get(name, "datamodule")
    return getattr(importlib.import_module(f"stridelab.data.{module}"), name)
