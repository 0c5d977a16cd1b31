"""The measurement suite: every metric of :mod:`stridelab.metrics`, run the same way on every variant.

``MeasurementSuite.measure`` runs after ``trainer.test`` in every training run (and on a saved model
with ``python -m stridelab.evaluate``). Metrics that read images use a fixed, seeded subset of the
first test set (``subset_size`` images, ``subset_seed``), the same for every variant and seed.
Names of the figures it returns are listed in docs/metrics.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from stridelab.errors import ConfigError, choose
from stridelab.metrics import (
    aliasing,
    border,
    corruption,
    cost,
    position,
    probe,
    robustness,
    shift,
    shift_protocols,
    spatial,
)
from stridelab.metrics.inference import autocast_dtype, full_precision, inference_copy, logits_of
from stridelab.metrics.measurement import Measurement
from stridelab.models.stages import stage_modules
from stridelab.training.timing import ThroughputWindow

METRIC_GROUPS = (
    "shift",
    "crop",
    "pairshift",
    "worstshift",
    "subpixel",
    "corruption",
    "border",
    "audit",
    "coverage",
    "position",
    "probe",
    "aliasing",
    "cost",
)
# Groups that run on the first ``robust_images`` subset images only (tens of passes each).
ROBUST_GROUPS = ("worstshift", "subpixel", "corruption")
# Key prefixes the suite writes (a new measurement replaces all of them).
SUITE_PREFIXES = (*METRIC_GROUPS, "metrics")

# The headline figures, with the short names tables use: first in summary.md (a study's summary.csv
# has every numeric metric) and the first columns of TensorBoard's HPARAMS tab.
HEADLINE = (
    ("test/acc", "test acc"),
    ("shift/circular_consistency", "circular consistency"),
    ("shift/circular_logit_change", "logit change"),
    ("crop/consistency", "crop consistency"),
    ("pairshift/standard_consistency", "S-cons"),
    ("worstshift/circular_acc", "worst-shift acc"),
    ("corruption/mean_acc", "corruption acc"),
    ("aliasing/mean", "aliasing share"),
    ("border/deviation", "border deviation"),
    ("coverage/interior_ratio", "coverage ratio"),
    ("position/gap", "position gap"),
    ("position/dissimilar_acc", "dissimilar acc"),
    ("probe/spc", "position SPC"),
    ("cost/train_images_per_s", "train img/s"),
    ("cost/flops_per_image", "FLOPs/img"),
)
# Which way a headline figure is better (+1 higher, -1 lower), for a study's verdicts. Position SPC
# has no better direction (how much position the features carry is what it measures); FLOPs and
# coverage are fixed by the architecture.
BETTER = {
    "test/acc": 1,
    "shift/circular_consistency": 1,
    "shift/circular_logit_change": -1,
    "crop/consistency": 1,
    "pairshift/standard_consistency": 1,
    "worstshift/circular_acc": 1,
    "corruption/mean_acc": 1,
    "aliasing/mean": -1,
    "border/deviation": -1,
    "position/gap": -1,
    "position/dissimilar_acc": 1,
    "cost/train_images_per_s": 1,
}


@dataclass
class MeasurementSuite:
    """Knobs of the suite (``metrics:`` in the config). ``skip``: groups of :data:`METRIC_GROUPS` not to run."""

    subset_size: int | None = 1000
    subset_seed: int = 0
    batch_size: int = 500
    max_shift: int = 3
    crop_padding: int = 4
    crop_fill: str = "mean"
    border_band: int = 1
    warmup_steps: int = 5
    timing_seconds: float = 0.5
    inference_batch: int = 256
    probe_ridge: float = 1e-3
    pair_shift: tuple[int, int] = (-3, 2)
    robust_images: int = 256
    worst_shift: int = 3
    subpixel_max_up: int = 4
    corruptions: tuple[str, ...] | None = None
    corruption_severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    aliasing_images: int = 256
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.skip = tuple(self.skip or ())
        for name in self.skip:
            choose("metric group in metrics.skip", name, METRIC_GROUPS)
        from stridelab.data.augment import CROP_FILLS

        choose("metrics.crop_fill", self.crop_fill, CROP_FILLS)
        self.pair_shift = tuple(int(v) for v in self.pair_shift)
        if len(self.pair_shift) != 2 or self.pair_shift[0] > self.pair_shift[1]:
            raise ConfigError(
                f"metrics.pair_shift must be [low, high] with low <= high (got {list(self.pair_shift)}): the shifts "
                "of the standard/circular consistency, each axis uniform on {low..high} (default [-3, 2])."
            )
        self.corruptions = None if self.corruptions is None else tuple(self.corruptions)
        self.corruption_severities = tuple(self.corruption_severities)
        corruption.check_choice(self.corruptions, self.corruption_severities)  # a misspelling, also when skipped
        if int(self.subpixel_max_up) < 2:
            raise ConfigError(f"metrics.subpixel_max_up must be >= 2 (got {self.subpixel_max_up}): shifts are 1/up px.")
        if int(self.worst_shift) < 0:
            raise ConfigError(f"metrics.worst_shift must be >= 0 (got {self.worst_shift}): the largest shift tried.")
        for knob in ("batch_size", "border_band", "inference_batch", "aliasing_images", "robust_images"):
            if int(getattr(self, knob)) < 1:
                raise ConfigError(f"metrics.{knob} must be >= 1 (got {getattr(self, knob)}).")
        if min(self.max_shift, self.crop_padding, self.warmup_steps, self.timing_seconds) < 0:
            raise ConfigError(
                "metrics.max_shift, crop_padding, warmup_steps and timing_seconds must be >= 0 (got "
                f"{self.max_shift}, {self.crop_padding}, {self.warmup_steps}, {self.timing_seconds})."
            )
        if not float(self.probe_ridge) >= 0 or not np.isfinite(float(self.probe_ridge)):
            raise ConfigError(
                f"metrics.probe_ridge must be a finite number >= 0 (got {self.probe_ridge}); the default is 1e-3."
            )
        if self.subset_size is not None and int(self.subset_size) < 1:  # 0 used to mean "all"
            raise ConfigError(
                f"metrics.subset_size={self.subset_size} is not valid: give N >= 1 test images, or null for all."
            )
        if "probe" not in self.skip and self.subset_size is not None and int(self.subset_size) < 2:
            raise ConfigError(
                f"metrics.subset_size={self.subset_size} is too small for the position probe, which "
                "fits on half of the images and scores on the other half: use subset_size >= 2, or "
                "metrics.skip=[probe]."
            )

    def check_input(self, input_shape) -> None:
        """Refuse knobs that make no sense for ``input_shape`` (C, H, W), before a run trains: a circular
        shift by the image's size is no shift at all and larger ones repeat smaller ones (every
        distinct shift of an H-pixel side is one of -(H//2)..H//2), and a crop padded by the image's
        size or more can hold no image pixel."""
        side = min(int(input_shape[-2]), int(input_shape[-1]))
        problems = []
        if "shift" not in self.skip and self.max_shift >= side:
            problems.append(
                f"metrics.max_shift={self.max_shift} is not smaller than the {side}-pixel images: a circular "
                f"shift by {side} is no shift and larger ones repeat smaller ones; max_shift={side // 2} already "
                "reaches every distinct circular shift"
            )
        if "crop" not in self.skip and self.crop_padding >= side:
            problems.append(
                f"metrics.crop_padding={self.crop_padding} is not smaller than the {side}-pixel images: some "
                "crops would hold no image pixel at all"
            )
        if "worstshift" not in self.skip and int(self.worst_shift) >= side:
            problems.append(f"metrics.worst_shift={self.worst_shift} is not smaller than the {side}-pixel images")
        if "pairshift" not in self.skip and max(abs(v) for v in self.pair_shift) >= side:
            problems.append(f"metrics.pair_shift={list(self.pair_shift)} reaches the {side}-pixel images' size")
        if problems:
            raise ConfigError(
                "; ".join(problems) + ". Use a smaller value (the defaults are max_shift=3, worst_shift=3, "
                "pair_shift=[-3, 2] and crop_padding=4), or skip the group (e.g. metrics.skip=[shift])."
            )

    def subset_indices(self, n: int) -> np.ndarray:
        """The fixed subset: the first ``subset_size`` of a ``subset_seed`` permutation, sorted."""
        if self.subset_size is None or self.subset_size >= n:
            return np.arange(n)
        return np.sort(np.random.default_rng(self.subset_seed).permutation(n)[: self.subset_size])

    def measure(
        self,
        model: nn.Module,
        datamodule,
        device: torch.device | str | None = None,
        precision: str = "32-true",
        fit_window: ThroughputWindow | None = None,
        eval_window: ThroughputWindow | None = None,
    ) -> Measurement:
        """Run every group not in ``skip`` on ``model`` with the test images of ``datamodule``.

        ``fit_window`` / ``eval_window``: the run's own timed training steps and validation passes
        (:class:`stridelab.training.throughput.TrainThroughput`); without them, cost is probed."""
        t0 = time.perf_counter()
        device = torch.device(device) if device is not None else next(model.parameters()).device
        model = model.to(device)
        amp = autocast_dtype(precision)
        splits = datamodule.load()
        tests = splits.tests
        name = next(iter(tests))
        idx = self.subset_indices(len(tests[name][1]))
        x = datamodule.model_inputs(tests[name][0][idx], device)
        y = torch.from_numpy(tests[name][1][idx]).to(device)
        input_shape = tuple(datamodule.input_shape)
        m = Measurement()
        out = m.metrics
        out.update({"metrics/subset_size": len(idx), "metrics/subset_seed": self.subset_seed, "metrics/test_set": name})
        run = [g for g in METRIC_GROUPS if g not in self.skip]
        bs = self.batch_size
        lap = _Laps(out, run)

        # Logit-level metrics on a conv+BN-folded copy (the same function, fewer passes over memory).
        logit_groups = {"shift", "crop", "pairshift", "worstshift", "subpixel", "corruption", "position", "probe"}
        fast = inference_copy(model) if logit_groups & set(run) else model
        with full_precision():  # image metrics in fp32; cost below at the run's precision
            # The unshifted logits: shift's reference and the stability curve's zero shift, computed once
            # (by the position probe's pass when it runs: it forwards the same batches).
            needs_base = bool({"shift", "crop", "pairshift", "worstshift", "subpixel"} & set(run))
            base = None
            if "probe" in run and stage_modules(model):
                r = probe.position_probe(fast, x, ridge=self.probe_ridge, batch_size=bs, keep_outputs=needs_base)
                out.update(_probe_keys(r, self.probe_ridge))
                base = r.outputs
            if needs_base and base is None:
                base = logits_of(fast, x, bs)
            lap("probe")
            if "shift" in run:
                r = shift.circular_shift_consistency(
                    fast, x, self.max_shift, seed=self.subset_seed, batch_size=bs, base_logits=base
                )
                out.update(
                    {
                        "shift/circular_consistency": r["consistency"],
                        "shift/circular_logit_change": r["logit_change"],
                        "shift/max_shift": self.max_shift,
                    }
                )
            lap("shift")
            if "crop" in run:
                color = x.mean(dim=(0, 2, 3))
                r = shift.crop_consistency(
                    fast, x, self.crop_padding, self.crop_fill, seed=self.subset_seed, batch_size=bs, fill_color=color
                )
                m.stability = shift.stability_curve(
                    fast, x, y, self.crop_padding, self.crop_fill, batch_size=bs, fill_color=color, base_logits=base
                )
                out.update(
                    {
                        "crop/consistency": r["consistency"],
                        "crop/padding": self.crop_padding,
                        "crop/fill": self.crop_fill,
                    }
                )
                out.update({f"crop/acc_at_{d:+d}": a for d, a in m.stability.items()})
                out["crop/stability_range"] = max(m.stability.values()) - min(m.stability.values())
            lap("crop")
            out.update(self._shift_protocols(fast, datamodule, tests[name][0][idx], x, y, base, device, run))
            lap.reset()  # the shift protocols timed their own groups
            if "border" in run:
                r = border.border_deviation(model, border.constant_images(x), self.border_band)
                out.update(
                    {
                        "border/deviation": r.mean,
                        "border/deviation_max": r.max,
                        "border/features": r.features,
                        "border/band": self.border_band,
                    }
                )
                out.update({f"border/layer_{i:02d}.{k}": v for i, (k, v) in enumerate(r.per_layer.items())})
                m.border_heatmap = r.heatmap
            lap("border")
            if "audit" in run:
                rows = spatial.padding_audit(model, input_shape)
                out.update(
                    {
                        "audit/strided_layers": len(rows),
                        "audit/uneven_layers": sum(r.uneven for r in rows),
                        "audit/dropped_px": sum(sum(r.dropped) for r in rows),
                    }
                )
                m.audit_md = spatial.audit_markdown(rows)
            lap("audit")
            if "coverage" in run:
                cov, total_stride = spatial.coverage_map(model, input_shape)
                out.update({f"coverage/{k}": v for k, v in spatial.coverage_stats(cov, total_stride).items()})
                out["coverage/total_stride"] = total_stride
                m.coverage_map = cov
            lap("coverage")
            if "position" in run and "test_dissimilar" in tests:
                moved = tests["test_dissimilar"]
                dis = (datamodule.model_inputs(moved[0][idx], device), torch.from_numpy(moved[1][idx]).to(device))
                r = position.position_gap(fast, (x, y), dis, batch_size=bs)
                out.update({f"position/{k}": v for k, v in r.items()})
            lap("position")
            if "aliasing" in run:
                shares = aliasing.aliasing_shares(model, x[: self.aliasing_images], bs)
                if shares:
                    out["aliasing/mean"] = float(np.mean(list(shares.values())))
                out.update({f"aliasing/site_{k}": v for k, v in shares.items()})
                out.update({"aliasing/sites": len(shares), "aliasing/images": min(len(x), self.aliasing_images)})
        lap("aliasing")
        if "cost" in run:
            out.update(
                self._cost(model, datamodule, x, y, input_shape, device, precision, amp, fit_window, eval_window)
            )
        lap("cost")
        out["time/measure_s"] = time.perf_counter() - t0
        return m

    def _shift_protocols(self, fast, datamodule, raw, x, y, base, device, run) -> dict:
        """The figures of recent papers: standard-shift consistency and stability (TIPS), worst-case and
        sub-pixel shifts (AFC), corruption accuracy (CIFAR-10-C); the last three on ``robust_images``."""
        out, bs, n = {}, self.batch_size, min(len(x), self.robust_images)
        lap = _Laps(out, run)
        if "pairshift" in run:
            low, high = self.pair_shift
            r = shift_protocols.pair_shift_figures(fast, x, y, low, high, self.subset_seed, bs, base)
            out.update({f"pairshift/{k}": v for k, v in r.items()})
            out.update({"pairshift/low": low, "pairshift/high": high})
        lap("pairshift")
        if "worstshift" in run:
            s = int(self.worst_shift)
            for mode in shift_protocols.SHIFT_MODES:
                r = shift_protocols.worst_case_shift(fast, x[:n], y[:n], s, mode, bs, base[:n])
                out.update({f"worstshift/{mode}_{k}": v for k, v in r.items()})
            out.update({"worstshift/max_shift": s, "worstshift/images": n})
        lap("worstshift")
        if "subpixel" in run:
            r = shift_protocols.subpixel_shift_figures(fast, x[:n], y[:n], self.subpixel_max_up, bs, base[:n])
            out.update({f"subpixel/{k}": v for k, v in r.items()})
            out.update({"subpixel/max_up": int(self.subpixel_max_up), "subpixel/images": n})
        lap("subpixel")
        if "corruption" in run:
            images = torch.from_numpy(np.ascontiguousarray(raw[:n]))
            r = robustness.corruption_accuracy(
                fast,
                images,
                y[:n],
                lambda u8: datamodule.model_inputs(u8.numpy(), device),
                self.corruptions,
                self.corruption_severities,
                self.subset_seed,
                bs,
            )
            out.update(r)
            out["corruption/images"] = n
        lap("corruption")
        return out

    def _cost(self, model, datamodule, x, y, input_shape, device, precision, amp, fit_window, eval_window) -> dict:
        out = {
            "cost/params": sum(p.numel() for p in model.parameters()),
            "cost/flops_per_image": cost.count_flops(model, input_shape),
            "cost/train_flops_per_image": cost.count_flops(model, input_shape, train=True),
        }
        if fit_window is not None and fit_window.images_per_s:
            out.update(
                {
                    "cost/train_images_per_s": fit_window.images_per_s,
                    "cost/train_from": "fit",
                    "cost/train_timed_steps": fit_window.steps,
                }
            )
        else:  # too few steps to time the real run: time training steps on a copy of the model
            bsz = int(getattr(datamodule, "batch_size", 128))
            xb, yb = _batch_of(x, bsz), _batch_of(y, bsz)
            out.update(
                {
                    "cost/train_images_per_s": cost.training_throughput(
                        model, xb, yb, 2, min(self.warmup_steps, 2), amp, min_seconds=self.timing_seconds
                    ),
                    "cost/train_from": "probe",
                }
            )
        if eval_window is not None and eval_window.images_per_s:
            out.update(
                {
                    "cost/infer_images_per_s": eval_window.images_per_s,
                    "cost/infer_from": "fit",
                    "cost/infer_batch": int(getattr(datamodule, "eval_batch_size", 0)) or None,
                }
            )
        else:  # fewer than two validation passes: time eval-mode passes on subset images
            xb = _batch_of(x, self.inference_batch)
            out.update(
                {
                    "cost/infer_images_per_s": cost.inference_throughput(
                        model, xb, 1, min(self.warmup_steps, 1), amp, min_seconds=self.timing_seconds
                    ),
                    "cost/infer_from": "probe",
                    "cost/infer_batch": self.inference_batch,
                }
            )
        mem = cost.peak_memory_mib(device)
        if mem is not None:
            out["cost/peak_memory_mib"] = mem
        peak = cost.device_peak_flops(device, precision)
        if peak is not None:
            achieved = out["cost/train_images_per_s"] * out["cost/train_flops_per_image"]
            out.update(
                {
                    "cost/achieved_flops": achieved,
                    "cost/peak_flops": peak[0],
                    "cost/mfu": achieved / peak[0],
                    "cost/peak_flops_source": peak[1],
                }
            )
        return out


class _Laps:
    """Seconds each group took, as ``time/measure_<group>_s`` (for groups that ran)."""

    def __init__(self, out: dict, run: list[str]) -> None:
        self.out, self.run, self.t = out, set(run), time.perf_counter()

    def __call__(self, group: str) -> None:
        now = time.perf_counter()
        if group in self.run:
            self.out[f"time/measure_{group}_s"] = now - self.t
        self.t = now

    def reset(self) -> None:
        self.t = time.perf_counter()


def _probe_keys(r: probe.ProbeResult, ridge: float) -> dict:
    """The probe's keys: the features' six figures, ``spc`` and ``mae`` per stage; NaN ones left out."""
    out = {f"probe/{k}": v for k, v in r.features.figures().items()}
    for name, layer in r.layers.items():
        out.update({f"probe/layer_{name}.spc": layer.spc, f"probe/layer_{name}.mae": layer.mae})
    out = {k: v for k, v in out.items() if np.isfinite(v)}
    out["probe/ridge"] = float(ridge)
    return out


def _batch_of(t: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` rows of ``t``, repeating it when it is shorter."""
    if len(t) >= n:
        return t[:n]
    return t.repeat((n + len(t) - 1) // len(t), *([1] * (t.dim() - 1)))[:n]
