"""Padding vocabulary, blur filters and the downsampling factory."""

from __future__ import annotations

import pytest
import torch

from stridelab.errors import ConfigError
from stridelab.layers import (
    DOWNSAMPLE_REGISTRY,
    PADDING_MODES,
    BlurPool2d,
    ConvKit,
    Pad2d,
    PaddingSpec,
    binomial_filter,
    create_downsample,
    pad_amounts,
)
from stridelab.layers.padding import CONV_PADDING_MODES
from stridelab.layers.pool import create_pool

# Modes that copy image pixels into the pad, so a constant image stays constant.
COPYING_MODES = ("reflect", "replicate", "circular")


def spatially_constant(x: torch.Tensor, tol: float = 1e-9) -> bool:
    flat = x.flatten(2)
    return bool(((flat - flat[..., :1]).abs().max() <= tol * (1 + flat.abs().max())).item())


@pytest.mark.parametrize(
    "k,amount,expected",
    [
        (3, "valid", (0, 0)),
        (3, "same", (1, 1)),
        (3, "full", (2, 2)),
        (4, "same", (1, 2)),
        (7, "same", (3, 3)),
        (2, "same", (0, 1)),
    ],
)
def test_pad_amounts(k, amount, expected):
    assert pad_amounts(k, amount) == expected


def test_padding_spec_rejects_unknown_mode_with_the_list():
    with pytest.raises(ConfigError, match="zeros, reflect, replicate, circular"):
        PaddingSpec(mode="mirror")
    with pytest.raises(ConfigError, match="valid, same, full"):
        PaddingSpec(amount="half")


@pytest.mark.parametrize("mode", CONV_PADDING_MODES)
def test_pad2d_matches_conv_padding_mode(mode):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, bias=False).double()
    manual = torch.nn.functional.conv2d(Pad2d((1, 1, 1, 1), mode)(x), conv.weight)
    torch.testing.assert_close(conv(x), manual)


def test_binomial_filters():
    torch.testing.assert_close(
        binomial_filter(3, torch.float64)[1], torch.tensor([2, 4, 2.0], dtype=torch.float64) / 16
    )
    for m in range(1, 8):
        assert binomial_filter(m, torch.float64).sum().item() == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        binomial_filter(9)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_blur_on_constant_image(mode):
    blur = BlurPool2d(3, filter_size=3, stride=2, padding=PaddingSpec(mode)).double()
    out = blur(torch.full((1, 3, 8, 8), 2.0, dtype=torch.float64))
    assert out.shape[-2:] == (4, 4)
    # Border handling is what differs: only zero padding lets the border darken a constant image
    # (partial padding re-normalises the filter over its in-image taps).
    assert spatially_constant(out) == (mode != "zeros")


def test_blur_suppresses_nyquist_that_plain_subsampling_aliases():
    stripes = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    stripes[..., ::2, :] = 1.0
    plain = stripes[..., ::2, ::2]  # stride-2 subsampling sees only the bright rows
    blurred = BlurPool2d(1, 3, 2, PaddingSpec("circular")).double()(stripes)
    assert spatially_constant(plain) and plain.mean().item() == 1.0
    torch.testing.assert_close(blurred, torch.full_like(blurred, 0.5))


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("kind,k,s", [("max", 3, 2), ("avg", 3, 2), ("max", 2, 1), ("avg", 2, 2)])
def test_pools_pad_with_the_mode(mode, kind, k, s):
    pool = create_pool(kind, k, s, mode)
    x = torch.full((1, 2, 8, 8), -1.0, dtype=torch.float64)  # negative: -inf and 0 padding differ
    out = pool(x)
    expected = {(3, 2): 4, (2, 1): 7, (2, 2): 4}[(k, s)]
    assert out.shape[-1] == expected
    unpadded = k <= s or (k, s) == (2, 1)
    # max over -inf padding keeps -1; partial averages over in-image taps only
    constant_expected = mode != "zeros" or unpadded or kind == "max"
    assert spatially_constant(out) == constant_expected


@pytest.mark.parametrize("name", sorted(DOWNSAMPLE_REGISTRY))
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_every_downsample_halves_and_respects_padding(name, mode):
    ds = create_downsample(name)
    kit = ConvKit(padding=PaddingSpec(mode), norm="none", bias=False)
    x = torch.full((1, 4, 16, 16), 1.0, dtype=torch.float64)
    torch.manual_seed(0)
    block = ds.block(kit, 4, 6, 3).double()
    short = ds.shortcut(kit, 4, 6).double()
    assert block(x).shape == (1, 6, 8, 8)
    assert short(x).shape == (1, 6, 8, 8)
    pool = ds.pool(kit, 4, 2)
    if ds.strides_previous_conv:
        assert pool is None
    else:
        assert pool.double()(x).shape == (1, 4, 8, 8)
    if mode in COPYING_MODES:
        assert spatially_constant(block(x)) and spatially_constant(short(x))


def test_create_downsample_errors():
    with pytest.raises(ConfigError, match="conv, strided, maxpool, avgpool, blurpool, ddac, aps, lps, tips, flc, asap"):
        create_downsample("lanczos")
    with pytest.raises(ConfigError, match="filter_size"):
        create_downsample("blurpool", filter_size=11)
    with pytest.raises(ConfigError, match="does not take"):
        create_downsample("maxpool", filter_size=3)
