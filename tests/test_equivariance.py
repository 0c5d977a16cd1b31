"""Exact circular-shift equivariance (issue 11, point 4): with circular padding every strategy gives a
network whose logits do not change under circular shifts by multiples of its total stride, and APS/LPS
networks (at evaluation) under every integer shift. Zero padding is the counter-case."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from stridelab.layers import DOWNSAMPLE_REGISTRY, PaddingSpec, create_downsample
from stridelab.metrics import circular_shift_consistency
from stridelab.models import create_model

# Small versions of every model. allcnn_c: the paper's valid 3x3 conv reads no padding, so it is not
# circular; model.valid_last_conv=false makes the net exactly equivariant (docs/metrics.md).
MODELS = {
    "simple_cnn": dict(width=4),
    "resnet20": dict(widths=(4, 4, 8)),
    "redgreen_net": dict(widths=(4, 4, 4, 4)),
    "allcnn_c": dict(width=4, valid_last_conv=False, dropout=0.0, dropout_input=0.0),
}
TOTAL_STRIDE = {"simple_cnn": 8, "resnet20": 4, "redgreen_net": 8, "allcnn_c": 4}
INVARIANT = ("aps", "lps")
# Not equivariant by construction: TIPS's mixture weights come from fixed quadrants of the map (a shift
# moves content across them), ASAP's one-pixel pad makes an odd map. Their own test below.
NOT_EQUIVARIANT = ("tips", "asap")
ROUNDING = 1e-10  # float64


def _net(model, downsample, mode):
    torch.manual_seed(0)
    net = create_model(
        model, num_classes=10, downsample=create_downsample(downsample), padding=PaddingSpec(mode), **MODELS[model]
    ).double()
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():  # eval-mode BN with non-trivial statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=gen, dtype=torch.float64))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=torch.float64) + 0.5)
    return net.eval()


def _images(n=2, size=16):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _max_change(net, x, shifts):
    with torch.no_grad():
        base = net(x)
        return max((net(torch.roll(x, s, dims=(2, 3))) - base).abs().max().item() for s in shifts)


@pytest.mark.parametrize("downsample", sorted(set(DOWNSAMPLE_REGISTRY) - set(NOT_EQUIVARIANT)))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_circular_padding_is_exactly_equivariant_to_total_stride_shifts(model, downsample):
    s = TOTAL_STRIDE[model]
    x = _images()
    shifts = [(s, 0), (0, 3 * s), (2 * s, s)]
    assert _max_change(_net(model, downsample, "circular"), x, shifts) < ROUNDING
    # counter-case: zero padding lets the border tell the shifted image apart
    assert _max_change(_net(model, downsample, "zeros"), x, shifts) > 1e-7


@pytest.mark.parametrize("downsample", NOT_EQUIVARIANT)
def test_tips_and_asap_are_not_equivariant_and_asap_without_its_pad_is(downsample):
    x, s = _images(), TOTAL_STRIDE["resnet20"]
    shifts = [(s, 0), (0, 3 * s), (2 * s, s)]
    assert _max_change(_net("resnet20", downsample, "circular"), x, shifts) > 1e-7
    torch.manual_seed(0)
    flat = create_model(
        "resnet20",
        num_classes=10,
        downsample=create_downsample("asap", pad_one=False),
        padding=PaddingSpec("circular"),
        **MODELS["resnet20"],
    ).double()
    assert _max_change(flat.eval(), x, shifts) < ROUNDING


@pytest.mark.parametrize("downsample", INVARIANT)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_polyphase_networks_are_invariant_to_every_circular_shift(model, downsample):
    shifts = [(1, 0), (0, 1), (3, 5), (7, 2), (15, 9)]
    x = _images()
    assert _max_change(_net(model, downsample, "circular"), x, shifts) < ROUNDING
    assert _max_change(_net(model, downsample, "zeros"), x, shifts) > 1e-7


@pytest.mark.parametrize("downsample", ["conv", "blurpool"])
def test_other_strategies_are_not_invariant_to_odd_shifts(downsample):
    """The counter-case to APS/LPS: plain striding (and blur pooling, only approximately) move the grid."""
    assert _max_change(_net("simple_cnn", downsample, "circular"), _images(), [(1, 0), (3, 5)]) > 1e-7


@pytest.mark.parametrize("max_shift", [1, 5, 16])
def test_aps_circular_consistency_is_exactly_one_for_any_range(max_shift):
    x = _images(32)
    aps = circular_shift_consistency(_net("simple_cnn", "aps", "circular"), x, max_shift=max_shift)
    assert aps["consistency"] == 1.0 and aps["logit_change"] < ROUNDING
    conv = circular_shift_consistency(_net("simple_cnn", "conv", "circular"), x, max_shift=max_shift)
    assert conv["logit_change"] > 1e-7


def test_lps_in_training_mode_is_stochastic():
    """Only evaluation is invariant: training mixes components with Gumbel noise."""
    net = _net("simple_cnn", "lps", "circular").train()
    x = _images(2)
    assert not torch.allclose(net(x), net(x))
