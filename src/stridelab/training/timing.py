"""Timing windows that wait for the device only at their ends (never inside a step), and the one
timing loop over them.

Used by the run's throughput callback (:mod:`stridelab.training.throughput`), the suite's cost probes
(:mod:`stridelab.metrics.cost`) and the benchmark.
"""

from __future__ import annotations

import time
import warnings

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (timing windows end here; a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class SyncWatch:
    """Records where the host waited for a CUDA GPU while it watches: ``torch.cuda.set_sync_debug_mode
    ("warn")`` warns on every such operation (``.item()``, a copy to the host, a blocking copy to the
    device); ``sites`` gets the file:line of each, ``steps`` the steps watched."""

    def __init__(self) -> None:
        self.sites: list[str] = []
        self.steps = 0
        self._catcher = None
        self._seen: list = []

    def watch(self, on: bool) -> None:
        """Call once per step: True opens (or keeps open) the watch, False closes it."""
        if on:
            self.steps += 1
        if on and self._catcher is None:
            self._catcher = warnings.catch_warnings(record=True)
            self._seen = self._catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        elif not on and self._catcher is not None:
            torch.cuda.set_sync_debug_mode("default")
            self.sites += [f"{w.filename}:{w.lineno}" for w in self._seen if "synchroniz" in str(w.message)]
            self._catcher.__exit__(None, None, None)
            self._catcher = None


class ThroughputWindow:
    """Accumulates timed windows: :meth:`open` and :meth:`close` synchronise the device once each."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self.images = 0
        self.steps = 0
        self._t0: float | None = None

    @property
    def is_open(self) -> bool:
        return self._t0 is not None

    def open(self) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def count(self, images: int) -> None:
        self.images += int(images)
        self.steps += 1

    def close(self) -> None:
        if self._t0 is None:
            return
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._t0
        self._t0 = None

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 and self.images else None


def time_steps(
    step, images_per_step: int, device, steps: int, warmup: int = 0, min_seconds: float = 0.0
) -> tuple[ThroughputWindow, float | None]:
    """Call ``step()`` ``warmup`` times untimed, then ``steps`` times in a timed window, doubling the
    round until ``min_seconds`` are timed. The first warm-up call is timed alone (its wall time, with
    compilation or first-call costs, is returned as the second value; None without warm-up)."""
    device = torch.device(device)
    first = None
    if warmup > 0:
        synchronize(device)
        t0 = time.perf_counter()
        step()
        synchronize(device)
        first = time.perf_counter() - t0
        for _ in range(warmup - 1):
            step()
    window, n = ThroughputWindow(device), int(steps)
    while n > 0:
        window.open()
        for _ in range(n):
            step()
            window.count(images_per_step)
        window.close()
        if window.seconds >= min_seconds or window.steps >= 10_000:
            break
        n *= 2
    return window, first
