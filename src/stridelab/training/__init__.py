"""Training: the LightningModule, learning-rate schedules and the per-run results writer."""

from stridelab.training.module import Classifier
from stridelab.training.results import RunResults, atomic_write_text, read_metrics

__all__ = ["Classifier", "RunResults", "atomic_write_text", "read_metrics"]
