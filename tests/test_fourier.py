"""FLC pooling and ASAP (layers/fourier.py) against hand computations and the authors' code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stridelab.layers.fourier import ASAPPool2d, FLCPool2d


def _reference(x: torch.Tensor, window: bool, pad_one: bool) -> torch.Tensor:
    """GeJulia/flc_pooling's FLC_Pooling / ASAP_padding_one forward (MIT), on the CPU."""
    if pad_one:
        x = F.pad(x, (0, 1, 0, 1), "constant", 0)
    low = torch.fft.fftshift(torch.fft.fft2(x, norm="forward"))
    if window:
        w2d = np.sqrt(np.outer(np.abs(np.hamming(x.size(2))), np.abs(np.hamming(x.size(3)))))
        low = low * torch.Tensor(w2d).unsqueeze(0).unsqueeze(0)
    h, w = x.size(2), x.size(3)
    low = low[:, :, int(h / 4) : int(h / 4 * 3), int(w / 4) : int(w / 4 * 3)]
    return torch.fft.ifft2(torch.fft.ifftshift(low), norm="forward").real


@pytest.mark.parametrize("size", [(32, 32), (33, 33), (16, 24)])
def test_flc_and_asap_equal_the_authors_code(size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(FLCPool2d()(x), _reference(x, window=False, pad_one=False), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ASAPPool2d()(x), _reference(x, window=True, pad_one=True), rtol=1e-5, atol=1e-6)
    half = [int(n / 4 * 3) - int(n / 4) for n in size]  # the reference's slice: 32 -> 16, 33 -> 17, 24 -> 12
    assert list(FLCPool2d()(x).shape[-2:]) == half


def test_hand_computed_cases():
    # a constant map keeps its value (only the DC coefficient), at half the size
    out = FLCPool2d()(torch.full((1, 1, 32, 32), 0.7, dtype=torch.float64))
    assert out.shape == (1, 1, 16, 16) and torch.allclose(out, torch.full_like(out, 0.7))
    # ASAP without padding: the DC coefficient times the window's centre, hamming(32)[16] = 0.54 + 0.46 cos(pi/31)
    centre = 0.54 - 0.46 * math.cos(2 * math.pi * 16 / 31)
    out = ASAPPool2d(pad_one=False)(torch.ones(1, 1, 32, 32, dtype=torch.float64))
    assert torch.allclose(out, torch.full_like(out, centre))
    # the checkerboard (the highest frequency) is removed, where stride-2 subsampling aliases it to a constant
    i = torch.arange(32, dtype=torch.float64)
    checker = ((-1) ** (i[:, None] + i[None, :]))[None, None]
    assert FLCPool2d()(checker).abs().max() < 1e-12 and torch.equal(checker[..., ::2, ::2], torch.ones(1, 1, 16, 16))
    # a low frequency is resampled exactly: cos(2 pi i / 32) over 32 px -> cos(2 pi i / 16) over 16 px
    wave = torch.cos(2 * math.pi * i / 32)[None, None, :, None].expand(1, 1, 32, 32)
    j = torch.arange(16, dtype=torch.float64)
    expected = torch.cos(2 * math.pi * j / 16)[None, None, :, None].expand(1, 1, 16, 16)
    assert torch.allclose(FLCPool2d()(wave), expected)


def test_circular_shifts_commute_with_flc_and_asaps_padding_breaks_that():
    x = torch.randn(1, 2, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rolled = torch.roll(x, (2, 4), (2, 3))
    assert torch.allclose(FLCPool2d()(rolled), torch.roll(FLCPool2d()(x), (1, 2), (2, 3)))
    asap = ASAPPool2d(pad_one=True)
    assert not torch.allclose(asap(rolled), torch.roll(asap(x), (1, 2), (2, 3)), atol=1e-6)


def test_half_precision_inputs_are_transformed_in_fp32():
    x = torch.randn(1, 1, 16, 16)
    out = ASAPPool2d()(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ASAPPool2d()(x), atol=2e-2)


def test_strategies_pool_before_the_stride_one_conv_as_the_authors_resnets():
    """FLC/ASAP go before the conv that loses its stride (GeJulia/flc_pooling resnet_flc.py, conv3x3 and
    conv1x1 of stride 2) and replace a pooling position outright (resnet_asap.py's max pool)."""
    from stridelab.layers import ConvKit, PaddingSpec, create_downsample

    kit = ConvKit(padding=PaddingSpec("zeros"))
    for name, cls in (("flc", FLCPool2d), ("asap", ASAPPool2d)):
        ds = create_downsample(name)
        main, short = ds.residual(kit, 4, 8)
        assert isinstance(main.down, cls) and main.block[0].stride == (1, 1)
        assert list(main._modules) == ["down", "block"]
        assert isinstance(short.pool, cls) and short.conv.stride == (1, 1)
        assert isinstance(ds.pool(kit, 4, 3), cls)
        x = torch.randn(2, 4, 16, 16)
        with torch.no_grad():
            assert torch.equal(main.eval()(x), main.block(cls()(x)))
            assert main(x).shape == (2, 8, 8, 8)
    assert create_downsample("asap").subsampler(ConvKit(padding=PaddingSpec("circular")), 4).pad.mode == "circular"
    with pytest.raises(Exception, match="pad_one"):
        create_downsample("asap", pad_one="yes")


def test_convert_puts_flc_before_every_strided_conv_and_in_place_of_pools():
    import torchvision

    from stridelab.models import convert

    net = convert(torchvision.models.resnet18(num_classes=10), "flc", stem="convert")
    report = net.stridelab_conversion
    assert "maxpool maxpool" in report.sites and "conv conv1" in report.sites
    assert isinstance(net.maxpool.down, FLCPool2d) and not hasattr(net.maxpool, "max")
    lines = [line.strip() for line in net.code.splitlines() if "layer2_0_conv1" in line]
    assert lines[0].startswith("layer2_0_conv1_down = ") and "conv1_down(layer1_1_relu_1)" in lines[0]
    assert lines[1].startswith("layer2_0_conv1 = ") and ".conv1(layer2_0_conv1_down)" in lines[1]
    assert isinstance(net.get_submodule("layer2.0.conv1_down"), FLCPool2d)
    assert net.get_submodule("layer2.0.conv1").stride == (1, 1)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 10)
