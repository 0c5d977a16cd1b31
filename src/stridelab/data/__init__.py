"""Data: CIFAR-10 from disk, generated probe sets, device-resident batching and augmentation.

Exports are loaded lazily, so ``stridelab.data.cifar10`` (numpy only) can be used to check for the
data set before torch and Lightning are imported.
"""

import importlib

_EXPORTS = (
    "DATA_REGISTRY",
    "Cifar10DataModule",
    "DeviceBatches",
    "DeviceDataModule",
    "RedGreenDataModule",
    "Shapes10DataModule",
    "Splits",
)

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:  # e.g. a submodule about to be imported
        raise AttributeError(f"module 'stridelab.data' has no attribute {name!r}")
    return getattr(importlib.import_module("stridelab.data.datamodule"), name)
