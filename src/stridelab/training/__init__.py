"""Training: the LightningModule, learning-rate schedules and the per-run results writer.

``Classifier`` is loaded lazily so that ``stridelab.training.results`` can be used without
importing Lightning (the CLI records a run's status before paying for that import).
"""

from stridelab.training.results import RunResults, find_finished, read_metrics

__all__ = ["Classifier", "RunResults", "find_finished", "read_metrics"]


def __getattr__(name):
    if name == "Classifier":
        import importlib

        return importlib.import_module("stridelab.training.module").Classifier
    raise AttributeError(f"module 'stridelab.training' has no attribute {name!r}")
