"""The measurement suite's analytic cases (issue 3), each with a counter-case that must fail them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from stridelab.layers import BlurPool2d
from stridelab.metrics import (
    border_deviation,
    circular_shift_consistency,
    constant_images,
    count_flops,
    coverage_map,
    coverage_stats,
    crop_consistency,
    deviation_map,
    inference_throughput,
    padding_audit,
    position_gap,
    roll_images,
    stability_curve,
    training_throughput,
    used_padding,
)
from stridelab.metrics.shift import relative_logit_change
from stridelab.models import SimpleCNN

ROUNDING = 1e-10  # float64


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Eval-mode BatchNorm with non-trivial statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=m.running_var.dtype) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=gen, dtype=m.weight.dtype))
                m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=m.bias.dtype))
    return model.eval()


def shift_net(padding_mode: str, stride2_stages: int = 0, width: int = 8) -> nn.Module:
    """3x3 convs (padding 1, ``padding_mode``), eval BN, ReLU; ``stride2_stages`` of them with stride 2;
    global average pooling and a linear classifier. float64."""
    torch.manual_seed(0)
    layers, chs = [], 3
    for i in range(2 + stride2_stages):
        stride = 2 if i >= 2 else 1
        layers += [
            nn.Conv2d(chs, width, 3, stride=stride, padding=1, padding_mode=padding_mode, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        chs = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).double()
    return _randomise_bn(net, torch.Generator().manual_seed(1))


def _images(n=16, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- circular-shift consistency -----------------------------------------------------------------
def test_roll_images_matches_torch_roll():
    x = _images(4, 8)
    dy, dx = torch.tensor([0, 1, -3, 7]), torch.tensor([2, -1, 0, 5])
    expected = torch.stack([torch.roll(x[i], (int(dy[i]), int(dx[i])), dims=(1, 2)) for i in range(4)])
    assert torch.equal(roll_images(x, dy, dx), expected)


def test_circular_stride1_net_is_exactly_shift_invariant():
    net, x = shift_net("circular"), _images()
    base = net(x)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            shifted = net(torch.roll(x, (dy, dx), dims=(2, 3)))
            assert relative_logit_change(shifted, base).max() < ROUNDING
    r = circular_shift_consistency(net, x, max_shift=3)
    assert r["consistency"] == 1.0 and r["logit_change"] < ROUNDING


def test_zero_padding_breaks_shift_invariance():
    r = circular_shift_consistency(shift_net("zeros"), _images(), max_shift=3)
    assert r["logit_change"] > 1e-3


@pytest.mark.parametrize("stages", [1, 2])
def test_strided_circular_net_is_exact_for_multiples_of_2_to_the_L(stages):
    net, x = shift_net("circular", stride2_stages=stages), _images(size=16)
    period = 2**stages
    r = circular_shift_consistency(net, x, max_shift=2 * period, step=period)
    assert r["consistency"] == 1.0 and r["logit_change"] < ROUNDING
    # Counter-case: a shift that is not a multiple of 2^L changes the logits.
    odd = relative_logit_change(net(torch.roll(x, (1, 1), dims=(2, 3))), net(x))
    assert odd.median() > 1e-3


# -- crop consistency and the stability curve ----------------------------------------------------
def test_crop_metrics_on_constant_images_and_the_unshifted_point():
    net = SimpleCNN(num_classes=10, width=8, stages=2).double().eval()
    const = torch.full((6, 3, 16, 16), 0.3, dtype=torch.float64)
    labels = torch.zeros(6, dtype=torch.long)
    # Mean-filled padding of a constant image is the same image: every crop is identical.
    assert crop_consistency(net, const, padding=4, fill="mean")["consistency"] == 1.0
    curve = stability_curve(net, const, labels, padding=4, fill="mean")
    assert sorted(curve) == list(range(-4, 5)) and len(set(curve.values())) == 1
    # d = 0 crops the original image: its accuracy is the plain accuracy.
    x, y = _images(32, 16), torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(3))
    plain = float((net(x).argmax(1) == y).double().mean())
    assert stability_curve(net, x, y, padding=2, fill="reflect")[0] == pytest.approx(plain)


def test_crop_consistency_drops_for_a_position_sensitive_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)).double()
    assert crop_consistency(net, _images(64, 16), padding=4, fill="zeros")["consistency"] < 0.9


# -- border deviation ----------------------------------------------------------------------------
def test_deviation_map_by_hand():
    f = torch.full((1, 1, 5, 5), 2.0)
    f[..., 2:3, 2:3] = 1.0  # 5x5 map, band 2: interior is the single centre pixel (value 1)
    per_map, per_pos = deviation_map(f, band=2)
    # band: 24 pixels deviating by 1 from the interior median 1; RMS = sqrt((24*4 + 1) / 25)
    assert float(per_map[0]) == pytest.approx(1.0 / math.sqrt(97 / 25))
    assert float(per_pos[0, 2, 2]) == 0.0
    assert float(deviation_map(torch.zeros(1, 2, 4, 4), 1)[0][0]) == 0.0  # all-zero map: no artifact


def _border_net(downsample, padding):
    torch.manual_seed(0)
    net = SimpleCNN(num_classes=10, width=8, stages=2, downsample=downsample, padding=padding).double()
    return _randomise_bn(net, torch.Generator().manual_seed(2))


@pytest.mark.parametrize("downsample", ["conv", "maxpool", "blurpool"])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "circular"])
def test_border_deviation_vanishes_without_zero_padding(downsample, padding):
    r = border_deviation(_border_net(downsample, padding), constant_images(_images(8, 16)))
    assert len(r.per_layer) >= 5
    assert max(r.per_layer.values()) < ROUNDING and r.features < ROUNDING


@pytest.mark.parametrize("downsample", ["conv", "maxpool", "blurpool"])
def test_border_deviation_is_clearly_positive_with_zero_padding(downsample):
    r = border_deviation(_border_net(downsample, "zeros"), constant_images(_images(8, 16)))
    assert r.mean > 0.05 and r.features > 0.01
    assert r.heatmap.shape == (4, 4) and float(r.heatmap.max()) > 0


# -- uneven-padding audit ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n,k,s,p,expected",
    [
        (32, 3, 2, 1, (1, 0, 0)),
        (33, 3, 2, 1, (1, 1, 0)),  # 3x3/s2/p1: 1 and 0 on 32 px, 1 and 1 on 33
        (224, 7, 2, 3, (3, 2, 0)),
        (225, 7, 2, 3, (3, 3, 0)),  # 7x7/s2/p3 (ResNet stem): 3/2 at 224, 3/3 at 225
        (32, 3, 2, 0, (0, 0, 1)),  # valid 3x3/s2 never reads the last column
        (32, 2, 2, 0, (0, 0, 0)),
        (32, 1, 2, 0, (0, 0, 16)),
    ],
)
def test_used_padding(n, k, s, p, expected):
    assert used_padding(n, k, s, p, p) == expected


@pytest.mark.parametrize("size,used,uneven", [(224, (3, 2, 3, 2), True), (225, (3, 3, 3, 3), False)])
def test_padding_audit_of_a_real_layer(size, used, uneven):
    net = nn.Sequential(nn.Conv2d(3, 4, 7, stride=2, padding=3), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    rows = padding_audit(net, (3, size, size))
    assert len(rows) == 1  # stride-1 layers read all of their padding and are not listed
    assert rows[0].used == used and rows[0].uneven is uneven and rows[0].declared == (3, 3, 3, 3)


def test_padding_audit_of_maxblurpool():
    # MaxBlurPool: a 2x2/s1 max (no padding) takes 32 to 31, then the 3-tap blur/s2 reads 1 and 1.
    rows = padding_audit(SimpleCNN(width=4, stages=2, downsample="blurpool", padding="reflect"), (3, 32, 32))
    assert [(r.kind, r.size_in, r.size_out, r.declared, r.used, r.uneven) for r in rows] == [
        ("blur", (31, 31), (16, 16), (1, 1, 1, 1), (1, 1, 1, 1), False),
        ("blur", (15, 15), (8, 8), (1, 1, 1, 1), (1, 1, 1, 1), False),
    ]


@pytest.mark.parametrize("size,used", [(32, (0, 0, 0, 0)), (33, (0, 1, 0, 1))])
def test_padding_audit_merges_an_explicit_pad(size, used):
    from stridelab.layers import ConvKit, PaddingSpec

    # An even kernel with 'same' padding: Pad2d (0, 1, 0, 1) then an unpadded conv.
    conv = ConvKit(padding=PaddingSpec("reflect", "same")).conv(3, 4, 2, stride=2)
    (row,) = padding_audit(conv, (3, size, size))
    assert row.size_in == (size, size) and row.declared == (0, 1, 0, 1) and row.used == used


# -- coverage ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer,ratio",
    [
        (nn.Conv2d(1, 1, 3, stride=2, padding=1), 4.0),  # kernel not divisible by stride: checkerboard
        (nn.Conv2d(1, 1, 2, stride=2), 1.0),  # divisible: every pixel read once
        (nn.MaxPool2d(2), 1.0),
        (BlurPool2d(1, 3, stride=2), 4.0),
    ],
)
def test_coverage_interior_ratio(layer, ratio):
    cov, total_stride = coverage_map(layer, (1, 32, 32))
    assert total_stride == 2
    assert coverage_stats(cov, total_stride)["interior_ratio"] == pytest.approx(ratio)


def test_coverage_follows_the_main_path_of_a_resnet():
    from stridelab.models import resnet20

    cov, total_stride = coverage_map(resnet20(), (3, 32, 32))
    stats = coverage_stats(cov, total_stride)
    assert total_stride == 4 and cov.shape == (32, 32)
    assert stats["border_ratio"] < 1.0 and stats["interior_ratio"] > 1.0


# -- cost ----------------------------------------------------------------------------------------
def test_flops_of_a_known_convolution_match_the_closed_form():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    assert count_flops(conv, (3, 32, 32)) == 2 * 8 * 16 * 16 * 3 * 3 * 3  # 2 per multiply-add
    blur = BlurPool2d(4, 3, stride=2)
    assert count_flops(blur, (4, 8, 8)) == 2 * 4 * 4 * 4 * 1 * 3 * 3  # depthwise
    # Training: forward + weight gradient (the input needs no gradient) = 2x; a second layer adds 3x its own.
    assert count_flops(conv, (3, 32, 32), train=True) == 2 * count_flops(conv, (3, 32, 32))
    two = nn.Sequential(conv, nn.Conv2d(8, 8, 3, padding=1))
    second = 2 * 8 * 16 * 16 * 8 * 9
    assert count_flops(two, (3, 32, 32), train=True) == 2 * count_flops(conv, (3, 32, 32)) + 3 * second


class _FakeClock:
    """``time.perf_counter`` that moves only when a model says a forward pass took time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Slowed(nn.Module):
    """A tiny model whose every forward pass takes ``delay`` seconds on the class's ``clock`` (a class
    attribute: the throughput probes time a deep copy of the model)."""

    clock = _FakeClock()

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x):
        self.clock.now += self.delay
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_slowed_model_reports_proportionally_fewer_images_per_s(monkeypatch):
    """Images/s = images in the timed steps / their time, warm-up excluded (on a fake clock, so the
    figure is exact and independent of machine load)."""
    import stridelab.training.timing as timing

    monkeypatch.setattr(timing.time, "perf_counter", _Slowed.clock)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    assert training_throughput(_Slowed(0.01), x, y, steps=5, warmup=1) == pytest.approx(8 / 0.01)
    assert training_throughput(_Slowed(0.03), x, y, steps=5, warmup=1) == pytest.approx(8 / 0.03)
    assert inference_throughput(_Slowed(0.03), x, steps=5, warmup=1) == pytest.approx(8 / 0.03)
    # min_seconds: the steps double until that much time is timed: 5 + 10 + 20 steps of 0.01 s
    assert training_throughput(_Slowed(0.01), x, y, steps=5, warmup=1, min_seconds=0.3) == pytest.approx(800)


# -- position gap ---------------------------------------------------------------------------------
class _AlwaysClass0(nn.Module):
    def forward(self, x):
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], 1)


def test_position_gap():
    x = torch.zeros(10, 3, 8, 8)
    zeros, ones = torch.zeros(10, dtype=torch.long), torch.ones(10, dtype=torch.long)
    r = position_gap(_AlwaysClass0(), (x, zeros), (x, ones))
    assert r == {"similar_acc": 1.0, "dissimilar_acc": 0.0, "gap": 1.0}
    assert position_gap(_AlwaysClass0(), (x, zeros), (x, zeros))["gap"] == 0.0


@pytest.mark.parametrize(
    "name,precision,peak",
    [
        ("NVIDIA H100 80GB HBM3", "bf16-mixed", 989.4e12),
        ("NVIDIA H100 PCIe", "bf16-mixed", 756.0e12),
        ("NVIDIA H200", "16-mixed", 989.4e12),
        ("NVIDIA A100-SXM4-80GB", "bf16-mixed", 312.0e12),
        ("NVIDIA A100-SXM4-80GB", "32-true", 156.0e12),  # TF32 is PyTorch's default for convolutions
        ("Some Future GPU", "bf16-mixed", None),
    ],
)
def test_device_peak_flops_says_which_peak(monkeypatch, name, precision, peak):
    from stridelab.metrics import device_peak_flops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    got = device_peak_flops(torch.device("cuda"), precision)
    assert (got and got[0]) == peak
    if peak:
        assert name in got[1] and f"{peak / 1e12:.1f} TFLOP/s" in got[1]
    assert device_peak_flops(torch.device("cpu"), precision) is None


@pytest.mark.parametrize(
    "downsample,padding", [("conv", "zeros"), ("blurpool", "reflect"), ("aps", "circular"), ("lps", "partial")]
)
def test_inference_copy_folds_batchnorm_and_computes_the_same_function(downsample, padding):
    from stridelab.layers import PaddingSpec, create_downsample
    from stridelab.metrics.inference import inference_copy
    from stridelab.models import create_model

    torch.manual_seed(0)
    net = create_model(
        "resnet20", downsample=create_downsample(downsample), padding=PaddingSpec(padding), widths=(4, 8, 8)
    ).double()
    net = _randomise_bn(net, torch.Generator().manual_seed(2))
    fused = inference_copy(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 10  # the model itself is untouched
    x = _images(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-9, atol=1e-9)
