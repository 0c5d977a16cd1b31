"""padding=partial (Liu et al. 2018): zero padding re-scaled by window taps / in-image taps (issue 11)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stridelab.layers import BlurPool2d, ConvKit, PaddingSpec, binomial_filter
from stridelab.layers.partial import PartialConv2d
from stridelab.layers.pool import create_pool


def _x(h=5, w=6, c=2, seed=0):
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_partial_conv_by_hand():
    """Interior: the zero-padded conv. Border: the zero-padded conv's W^T X times 9 / (in-image taps),
    plus the bias (added after the re-scaling, as in the paper)."""
    torch.manual_seed(0)
    conv = PartialConv2d(2, 3, 3, pad=(1, 1, 1, 1), bias=True).double()
    x = _x()
    y = conv(x)
    plain = F.conv2d(x, conv.weight, None, padding=1)  # W^T X with zeros outside
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            inside = (min(i + 1, h - 1) - max(i - 1, 0) + 1) * (min(j + 1, w - 1) - max(j - 1, 0) + 1)
            expected = plain[0, :, i, j] * 9 / inside + conv.bias
            torch.testing.assert_close(y[0, :, i, j], expected)
    # the corner reads 4 taps of 9, an edge 6, the interior all 9
    zero_padded = F.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], zero_padded[..., 1:-1, 1:-1])
    assert not torch.allclose(y[..., 0, 0], zero_padded[..., 0, 0])


def test_partial_conv_strided_and_asymmetric():
    torch.manual_seed(0)
    conv = PartialConv2d(2, 2, 2, stride=2, pad=(0, 1, 0, 1), bias=False).double()
    x = _x(5, 5)
    y = conv(x)
    plain = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    ratio = torch.ones(3, 3, dtype=torch.float64)
    ratio[-1, :] *= 2  # the last row of windows has 2 of its 4 taps in the image ...
    ratio[:, -1] *= 2  # ... and the corner window 1 of 4
    torch.testing.assert_close(y, plain * ratio)


def test_partial_box_filter_keeps_a_constant_image_constant():
    """The paper's point: the border no longer sees a darker image (exact for a box filter)."""
    conv = PartialConv2d(1, 1, 3, pad=(1, 1, 1, 1), bias=False).double()
    with torch.no_grad():
        conv.weight.fill_(1 / 9)
    y = conv(torch.full((1, 1, 6, 6), 3.0, dtype=torch.float64))
    torch.testing.assert_close(y, torch.full_like(y, 3.0))
    zero = F.conv2d(torch.full((1, 1, 6, 6), 3.0, dtype=torch.float64), conv.weight, padding=1)
    assert zero[0, 0, 0, 0] < 3.0 - 1  # zero padding darkens the corner


def test_conv_kit_builds_partial_convs():
    conv = ConvKit(PaddingSpec("partial")).conv(3, 4, 3, stride=2)
    assert isinstance(conv, PartialConv2d) and conv.pad == (1, 1, 1, 1) and conv.stride == (2, 2)


def test_partial_avgpool_averages_in_image_taps_and_maxpool_ignores_the_pad():
    x = _x(4, 4, 1)
    avg = create_pool("avg", 3, 2, "partial")(x)
    assert avg[0, 0, 0, 0].item() == pytest.approx(x[0, 0, :2, :2].mean().item())  # 4 in-image taps
    mx = create_pool("max", 3, 2, "partial")(-x.abs() - 1)  # all negative: a zero pad would win
    assert mx[0, 0, 0, 0].item() == pytest.approx((-x.abs() - 1)[0, 0, :2, :2].max().item())


def test_partial_blur_is_normalised_over_in_image_weights():
    blur = BlurPool2d(1, 3, stride=2, padding=PaddingSpec("partial")).double()
    x = _x(6, 6, 1)
    y = blur(x)
    k = binomial_filter(3, torch.float64)
    # corner output (0, 0): window rows/cols -1..1, the in-image taps are rows/cols 0..1
    inside = k[1:, 1:]
    expected = (inside * x[0, 0, :2, :2]).sum() / inside.sum()
    assert y[0, 0, 0, 0].item() == pytest.approx(expected.item())
    interior = F.conv2d(F.pad(x, (1, 1, 1, 1)), k[None, None], stride=2)
    torch.testing.assert_close(y[..., 1:, 1:], interior[..., 1:, 1:])
    const = blur(torch.full((1, 1, 6, 6), 2.0, dtype=torch.float64))
    torch.testing.assert_close(const, torch.full_like(const, 2.0))
