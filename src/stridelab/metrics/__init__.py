"""The measurement suite: shift consistency (circular, crop, the TIPS table's standard/circular pairs,
worst-case and sub-pixel shifts), corruption robustness, aliasing, border artifacts, padding geometry,
position, the position-information probe and cost.

Each metric is a plain function over a model and tensors (usable from a notebook); the suite runs
them all after every training run. Definitions and sources: docs/metrics.md.
"""

from stridelab.metrics.border import BorderDeviation, border_deviation, constant_images, deviation_map
from stridelab.metrics.cost import (
    count_flops,
    device_peak_flops,
    inference_throughput,
    peak_memory_mib,
    training_throughput,
)
from stridelab.metrics.position import accuracy, position_gap
from stridelab.metrics.probe import ProbeLayer, ProbeResult, position_probe
from stridelab.metrics.shift import circular_shift_consistency, crop_consistency, roll_images, stability_curve
from stridelab.metrics.spatial import (
    AuditRow,
    SpatialOp,
    coverage_map,
    coverage_stats,
    padding_audit,
    spatial_ops,
    used_padding,
)
from stridelab.metrics.suite import METRIC_GROUPS, Measurement, MeasurementSuite

__all__ = [
    "AuditRow",
    "BorderDeviation",
    "METRIC_GROUPS",
    "Measurement",
    "MeasurementSuite",
    "ProbeLayer",
    "ProbeResult",
    "SpatialOp",
    "accuracy",
    "border_deviation",
    "circular_shift_consistency",
    "constant_images",
    "count_flops",
    "coverage_map",
    "coverage_stats",
    "crop_consistency",
    "deviation_map",
    "device_peak_flops",
    "inference_throughput",
    "padding_audit",
    "peak_memory_mib",
    "position_gap",
    "position_probe",
    "roll_images",
    "spatial_ops",
    "stability_curve",
    "training_throughput",
    "used_padding",
]
