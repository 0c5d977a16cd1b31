"""APS and LPS (issue 11): selection against hand computations, the tied shortcut, LPS's temperature."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn as nn

from stridelab.errors import ConfigError
from stridelab.layers import ConvKit, PaddingSpec, create_downsample
from stridelab.layers.polyphase import (
    AdaptivePolyphase,
    LearnablePolyphase,
    PolyphaseTie,
    TiedPolyphase,
    polyphase_components,
)
from stridelab.models.resnet import BasicBlock

NORMS = {"l2": lambda t: t.pow(2).sum().sqrt(), "l1": lambda t: t.abs().sum(), "linf": lambda t: t.abs().max()}


def _x(b=6, c=3, h=6, w=6, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def hand_aps(x: torch.Tensor, norm: str) -> tuple[torch.Tensor, list[int]]:
    """Per sample: the four x[:, i::2, j::2], the one of largest norm (a loop, nothing shared with the layer)."""
    outs, picks = [], []
    for sample in x:
        comps = [sample[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]
        norms = [float(NORMS[norm](c)) for c in comps]
        k = max(range(4), key=lambda i: norms[i])
        outs.append(comps[k])
        picks.append(k)
    return torch.stack(outs), picks


@pytest.mark.parametrize("norm", ["l2", "l1", "linf"])
def test_aps_keeps_the_largest_norm_component_per_sample(norm):
    x = _x()
    expected, picks = hand_aps(x, norm)
    assert len(set(picks)) > 1, "the test input must make different samples pick different components"
    torch.testing.assert_close(AdaptivePolyphase(norm)(x), expected, rtol=0, atol=0)


def test_polyphase_component_order():
    x = _x(1, 2, 4, 4)
    comps = polyphase_components(x)
    for i in (0, 1):
        for j in (0, 1):
            assert torch.equal(comps[:, 2 * i + j], x[:, :, i::2, j::2])


@pytest.mark.parametrize("mode", ["zeros", "circular", "reflect"])
def test_aps_pads_an_odd_map_with_the_mode(mode):
    x = _x(4, 2, 5, 7)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1), mode={"zeros": "constant"}.get(mode, mode))
    expected, _ = hand_aps(padded, "l2")
    out = AdaptivePolyphase("l2", pad_mode=mode)(x)
    assert out.shape[-2:] == (3, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_aps_with_blur_is_blur_then_selection():
    ds = create_downsample("aps", filter_size=3)
    kit = ConvKit(PaddingSpec("circular"), norm="none")
    block = ds.block(kit, 3, 4).double()
    x = _x()
    pre = block.down.blur(block.block(x))
    torch.testing.assert_close(block(x), hand_aps(pre, "l2")[0])


def _lps(channels=3, mode="zeros", **kw) -> LearnablePolyphase:
    torch.manual_seed(0)
    ds = create_downsample("lps", **kw)
    return ds._select(ConvKit(PaddingSpec(mode), norm="none"), channels, None).double()


def test_lps_at_evaluation_takes_the_argmax_logit_component():
    lps = _lps().eval()
    x = _x()
    logits = lps.scorer(polyphase_components(x))
    assert logits.shape == (6, 4)
    pick = logits.argmax(1)
    assert len(set(pick.tolist())) > 1
    expected = torch.stack([polyphase_components(x)[b, pick[b]] for b in range(6)])
    torch.testing.assert_close(lps(x), expected, rtol=0, atol=0)


def test_lps_in_training_mixes_with_gumbel_softmax_weights():
    lps = _lps().train()
    x = _x()
    tie = PolyphaseTie()
    lps.tie = tie
    out = lps(x)
    w = tie.take().weights
    assert w.shape == (6, 4) and torch.allclose(w.sum(1), torch.ones(6, dtype=w.dtype))
    expected = (w[:, :, None, None, None].double() * polyphase_components(x)).sum(1)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert lps.scorer.conv1.weight.grad is not None and lps.scorer.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("anneal,mid", [("exp", 0.1**0.5), ("linear", 0.55), ("constant", 1.0)])
def test_lps_temperature_schedules(anneal, mid):
    lps = _lps(anneal=anneal, tau_start=1.0, tau_end=0.1)
    assert lps.temperature(0.0) == pytest.approx(1.0)
    assert lps.temperature(0.5) == pytest.approx(mid)
    assert lps.temperature(1.0) == pytest.approx(1.0 if anneal == "constant" else 0.1)
    lps.set_training_progress(0.5)
    assert float(lps.tau) == pytest.approx(mid)


def _block(name: str, seed=0) -> BasicBlock:
    torch.manual_seed(seed)
    kit = ConvKit(PaddingSpec("circular"), norm="batch")
    return BasicBlock(kit, create_downsample(name), 3, 8, downsample=True).double()


@pytest.mark.parametrize("name", ["aps", "lps"])
def test_shortcut_uses_the_main_branchs_grid(name):
    """The shortcut's output equals its 1x1 projection of the block input's component that the main
    branch chose, and that is not the component the block input itself would pick."""
    block = _block(name).eval()
    x = _x(16, 3, 8, 8)
    seen = {}
    select = block.conv1.down
    select.register_forward_hook(lambda m, a, o: seen.update(index=m.tie.choice.index))
    block.shortcut.register_forward_hook(lambda m, a, o: seen.update(out=o))
    block(x)
    index = seen["index"]
    proj = nn.Sequential(block.shortcut.conv, block.shortcut.norm)
    comps = polyphase_components(x)
    expected = proj(comps[torch.arange(16), index])
    torch.testing.assert_close(seen["out"], expected, rtol=0, atol=0)
    own = hand_aps(x, "l2")[1]
    assert any(int(i) != k for i, k in zip(index, own)), "the block input's own choice must differ somewhere"
    untied = proj(comps[torch.arange(16), torch.tensor(own)])
    assert not torch.allclose(seen["out"], untied)


def test_lps_shortcut_uses_the_same_weights_in_training():
    block = _block("lps").train()
    x = _x(8, 3, 8, 8)
    seen = {}
    block.conv1.down.register_forward_hook(lambda m, a, o: seen.update(w=m.tie.choice.weights))
    block.shortcut.down.register_forward_hook(lambda m, a, o: seen.update(out=o))
    block(x)
    expected = (seen["w"][:, :, None, None, None].double() * polyphase_components(x)).sum(1)
    torch.testing.assert_close(seen["out"], expected)


def test_tied_shortcut_refuses_to_run_before_its_main_branch():
    with pytest.raises(RuntimeError, match="before its block's main branch"):
        TiedPolyphase(PolyphaseTie())(_x())


def test_tie_survives_a_deepcopy():
    import copy

    block = copy.deepcopy(_block("aps"))
    assert block.conv1.down.tie is block.shortcut.down.tie
    block(_x(2, 3, 8, 8))


def test_polyphase_options_are_checked():
    with pytest.raises(ConfigError, match="l2, l1, linf"):
        create_downsample("aps", norm="l3")
    with pytest.raises(ConfigError, match="tau_start"):
        create_downsample("lps", tau_end=0)
    with pytest.raises(ConfigError, match="exp, linear, constant"):
        create_downsample("lps", anneal="cosine")
    with pytest.raises(ConfigError, match="filter_size"):
        create_downsample("aps", filter_size=9)
    with pytest.raises(ConfigError, match="does not take"):
        create_downsample("aps", hidden=3)


def test_training_anneals_the_lps_temperature():
    """The Classifier tells LPS layers the training progress before every step."""
    from stridelab.models import create_model
    from stridelab.training import Classifier

    model = create_model(
        "simple_cnn", num_classes=2, downsample=create_downsample("lps", tau_end=0.01), width=4, stages=1
    )
    module = Classifier(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.01), channels_last=False)
    data = torch.utils.data.TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 2, (16,)))
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    lps = next(m for m in model.modules() if isinstance(m, LearnablePolyphase))
    assert float(lps.tau) == pytest.approx(0.01 ** (3 / 4))  # the last step: 3 of 4 done
