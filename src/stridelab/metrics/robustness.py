"""Accuracy under the CIFAR-10-C corruptions of :mod:`stridelab.metrics.corruption` (the suite's
``corruption`` group): Hendrycks & Dietterich, ICLR 2019; keys and protocol in docs/metrics.md,
section 11."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from stridelab.metrics.corruption import SEVERITIES, check_choice, corrupt, validate_images
from stridelab.metrics.inference import logits_of

# The corrupted sets of the last images measured: every variant of a sweep run in one process sees the
# same images (JPEG encoding alone takes ~1 s for 256 images x 5 severities). Bounded in entries and size.
_SETS: OrderedDict = OrderedDict()
CACHE_ENTRIES, CACHE_MAX_ELEMENTS = 64, 4_000_000


def _corrupt_cached(images: torch.Tensor, digest: str, name: str, severity: int, seed: int) -> torch.Tensor:
    if images.numel() > CACHE_MAX_ELEMENTS:
        return corrupt(images, name, severity, seed)
    key = (digest, tuple(images.shape), str(images.device), name, int(severity), int(seed))
    if key not in _SETS:
        _SETS[key] = corrupt(images, name, severity, seed)
        while len(_SETS) > CACHE_ENTRIES:
            _SETS.popitem(last=False)
    return _SETS[key]


def corruption_accuracy(
    model: nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    to_inputs: Callable[[torch.Tensor], torch.Tensor],
    names: Iterable[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 500,
) -> dict[str, float]:
    """Accuracy under each corruption and severity (CIFAR-10-C protocol, Hendrycks & Dietterich 2019).

    ``to_inputs`` turns uint8 NCHW images into the model's float input (normalisation, device).
    Keys: ``corruption/<name>_s<k>`` per severity, ``corruption/<name>`` their mean,
    ``corruption/mean_acc`` the mean over corruptions (mCA), ``corruption/clean_acc`` and
    ``corruption/relative_drop`` = clean_acc - mean_acc.
    """
    names, severities = check_choice(names, severities)
    validate_images(images_uint8)

    def accuracy_on(images: torch.Tensor) -> float:
        pred = logits_of(model, to_inputs(images), batch_size).argmax(1)
        return float((pred == labels.to(pred.device)).double().mean())

    out: dict[str, float] = {}
    digest = hashlib.blake2b(images_uint8.cpu().numpy().tobytes(), digest_size=16).hexdigest()
    for name in names:
        per_severity = [accuracy_on(_corrupt_cached(images_uint8, digest, name, k, seed)) for k in severities]
        out.update({f"corruption/{name}_s{k}": acc for k, acc in zip(severities, per_severity)})
        out[f"corruption/{name}"] = sum(per_severity) / len(per_severity)
    clean = accuracy_on(images_uint8)
    mean = sum(out[f"corruption/{name}"] for name in names) / len(names)
    out.update({"corruption/mean_acc": mean, "corruption/clean_acc": clean, "corruption/relative_drop": clean - mean})
    return out
