"""Data: CIFAR-10 from disk, generated probe sets, device-resident batching and augmentation.

Exports are loaded lazily, so ``stridelab.data.cifar10`` (numpy only) can be used to check for the
data set before torch and Lightning are imported.
"""

_EXPORTS = ("Cifar10DataModule", "DeviceBatches", "DeviceDataModule", "RedGreenDataModule",
            "Shapes10DataModule", "Splits")

__all__ = ["DATA_REGISTRY", *_EXPORTS]


def __getattr__(name):
    import importlib

    datamodule = importlib.import_module("stridelab.data.datamodule")

    if name == "DATA_REGISTRY":
        return {m.name: m for m in (datamodule.Cifar10DataModule, datamodule.Shapes10DataModule,
                                    datamodule.RedGreenDataModule)}
    if name in _EXPORTS:
        return getattr(datamodule, name)
    raise AttributeError(f"module 'stridelab.data' has no attribute {name!r}")
