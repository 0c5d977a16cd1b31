"""Every model x downsample x padding builds, has the expected map sizes and really pads as told."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from stridelab.errors import ConfigError, GeometryError
from stridelab.layers import DOWNSAMPLE_REGISTRY, PADDING_MODES, PaddingSpec, create_downsample
from stridelab.models import MODEL_REGISTRY, check_geometry, create_model, stage_modules, trace

# Final feature map (channels, size) on 32x32 inputs with `same` padding, per model.
EXPECTED_FEATURES = {
    "simple_cnn": (128, 4),
    "resnet20": (64, 8),
    "allcnn_c": (10, 6),
    "redgreen_net": (64, 4),
    "torchvision": (512, 4),
    "timm": (128, 4),
}
# Spatial size after each stage.
EXPECTED_STAGES = {
    "simple_cnn": [16, 8, 4],
    "resnet20": [32, 16, 8],
    "allcnn_c": [16, 8, 6],
    "redgreen_net": [16, 8, 4],
    "torchvision": [32, 16, 8, 4],
    "timm": [32, 16, 8, 4],
}
# Library networks (converted by stridelab.models.convert): the CIFAR-stem ResNet-18 of each library,
# on fewer strategy x padding pairs than the built-in models (an 11M-parameter build takes ~0.25 s).
# timm's the same way, at a quarter of its width (tests/test_model_zoo.py trains both).
LIBRARY = {
    "torchvision": {"arch": "resnet18", "cifar_stem": True},
    "timm": {"arch": "resnet18", "cifar_stem": True, "kwargs": {"channels": [16, 32, 64, 128], "stem_width": 16}},
}


def _library_case(model: str, downsample: str, mode: str) -> bool:
    if model == "torchvision":  # every strategy; every padding under APS (blurpool: the filter's own padding)
        return mode == "zeros" or downsample == "aps" or (downsample, mode) == ("blurpool", "replicate")
    return downsample in ("conv", "aps") and mode in ("zeros", "reflect")


CASES = [
    (model, downsample, mode)
    for model in sorted(MODEL_REGISTRY)
    for downsample in sorted(DOWNSAMPLE_REGISTRY)
    for mode in PADDING_MODES
    if model not in LIBRARY or _library_case(model, downsample, mode)
]


def build(name, downsample, mode="zeros", amount="same", **kw):
    if name in LIBRARY:
        return copy.deepcopy(_build_library(name, downsample, mode))
    torch.manual_seed(0)
    return create_model(
        name, num_classes=10, downsample=create_downsample(downsample), padding=PaddingSpec(mode, amount), **kw
    )


@functools.lru_cache(maxsize=None)
def _build_library(name, downsample, mode):
    torch.manual_seed(0)
    return create_model(
        name, num_classes=10, downsample=create_downsample(downsample), padding=PaddingSpec(mode), **LIBRARY[name]
    )


def test_registries_cover_the_issue():
    assert set(MODEL_REGISTRY) >= {"simple_cnn", "resnet20", "allcnn_c", "redgreen_net", "torchvision", "timm"}
    assert set(DOWNSAMPLE_REGISTRY) >= {"conv", "maxpool", "avgpool", "blurpool", "aps", "lps"}
    assert PADDING_MODES == ("zeros", "reflect", "replicate", "circular", "partial")


@pytest.mark.parametrize("model, downsample, mode", CASES)
def test_builds_with_expected_sizes(model, downsample, mode):
    net = build(model, downsample, mode)
    channels, size = EXPECTED_FEATURES[model]
    assert check_geometry(net, (3, 32, 32)) == (channels, size, size)
    sizes = []
    hooks = [
        m.register_forward_hook(lambda m, a, out: sizes.append(out.shape[-1])) for m in stage_modules(net).values()
    ]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for h in hooks:
        h.remove()
    assert sizes == EXPECTED_STAGES[model]


def _leaf_outputs(net, x):
    outs = []
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: outs.append((n, o)))
        for n, m in net.named_modules()
        if not list(m.children()) and n
    ]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return [(n, o) for n, o in outs if o.dim() == 4]


@pytest.mark.parametrize("model, downsample, mode", CASES)
def test_padding_is_applied_everywhere(model, downsample, mode):
    """A constant image stays constant through every layer iff the padding copies image pixels
    (partial padding re-scales by the in-image taps, which keeps only box filters constant)."""
    net = build(model, downsample, mode).double()
    for m in net.modules():  # eval-mode BN with non-trivial statistics, so it is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    outs = _leaf_outputs(net, torch.full((1, 3, 32, 32), 0.7, dtype=torch.float64))
    assert outs

    def constant(t):
        flat = t.flatten(2)
        return (flat - flat[..., :1]).abs().max() <= 1e-9 * (1 + flat.abs().max())

    varying = [n for n, o in outs if not constant(o)]
    if mode in ("zeros", "partial"):
        assert varying, f"{mode} padding must make the border differ from the interior"
    else:
        assert not varying, f"{mode} padding should keep constant maps constant, but these vary: {varying}"


@pytest.mark.parametrize("amount,size", [("valid", 2), ("same", 4), ("full", 6)])
def test_redgreen_valid_same_full(amount, size):
    net = build("redgreen_net", "conv", "zeros", amount)
    assert check_geometry(net, (3, 32, 32))[-1] == size


def test_geometry_refused_with_layer_name():
    net = build("simple_cnn", "conv", stages=6)
    with pytest.raises(GeometryError, match=r"layer 'stages\.stage5\..*' .* 1x1 feature map"):
        check_geometry(net, (3, 32, 32))
    net = build("redgreen_net", "blurpool", "reflect", "valid")
    with pytest.raises(GeometryError, match="cannot process 3x16x16"):
        check_geometry(net, (3, 16, 16))


@pytest.mark.parametrize("downsample", ["aps", "lps"])
def test_polyphase_refuses_a_map_smaller_than_its_stride(downsample):
    net = build("simple_cnn", downsample, "circular", stages=6)
    with pytest.raises(GeometryError, match=r"layer 'stages\.stage5\.down\.down' \((Adaptive|Learnable)Polyphase.*1x1"):
        check_geometry(net, (3, 32, 32))


def test_resnet_refuses_non_same_padding():
    with pytest.raises(ConfigError, match="residual"):
        build("resnet20", "conv", amount="valid")


def test_trace_lists_layers():
    records = trace(build("redgreen_net", "maxpool"), (3, 32, 32))
    names = [r.name for r in records]
    assert "stem.conv" in names and any("pool" in n for n in names)
    assert records[0].in_shape == (1, 3, 32, 32)


def test_param_counts_near_the_papers():
    assert 0.26e6 < build("resnet20", "conv").num_params < 0.28e6  # He et al.: 0.27M
    allconv = build("allcnn_c", "conv", norm="none").num_params
    assert 1.3e6 < allconv < 1.45e6  # Springenberg: ~1.4M


@pytest.mark.parametrize("downsample", ["maxpool", "strided"])
def test_simple_cnn_explicit_widths_and_early_downsampling(downsample):
    """The airbench-sized preset's knobs: per-stage widths, stem width, downsampling after conv 0."""
    m = build("simple_cnn", downsample, widths=[16, 24, 24], stem_width=6, down_after=0)
    rows = trace(m, (3, 32, 32))
    assert rows[0].out_shape[1] == 6  # the stem
    conv1 = next(r for r in rows if r.name.startswith("stages.stage0.conv1"))
    assert conv1.in_shape[1:] == (16, 16, 16)  # conv0 (or its stride) already downsampled
    assert rows[-1].out_shape == (1, 10) and sum(r.out_shape[1] == 24 for r in rows) > 0
    with pytest.raises(ConfigError, match="down_after=2 names no conv"):
        build("simple_cnn", downsample, down_after=2)


def test_one_registration_style_for_strategies_models_and_data():
    from stridelab.data import DATA_REGISTRY
    from stridelab.registry import Registry

    for reg, names in (
        (DOWNSAMPLE_REGISTRY, {"aps", "blurpool"}),
        (MODEL_REGISTRY, {"resnet20", "simple_cnn"}),
        (DATA_REGISTRY, {"cifar10", "shapes10", "redgreen"}),
    ):
        assert isinstance(reg, Registry) and names <= set(reg)
    reg = Registry("widget")
    reg.register("a")(int)
    reg.register("a")(int)  # the same object again (a module re-imported) is fine
    with pytest.raises(ValueError, match="two widgets registered as 'a'"):
        reg.register("a")(float)
    with pytest.raises(ConfigError, match="Unknown widget 'b'. Valid widget values are: a"):
        reg.get_checked("b")
