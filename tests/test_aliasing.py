"""The aliasing share: analytic cases, the counter-cases, and the order the anti-aliasing papers predict."""

from __future__ import annotations

import math

import torch

from stridelab.layers import PaddingSpec, create_downsample
from stridelab.metrics.aliasing import aliasing_share, aliasing_shares, subsampling_sites
from stridelab.models import create_model


def _cosine(n: int, k: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    return torch.cos(2 * math.pi * k * i / n)[:, None].expand(n, n)


def test_analytic_cases():
    assert aliasing_share(torch.full((2, 3, 8, 8), 0.7)) == 0.0  # all power at DC
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(8)] for i in range(8)])
    assert aliasing_share(checker) == 1.0  # all power at the highest frequency
    assert aliasing_share(_cosine(16, 3)) < 1e-20  # below the half-size Nyquist (16/4 = 4)
    assert aliasing_share(_cosine(16, 4)) < 1e-20  # on the band edge: kept, as FLC keeps it
    assert abs(aliasing_share(_cosine(16, 5)) - 1.0) < 1e-12  # above it: all of it folds back
    half = _cosine(16, 2) + _cosine(16, 6)  # equal power below and above
    assert abs(aliasing_share(half) - 0.5) < 1e-12
    assert aliasing_share(torch.zeros(4, 4)) == 0.0


def _shares(downsample: str) -> dict:
    torch.manual_seed(0)
    net = create_model("resnet20", num_classes=10, downsample=create_downsample(downsample), padding=PaddingSpec())
    return aliasing_shares(net, torch.randn(16, 3, 32, 32))


def test_blur_pooling_aliases_less_than_strided_convs_and_fourier_pooling_not_at_all():
    conv, blur, flc = _shares("conv"), _shares("blurpool"), _shares("flc")
    assert len(conv) == len(blur) == len(flc) == 4  # two blocks x (main branch, shortcut)
    mean = lambda r: sum(r.values()) / len(r)  # noqa: E731
    assert mean(conv) > 0.1  # a random strided conv aliases a lot
    assert mean(blur) < 0.5 * mean(conv)
    assert max(flc.values()) < 1e-12  # band-limited by construction


def test_sites_of_a_converted_library_network_and_strides_restored():
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    names = set(subsampling_sites(net))
    assert {"conv1", "maxpool", "layer2.0.conv1", "layer2.0.downsample.0"} <= names
    assert "layer1.0.conv1" not in names
    r = aliasing_shares(net, torch.randn(2, 3, 64, 64))
    assert set(r) == names and all(0 <= v <= 1 for v in r.values())
    assert net.conv1.stride == (2, 2) and net.maxpool.stride == 2
    assert net.training  # the mode is given back
