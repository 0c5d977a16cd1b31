"""TIPS (Saha & Gokhale 2025): the layer against a hand computation, and its training terms in the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stridelab.errors import ConfigError
from stridelab.layers import ConvKit, PaddingSpec, create_downsample
from stridelab.layers.objective import training_objective
from stridelab.layers.tips import TIPS2d


def _tips(channels=3, seed=0, **kw) -> TIPS2d:
    torch.manual_seed(seed)
    return TIPS2d(channels, **kw).double()


def hand_tips(layer: TIPS2d, x: torch.Tensor) -> torch.Tensor:
    """The definition, written out per channel with loops over the quadrants."""
    k = layer.conv1.weight[:, 0]  # (C, 3, 3)
    w = layer.conv2.weight[:, 0, 0, 0]  # (C,)
    b, c, h, wd = x.shape
    out = torch.zeros(b, c, h // 2, wd // 2, dtype=x.dtype)
    xp = F.pad(x, (1, 1, 1, 1))
    for n in range(b):
        for ch in range(c):
            psi = torch.zeros(h, wd, dtype=x.dtype)
            for i in range(h):
                for j in range(wd):
                    psi[i, j] = (xp[n, ch, i : i + 3, j : j + 3] * k[ch]).sum().clamp_min(0)
            q = [
                psi[a * h // 2 : (a + 1) * h // 2, bb * wd // 2 : (bb + 1) * wd // 2].mean()
                for a in (0, 1)
                for bb in (0, 1)
            ]
            tau = torch.softmax(w[ch] * torch.stack(q), 0)
            comps = [x[n, ch, 0::2, 0::2], x[n, ch, 1::2, 0::2], x[n, ch, 0::2, 1::2], x[n, ch, 1::2, 1::2]]
            out[n, ch] = sum(t * p for t, p in zip(tau, comps))
    return out


def test_tips_is_the_soft_mixture_of_its_definition_in_training_and_evaluation():
    layer = _tips()
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    expected = hand_tips(layer, x)
    torch.testing.assert_close(layer.eval()(x), expected)
    torch.testing.assert_close(layer.train()(x), expected)  # no arg-max at evaluation: the same mixture


def test_an_odd_map_is_reflect_padded_on_top_and_left():
    layer = _tips().eval()
    x = torch.randn(1, 3, 7, 9, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (1, 3, 4, 5)
    torch.testing.assert_close(y, hand_tips(layer, F.pad(x, (1, 0, 1, 0), mode="reflect")))


def test_training_terms_as_the_reference_combines_them():
    layer = _tips(alpha=0.35, wake_up_epoch=2).train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.manual_seed(5)
    layer(x)
    torch.manual_seed(5)
    dh, dw = (int(torch.randint(-2, 3, ())) for _ in range(2))  # each axis on {-8//4..8//4}
    psi, tau = layer.mixture(x)
    weight, terms = training_objective(layer)
    assert weight == pytest.approx(0.65)
    value, w = terms["tips/shift"]
    assert w == 0.0  # epoch 1 < wake_up_epoch 2: logged, not yet counted
    torch.testing.assert_close(value.double(), F.mse_loss(psi, torch.roll(x, (dh, dw), (-2, -1))))
    onehot, w1 = terms["tips/onehot"]
    assert w1 == 1.0
    torch.testing.assert_close(onehot.double(), (1 - tau.norm(dim=-1)).mean())
    assert 0 <= float(onehot.detach()) <= 0.5  # 1 - ||tau||_2 of a probability vector over 4
    assert training_objective(layer)[1] == {}  # handed over once
    layer.set_training_epoch(1)  # 0-based: the second epoch
    layer(x)
    assert training_objective(layer)[1]["tips/shift"][1] == pytest.approx(0.35)
    with torch.no_grad():
        layer(x)
    assert training_objective(layer)[1] == {}  # no terms without gradients (validation, metrics)


def test_terms_pool_over_layers_as_a_mean_over_all_channels():
    a, b = _tips(2, seed=1).train(), _tips(4, seed=2).train()
    net = torch.nn.Sequential(a, torch.nn.Identity())
    net.add_module("b", b)
    a(torch.randn(3, 2, 8, 8, dtype=torch.float64))
    b(torch.randn(3, 4, 8, 8, dtype=torch.float64))
    ta, tb = a._terms["tips/onehot"], b._terms["tips/onehot"]
    _, terms = training_objective(net)
    torch.testing.assert_close(terms["tips/onehot"][0], (ta.total + tb.total) / (6 + 12))


def test_strategy_places_tips_as_blur_pooling_and_checks_its_knobs():
    kit = ConvKit(padding=PaddingSpec("circular"))
    ds = create_downsample("tips", wake_up_epoch=3)
    main, short = ds.residual(kit, 4, 8)
    assert isinstance(main.pool, TIPS2d) and isinstance(short.pool, TIPS2d) and main.pool is not short.pool
    assert main.pool.conv1.padding_mode == "circular" and main.pool.wake_up_epoch == 3
    assert isinstance(ds.pool(kit, 4, 2).blur, TIPS2d)
    with pytest.raises(ConfigError, match="alpha"):
        create_downsample("tips", alpha=1.0)
    with pytest.raises(ConfigError, match="wake_up_epoch"):
        create_downsample("tips", wake_up_epoch=0)


def test_a_tips_run_minimises_and_logs_its_terms(tmp_path, compose):
    """Through the real training loop: the step's loss is (1 - alpha) CE + onehot + alpha shift, and
    each term is in the logged metrics. Fails if the loop drops them."""
    import csv

    from stridelab.build import build_run

    cfg = compose(
        [
            "experiment=smoke",
            "data=shapes10",
            "model=resnet20",
            "model.widths=[8,8,8]",
            "downsample=tips",
            "downsample.wake_up_epoch=1",  # smoke runs 1 epoch; the default would be epoch 1 as well
            "logger=csv",
            "trainer.log_every_n_steps=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=0",
            "~metrics",
        ],
        tmp_path,
    )
    parts = build_run(cfg)
    seen = []
    step = parts.module.training_step

    def spy(batch, batch_idx):
        loss = step(batch, batch_idx)
        seen.append(float(loss.detach()))
        return loss

    parts.module.training_step = spy
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    rows = [r for r in csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()) if r.get("train/objective_step")]
    assert len(rows) == 2 and len(seen) == 2
    for row, loss in zip(rows, seen):
        ce, shift, onehot = (
            float(row[k]) for k in ("train/loss_step", "train/tips/shift_step", "train/tips/onehot_step")
        )
        assert shift > 0 and onehot > 0
        assert float(row["train/objective_step"]) == pytest.approx(0.65 * ce + onehot + 0.35 * shift, rel=1e-5)
        assert loss == pytest.approx(float(row["train/objective_step"]), rel=1e-5)


def test_default_wake_up_is_the_readmes_share_of_the_run():
    from stridelab.layers.tips import wake_up_epoch_of

    assert [wake_up_epoch_of(n) for n in (480, 20, 4, 1, None)] == [100, 4, 1, 1, 1]
    layer = _tips().train()
    layer.set_training_epoch(2, 20)  # the third epoch of 20: the term waits until epoch 4
    layer(torch.randn(1, 3, 8, 8, dtype=torch.float64))
    assert training_objective(layer)[1]["tips/shift"][1] == 0.0
    layer.set_training_epoch(3, 20)
    layer(torch.randn(1, 3, 8, 8, dtype=torch.float64))
    assert training_objective(layer)[1]["tips/shift"][1] == pytest.approx(0.35)
