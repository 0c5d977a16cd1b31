"""The measurement suite inside real runs: metrics.json keys, plots, TensorBoard, stridelab.evaluate."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT

from stridelab.errors import ConfigError
from stridelab.metrics import METRIC_GROUPS
from stridelab.train import run

DOCS = ROOT / "docs" / "metrics.md"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, compose):
    tmp = tmp_path_factory.mktemp("smoke")
    # metrics.skip=[]: every group, also those metrics=quick leaves out (tests/test_*.py check them in detail)
    cfg = compose(
        ["experiment=smoke", "save_weights=true", "downsample=maxpool", "padding=zeros", "metrics.skip=[]"], tmp
    )
    return run(cfg), tmp / "run"


def test_every_run_carries_the_suite(smoke_run):
    metrics, run_dir = smoke_run
    assert metrics["status"] == "ok"
    numeric = [
        "shift/circular_consistency",
        "shift/circular_logit_change",
        "crop/consistency",
        "crop/acc_at_+0",
        "crop/stability_range",
        "border/deviation",
        "border/features",
        "audit/uneven_layers",
        "coverage/interior_ratio",
        "coverage/border_ratio",
        "cost/flops_per_image",
        "cost/params",
        "probe/spc",
        "probe/mae",
        "probe/spc_h",
        "probe/mae_v",
        "cost/train_images_per_s",
        "cost/infer_images_per_s",
        "time/measure_s",
    ]
    for key in numeric:
        assert isinstance(metrics[key], (int, float)), key
    assert 0 <= metrics["shift/circular_consistency"] <= 1 and metrics["cost/train_images_per_s"] > 0
    assert metrics["border/deviation"] > 0.01, "zero padding leaves a border on constant input"
    assert metrics["metrics/subset_size"] == 64  # metrics=quick; the smoke test set has 256 images
    # 512 images / batch 64 = 8 steps, the first 2 are warm-up: the real run was timed.
    assert metrics["cost/train_from"] == "fit" and metrics["cost/train_timed_steps"] == 6
    assert sorted(k for k in metrics if k.startswith("crop/acc_at_")) == sorted(
        f"crop/acc_at_{d:+d}" for d in range(-4, 5)
    )
    assert any(k.startswith("border/layer_00.") for k in metrics)
    assert {"probe/layer_stage0.spc", "probe/layer_stage2.mae"} <= set(metrics), "the probe reads every stage"
    assert not any(k.startswith("position/") for k in metrics), "no position gap without a dissimilar set"
    assert "cost/mfu" not in metrics and "cost/peak_memory_mib" not in metrics  # CPU: no device peak
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["shift/circular_consistency"] == metrics["shift/circular_consistency"]
    for png in ("crop_stability_curve.png", "border_features_heatmap.png", "coverage_input_map.png"):
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| stages.stage0.down |" in (run_dir / "padding_audit.md").read_text()


def test_tensorboard_gets_scalars_images_and_real_hparams(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    metrics, run_dir = smoke_run
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = acc.Tags()
    value = acc.Scalars("shift/circular_consistency")[-1].value
    assert value == pytest.approx(metrics["shift/circular_consistency"], rel=1e-6)
    assert {"crop/stability_curve", "border/features_heatmap", "coverage/input_map"} <= set(tags["images"])
    hp = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in acc.PluginTagToContent("hparams").values()]
    session = next(h.session_start_info for h in hp if h.HasField("session_start_info"))
    assert session.hparams["downsample"].string_value == "maxpool"
    assert "border/deviation" in acc.Tags()["scalars"]
    experiment = next(h.experiment for h in hp if h.HasField("experiment"))
    hp_metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"border/deviation", "probe/spc", "probe/mae"} <= hp_metrics
    assert not any(t.startswith(("border/layer_", "probe/layer_")) for t in hp_metrics), "per-layer: scalars only"
    assert "probe/layer_stage0.spc" in acc.Tags()["scalars"]


def test_docs_name_every_key_the_suite_writes(smoke_run):
    metrics, _ = smoke_run
    text = DOCS.read_text()
    documented = set(re.findall(r"`([a-z_]+/[a-z_{][^`]*)`", text))
    patterns = [
        re.compile(
            "^"
            + re.sub(r"\\\{[a-z]+\\\}", ".+", re.escape(d).replace(r"\{d\}", r"[+-]\d+").replace(r"\{i\}", r"\d\d"))
            + "$"
        )
        for d in documented
    ]
    groups = (*METRIC_GROUPS, "metrics", "time")
    for key in metrics:
        if key.split("/")[0] in groups:
            assert any(p.match(key) for p in patterns), f"{key} is not documented in docs/metrics.md"
    for key in ("position/gap", "probe/spc", "probe/mae", "cost/mfu", "cost/peak_memory_mib", "cost/peak_flops_source"):
        assert f"`{key}`" in text


def test_evaluate_reproduces_the_runs_figures(smoke_run, capsys):
    metrics, run_dir = smoke_run
    before = json.loads((run_dir / "metrics.json").read_text())
    from stridelab.evaluate import main

    assert main([f"ckpt={run_dir / 'model.pt'}", "device=cpu"]) == 0
    out = capsys.readouterr().out
    after = json.loads((run_dir / "metrics.json").read_text())
    # Same weights, same subset, same shifts: the same figures; training figures untouched.
    for key in (
        "shift/circular_consistency",
        "shift/circular_logit_change",
        "crop/consistency",
        "border/deviation",
        "coverage/interior_ratio",
        "probe/spc",
        "probe/mae",
        "test/acc",
        "cost/train_images_per_s",
    ):
        assert after[key] == pytest.approx(before[key], rel=1e-5), key
    assert after["evaluate/device"] == "cpu" and "merged into" in out
    assert list((run_dir / "tensorboard" / "evaluate").glob("events.out.tfevents*"))


@pytest.mark.parametrize(
    "args,expect",
    [
        (["ckpt=/nonexistent/model.pt"], "No weights at"),
        (["checkpoint=x"], "Unknown option 'checkpoint'"),
        ([], "Say which weights"),
    ],
)
def test_evaluate_bad_input(args, expect, capsys):
    from stridelab.evaluate import main

    assert main(args) == 2 and expect in capsys.readouterr().err


def test_evaluate_refuses_weights_of_another_model(smoke_run, tmp_path, capsys):
    import shutil

    import torch

    from stridelab.evaluate import main

    _, run_dir = smoke_run
    other = tmp_path / "run"
    shutil.copytree(run_dir, other)
    torch.save({"weight": torch.zeros(3)}, other / "model.pt")
    assert main([f"ckpt={other}"]) == 2
    assert "does not hold this run's weights" in capsys.readouterr().err


def test_suite_knobs_are_checked_and_skip_works(tmp_path, compose):
    with pytest.raises(ConfigError, match="metrics.skip"):
        run(compose(["experiment=smoke", "metrics.skip=[shfit]"], tmp_path / "a"))
    metrics = run(
        compose(
            [
                "experiment=smoke",
                "metrics.skip=[shift,crop,pairshift,worstshift,subpixel,corruption,border,coverage,aliasing,cost]",
                "logger=csv",
            ],
            tmp_path / "b",
        )
    )
    assert "audit/uneven_layers" in metrics and not any(k.startswith(("shift/", "crop/", "cost/")) for k in metrics)


def test_evaluate_replaces_the_previous_measurement(smoke_run, tmp_path):
    import shutil

    from stridelab.evaluate import evaluate

    metrics, run_dir = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    data = evaluate(
        str(copy), "cpu", "32-true", ["metrics.crop_padding=2", "metrics.subset_size=32", "metrics.skip=[cost]"]
    )
    assert "crop/acc_at_+2" in data and "crop/acc_at_+4" not in data, "stale keys of the old knobs are gone"
    assert data["metrics/subset_size"] == 32 and "cost/infer_images_per_s" not in data
    assert data["cost/train_images_per_s"] == metrics["cost/train_images_per_s"], "the fit's timing is kept"
    assert data["test/acc"] == metrics["test/acc"] and data["status"] == "ok"
