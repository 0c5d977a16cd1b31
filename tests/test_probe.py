"""The position-information probe (Islam, Jia & Bruce 2020): analytic cases, counter-cases, its pieces
against hand and numpy computations, the suite's keys, and the zero vs circular padding bar on
trained shapes10 models."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

from stridelab.errors import ConfigError
from stridelab.metrics import METRIC_GROUPS, MeasurementSuite, position_probe
from stridelab.metrics.probe import pearson, position_targets, rankdata, ridge_readout, spearman


class Coords(nn.Module):
    """Appends the horizontal and vertical coordinate (0..1) of every pixel as two channels;
    ``keep=False`` outputs the coordinates only."""

    def __init__(self, keep: bool = True) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x):
        coords = position_targets(*x.shape[2:]).to(x.dtype)[None].expand(len(x), -1, -1, -1)
        return torch.cat([x, coords], 1) if self.keep else coords


class Staged(nn.Module):
    """A StagedNet-like model: ``stem`` -> named ``stages`` -> global average pool + linear head."""

    def __init__(self, stages: list[tuple[str, nn.Module]], out_chs: int, stem: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = stem or nn.Identity()
        self.stages = nn.Sequential(OrderedDict(stages))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(out_chs, 10))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def _images(n=32, size=8, seed=0, dtype=torch.float64):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _tie_ceiling(h: int, w: int) -> float:
    """SPC against the horizontal gradient of a prediction that orders the columns right but ranks
    the pixels of a column in any (untied) order: sqrt(var of the tied ranks / var of all ranks)."""
    n = h * w
    return math.sqrt(h * h * (w * w - 1) / (n * n - 1))


# -- (a) an explicit position channel: SPC 1, MAE 0 ------------------------------------------------
def test_coordinate_features_are_read_exactly():
    model = Staged([("stage0", Coords(keep=False))], 2).double()
    r = position_probe(model, _images(16, 8), ridge=0.0)
    f = r.features
    assert r.features_layer == "stage0" and f.shape == (2, 8, 8) and (r.fit_images, r.test_images) == (8, 8)
    # The prediction equals the target to rounding; rounding may break the ties of a column, so SPC is
    # 1 or the tie ceiling (0.9923 on 8 x 8), no less.
    for key in ("spc_h", "spc_v"):
        assert _tie_ceiling(8, 8) - 1e-9 < getattr(f, key) <= 1 + 1e-12
    assert f.mae_h < 1e-12 and f.mae_v < 1e-12 and r.spc > 0.99 and r.mae < 1e-12
    # The ridge shrinks the read-out by about 1 / (1 + ridge): the order is kept, MAE ~ ridge / 4.
    shrunk = position_probe(model, _images(16, 8), ridge=1e-2).features
    assert shrunk.spc > _tie_ceiling(8, 8) - 1e-9 and 1e-4 < shrunk.mae < 1e-2


def test_coordinates_among_content_channels():
    # Content channels and the coordinates: the read-out finds the coordinates. Its tiny weights on the
    # content break the ties of a column, so SPC sits at the tie ceiling rather than at 1.
    torch.manual_seed(0)
    model = Staged(
        [("stage0", nn.Conv2d(3, 6, 3, padding=1, padding_mode="circular")), ("stage1", Coords())], 8
    ).double()
    r = position_probe(model, _images(32, 8), ridge=1e-9)
    assert list(r.layers) == ["stage0", "stage1"] and r.layers["stage1"].shape == (8, 8, 8)
    assert abs(r.layers["stage0"].spc) < 0.1, "circular convolution of random images: no position"
    assert r.spc > _tie_ceiling(8, 8) - 1e-6 and r.mae < 1e-6


# -- (b) a translation-equivariant network carries no absolute position; zero padding does ------------
class _ConvStages(Staged):
    """Stride-1 3x3 convolutions (``padding_mode``) and ReLU: stem + 3 stages of 2; random weights."""

    def __init__(self, padding_mode: str, width: int = 8) -> None:
        torch.manual_seed(0)

        def stage():
            return nn.Sequential(
                *[
                    m
                    for _ in range(2)
                    for m in (nn.Conv2d(width, width, 3, padding=1, padding_mode=padding_mode), nn.ReLU())
                ]
            )

        super().__init__(
            [(f"stage{i}", stage()) for i in range(3)],
            width,
            stem=nn.Conv2d(3, width, 3, padding=1, padding_mode=padding_mode),
        )


def test_circular_stride1_network_has_no_position_and_zero_padding_has():
    x = _images(64, 16, dtype=torch.float32)
    circular = position_probe(_ConvStages("circular"), x)
    zeros = position_probe(_ConvStages("zeros"), x)
    for layer in circular.layers.values():
        assert abs(layer.spc_h) < 0.1 and abs(layer.spc_v) < 0.1
    # zeros: SPC 0.15 / 0.31 / 0.35 by stage (circular: 0.00 / 0.01 / 0.02); MAE 0.236 at the features
    assert zeros.spc > 0.25 and zeros.spc > circular.spc + 0.2
    assert zeros.mae < circular.mae - 0.01  # 0.267 = the mean's error on 16 columns
    assert circular.mae == pytest.approx(np.abs(np.arange(16) / 15 - 0.5).mean(), abs=0.01)


# -- (c) the closed form ------------------------------------------------------------------------------
def test_ridge_readout_equals_lstsq_at_lambda_zero():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.2])[:, None, None]
    feats = feats + torch.tensor([0.0, 3.0, -1.0])[:, None, None]
    targets = position_targets(4, 6)
    X = feats.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    Y = targets[None].expand(5, -1, -1, -1).permute(0, 2, 3, 1).reshape(-1, 2).numpy()
    A = np.hstack([X, np.ones((len(X), 1))])
    coef = np.linalg.lstsq(A, Y, rcond=None)[0]
    r = ridge_readout(feats, targets, ridge=0.0)
    pred = r.predict(feats).permute(0, 2, 3, 1).reshape(-1, 2).numpy()
    np.testing.assert_allclose(pred, A @ coef, atol=1e-10)
    np.testing.assert_allclose((r.weights / r.scale[:, None]).numpy(), coef[:3], atol=1e-10)
    # lambda > 0: the standardised closed form with an unpenalised bias, lambda = ridge * tr(G) / C.
    Z = (X - X.mean(0)) / X.std(0)
    G = Z.T @ Z
    lam = 0.5 * np.trace(G) / 3
    w = np.linalg.solve(G + lam * np.eye(3), Z.T @ (Y - Y.mean(0)))
    np.testing.assert_allclose(ridge_readout(feats, targets, ridge=0.5).weights.numpy(), w, atol=1e-10)


def test_a_constant_channel_is_left_out():
    feats = _images(4, 5)
    feats[:, 1] = 7.0
    r = ridge_readout(feats, position_targets(5, 5), ridge=0.0)
    assert torch.all(r.weights[1] == 0) and torch.isfinite(r.predict(feats)).all()


# -- (d) Spearman with ties -----------------------------------------------------------------------------
def test_rankdata_averages_ties():
    assert rankdata(torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0])).tolist() == [3.0, 1.5, 4.0, 1.5, 5.0]
    assert rankdata(torch.tensor([[2.0, 2.0, 2.0], [0.0, -1.0, 0.0]])).tolist() == [[2, 2, 2], [2.5, 1, 2.5]]


def test_spearman_with_ties_by_hand():
    # ranks a = (1, 2.5, 2.5, 4), b = (1.5, 1.5, 3, 4); centred: (-1.5, 0, 0, 1.5), (-1, -1, 0.5, 1.5)
    # sum of products 3.75, sums of squares 4.5 and 4.5: rho = 3.75 / 4.5 = 5/6
    a, b = torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([10.0, 10.0, 20.0, 30.0])
    assert float(spearman(a, b)) == pytest.approx(5 / 6, abs=1e-12)
    assert float(spearman(a, -b)) == pytest.approx(-5 / 6, abs=1e-12)
    assert float(spearman(a, torch.ones(4))) == 0.0, "a constant side has no ranks: 0"
    assert float(pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0]))) == pytest.approx(1.0)


def test_the_tie_ceiling_of_a_gradient_target():
    h, w = 4, 5
    t = position_targets(h, w)[0]
    pred = t + 1e-3 * torch.arange(h, dtype=torch.float64)[:, None]  # right column order, ties broken
    assert float(spearman(pred.flatten(), t.flatten())) == pytest.approx(_tie_ceiling(h, w), abs=1e-12)
    assert float(spearman(t.flatten(), t.flatten())) == pytest.approx(1.0, abs=1e-12)


# -- degenerate cases, layers, the suite --------------------------------------------------------------
def test_degenerate_cases():
    model = Staged([("stage0", Coords()), ("stage1", nn.AdaptiveAvgPool2d(1))], 5).double()
    r = position_probe(model, _images(8, 8))
    assert r.layers["stage0"].spc > 0.99
    one = r.layers["stage1"]
    assert one.shape == (5, 1, 1) and all(math.isnan(v) for v in one.figures().values())
    assert math.isnan(r.spc) and math.isnan(r.mae)
    row = position_probe(
        Staged([("stage0", Coords()), ("stage1", nn.AdaptiveAvgPool2d((1, 8)))], 5).double(), _images(8, 8)
    ).features
    assert row.spc_h > 0.99 and math.isnan(row.spc_v) and math.isnan(row.spc)
    with pytest.raises(ConfigError, match="at least 2 images"):
        position_probe(model, _images(1, 8))
    with pytest.raises(ConfigError, match="has none: use a stridelab model"):
        position_probe(nn.Conv2d(3, 4, 3), _images(4, 8))
    with pytest.raises(ConfigError, match="Unknown stage 'stage9'"):
        position_probe(model, _images(4, 8), layers=["stage9"])
    with pytest.raises(ConfigError, match="ridge"):
        position_probe(model, _images(4, 8), ridge=-1.0)
    # ``layers``: the named stages, and always the features.
    assert list(position_probe(model, _images(4, 8), layers=[]).layers) == ["stage1"]


def test_batches_do_not_change_the_figures():
    net, x = _ConvStages("zeros"), _images(37, 12, dtype=torch.float32)
    a, b = position_probe(net, x, batch_size=500), position_probe(net, x, batch_size=5)
    for name in a.layers:
        for k, v in a.layers[name].figures().items():
            assert b.layers[name].figures()[k] == pytest.approx(v, abs=1e-5), (name, k)
    assert (a.fit_images, a.test_images) == (18, 19)


def test_kept_outputs_are_the_logits_of_the_same_batches():
    from stridelab.metrics.inference import logits_of

    net, x = _ConvStages("zeros"), _images(37, 12, dtype=torch.float32)
    for bs in (5, 18, 500):
        r = position_probe(net, x, batch_size=bs, keep_outputs=True)
        assert torch.equal(r.outputs, logits_of(net, x, bs))
    assert position_probe(net, x).outputs is None


class _Data:
    """The part of a data module the suite reads."""

    input_shape = (3, 8, 8)

    def load(self):
        class Splits:
            tests = {"test": (np.zeros((16, 3, 8, 8), dtype=np.uint8), np.zeros(16, dtype=np.int64))}

        return Splits()

    def model_inputs(self, images, device):
        return _images(len(images), 8, dtype=torch.float32).to(device)


def test_suite_keys_and_models_without_stages():
    only_probe = [g for g in METRIC_GROUPS if g != "probe"]
    suite = MeasurementSuite(skip=only_probe, probe_ridge=0.01)
    out = suite.measure(
        Staged([("stage0", nn.Conv2d(3, 4, 3, padding=1)), ("stage1", Coords())], 6), _Data(), "cpu"
    ).metrics
    probe = {k for k in out if k.startswith("probe/")}
    assert probe == {
        "probe/spc",
        "probe/mae",
        "probe/spc_h",
        "probe/spc_v",
        "probe/mae_h",
        "probe/mae_v",
        "probe/ridge",
        "probe/layer_stage0.spc",
        "probe/layer_stage0.mae",
        "probe/layer_stage1.spc",
        "probe/layer_stage1.mae",
    }
    assert out["probe/spc"] > 0.9 and out["probe/ridge"] == 0.01
    assert out["probe/spc"] == out["probe/layer_stage1.spc"]
    # The probe's pass gives shift and crop their reference logits: the same figures with or without it.
    net = _ConvStages("zeros")
    figures = [
        MeasurementSuite(skip=skip).measure(net, _Data(), "cpu").metrics for skip in (("cost",), ("cost", "probe"))
    ]
    for key in ("shift/circular_logit_change", "shift/circular_consistency", "crop/acc_at_+0", "crop/consistency"):
        assert figures[0][key] == figures[1][key], key
    assert "probe/spc" in figures[0] and "probe/spc" not in figures[1]
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    assert not any(k.startswith("probe/") for k in suite.measure(plain, _Data(), "cpu").metrics)
    with pytest.raises(ConfigError, match="probe_ridge"):
        MeasurementSuite(probe_ridge=-1)
    with pytest.raises(ConfigError, match="position probe"):
        MeasurementSuite(subset_size=1)
    MeasurementSuite(subset_size=1, skip=["probe"])


# -- (e) trained shapes10 models: zero padding encodes position, circular padding does not ------------
def test_trained_zero_padded_network_encodes_more_position_than_circular(tmp_path, compose):
    """simple_cnn width 8, 64 SGD steps on 2048 shapes10 images (about 2 s + 3.5 s on 2 CPU cores).
    Seeds 0-4 gave position SPC 0.64-0.71 with zeros and 0.005-0.022 with circular padding (96 steps:
    0.52-0.74 and -0.01-0.08)."""
    from stridelab.train import run

    found = {}
    for pad in ("zeros", "circular"):
        cfg = compose(
            [
                "experiment=smoke",
                "model.width=8",
                f"padding={pad}",
                "logger=csv",
                "seed=0",
                "data.train_size=2048",
                "data.limit_train=2048",
                "data.test_size=256",
                "trainer.max_epochs=2",
                "metrics.skip=[shift,crop,pairshift,worstshift,subpixel,corruption,border,audit,coverage,position,aliasing,cost]",
            ],
            tmp_path / pad,
        )
        found[pad] = run(cfg)
        assert found[pad]["train/steps"] == 64 and found[pad]["test/acc"] > 0.2, "trained beyond chance (0.1)"
    zeros, circular = found["zeros"]["probe/spc"], found["circular"]["probe/spc"]
    assert zeros > 0.4 and abs(circular) < 0.2 and zeros - circular > 0.3, (zeros, circular)
