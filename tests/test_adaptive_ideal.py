"""AdaptiveBlurPool2d (DDAC, Zou et al. 2020) and IdealLowPass2d (Michaeli et al. 2023) against the
reference semantics written out in the tests."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stridelab.errors import ConfigError
from stridelab.layers.adaptive import AdaptiveBlurPool2d
from stridelab.layers.ideal import IdealLowPass2d, ideal_mask_1d
from stridelab.layers.padding import PaddingSpec

# ---------------------------------------------------------------------------------------------- adaptive


def loop_reference(layer: AdaptiveBlurPool2d, x: torch.Tensor) -> torch.Tensor:
    """The spec's formula, one output value at a time (float64)."""
    k, g_count, s = layer.filter_size, layer.group, layer.stride
    p = k // 2
    xp = F.pad(x, (p, p, p, p), mode="reflect")
    sigma = torch.softmax(layer.bn(layer.conv(xp)), dim=1).tolist()  # Python floats: a fast enough loop
    xp = xp.tolist()
    n, c, h, w = x.shape
    per_group = c // g_count
    y = [[[[0.0] * w for _ in range(h)] for _ in range(c)] for _ in range(n)]
    for b in range(n):
        for ch in range(c):
            g = ch // per_group
            for i in range(h):
                for j in range(w):
                    total = 0.0
                    for u in range(k):
                        for v in range(k):
                            total += sigma[b][g * k * k + u * k + v][i][j] * xp[b][ch][i + u][j + v]
                    y[b][ch][i][j] = total
    return torch.tensor(y, dtype=x.dtype)[..., ::s, ::s]


def randomised(layer: AdaptiveBlurPool2d) -> AdaptiveBlurPool2d:
    """Eval mode with non-trivial BatchNorm statistics and affine parameters."""
    torch.manual_seed(1)
    layer.bn.running_mean.normal_()
    layer.bn.running_var.uniform_(0.5, 2.0)
    layer.bn.weight.data.uniform_(0.5, 1.5)
    layer.bn.bias.data.normal_()
    return layer.double().eval()


@pytest.mark.parametrize("channels,group,k,stride", [(16, 8, 3, 2), (8, 2, 5, 2), (6, 3, 3, 1)])
@pytest.mark.parametrize("size", [(7, 9), (8, 6)])
def test_adaptive_matches_loop_reference(channels, group, k, stride, size):
    torch.manual_seed(0)
    layer = randomised(AdaptiveBlurPool2d(channels, filter_size=k, group=group, stride=stride))
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    with torch.no_grad():
        expected = loop_reference(layer, x)
        y = layer(x)
        full = layer.before_subsampling(x)
    assert y.shape == (2, channels, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(full[..., ::stride, ::stride], y, rtol=0, atol=1e-12)


def test_adaptive_uniform_weights_give_box_filter_over_group():
    channels, group, k = 8, 4, 3
    layer = AdaptiveBlurPool2d(channels, filter_size=k, group=group, stride=2).eval()
    layer.conv.weight.data.zero_()  # BN in eval: running mean 0, var 1, weight 1, bias 0 -> all logits equal
    x = torch.randn(2, channels, 9, 10)
    with torch.no_grad():
        sigma = layer.weights(layer.pad(x))
        full = layer.before_subsampling(x)
        y = layer(x)
    torch.testing.assert_close(sigma, torch.full_like(sigma, 1 / (group * k * k)))
    box = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, stride=1) / group
    torch.testing.assert_close(full, box)
    torch.testing.assert_close(y, box[..., ::2, ::2])


def test_adaptive_weights_sum_to_one_jointly_not_per_group():
    torch.manual_seed(0)
    layer = AdaptiveBlurPool2d(16, filter_size=3, group=8)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        sigma = layer.weights(layer.pad(x))
    torch.testing.assert_close(sigma.sum(1), torch.ones(2, 8, 8))
    per_group = sigma.view(2, 8, 9, 8, 8).sum(2)
    assert (per_group - 1).abs().max() > 0.5  # each group's filter sums to a_g < 1, not to 1


@pytest.mark.parametrize("mode", ["zeros", "replicate", "circular", "partial"])
def test_adaptive_padding_modes(mode):
    layer = AdaptiveBlurPool2d(4, filter_size=3, group=2, padding=PaddingSpec(mode=mode)).eval()
    layer.conv.weight.data.zero_()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        full = layer.before_subsampling(x)
    pad_mode = {"zeros": "constant", "partial": "constant"}.get(mode, mode)
    box = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode=pad_mode), 3, stride=1) / 2
    torch.testing.assert_close(full, box)
    assert layer.pad.mode == ("zeros" if mode == "partial" else mode)


def test_adaptive_backward_and_half_precision():
    layer = AdaptiveBlurPool2d(8, group=4)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.conv.weight.grad is not None
    assert layer.double()(torch.randn(1, 8, 5, 5, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs,needles",
    [
        ({"channels": 12, "group": 8}, ["12 channels", "8 equal groups", "downsample.group=6"]),
        ({"channels": 7, "group": 2}, ["7 channels", "2 equal groups", "downsample.group=1"]),
        ({"channels": 8, "filter_size": 4}, ["filter_size is 4", "odd"]),
        ({"channels": 8, "filter_size": 0}, ["filter_size is 0"]),
        ({"channels": 8, "group": 0}, ["group is 0"]),
    ],
)
def test_adaptive_refusals(kwargs, needles):
    with pytest.raises(ConfigError) as err:
        AdaptiveBlurPool2d(**kwargs)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


# ---------------------------------------------------------------------------------------------- ideal


def reference_ideal(x: torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """``create_lpf_rect`` + ``LPF_RFFT`` as the reference writes them (square maps only)."""
    n = x.shape[-1]
    cutoff_low = int((n * cutoff) // 2)
    cutoff_high = int(n - cutoff_low)
    rect_1d = torch.ones(n, dtype=x.dtype)
    rect_1d[cutoff_low + 1 : cutoff_high] = 0
    if n % 4 == 0:
        rect_1d[cutoff_low] = 0
        rect_1d[cutoff_high] = 0
    rect = (rect_1d[:, None] * rect_1d[None, :])[:, : int(n / 2 + 1)]
    return torch.fft.irfft2(torch.fft.rfft2(x) * rect, s=(x.shape[-2], x.shape[-1]))


@pytest.mark.parametrize("n,kept", [(32, 7), (16, 3), (14, 3), (15, 3), (7, 1), (28, 6), (224, 55)])
def test_ideal_kept_frequencies(n, kept):
    mask = ideal_mask_1d(n, 2)
    signed = [k if k <= n // 2 else k - n for k in range(n)]
    assert sorted(s for s, m in zip(signed, mask.tolist()) if m) == list(range(-kept, kept + 1))


def test_ideal_stride4_matches_reference_stem_at_224():
    mask = ideal_mask_1d(224, 4)
    assert int(mask.sum()) == 2 * 27 + 1 and mask[27] == 1 and mask[28] == 0


def cosine(n: int, freq: int, axis: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * freq * t / n + 0.3)
    return (wave[:, None] if axis == 0 else wave[None, :]).expand(n, n)[None, None]


@pytest.mark.parametrize("axis", [0, 1])
def test_ideal_passes_low_and_removes_high_cosines(axis):
    layer = IdealLowPass2d()
    low, high = cosine(32, 5, axis), cosine(32, 11, axis)
    torch.testing.assert_close(layer.before_subsampling(low), low)
    assert layer.before_subsampling(high).abs().max() < 1e-12
    torch.testing.assert_close(layer(low + high), low[..., ::2, ::2])
    assert layer.before_subsampling(cosine(32, 8, axis)).abs().max() < 1e-12  # the output's Nyquist bin


def test_ideal_constant_shape_and_shift_equivariance():
    layer = IdealLowPass2d()
    const = torch.full((2, 3, 10, 13), 2.5)
    torch.testing.assert_close(layer.before_subsampling(const), const)
    for h, w in [(16, 16), (15, 7), (16, 24)]:
        assert layer(torch.randn(1, 2, h, w)).shape == (1, 2, math.ceil(h / 2), math.ceil(w / 2))
    torch.manual_seed(0)
    for h, w in [(16, 16), (14, 22), (16, 24)]:
        x = torch.randn(2, 3, h, w)
        for shift in [(2, 0), (0, 2), (2, 4), (-2, 6)]:
            shifted = layer(torch.roll(x, shift, dims=(2, 3)))
            expected = torch.roll(layer(x), (shift[0] // 2, shift[1] // 2), dims=(2, 3))
            assert (shifted - expected).abs().max() < 1e-5


@pytest.mark.parametrize("n", [32, 16, 14, 15, 7, 28])
def test_ideal_matches_reference_formula(n):
    torch.manual_seed(n)
    x = torch.randn(2, 3, n, n, dtype=torch.float64)
    layer = IdealLowPass2d()
    torch.testing.assert_close(layer.before_subsampling(x), reference_ideal(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer(x), reference_ideal(x)[..., ::2, ::2], rtol=0, atol=1e-12)


def test_ideal_non_square_is_separable_and_sizes_cached():
    torch.manual_seed(0)
    layer = IdealLowPass2d()
    x = torch.randn(1, 2, 16, 24, dtype=torch.float64)
    # separable: filtering rows then columns equals the 2-D filter
    rows = torch.fft.ifft(torch.fft.fft(x, dim=-2) * ideal_mask_1d(16, 2, torch.float64)[:, None], dim=-2).real
    both = torch.fft.ifft(torch.fft.fft(rows, dim=-1) * ideal_mask_1d(24, 2, torch.float64), dim=-1).real
    torch.testing.assert_close(layer.before_subsampling(x), both, rtol=0, atol=1e-12)
    assert layer(x).shape == (1, 2, 8, 12)
    assert layer(torch.randn(1, 2, 9, 9)).shape == (1, 2, 5, 5)  # a second size (the reference's fails)


def test_ideal_half_precision_and_refusal():
    x = torch.randn(1, 2, 12, 12)
    layer = IdealLowPass2d()
    y = layer(x.half())
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), layer(x.half().float()), rtol=1e-3, atol=1e-3)
    with pytest.raises(ConfigError, match="stride of at least 2"):
        IdealLowPass2d(stride=1)


def test_ideal_filter_and_ddac_as_strategies_in_built_in_and_converted_networks():
    """``blurpool filter=ideal`` and ``ddac`` take blur pooling's places, in a built-in ResNet and
    through ``convert``; a group that does not divide a map's channels is refused by name."""
    import torchvision

    from stridelab.layers import PaddingSpec, create_downsample
    from stridelab.models import convert, create_model

    ideal = create_downsample("blurpool", filter="ideal")
    net = create_model("resnet20", num_classes=10, downsample=ideal, padding=PaddingSpec("circular"))
    kinds = {type(m).__name__ for m in net.modules()}
    assert "IdealLowPass2d" in kinds and "BlurPool2d" not in kinds
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    tv = convert(torchvision.models.resnet18(num_classes=10), "ddac")
    assert isinstance(tv.get_submodule("layer2.0.conv1_down"), AdaptiveBlurPool2d)
    assert tv(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    with pytest.raises(ConfigError, match="group"):
        create_model("resnet20", num_classes=10, downsample=create_downsample("ddac", group=5), padding=PaddingSpec())
    with pytest.raises(ConfigError, match="filter"):
        create_downsample("blurpool", filter="sinc")
