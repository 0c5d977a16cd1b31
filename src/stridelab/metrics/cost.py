"""Cost: parameters, FLOPs, training and inference throughput, peak memory, model FLOP utilisation.

* FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-add of
  convolutions and matrix products (the usual convention, e.g. Kaplan et al. 2020); normalisation,
  activations, pooling and biases are not counted. Blur filters are depthwise convolutions and are.
* Throughput is measured at steady state: warm-up steps are excluded, the device is synchronised
  only at the ends of a timing window (never per step), and in a training run the windows stop
  before validation. Images/s = images in the windows / time in the windows.
* MFU (model FLOP utilisation, Chowdhery et al. 2022, PaLM, App. B): training images/s x training
  FLOPs per image (forward + backward, counted) / the device's peak dense FLOP/s at the run's
  precision, from the vendor's data sheet (:data:`PEAK_FLOPS`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from stridelab.metrics.inference import autocast, evaluating
from stridelab.training.timing import time_steps

# Dense (no sparsity) peak FLOP/s from NVIDIA's data sheets: (bf16/fp16 tensor core, tf32, fp32).
PEAK_FLOPS = {
    "H200": (989.4e12, 494.7e12, 66.9e12),
    "H100 PCIe": (756.0e12, 378.0e12, 51.2e12),
    "H100": (989.4e12, 494.7e12, 66.9e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    "A100": (312.0e12, 156.0e12, 19.5e12),
    "L40S": (362.05e12, 183.0e12, 91.6e12),
    "A10G": (70.0e12, 35.0e12, 31.2e12),
    "L4": (121.0e12, 60.0e12, 30.3e12),
    "V100": (125.0e12, 15.7e12, 15.7e12),
    "T4": (65.0e12, 8.1e12, 8.1e12),
}


def count_flops(model: nn.Module, input_shape: tuple[int, int, int], train: bool = False, batch: int = 2) -> float:
    """FLOPs per image of one forward pass (``train=False``, eval mode) or of a forward and backward
    pass (``train=True``, training mode, on a copy so running statistics are untouched)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros((batch, *input_shape), device=device, dtype=dtype)
    if train:
        net = copy.deepcopy(model).train()
        with FlopCounterMode(display=False) as counter:
            net(x).float().sum().backward()
    else:
        with evaluating(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    return counter.get_total_flops() / batch


def _timed(step, images_per_step: int, device: torch.device, steps: int, warmup: int, min_seconds: float) -> float:
    """Images/s of ``step()``: :func:`~stridelab.training.timing.time_steps` (at least one timed step)."""
    window, _ = time_steps(step, images_per_step, device, max(int(steps), 1), warmup, min_seconds)
    return window.images_per_s


def training_step(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    amp_dtype: torch.dtype | None = None,
):
    """A closure doing one plain training step (forward, cross-entropy, backward, optimizer step) on
    a fixed batch: the bare loop that throughput is compared with (no host sync inside)."""
    labels = labels.to(images.device)

    def step():
        with autocast(images.device, amp_dtype):
            loss = F.cross_entropy(net(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def training_throughput(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 10,
    warmup: int = 3,
    amp_dtype: torch.dtype | None = None,
    optimizer=None,
    min_seconds: float = 0.0,
) -> float:
    """Images/s of full training steps (:func:`training_step`, SGD unless ``optimizer`` (a factory
    taking parameters) is given) on one fixed batch, on a copy of ``model`` (the model itself is not
    changed). At least ``steps`` timed steps and ``min_seconds`` of timing."""
    net = copy.deepcopy(model).train()
    opt = optimizer(net.parameters()) if optimizer else torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    step = training_step(net, images, labels, opt, amp_dtype)
    return _timed(step, len(images), images.device, steps, warmup, min_seconds)


def inference_throughput(
    model: nn.Module,
    images: torch.Tensor,
    steps: int = 10,
    warmup: int = 3,
    amp_dtype: torch.dtype | None = None,
    min_seconds: float = 0.0,
) -> float:
    """Images/s of eval-mode forward passes on one fixed batch (no grad); at least ``steps`` timed
    passes and ``min_seconds`` of timing."""
    with evaluating(model), torch.no_grad(), autocast(images.device, amp_dtype):
        return _timed(lambda: model(images), len(images), images.device, steps, warmup, min_seconds)


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak memory allocated by tensors on a CUDA device since the last reset (None elsewhere)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def device_peak_flops(device: torch.device, precision: str) -> tuple[float, str] | None:
    """The device's peak dense FLOP/s at ``precision`` and a description of which peak it is."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_FLOPS.items():  # more specific names first ("H100 PCIe" before "H100")
        if key in name:
            if str(precision).startswith(("bf16", "16")):
                return peaks[0], f"{name}: dense bf16/fp16 tensor-core peak {peaks[0] / 1e12:.1f} TFLOP/s"
            if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32:
                return peaks[1], f"{name}: dense TF32 tensor-core peak {peaks[1] / 1e12:.1f} TFLOP/s"
            return peaks[2], f"{name}: fp32 peak {peaks[2] / 1e12:.1f} TFLOP/s"
    return None
