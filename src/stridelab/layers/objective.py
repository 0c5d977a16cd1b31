"""Training-loss terms that layers add to the objective (TIPS's regularisers), and how the loop reads them.

Most downsampling layers only change the forward pass. Some methods also change what is minimised:
TIPS (Saha & Gokhale, WACV 2025) adds a shift-consistency term on each layer's features and a term
that pushes its mixture weights towards one-hot, and weighs the cross-entropy by ``1 - alpha``. Such a
layer keeps, from its last training forward, one :class:`LossTerm` per name in ``loss_terms()``
(and hands them over once), and may set ``classification_weight``. The training loop
(:class:`stridelab.training.module.Classifier`) calls :func:`training_objective` after each forward and
minimises ``classification_weight * CE + sum of weight * term``, logging each term's value (also
while its weight is 0: TIPS's shift term before its wake-up epoch).

A term is a weighted mean pooled over layers: each layer gives a ``total`` and the ``count`` it sums
over, the objective divides the sums (so a mean over all channels of all layers is what the
reference computes on their concatenation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class LossTerm:
    """``total / count`` once pooled over layers, entering the loss times ``weight``."""

    total: torch.Tensor
    count: float
    weight: float = 1.0


def term_layers(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that give loss terms (the training loop finds them once)."""
    return [m for m in model.modules() if callable(getattr(m, "loss_terms", None))]


def training_objective(layers: nn.Module | list[nn.Module]) -> tuple[float, dict[str, tuple[torch.Tensor, float]]]:
    """The cross-entropy's weight and ``{name: (value, weight)}`` of the terms the ``layers`` (a model,
    or :func:`term_layers` of one) gave in their last training forward (1.0 and ``{}`` without any)."""
    pooled: dict[str, list] = {}
    weight = 1.0
    for module in term_layers(layers) if isinstance(layers, nn.Module) else layers:
        take = module.loss_terms
        weight = min(weight, float(getattr(module, "classification_weight", 1.0)))
        for name, term in take().items():
            slot = pooled.setdefault(name, [0.0, 0.0, term.weight])
            slot[0] = slot[0] + term.total
            slot[1] += term.count
    return weight, {name: (total / max(count, 1e-12), w) for name, (total, count, w) in pooled.items()}
