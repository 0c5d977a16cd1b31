"""model=torchvision and model=timm: any library CNN, converted, with its stages found (issue 20, parts 2-3).

Stage finding is checked against the resolution levels each architecture is known to have; an
end-to-end run of each library writes every metric family a built-in model's run writes.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torchvision

from stridelab.errors import ConfigError
from stridelab.models import add_stage_taps, stage_modules, timm_model, torchvision_model
from stridelab.models.convert import convert


def _stage_shapes(model: nn.Module, size: int) -> list[tuple]:
    shapes = []
    handles = [
        m.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape[1:])))
        for m in stage_modules(model).values()
    ]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    for h in handles:
        h.remove()
    return shapes


def test_stages_of_a_resnet_are_its_resolution_levels_and_taps_change_nothing():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    gm = add_stage_taps(convert(net, "blurpool", "circular"))
    assert gm.stage_reductions == [2, 4, 8, 16, 32]  # the stem's conv, then maxpool + layer1 .. layer4
    assert _stage_shapes(gm, 64) == [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert set(gm.state_dict()) == set(net.state_dict())  # taps have no parameters
    x = torch.randn(2, 3, 64, 64)
    plain = convert(net, "blurpool", "circular").eval()
    assert torch.equal(gm(x), plain(x))
    # the stage output is the block's output (after the residual addition), not a map inside it
    order = [n for n in gm.graph.nodes if n.op == "call_module"]
    tap = next(i for i, n in enumerate(order) if n.target == "stage_taps.stage2")
    assert order[tap - 1].target == "layer2.1.relu"


def test_a_squeeze_excitation_pool_is_no_head_and_a_padding_map_no_stage():
    # EfficientNet's SE blocks pool globally inside a block: the features are still the last 4-D map
    gm = add_stage_taps(convert(torchvision.models.efficientnet_b0(num_classes=10), "conv"))
    assert gm.stage_reductions == [2, 4, 8, 16, 32] and _stage_shapes(gm, 64)[-1] == (1280, 2, 2)
    # re-padded max pool: the stem's reflect-padded 34x34 map is no stage of its own
    gm = add_stage_taps(convert(torchvision.models.resnet18(num_classes=10), "conv", "reflect"))
    assert gm.stage_reductions == [2, 4, 8, 16, 32]


def test_timm_networks_keep_their_own_stages_module_and_get_taps_beside_it():
    pytest.importorskip("timm")
    gm = timm_model("convnext_atto", num_classes=10, downsample="blurpool", padding=None)
    assert [n for n, _ in gm.stages.named_children()] == ["0", "1", "2", "3"]  # timm's own (never called now)
    assert list(stage_modules(gm)) == ["stage0", "stage1", "stage2", "stage3"] and gm.stage_reductions == [4, 8, 16, 32]
    assert [s[1:] for s in _stage_shapes(gm, 64)] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_library_models_by_name_with_builder_arguments_and_clear_refusals():
    m = torchvision_model("mobilenet_v2", num_classes=5, in_chans=1, downsample="blurpool", kwargs={"width_mult": 0.25})
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 5) and m.stridelab_conversion.downsample == "blurpool"
    with pytest.raises(ConfigError, match=r"model.kwargs=\{'width_mult': 0.5\} does not fit resnet18's builder"):
        torchvision_model("resnet18", kwargs={"width_mult": 0.5})
    with pytest.raises(ConfigError, match=r"model.arch=resnet19 is not a timm .* \(did you mean resnet18"):
        timm_model("resnet19")
    with pytest.raises(ConfigError, match="Unknown model.dense_max '3x3'"):
        torchvision_model("resnet18", downsample="aps", dense_max="3x3")


E2E = [
    "trainer=cpu",
    "data=shapes10",
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=32",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "metrics=quick",
    "metrics.subset_size=8",
    "metrics.max_shift=2",
    "metrics.inference_batch=16",
    "metrics.warmup_steps=1",
    "logger=csv",
    "save_weights=false",
]
FAMILIES = ("test", "shift", "crop", "border", "audit", "coverage", "probe", "cost")  # position: redgreen only


@pytest.mark.parametrize(
    "model, strategy, options",
    [("torchvision", "aps", []), ("timm", "blurpool", ["model.kwargs={channels:[16,32,64,128],stem_width:16}"])],
)
def test_a_library_resnet18_trains_offline_and_writes_every_metric_family(tmp_path, run_main, model, strategy, options):
    args = [f"model={model}", "model.arch=resnet18", "model.cifar_stem=true", f"downsample={strategy}", *options]
    assert run_main([*args, "padding=circular", *E2E]) == 0
    metrics = json.loads(next((tmp_path / "logs" / "runs").glob("*/metrics.json")).read_text())
    assert metrics["status"] == "ok" and metrics["model"] == model
    assert {f for f in FAMILIES if not any(k.startswith(f + "/") for k in metrics)} == set()
    assert [k for k in metrics if k.startswith("probe/layer_")][:2] == [
        "probe/layer_stage0.mae",
        "probe/layer_stage0.spc",
    ]
    assert metrics["model/feature_shape"] == ("512x4x4" if model == "torchvision" else "128x4x4")
    if strategy == "aps":  # the CIFAR-stem ResNet-18 with APS and circular padding: exactly invariant
        assert metrics["shift/circular_consistency"] == 1.0
