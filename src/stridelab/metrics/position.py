"""Red-green position gap (Kayhan & van Gemert 2020).

Reference
---------
O. S. Kayhan, J. C. van Gemert. "On Translation Invariance in CNNs: Convolutional Layers can Exploit
Absolute Spatial Location." CVPR 2020, Sec. 4.1, Table 1: a network is trained on images whose class
depends only on the colour order of two boxes, with class-correlated rows; the *similar* test set
keeps those rows, the *dissimilar* one moves the boxes. Accuracy that drops from similar to
dissimilar shows the network used absolute position, which padding makes visible to it.

    gap = acc(similar) - acc(dissimilar)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stridelab.metrics.inference import logits_of


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 500,
    amp_dtype: torch.dtype | None = None,
) -> float:
    pred = logits_of(model, images, batch_size, amp_dtype).argmax(1)
    return float((pred == labels.to(pred.device)).double().mean())


def position_gap(
    model: nn.Module,
    similar: tuple[torch.Tensor, torch.Tensor],
    dissimilar: tuple[torch.Tensor, torch.Tensor],
    batch_size: int = 500,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Accuracy on the similar and the dissimilar test set, and their difference."""
    sim = accuracy(model, *similar, batch_size=batch_size, amp_dtype=amp_dtype)
    dis = accuracy(model, *dissimilar, batch_size=batch_size, amp_dtype=amp_dtype)
    return {"similar_acc": sim, "dissimilar_acc": dis, "gap": sim - dis}
