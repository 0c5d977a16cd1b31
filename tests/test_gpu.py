"""The GPU path (issue 22): run by `scripts/gpu-check` on a lent GPU (`pytest -m gpu`); skipped without CUDA.

Written before any GPU was lent to the project: the first gpu-check report says whether they pass. Each
trains a few steps of a small model on generated shapes10 images with `trainer=gpu` (bf16-mixed, cuDNN
benchmark, channels_last) and checks what only a GPU run can get wrong.
"""

from __future__ import annotations

import math
import os
import signal

import lightning as L
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU tests run on a lent GPU"),
]

SMALL = [
    "trainer=gpu",
    "metrics=quick",
    "data=shapes10",
    "data.train_size=1024",
    "data.test_size=256",
    "data.val_size=256",
    "data.batch_size=128",
    "trainer.max_epochs=2",
    "logger=csv",
    "save_weights=false",
]


def _run(compose, tmp_path, *overrides, callbacks=None):
    from stridelab.train import run

    return run(compose([*SMALL, *overrides], tmp_path), callbacks=callbacks)


def test_bf16_training_channels_last_and_the_suite_on_the_gpu(tmp_path, compose):
    m = _run(compose, tmp_path, "downsample=aps", "padding=circular", "model=resnet20")
    assert m["status"] == "ok" and math.isfinite(m["test/loss"])
    # The suite runs in fp32 on the GPU: APS with circular padding stays exactly invariant there too.
    assert m["shift/circular_consistency"] == 1.0 and m["shift/circular_logit_change"] < 1e-4
    assert m["cost/peak_memory_mib"] > 0 and m["cost/mfu"] > 0 and m["cost/peak_flops_source"]


@pytest.mark.parametrize("downsample", ["lps", "tips", "flc", "ddac"])
def test_learnt_and_fourier_downsampling_under_autocast(tmp_path, compose, downsample):
    m = _run(compose, tmp_path, f"downsample={downsample}", "model=resnet20")
    assert m["status"] == "ok" and math.isfinite(m["test/loss"]) and m["test/acc"] > 0.1


def test_compiled_model_trains(tmp_path, compose):
    m = _run(compose, tmp_path, "module.compile=true")
    assert m["status"] == "ok" and math.isfinite(m["test/loss"])


class _SignalAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_checkpoint_saved_on_the_gpu_resumes_there(tmp_path, compose):
    from stridelab.errors import RunInterrupted

    with pytest.raises(RunInterrupted):
        _run(compose, tmp_path, "seed=3", callbacks=[_SignalAt(3)])  # mid first epoch
    m = _run(compose, tmp_path, "seed=3")
    assert m["status"] == "ok" and m["resume/count"] == 1 and m["resume/epoch"] == 0


def _metrics(folder):
    import json

    return [json.loads(p.read_text()) for p in sorted(folder.rglob("metrics.json"))]


def test_ddp_with_one_process_on_the_gpu(tmp_path, run_cli):
    """trainer=ddp re-executes the command for its workers: as a user runs it, in a subprocess."""
    small = [a for a in SMALL if a != "trainer=gpu"]
    proc = run_cli([*small, "trainer=ddp", "trainer.devices=1", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, 600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (m,) = _metrics(tmp_path / "run")
    assert m["status"] == "ok" and m["trainer/world_size"] == 1 and m["trainer/device"].startswith("cuda")


def test_two_runs_packed_onto_the_gpu(tmp_path, run_cli):
    """launcher=packed with K=2 on the GPU (MPS where the machine has it): each run on cuda:0 of its own
    CUDA_VISIBLE_DEVICES, its memory bounded, both finish."""
    sweep = tmp_path / "sweep"
    args = ["-m", *SMALL, "launcher=packed", "hydra.launcher.runs_per_device=2", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, tmp_path, 600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "2 at a time on each of" in out and "MPS:" in out, out[-3000:]
    runs = _metrics(sweep)
    assert len(runs) == 2 and all(m["status"] == "ok" and m["trainer/device"].startswith("cuda") for m in runs)
