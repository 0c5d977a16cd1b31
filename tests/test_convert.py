"""stridelab.models.convert: any CNN gets any downsampling strategy (issue 20, part 1).

Each layout is pinned against Zhang 2019's antialiased-cnns models (the placement table of
convert's docstring); APS and LPS conversions are exactly shift invariant where they must be.
Big networks are built on the meta device where no forward pass is needed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from stridelab.errors import ConfigError
from stridelab.layers import BlurPool2d, PaddingSpec
from stridelab.layers.partial import PartialConv2d
from stridelab.layers.polyphase import AdaptivePolyphase, LearnablePolyphase, TiedPolyphase
from stridelab.models.convert import convert


def _tv(name: str, meta: bool = False, **kwargs) -> nn.Module:
    if meta:
        with torch.device("meta"):
            return getattr(torchvision.models, name)(num_classes=10, **kwargs)
    return getattr(torchvision.models, name)(num_classes=10, **kwargs)


def _order(gm) -> list[str]:
    """The module calls of a converted network, in the order they run."""
    return [n.target for n in gm.graph.nodes if n.op == "call_module"]


def _follows(gm, first: str, then: str) -> bool:
    """``then`` runs right after a call of ``first`` (a module may be called several times: ReLU)."""
    order = _order(gm)
    return order[order.index(then) - 1] == first


def _is_blur(module, stride=2) -> bool:
    return isinstance(module, BlurPool2d) and module.stride == stride and module.filter_size == 3


def test_resnet18_blurpool_is_zhangs_layout_and_keeps_every_parameter_name():
    model = _tv("resnet18")
    gm = convert(model, "blurpool")
    assert set(gm.state_dict()) == set(model.state_dict())
    assert gm.conv1.stride == (2, 2)  # stem="keep": antialiased-cnns leaves the stem conv strided
    # MaxPool(3, s2, p1) -> MaxPool(2, s1) + BlurPool: the stem of Zhang's ResNet
    assert isinstance(gm.maxpool.max, nn.MaxPool2d) and gm.maxpool.max.kernel_size == 2
    assert gm.maxpool.max.stride == 1 and gm.maxpool.max.padding == 0 and _is_blur(gm.maxpool.down)
    for layer in ("layer2", "layer3", "layer4"):
        block = gm.get_submodule(f"{layer}.0")
        assert block.conv1.stride == (1, 1) and _is_blur(block.conv1_down)
        # BasicBlock: conv1 s1, blur after bn1 + relu, before conv2
        assert _follows(gm, f"{layer}.0.relu", f"{layer}.0.conv1_down")
        assert _follows(gm, f"{layer}.0.conv1_down", f"{layer}.0.conv2")
        # the shortcut: blur, then the 1x1 projection at stride 1
        assert gm.get_submodule(f"{layer}.0.downsample.0").stride == (1, 1)
        assert _follows(gm, f"{layer}.0.downsample.0_down", f"{layer}.0.downsample.0")
    assert gm(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert model.layer2[0].conv1.stride == (2, 2)  # the original is left alone


def test_resnet50_bottleneck_blurs_after_conv2_before_conv3():
    model = _tv("resnet50", meta=True)
    gm = convert(model, "blurpool")
    assert set(gm.state_dict()) == set(model.state_dict())
    for layer in ("layer2", "layer3", "layer4"):
        assert gm.get_submodule(f"{layer}.0.conv2").stride == (1, 1)
        assert gm.get_submodule(f"{layer}.0.conv1").stride == (1, 1)
        assert _follows(gm, f"{layer}.0.relu", f"{layer}.0.conv2_down")  # after bn2 + relu
        assert _follows(gm, f"{layer}.0.conv2_down", f"{layer}.0.conv3")
        assert _is_blur(gm.get_submodule(f"{layer}.0.conv2_down"))


def test_vgg16_max_pools_become_max_blur_pools():
    model = _tv("vgg16", meta=True)
    gm = convert(model, "blurpool")
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and set(gm.state_dict()) == set(model.state_dict())
    for i in pools:
        pool = gm.features.get_submodule(str(i))
        assert pool.max.kernel_size == 2 and pool.max.stride == 1 and _is_blur(pool.down)
        assert pool.down.channels == model.features[i - 2].out_channels


def test_densenet121_keeps_the_stem_pools_window_and_blurs_the_transitions():
    model = _tv("densenet121", meta=True)
    gm = convert(model, "blurpool", dense_max="keep")
    assert set(gm.state_dict()) == set(model.state_dict())
    assert gm.features.conv0.stride == (2, 2)
    pool0 = gm.features.pool0  # Zhang's DenseNet: MaxPool(3, s1, p1) + BlurPool
    assert (pool0.max.kernel_size, pool0.max.stride, pool0.max.padding) == (3, 1, 1) and _is_blur(pool0.down)
    for i in (1, 2, 3):
        transition = gm.features.get_submodule(f"transition{i}")
        assert list(dict(transition.pool.named_children())) == ["down"]  # AvgPool(2, s2) -> the blur alone
        assert _is_blur(transition.pool.down) and transition.pool.down.channels == transition.conv.out_channels


def test_mobilenet_v2_blurs_after_the_depthwise_conv_and_its_relu6():
    model = _tv("mobilenet_v2", meta=True)
    gm = convert(model, "blurpool")
    assert set(gm.state_dict()) == set(model.state_dict())
    assert gm.get_submodule("features.0.0").stride == (2, 2)  # the stem conv reads the image: kept
    strided = [i for i, b in enumerate(model.features[1:], 1) if getattr(b, "stride", 1) == 2]
    assert strided == [2, 4, 7, 14]
    for i in strided:
        depthwise = f"features.{i}.conv.1.0"
        assert gm.get_submodule(depthwise).stride == (1, 1)
        # conv(dw, s1) -> BN -> ReLU6 -> blur -> the pointwise-linear conv
        assert _follows(gm, f"features.{i}.conv.1.2", f"{depthwise}_down")
        assert _follows(gm, f"{depthwise}_down", f"features.{i}.conv.2")
        assert _is_blur(gm.get_submodule(f"{depthwise}_down"))


def test_the_stem_is_converted_on_request_and_conv_leaves_every_site():
    gm = convert(_tv("resnet18"), "blurpool", stem="convert")
    assert gm.conv1.stride == (1, 1) and _follows(gm, "relu", "conv1_down")
    same = convert(_tv("resnet18"), "conv")
    assert same.conv1.stride == (2, 2) and same.layer2[0].conv1.stride == (2, 2)
    assert same.stridelab_conversion.sites == []


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("strategy", ["aps", "lps"])
def test_polyphase_conversions_are_exactly_shift_invariant_with_circular_padding(arch, strategy):
    torch.manual_seed(0)
    model = _tv(arch, **({"width_per_group": 16} if arch == "resnet50" else {}))  # a quarter of its inner width
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    shifted = torch.roll(x, (3, 5), (2, 3))
    gm = convert(model, strategy, "circular", stem="convert").double().eval()
    y = gm(x)
    assert torch.allclose(gm(shifted), y, atol=1e-10 * y.abs().max().item())
    # every shortcut takes its block's grid: one chooser and its followers share one tie
    report = gm.stridelab_conversion
    assert len(report.tied) == 3
    for main, shortcut in report.tied:
        chooser = gm.get_submodule(main.split()[1] + "_down")
        follower = gm.get_submodule(shortcut.split()[1] + "_down")
        assert isinstance(chooser, (AdaptivePolyphase, LearnablePolyphase)) and isinstance(follower, TiedPolyphase)
        assert follower.tie is chooser.tie is not None
    if strategy == "aps":  # the counter-cases: the stem kept strided, or zero padding, break the invariance
        for kwargs in ({"padding": "circular", "stem": "keep"}, {"padding": "zeros", "stem": "convert"}):
            other = convert(model, strategy, **kwargs).double().eval()
            assert (other(shifted) - other(x)).abs().max() > 1e-3


def test_an_untied_shortcut_would_break_the_invariance():
    """The test above would catch a converter that forgot the tie: untie one and it fails."""
    torch.manual_seed(0)
    gm = convert(_tv("resnet18"), "aps", "circular", stem="convert").double().eval()
    gm.layer3.get_submodule("0").downsample.add_module("0_down", AdaptivePolyphase("l2", "circular"))
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    diffs = [(gm(torch.roll(x, (i, j), (2, 3))) - gm(x)).abs().max().item() for i, j in ((1, 0), (0, 1), (3, 5))]
    assert max(diffs) > 1e-3


def test_conversion_reports_and_refusals():
    report = convert(_tv("resnet18"), "maxpool").stridelab_conversion
    assert "maxpool maxpool (already a max pool)" in report.kept and "conv conv1 (the stem, stem=keep)" in report.kept
    assert report.tied == []  # a fixed grid needs no tie
    with pytest.raises(ConfigError, match="Unknown model.stem 'both'"):
        convert(_tv("resnet18"), "blurpool", stem="both")
    with pytest.raises(ConfigError, match="padding.amount=full does not apply to a converted network"):
        convert(_tv("resnet18"), "blurpool", PaddingSpec(mode="reflect", amount="full"))


class _Branchy(nn.Module):
    """A forward that branches on a tensor value: fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x


class _Odd(nn.Module):
    """A strided layer the converter cannot rewrite, after a stride-2 conv."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.layer = layer

    def forward(self, x):
        return self.layer(torch.relu(self.conv(x)))


@pytest.mark.parametrize(
    "layer, why",
    [
        (nn.Conv2d(4, 4, 3, stride=3, padding=1), r"stride \(3, 3\): only stride 2 has a subsampler"),
        (nn.MaxPool2d(3, stride=(2, 1)), r"stride \(2, 1\)"),
        (nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2), "a strided dilated conv"),
        (nn.ConvTranspose2d(4, 4, 2, stride=2), "a strided transposed conv upsamples"),
    ],
)
def test_layers_without_a_stride_2_subsampling_are_refused_by_name(layer, why):
    with pytest.raises(ConfigError, match=rf"cannot convert layer 'layer' \({type(layer).__name__}: .*\): {why}"):
        convert(_Odd(layer), "aps")
    assert convert(_Odd(layer), "conv") is not None  # the baseline changes nothing, so refuses nothing


def test_convnext_keeps_its_patchify_stem_and_converts_its_stride_2_downsampling_layers():
    gm = convert(_tv("convnext_tiny", meta=True), "blurpool")
    assert any("stride (4, 4) reading the image" in s for s in gm.stridelab_conversion.skipped)
    assert len(gm.stridelab_conversion.sites) == 3  # the 2x2/s2 convs between its stages
    with pytest.raises(ConfigError, match=r"cannot convert layer 'features.0.0' .*stride \(4, 4\)"):
        convert(_tv("convnext_tiny", meta=True), "blurpool", stem="convert")


@pytest.mark.parametrize("strategy", ["blurpool", "aps"])
def test_odd_maps_and_ceil_mode_pools_keep_the_original_sizes(strategy):
    from stridelab.models.stages import add_stage_taps, stage_modules

    torch.manual_seed(0)
    for net in (torchvision.models.resnet18(num_classes=10), torchvision.models.squeezenet1_1(num_classes=10)):
        pair = [add_stage_taps(net).eval(), add_stage_taps(convert(net, strategy, stem="convert")).eval()]
        for size in (31, 33, 50, 63):  # odd maps at ResNet's 3x3/s2/p1 max pool (50: 25 px), SqueezeNet's pools
            sizes = []
            for model in pair:
                out = []
                taps = stage_modules(model).values()
                hooks = [m.register_forward_hook(lambda m, a, o, out=out: out.append(o.shape[-2:])) for m in taps]
                model(torch.randn(1, 3, size, size))
                for h in hooks:
                    h.remove()
                sizes.append(out)
            # (the converted stem adds a stage: its dense map before the subsampler)
            assert len(sizes[0]) >= 4 and sizes[1][-len(sizes[0]) :] == sizes[0], size
    # DenseNet's 2x2/s2 average pool (7 px -> 3, where a blur gives 4) and a ceil_mode max pool
    pools = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(2, 2), nn.MaxPool2d(3, 2, 1, ceil_mode=True))
    converted = convert(pools, strategy)
    for size in (7, 9, 14, 15):
        assert converted(torch.randn(1, 3, size, size)).shape == pools(torch.randn(1, 3, size, size)).shape


def test_a_network_fx_cannot_trace_is_refused_in_one_paragraph():
    with pytest.raises(ConfigError, match=r"cannot convert _Branchy: torch.fx cannot trace it \(TraceError") as err:
        convert(_Branchy(), "blurpool")
    assert "\n" not in str(err.value) and "register_notrace_module" in str(err.value)
    with pytest.raises(ConfigError, match="Unknown downsample"):
        convert(_tv("resnet18"), "lanczos")


def test_a_padding_mode_repads_every_conv_and_pool():
    gm = convert(_tv("resnet18"), "conv", "reflect")
    convs = [m for m in gm.modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
    assert convs and all(m.padding_mode == "reflect" for m in convs)
    assert gm.maxpool[0].mode == "reflect" and gm.maxpool[1].padding == 0  # the pool's own pad, now reflected
    assert gm(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_partial_padding_makes_every_padded_conv_a_partial_conv_with_the_same_parameters():
    model = _tv("resnet18")
    gm = convert(model, "blurpool", "partial")
    gm.load_state_dict(model.state_dict(), strict=True)
    padded = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
    assert padded and all(isinstance(gm.get_submodule(n), PartialConv2d) for n in padded)
    assert not isinstance(gm.get_submodule("layer2.0.downsample.0"), PartialConv2d)  # unpadded 1x1: as it was
    assert gm.layer2.get_submodule("0").conv1_down.partial  # the inserted blur normalises in-image taps
    # re-scaled by window size / in-image taps: with a box kernel a constant image gives a constant map,
    # where zero padding darkens the border
    for conv in (model.conv1, gm.conv1):
        with torch.no_grad():
            conv.weight.fill_(1.0)
        out = conv(torch.ones(1, 3, 16, 16))
        flat = torch.allclose(out, torch.full_like(out, 3 * 49.0))
        assert flat == (conv is gm.conv1)
    # DenseNet's stem pool (3x3, pad 1) kept: its max ignores the padding, as PyTorch's does
    gm = convert(_tv("densenet121", meta=True), "blurpool", "partial", dense_max="keep")
    assert gm.features.pool0.max.padding == 1


# -- a torchvision network by name (issue 20, part 2 in part) ---------------------------------------------
def test_torchvision_net_by_name_with_the_cifar_stem_and_other_channels():
    from stridelab.models.torchvision_net import torchvision_net

    net = torchvision_net("resnet18", num_classes=7, in_chans=1, cifar_stem=True)
    assert net.conv1.stride == (1, 1) and net.conv1.kernel_size == (3, 3) and isinstance(net.maxpool, nn.Identity)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    # the CIFAR ResNet-18 of the APS code, converted: exactly invariant (its stem no longer strides)
    torch.manual_seed(0)
    gm = convert(torchvision_net("resnet18", cifar_stem=True), "aps", "circular").double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(gm(torch.roll(x, (1, 2), (2, 3))), gm(x), atol=1e-10)
    with pytest.raises(ConfigError, match=r"model.arch=resnet19 is not a torchvision classification model \(did"):
        torchvision_net("resnet19")
    with pytest.raises(ConfigError, match="cifar_stem=true is for the ResNet family"):
        torchvision_net("vgg11", cifar_stem=True)


def test_torchvision_net_loads_local_weights_safely(tmp_path):
    from stridelab.errors import DataError
    from stridelab.models.torchvision_net import torchvision_net

    saved = torchvision_net("resnet18", num_classes=10)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": saved.state_dict()}, path)  # a Lightning-style checkpoint dict
    loaded = torchvision_net("resnet18", num_classes=10, weights=path)
    assert torch.equal(loaded.fc.weight, saved.fc.weight)
    with pytest.raises(DataError, match="does not fit this network"):
        torchvision_net("resnet18", num_classes=5, weights=path)
    path.write_bytes(b"\x80\x04\x95 not a zip")
    with pytest.raises(DataError, match="cannot be read as plain tensors"):
        torchvision_net("resnet18", weights=path)
    with pytest.raises(DataError, match="no such file"):
        torchvision_net("resnet18", weights=tmp_path / "missing.pt")
