"""The benchmark's machinery (not its numbers: those are for `make bench`, never pass/fail here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from stridelab.bench import paths
from stridelab.bench.benchmark import bars, read_bars
from stridelab.data import cifar10
from stridelab.data.augment import crop_images, flip_some
from stridelab.errors import ConfigError
from stridelab.training import sharing


def test_quick_bench_reports_every_figure(tmp_path, capsys, monkeypatch):
    from stridelab.bench.__main__ import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    assert main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["paths"]) == {"bare", "stridelab", "torchvision_w0"}
    for name, p in result["paths"].items():
        for key in ("images_per_s", "step_ms", "first_step_s", "setup_s"):
            assert math.isfinite(p[key]) and p[key] > 0, (name, key, p[key])
    for key in ("stridelab_vs_bare", "torchvision_vs_bare", "stridelab_vs_torchvision"):
        assert math.isfinite(result["ratios"][key]) and result["ratios"][key] > 0
    cost = result["run_cost"]
    assert cost["status"] == "ok" and cost["batches"]["train"] >= 2 and cost["batches"]["test"] >= 1
    for key in ("total_s", "train_batches_s", "eval_batches_s", "suite_s", "fixed_s", "compose_s"):
        assert math.isfinite(cost[key]) and cost[key] > 0, (key, cost[key])
    assert cost["fixed_s"] < cost["total_s"]
    demo = result["suite_on_demo"]
    assert demo["status"] == "ok" and demo["suite_s"] > 0 and demo["suite_share"] > 0
    assert result["setup"]["train_flops_per_image"] > 0
    assert [b["applies"] for b in result["bars"]] == [False] * 4  # quick: no verdicts
    shown = capsys.readouterr().out
    assert "(a) bare PyTorch loop" in shown and "(c) torchvision CIFAR10 + PIL, 0 workers" in shown
    assert "NOT MET" not in shown and "n/a here" in shown


def _result(ratio, tv, fixed, share, step_ms=150.0, quick=False, device="cpu"):
    return {
        "quick": quick,
        "setup": {"device": device},
        "paths": {"bare": {"step_ms": step_ms}},
        "ratios": {"stridelab_vs_bare": ratio, "stridelab_vs_torchvision": tv},
        "run_cost": {"fixed_s": fixed},
        "suite_on_demo": {"suite_share": share},
    }


def test_bars_verdicts_from_the_performance_doc():
    # The thresholds are those of docs/performance.md's Bars table (read here, not restated).
    table = read_bars()
    assert [(b["figure"], b["device"]) for b in table][:2] == [
        ("ratios.stridelab_vs_bare", "cpu"),
        ("ratios.stridelab_vs_torchvision", "cpu"),
    ]
    cpu = [b for b in table if b["device"] == "cpu"]

    def just(b, inside: bool) -> float:  # a value 1% inside or outside the bar
        up = (b["op"] == ">=") == inside
        return b["threshold"] * (1.01 if up else 0.99)

    def result(inside: bool, **kw):
        ratio, tv, fixed, share = (just(b, inside) for b in cpu)
        return _result(ratio, tv, fixed, share, **kw)

    met = bars(result(True), table)
    assert [b["met"] for b in met] == [True] * 4 and all(b["applies"] for b in met)
    missed = bars(result(False), table)
    assert [b["met"] for b in missed] == [False] * 4
    floor = cpu[0]["when"]
    assert floor == ("paths.bare.step_ms", ">=", 50.0)
    short_steps = bars(result(True, step_ms=floor[2] - 1), table)
    assert not short_steps[0]["applies"] and short_steps[1]["applies"]
    assert not any(b["applies"] for b in bars(result(True, quick=True), table))
    gpu = bars(_result(0.91, 1.0, 2.0, 0.5, device="cuda:0"), table)
    assert len(gpu) == 1 and gpu[0]["met"] and gpu[0]["bar"] == "stridelab / bare >= 0.90"
    assert bars(result(True), table)[3]["bar"].endswith("<= 10%") and met[3]["percent"]


def test_bars_table_edits_and_errors():
    doc = (
        "# x\n## Bars\n| bar | figure | device | verdict | applies when |\n|---|---|---|---|---|\n"
        "| fast | `ratios.stridelab_vs_bare` | cpu | >= 0.5 | always |\n## Next\n"
        "| ignored | `ratios.stridelab_vs_bare` | cpu | >= 9 | always |\n"
    )
    (only,) = read_bars(doc)
    assert only["threshold"] == 0.5 and only["when"] is None
    (b,) = bars(_result(0.6, 1.0, 1.0, 0.0), [only])
    assert b["met"] and b["bar"] == "fast >= 0.50"
    with pytest.raises(ConfigError, match="no readable Bars table"):
        read_bars("# nothing here\n")
    with pytest.raises(ConfigError, match="cannot read the condition"):
        read_bars(doc.replace("| always |\n## Next", "| sometimes |\n## Next"))


def test_ratios_pair_a_baseline_timed_in_the_first_repeats_only():
    from stridelab.bench.benchmark import _ratios

    def t(ips):
        return paths.Timing(images=int(ips), seconds=1.0, steps=1, first_step_s=0.1)

    timings = {
        "bare": [t(100), t(200), t(100)],
        "stridelab": [t(97), t(190), t(99)],
        "torchvision_w0": [t(40)],
        "torchvision_w2": [t(30)],
    }
    r = _ratios(timings)
    assert r["stridelab_vs_bare"] == pytest.approx(0.97)
    assert r["stridelab_vs_bare_repeats"] == pytest.approx([0.97, 0.95, 0.99])
    assert r["torchvision_best"] == "torchvision_w0"
    assert r["stridelab_vs_torchvision"] == pytest.approx(97 / 40)  # paired with repeat 1, not the median
    assert r["torchvision_vs_bare"] == pytest.approx(0.4)


def test_sync_watch_records_where_the_host_waited(monkeypatch):
    import warnings

    from stridelab.training.timing import SyncWatch

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    watch = SyncWatch()
    watch.watch(True)
    warnings.warn("called a synchronizing CUDA operation", stacklevel=1)  # what the debug mode raises, e.g. on .item()
    watch.watch(True)
    warnings.warn("something else", stacklevel=1)
    watch.watch(False)
    assert modes == ["warn", "default"] and watch.steps == 2
    assert len(watch.sites) == 1 and watch.sites[0].startswith(__file__)
    with warnings.catch_warnings(record=True) as seen:  # the catcher is gone: warnings reach ours again
        warnings.simplefilter("always")
        warnings.warn("after", stacklevel=1)
    assert len(seen) == 1 and len(watch.sites) == 1


def test_time_steps_times_only_the_window():
    calls = []
    t = paths._time_steps(lambda: calls.append(1), 8, torch.device("cpu"), steps=4, warmup=3)
    assert len(calls) == 7 and t.steps == 4 and t.images == 32 and t.seconds > 0


def test_generated_cifar_round_trip(tmp_path):
    cifar10.write_generated(tmp_path, train_size=23, test_size=4, seed=1)
    (x, y), (tx, ty) = cifar10.load_cifar10(tmp_path, download_if_missing=False)
    assert x.shape == (23, 3, 32, 32) and tx.shape == (4, 3, 32, 32) and x.dtype == np.uint8
    assert y.max() <= 9 and len(np.unique(x)) > 200  # random content, not a constant
    with pytest.raises(ValueError, match="labels in 0-9"):
        cifar10.write_binary_batch(tmp_path / "bad.bin", x[:2], np.array([3, 10]))


def test_torchvision_dataset_is_torchvisions_pipeline():
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    ds = paths.torchvision_dataset(images, np.arange(5), [0.5] * 3, [0.25] * 3)
    x, y = ds[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2 and len(ds) == 5


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_fast_crop_and_flip_equal_plain_indexing(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 12, 12), generator=g).to(dtype)
    oy, ox = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    crops = crop_images(x, oy, ox, 8, 8)
    assert torch.equal(crops, torch.stack([x[i, :, oy[i] : oy[i] + 8, ox[i] : ox[i] + 8] for i in range(6)]))
    flipped = torch.tensor([True, False, False, True, True, False])
    want = torch.stack([x[i].flip(-1) if flipped[i] else x[i] for i in range(6)])
    assert torch.equal(flip_some(x, flipped), want) and not torch.equal(want, x)


def test_available_cores_honours_cgroup_quota(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert sharing._cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert sharing._cgroup_quota(tmp_path) is None
    monkeypatch.setattr(sharing, "_cgroup_quota", lambda: 1.5)
    assert sharing.available_cores() == min(2, len(sharing.os.sched_getaffinity(0)))


def test_the_timing_callback_pairs_blocks_and_sums_batches(compose, tmp_path):
    """The run's one timing callback, with the benchmark's options, in a real fit."""
    from omegaconf import open_dict

    from stridelab.build import build_run
    from stridelab.training.throughput import TrainThroughput

    cfg = compose(["experiment=smoke", "data=shapes10", "logger=csv", "~metrics"], tmp_path)
    with open_dict(cfg):
        cfg.trainer.max_steps, cfg.trainer.max_epochs, cfg.trainer.limit_val_batches = 9, -1, 0
    blocks = []
    clock = TrainThroughput(2, block=3, between=blocks.append, batch_seconds=True, count_syncs=True)
    parts = build_run(cfg, timer=clock)
    assert parts.timer is clock
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    assert clock.steps_done == 9 and clock.window.steps == 7 and blocks == [3, 3, 1]
    assert clock.window.images == 7 * parts.datamodule.batch_size and clock.window.seconds > 0
    assert clock.first_step_s > 0 and clock.started_at is not None
    assert clock.batches["train"] == 9 and clock.seconds["train"] > 0 and clock.batches["val"] == 0
    assert clock.syncs.steps == 0  # CPU: the sync watch is for CUDA only


def test_zoo_bench_prices_strategies_in_a_library_network_and_the_folder_loader(tmp_path, capsys):
    from stridelab.bench.zoo import main

    args = ["strategies", "--arch", "mobilenet_v2", "--no-cifar-stem", "--strategies", "conv,aps", "--batch", "4"]
    assert main([*args, "--seconds", "0", "--repeats", "1", "--out", str(tmp_path / "s.json")]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [r["downsample"] for r in rows] == ["conv", "aps"] and rows[0]["vs_first"] == 1.0
    assert all(r["median_images_per_s"] > 0 and r["convert_s"] > 0 for r in rows)
    assert "| aps |" in capsys.readouterr().out
    args = ["strategies", "--library", "resnet20", "--strategies", "conv,blurpool:filter=ideal", "--batch", "2"]
    assert main([*args, "--seconds", "0", "--repeats", "1", "--out", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["downsample"] for r in rows] == ["conv", "blurpool:filter=ideal"]
    args = ["loader", "--images", "24", "--image-size", "32", "--source", "48", "--workers", "0", "--batch", "8"]
    assert main([*args, "--out", str(tmp_path / "l.json")]) == 0
    (row,) = json.loads((tmp_path / "l.json").read_text())["rows"]
    assert row["workers"] == 0 and row["images"] == 24 and row["images_per_s"] > 0
