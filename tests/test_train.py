"""The training entry point end to end: learning, results files, and the promised errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from stridelab.config import config_hash
from stridelab.errors import ConfigError, RunDiverged
from stridelab.train import run
from stridelab.training.results import RunResults

QUICK = [
    "trainer=cpu",
    "data=shapes10",
    "data.train_size=1500",
    "data.val_size=200",
    "data.test_size=500",
    "data.batch_size=64",
    "model.width=16",
    "trainer.max_epochs=3",
]


def only_run_dir(root):
    runs = list((root / "logs" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_cli_trains_learns_and_writes_results(tmp_path, run_cli):
    proc = run_cli([*QUICK, "downsample=blurpool", "padding=reflect", "metrics=quick"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["test/acc"] > 0.3, "10 classes: chance is 0.1"
    for key in ("test/loss", "model/params", "val/acc", "train/loss", "time/fit_s"):
        assert isinstance(metrics[key], (int, float)), key
    assert (metrics["downsample"], metrics["padding"], metrics["model"], metrics["data"], metrics["seed"]) == (
        "blurpool",
        "reflect",
        "simple_cnn",
        "shapes10",
        0,
    )
    assert "name: blurpool" in (run_dir / "config.yaml").read_text()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents*"))
    state = torch.load(run_dir / "model.pt", weights_only=True)
    assert (
        sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
        == metrics["model/params"]
    )
    assert "results in" in proc.stdout and "test/acc=" in proc.stdout


def test_redgreen_reports_both_test_sets(tmp_path, compose):
    cfg = compose(
        [
            "experiment=redgreen",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "data.train_size=200",
            "data.val_size=100",
            "data.test_size=100",
            "data.batch_size=50",
            "logger=csv",
            "save_weights=false",
        ],
        tmp_path,
    )
    metrics = run(cfg)
    assert metrics["status"] == "ok" and metrics["model"] == "redgreen_net" and metrics["data"] == "redgreen"
    for key in ("test/acc", "test_dissimilar/acc", "position/gap", "position/similar_acc"):
        assert key in metrics
    # The suite's position gap uses the same (whole) test sets as the trainer's test loop.
    assert metrics["position/similar_acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert metrics["position/dissimilar_acc"] == pytest.approx(metrics["test_dissimilar/acc"], abs=1e-6)
    assert metrics["position/gap"] == pytest.approx(metrics["test/acc"] - metrics["test_dissimilar/acc"], abs=1e-6)
    assert (tmp_path / "run" / "csv" / "metrics.csv").exists()


@pytest.mark.parametrize("lr", ["1e30", "1000"])  # a NaN loss; a loss of about 1e19 that stays finite
def test_a_diverged_loss_is_recorded_as_diverged(lr, tmp_path, compose):
    cfg = compose(["experiment=smoke", f"optimizer.lr={lr}", "scheduler=constant", "logger=csv"], tmp_path)
    with pytest.raises(RunDiverged):
        run(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "Lower the learning rate (optimizer.lr)" in metrics["reason"]


def test_config_hash_ignores_paths_but_not_variants(tmp_path, compose):
    a = compose(["downsample=maxpool"], tmp_path / "a")
    b = compose(["downsample=maxpool"], tmp_path / "b")
    c = compose(["downsample=avgpool"], tmp_path / "a")
    assert config_hash(a) == config_hash(b) != config_hash(c)


@pytest.mark.parametrize(
    "args,expect",
    [
        (["downsample=lanczos"], "downsample=lanczos is not an option of downsample. Its options are: aps,"),
        (["padding.mode=mirror"], "Unknown padding mode 'mirror'. Valid padding mode values are: zeros, reflect"),
        (["model.stages=6"], "layer 'stages.stage5.down.conv'"),
    ],
)
def test_bad_input_fails_with_a_clear_message(tmp_path, args, expect, run_main, capsys):
    assert run_main(["experiment=smoke", *args]) == 2
    err = capsys.readouterr().err
    assert expect in err, err[-2000:]
    assert "Traceback" not in err
    if "not an option of downsample" not in expect:  # Hydra refuses unknown groups before any run folder exists
        metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
        assert metrics["status"] == "failed" and metrics["reason"]


@pytest.mark.slow
def test_missing_data_fails_at_once_in_a_fresh_process(tmp_path, run_cli):
    t0 = time.perf_counter()
    proc = run_cli(["experiment=smoke", "data=cifar10", "data.download=false"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "data=shapes10 and data=redgreen" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - t0 < 60
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["reason"]


@pytest.mark.slow
def test_run_ids_differ_between_processes():
    code = (
        "from stridelab.config import register_resolvers as r; from omegaconf import OmegaConf as O; r(); "
        "print(O.create({'a': '${stridelab.uid:}'}).a)"
    )
    ids = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout for _ in range(3)}
    assert len(ids) == 3


def test_results_written_atomically(tmp_path):
    res = RunResults(tmp_path / "metrics.json", model="m")
    res.succeed()
    before = (tmp_path / "metrics.json").read_text()
    res.update(bad=object())
    with pytest.raises(TypeError):
        res.write()
    assert (tmp_path / "metrics.json").read_text() == before
    assert os.listdir(tmp_path) == ["metrics.json"]
    nan = RunResults(tmp_path / "m2.json", loss=float("nan"))
    nan.fail("diverged")
    assert json.loads((tmp_path / "m2.json").read_text()) == {"loss": "nan", "status": "failed", "reason": "diverged"}


def test_unknown_model_option_is_a_config_error():
    from stridelab.models import create_model

    with pytest.raises(ConfigError, match="simple_cnn"):
        create_model("vgg99")


def test_tally_sums_on_the_device_and_counts_on_the_host():
    from stridelab.training.module import _Tally

    tally = _Tally()
    assert tally.compute() is None  # nothing seen
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    tally.add(logits, torch.tensor([0, 0, 0]), torch.tensor(6.0))  # 2 of 3 right
    tally.add(logits[:1], torch.tensor([1]), torch.tensor(1.0))  # 0 of 1 right
    loss, acc = tally.compute()
    assert isinstance(tally.count, int) and tally.count == 4  # no per-step host -> device copy
    assert loss.item() == pytest.approx(7.0 / 4) and acc.item() == pytest.approx(0.5)


def test_step_loss_is_logged_exactly_when_lightning_writes_step_metrics(tmp_path, compose):
    """The module calls ``self.log`` for the step loss only on the steps Lightning writes (a call costs
    about 1 ms of host time); the steps must be Lightning's own, or the loss curve would lose points."""
    import csv

    import lightning as L

    from stridelab.build import build_run

    class Agree(L.Callback):
        seen: list = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append((pl_module._logging_step(), trainer._logger_connector.should_update_logs))

    cfg = compose(
        [
            "experiment=smoke",
            "data=shapes10",
            "logger=csv",
            "trainer.log_every_n_steps=3",
            "+trainer.limit_val_batches=0",
            "~metrics",
        ],
        tmp_path,
    )
    agree = Agree()
    parts = build_run(cfg, callbacks=[agree])
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    ours, lightnings = zip(*agree.seen)
    assert ours == lightnings and any(ours) and not all(ours)
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    logged = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert logged == [s for s in range(len(ours)) if (s + 1) % 3 == 0]
