"""Learning-rate schedules as ``LambdaLR`` factories, stepped every optimiser step.

Each takes ``(optimizer, total_steps)`` (the trainer's estimate of the run's steps) plus its knobs,
so a config names it with ``_partial_: true`` and the module completes it.
"""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(optimizer, total_steps: int, warmup_frac: float = 0.05, final_frac: float = 0.0) -> LambdaLR:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to ``final_frac`` x lr."""
    warmup = max(1, int(warmup_frac * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t))

    return LambdaLR(optimizer, factor)


def one_cycle_linear(
    optimizer, total_steps: int, peak_frac: float = 0.25, start_frac: float = 0.1, final_frac: float = 0.0
) -> LambdaLR:
    """Triangular one-cycle: linear from ``start_frac`` up to 1 at ``peak_frac``, then down to ``final_frac``."""
    peak = max(1, int(peak_frac * total_steps))

    def factor(step: int) -> float:
        if step < peak:
            return start_frac + (1 - start_frac) * step / peak
        return 1 + (final_frac - 1) * min(1.0, (step - peak) / max(1, total_steps - peak))

    return LambdaLR(optimizer, factor)


def constant(optimizer, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)
