"""Standard-shift consistency/stability, worst-case and sub-pixel shifts: analytic cases and counter-cases."""

from __future__ import annotations

import torch
import torch.nn as nn

from stridelab.layers import PaddingSpec, create_downsample
from stridelab.metrics.shift_protocols import (
    pair_shift_figures,
    standard_shift_images,
    subpixel_factors,
    subpixel_shift,
    worst_case_shift,
)
from stridelab.models import create_model


class MeanColour(nn.Module):
    """Exactly invariant to circular shifts: logits from the signs and sizes of the channel means."""

    def forward(self, x):
        m = x.mean(dim=(2, 3))
        return torch.cat([m[:, :2], -m[:, :2]], 1)


class Centred(nn.Module):
    """A random network's logits minus their mean over a fixed batch: an untrained network predicts
    one class for every image, which no shift can change; its deviations from the mean can."""

    def __init__(self, net, x):
        super().__init__()
        self.net = net.eval()
        with torch.no_grad():
            self.register_buffer("offset", net(x).mean(0))

    def forward(self, x):
        return self.net(x) - self.offset


class Corner(nn.Module):
    """Reads one pixel: every shift changes what it sees."""

    def forward(self, x):
        return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0], x[:, 1, 0, 0], x[:, 2, 0, 0]], 1)


def _data(n=48, size=12):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, size, size, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, 4, (n,), generator=gen)


def test_standard_shift_fills_with_zeros():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    y = standard_shift_images(x, torch.tensor([1]), torch.tensor([-2]))
    assert torch.equal(y[0, 0, 0], torch.zeros(4))  # the row moved in from above: zeros
    assert torch.equal(y[0, 0, 1:, :2], x[0, 0, :3, 2:])  # content moved down 1, left 2
    assert torch.equal(y[0, 0, :, 2:], torch.zeros(4, 2))


def test_pair_shift_figures_of_an_invariant_and_a_position_reading_model():
    x, y = _data()
    inv = MeanColour()
    r = pair_shift_figures(inv, x, y)
    acc = float((inv(x).argmax(1) == y).double().mean())
    assert r["circular_consistency"] == r["circular_stability"] == 1.0
    assert abs(r["circular_stable_acc"] - acc) < 1e-12  # C-Stab = accuracy where C-Cons = 100 (the table)
    assert r["standard_consistency"] < 1.0  # the zero fill changes the mean colour
    c = pair_shift_figures(Corner(), x, y)
    assert c["circular_consistency"] < 0.6 and c["standard_consistency"] < 0.6
    assert c["circular_stability"] <= c["circular_consistency"]
    assert pair_shift_figures(Corner(), x, y, low=0, high=0)["standard_stability"] == 1.0  # no shift at all


def test_worst_case_is_accuracy_for_an_invariant_net_and_low_for_a_corner_reader():
    x, y = _data()
    inv = MeanColour()
    acc = float((inv(x).argmax(1) == y).double().mean())
    r = worst_case_shift(inv, x, y, max_shift=2)
    assert r["consistency"] == 1.0 and abs(r["acc"] - acc) < 1e-12
    c = worst_case_shift(Corner(), x, y, max_shift=2)
    assert c["consistency"] < 0.1 and c["acc"] <= c["consistency"] + 0.1
    assert worst_case_shift(inv, x, y, max_shift=2, mode="standard")["consistency"] < 1.0
    assert worst_case_shift(Corner(), x, y, max_shift=0)["consistency"] == 1.0  # no shift: nothing to fail


def test_aps_with_circular_padding_scores_one_on_worst_case_circular_shifts():
    x, y = torch.randn(12, 3, 32, 32), torch.zeros(12, dtype=torch.long)
    for downsample, mode, invariant in (("aps", "circular", True), ("conv", "circular", False)):
        torch.manual_seed(0)
        net = create_model(
            "resnet20", num_classes=10, downsample=create_downsample(downsample), padding=PaddingSpec(mode)
        )
        net = Centred(net, x)
        assert len(set(net(x).argmax(1).tolist())) > 2  # predictions that can change
        r = worst_case_shift(net, x, y, max_shift=2)
        assert (r["consistency"] == 1.0) is invariant


def _afc_subpixel(x, up, sy, sx):
    """AFC's steps written out: zero insertion, the ideal reconstruction filter (the old Nyquist bins
    halved, gain up^2), a roll by (-sy, -sx) and every up-th pixel."""
    b, c, h, w = x.shape
    z = torch.zeros(b, c, h * up, w * up, dtype=torch.float64)
    z[:, :, ::up, ::up] = x
    spec = torch.fft.fft2(z)

    def mask(n_small, n_big):
        k = torch.fft.fftfreq(n_big, d=1.0 / n_big, dtype=torch.float64).abs()
        m = (k < n_small / 2).double()
        m[k == n_small / 2] = 0.5
        return m

    filtered = torch.fft.ifft2(spec * mask(h, h * up)[:, None] * mask(w, w * up)[None, :]).real * up**2
    return torch.roll(filtered, (-sy, -sx), dims=(2, 3))[:, :, ::up, ::up]


def test_subpixel_shift_equals_afcs_construction_and_whole_pixels_are_rolls():
    x = torch.randn(2, 3, 16, 12, dtype=torch.float64)
    for up, sy, sx in ((2, 1, 1), (3, 1, 2), (4, 3, 1), (4, 2, 2)):
        assert torch.allclose(subpixel_shift(x, up, sy, sx), _afc_subpixel(x, up, sy, sx), atol=1e-10)
    assert torch.allclose(subpixel_shift(x, 3, 3, 6), torch.roll(x, (-1, -2), dims=(2, 3)), atol=1e-10)
    assert subpixel_factors(4) == [3, 4] and subpixel_factors(2) == [2]


def test_subpixel_figures_of_an_invariant_and_a_position_reading_model():
    """A sub-pixel shift keeps the DC term, so the channel-mean network keeps every prediction (the
    analytic case); the corner reader does not (the counter-case)."""
    from stridelab.metrics.shift_protocols import subpixel_shift_figures

    x, y = _data()
    inv = MeanColour()
    acc = float((inv(x).argmax(1) == y).double().mean())
    r = subpixel_shift_figures(inv, x, y, max_up=4)
    assert r["shifts"] == 13 and r["consistency"] == 1.0 and abs(r["acc"] - acc) < 1e-12
    c = subpixel_shift_figures(Corner(), x, y, max_up=4)
    assert c["consistency"] < 0.5
