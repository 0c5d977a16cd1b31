"""Aggregation of many runs, checked against a hand computation on made-up metrics.json files."""

from __future__ import annotations

import csv
import json
import math
import os
import time

import pytest

from stridelab.errors import DataError
from stridelab.studies import aggregate, describe, t975


def write_run(root, name, status="ok", reason=None, **metrics):
    d = root / name
    d.mkdir(parents=True)
    data = {"status": status, "model": "simple_cnn", "data": "shapes10", "padding": "zeros", **metrics}
    if reason:
        data["reason"] = reason
    (d / "metrics.json").write_text(json.dumps(data))
    return d


@pytest.fixture
def study(tmp_path):
    for seed, acc, ips in [(0, 0.80, 100.0), (1, 0.82, 110.0), (2, 0.87, 120.0)]:
        write_run(
            tmp_path,
            f"conv-{seed}",
            downsample="conv",
            seed=seed,
            config_hash=f"c{seed}",
            **{
                "test/acc": acc,
                "cost/train_images_per_s": ips,
                "border/deviation": 0.5,
                "border/layer_00.stem.conv": 0.4,
                "border/layer_01.down": 0.6,
            },
        )
    for seed, acc in [(0, 0.90), (1, 0.92)]:
        write_run(
            tmp_path,
            f"max-{seed}",
            downsample="maxpool",
            seed=seed,
            config_hash=f"m{seed}",
            **{"test/acc": acc, "cost/train_images_per_s": 90.0, "border/deviation": 0.7},
        )
    write_run(
        tmp_path,
        "max-2",
        "failed",
        "FloatingPointError: training loss became nan",
        downsample="maxpool",
        seed=2,
        config_hash="m2",
    )
    write_run(tmp_path, "max-3", "running", downsample="maxpool", seed=3, config_hash="m3")
    # A run redone after a failure: same config hash, the finished one counts.
    old = write_run(
        tmp_path, "conv-3-old", "failed", "RuntimeError: killed", downsample="conv", seed=3, config_hash="c3"
    )
    os.utime(old / "metrics.json", (time.time() - 100, time.time() - 100))
    write_run(
        tmp_path,
        "conv-3",
        downsample="conv",
        seed=3,
        config_hash="c3",
        **{"test/acc": 0.83, "cost/train_images_per_s": 100.0, "border/deviation": 0.5},
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    return tmp_path


def test_t_quantiles_and_describe_by_hand():
    # scipy's quantiles against a printed table's (three decimals: Student's t, two-sided 95%)
    table = {1: 12.706, 2: 4.303, 3: 3.182, 10: 2.228, 30: 2.042, 60: 2.000, 120: 1.980}
    assert all(abs(t975(df) - q) < 5e-4 for df, q in table.items())
    assert math.isnan(t975(0))
    d = describe([0.80, 0.82, 0.87])
    std = math.sqrt((0.03**2 + 0.01**2 + 0.04**2) / 2)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.83) and d["std"] == pytest.approx(std)
    assert d["ci95"] == pytest.approx(4.303 * std / math.sqrt(3), rel=1e-4)
    one = describe([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["ci95"])


def test_aggregate_by_hand(study):
    result = aggregate(study)
    assert result.variant_cols == ["downsample"]
    assert result.constant["model"] == "simple_cnn" and result.constant["data"] == "shapes10"
    rows = {r["downsample"]: r for r in csv.DictReader((study / "summary.csv").open())}
    conv, mx = rows["conv"], rows["maxpool"]
    accs = [0.80, 0.82, 0.87, 0.83]
    mean = sum(accs) / 4
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 3)
    assert int(conv["n_seeds"]) == 4 and conv["seeds"] == "0 1 2 3"
    assert float(conv["test/acc/mean"]) == pytest.approx(mean)
    assert float(conv["test/acc/std"]) == pytest.approx(std)
    assert float(conv["test/acc/ci95"]) == pytest.approx(3.182 * std / 2, rel=2e-4)  # a printed table's t
    assert int(mx["n_seeds"]) == 2, "the failed and the unfinished maxpool runs are not in the means"
    assert float(mx["test/acc/mean"]) == pytest.approx(0.91)
    assert float(mx["test/acc/ci95"]) == pytest.approx(12.706 * math.sqrt(0.0002) / math.sqrt(2), rel=1e-4)
    assert float(conv["border/layer_01.down/mean"]) == pytest.approx(0.6)

    results = list(csv.DictReader((study / "results.csv").open()))
    assert len(results) == 9  # 4 conv + 2 maxpool + failed + unfinished + unreadable; the redone run once
    assert {r["status"] for r in results} == {"ok", "failed", "running"}

    md = (study / "summary.md").read_text()
    assert "| conv | 4 |" in md and "| maxpool | 2 |" in md
    assert "FloatingPointError: training loss became nan" in md
    assert "did not finish" in md and "unreadable metrics.json" in md
    assert "`model=simple_cnn`" in md
    assert f"{mean:.3f} ± {3.182 * std / 2:.3f}" in md
    for png in ("acc_vs_throughput.png", "shift_consistency.png", "border_deviation.png", "border_per_layer.png"):
        if png == "shift_consistency.png":
            assert not (study / "plots" / png).exists(), "no shift figures in this study: no empty plot"
        else:
            assert (study / "plots" / png).read_bytes()[:4] == b"\x89PNG"


def test_aggregate_of_an_empty_folder_says_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="No runs under"):
        aggregate(tmp_path)


def test_config_keys_that_vary_identify_variants(tmp_path):
    for i, (lr, ds) in enumerate([(0.1, "conv"), (0.2, "conv"), (0.1, "blurpool"), (0.2, "blurpool")]):
        d = write_run(tmp_path, f"r{i}", downsample=ds, seed=0, config_hash=str(i), **{"test/acc": 0.5})
        extra = "  filter_size: 3\n" if ds == "blurpool" else ""
        (d / "config.yaml").write_text(
            f"seed: 0\noptimizer:\n  lr: {lr}\ndownsample:\n  name: {ds}\n{extra}paths:\n  output_dir: {d}\n"
        )
    result = aggregate(tmp_path, plots=False)
    # optimizer.lr varies on its own; filter_size only follows downsample; paths never count.
    assert result.variant_cols == ["downsample", "cfg:optimizer.lr"]
    assert len(result.variants) == 4
