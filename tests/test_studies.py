"""Studies end to end through the real CLI: grids, aggregation, failures, resume, launchers."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from stridelab.errors import ConfigError

TINY = ["experiment=smoke", "data.limit_train=128", "data.val_size=64", "data.limit_test=64", "logger=csv"]
# Orchestration tests need finished runs, not measurements: the suite's slow groups are skipped.
NO_SUITE = "metrics.skip=[shift,crop,pairshift,worstshift,subpixel,corruption,border,coverage,aliasing,cost]"


def _metrics(root):
    return {p.parent.name: json.loads(p.read_text()) for p in root.rglob("metrics.json")}


@pytest.mark.slow
@pytest.mark.sweeps
def test_grid_aggregates_reports_failures_and_resumes(tmp_path, run_cli):
    sweep = tmp_path / "sweep"
    grid = ["-m", *TINY, NO_SUITE, "downsample=conv,maxpool", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    first = run_cli(grid, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len([m for m in _metrics(sweep).values() if m["status"] == "ok"]) == 4
    # Job folders are named by the swept keys, the fixed settings hashed into a suffix (issue 14: the
    # full override list was cut at 120 characters, cutting away the key that differed).
    names = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert len(set(names)) == 4 and all(
        re.fullmatch(r"downsample=(conv|maxpool),seed=[01]~[0-9a-f]{6}", n) for n in names
    )
    assert len({n.split("~")[1] for n in names}) == 1  # the same fixed settings, the same suffix
    assert "| conv | 2 |" in first.stdout and "study tables and plots in" in first.stdout
    # A run forced to diverge (its loss becomes NaN), in the same sweep folder: recorded, the sweep goes on.
    bad = run_cli(
        [
            "-m",
            *TINY,
            NO_SUITE,
            "downsample=conv",
            "seed=0",
            "optimizer.lr=1e30",
            "scheduler=constant",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert bad.returncode == 1, bad.stderr[-3000:]  # a sweep with a failed run says so in its exit status
    assert "1 run(s) diverged" in bad.stderr and "Traceback" not in bad.stderr
    rows = {(r["downsample"], r.get("optimizer.lr", "")): r for r in csv.DictReader((sweep / "summary.csv").open())}
    ok_rows = [r for r in rows.values() if r["n_seeds"] == "2"]
    assert len(ok_rows) == 2 and all(r["test/acc/ci95"] for r in ok_rows)
    summary = (sweep / "summary.md").read_text()
    assert "Failed, diverged or unfinished runs" in summary and "| diverged | RunDiverged: training loss" in summary
    results = list(csv.DictReader((sweep / "results.csv").open()))
    assert len(results) == 5 and sum(r["status"] == "diverged" for r in results) == 1
    # The same grid again: every config already finished, nothing is trained or rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in sweep.rglob("metrics.json")}
    again = run_cli(grid, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped, this config already finished") == 4
    assert "results in" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("metrics.json")} == stamps


def _study_cli(args, cwd):
    env = {**os.environ, "STRIDELAB_ROOT": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "stridelab.study", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.sweeps  # a whole two-grid study twice, in subprocesses (~30 s): in .ci/run, after make test
def test_study_file_runs_its_grids_and_resumes(tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(f"""question: Does the runner work?
notes: >
  Tiny on
  purpose.
reference:
  source: Nobody 2026, Table 0
  conv: 12.3
grids:
  a:
    overrides: [{", ".join(TINY)}, "{NO_SUITE}"]
    params:
      downsample: conv,maxpool
  b:
    overrides: [{", ".join(TINY)}, "{NO_SUITE}"]
    params:
      padding: zeros,reflect
""")
    first = _study_cli([str(study)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    root = tmp_path / "logs" / "studies" / "tiny"
    assert (root / "a" / "downsample=maxpool" / "metrics.json").is_file()
    assert (root / "b" / "padding=reflect" / "metrics.json").is_file()
    # conv+zeros is in both grids: trained once (grid b finds it in grid a).
    assert "skipped, this config already finished" in first.stdout
    summary = (root / "summary.md").read_text()
    assert "Study `tiny` (" in summary and "Does the runner work?" in summary and "Notes: Tiny on purpose." in summary
    assert "Nobody 2026, Table 0" in summary and "* conv: 12.3" in summary
    assert len(list(csv.DictReader((root / "summary.csv").open()))) == 3
    assert (root / "a" / "summary.md").is_file() and (root / "b" / "results.csv").is_file()
    assert "| conv | zeros |" in first.stdout
    again = _study_cli([str(study)], tmp_path)
    assert again.returncode == 0 and "results in" not in again.stdout
    assert again.stdout.count("skipped, this config already finished") == 4


@pytest.mark.slow
def test_unknown_study_lists_the_studies(tmp_path):
    proc = _study_cli(["nosuchstudy"], tmp_path)
    assert proc.returncode == 2 and "No study 'nosuchstudy'" in proc.stderr and "kayhan_redgreen" in proc.stderr


def test_study_files_parse_and_every_grid_composes(tmp_path, compose):
    from stridelab.studies.runner import available, grid_argv, load_study

    assert {"demo", "padding_x_downsampling", "kayhan_redgreen", "allcnn_springenberg"} <= set(available())
    for name in available():
        study = load_study(name)
        assert study.question and study.grids
        for grid in study.grids:
            argv = grid_argv(grid, tmp_path / grid.name, [])
            first_values = [f"{k}={v.split(',')[0]}" for k, v in grid.params.items()]
            compose([*grid.overrides, *first_values], tmp_path)  # raises on an unknown group or key
            assert f"hydra.sweep.dir={tmp_path / grid.name}" in argv and argv[0] == "-m"
    with pytest.raises(ConfigError, match="is not a study file"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("question: x\n")
        load_study(str(bad))


def test_dry_run_composes_and_builds_every_run_of_the_shift_invariance_study():
    from stridelab.studies.runner import check_grid, grid_runs, load_study

    (grid,) = load_study("shift_invariance").grids
    runs = grid_runs(grid, [])
    assert len(runs) == 2 * 5 * 3 * 3
    assert runs[0][-4:] == ["model=simple_cnn", "downsample=conv", "padding=zeros", "seed=0"]
    assert runs[-1][-4:] == ["model=resnet20", "downsample=lps", "padding=partial", "seed=2"]
    # the whole grid takes ~30 s; one seed of one model checks every strategy x padding here
    assert check_grid(grid, ["model=resnet20", "seed=0"]) == 15
    with pytest.raises(ConfigError, match=r"run .*downsample=conv padding=zeros: downsample.norm is not a key"):
        check_grid(grid, ["model=resnet20", "seed=0", "downsample.norm=l1"])


@pytest.mark.slow
@pytest.mark.launchers
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_complete_a_two_run_grid(tmp_path, launcher, run_cli):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", f"launcher={launcher}", *TINY, NO_SUITE, "downsample=conv,maxpool", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [m for m in _metrics(sweep).values()]
    assert sorted(m["downsample"] for m in metrics) == ["conv", "maxpool"]
    assert all(m["status"] == "ok" for m in metrics)
    assert (sweep / "summary.md").is_file()


@pytest.mark.slow
@pytest.mark.launchers
def test_ddp_inside_a_multirun_trains_each_job_once(tmp_path, run_cli):
    """trainer=ddp on 2 CPU processes (gloo) inside a Hydra multirun: Lightning's workers must join
    their own job, not start the sweep again; only rank 0 writes results."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            *TINY,
            "metrics.skip=[shift,pairshift,worstshift,subpixel,corruption,border,audit,coverage,aliasing,cost]",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "downsample=conv,maxpool",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = list(_metrics(sweep).values())
    assert sorted(m["downsample"] for m in metrics) == ["conv", "maxpool"], "each job ran exactly once"
    assert not (tmp_path / "logs" / "runs").exists(), "no worker started a run of its own"
    for m in metrics:
        assert m["status"] == "ok" and m["trainer/world_size"] == 2
        # test/acc is summed over both processes' shards; the suite evaluates all 64 images in one process.
        assert m["test/acc"] == pytest.approx(m["crop/acc_at_+0"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.sweeps  # a whole sweep stopped by Ctrl-C (~15 s): in .ci/run, after make test
def test_ctrl_c_keeps_finished_runs_and_the_aggregate_computable(tmp_path):
    import signal
    import time

    from stridelab.studies import aggregate

    sweep = tmp_path / "sweep"
    grid = ["-m", *TINY, NO_SUITE, "downsample=conv,maxpool,avgpool", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "STRIDELAB_ROOT": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stridelab.train", *grid],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Ctrl-C once the first run has finished, however long that takes on a loaded machine (a fixed
    # deadline sent it before any run had finished when two `make test` ran at once). The process
    # ending first is a failure of its own; the long limit only keeps a hung sweep from hanging CI.
    try:
        limit = time.monotonic() + 1800
        while not any(m.get("status") == "ok" for m in _metrics(sweep).values()):
            assert proc.poll() is None, f"the sweep ended (status {proc.returncode}) before its first run finished"
            assert time.monotonic() < limit, "no run finished in 30 minutes"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=600) == 130  # 128 + SIGINT: the sweep did not finish
    finally:
        proc.kill()
    runs = _metrics(sweep)  # every metrics.json is whole JSON (written atomically)
    finished = [m for m in runs.values() if m["status"] == "ok"]
    assert finished and len(finished) < 3
    assert all(m["status"] in ("ok", "interrupted") for m in runs.values())
    study = aggregate(sweep)
    assert sum(len(v) for v in study.variants.values()) == len(finished)
    assert (sweep / "summary.md").is_file()  # (re-running the grid resumes: see the tests above)


def test_a_study_tunes_each_variant_then_runs_its_seeds_at_its_best_values(tmp_path, monkeypatch):
    """tune: an hparams_search=lr per variant (offline, tiny), then the variant's seeds at its best values."""
    import yaml

    from stridelab.studies.runner import run_study

    study = tmp_path / "tuned.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "question": "Does max pooling beat stride-2 convolution at their own learning rates?",
                "tune": {
                    "search": "lr",
                    "per": ["downsample"],
                    "overrides": ["hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2"],
                    # a tiny search: hparams_search=lr runs offline (Hydra's Optuna sweeper, TPE)
                },
                "grids": {"g": {"overrides": [*TINY, NO_SUITE], "params": {"downsample": "conv,maxpool", "seed": "0"}}},
            }
        )
    )
    monkeypatch.setenv("STRIDELAB_ROOT", str(tmp_path))
    assert run_study(str(study), [], out=str(tmp_path / "out")) == 0
    out = tmp_path / "out"
    tuned = yaml.safe_load((out / "tuned.yaml").read_text())["g"]
    assert set(tuned) == {"downsample=conv", "downsample=maxpool"}
    for name, best in tuned.items():
        search = out / "tune" / "g" / name
        result = yaml.safe_load((search / "optimization_results.yaml").read_text())
        trials = [m for m in _metrics(search).values() if m["status"] == "ok"]
        # trial folders are named by the searched keys (from hydra.sweeper.params), the rest hashed
        assert all(
            re.fullmatch(r"optimizer\.lr=[0-9.e-]+,optimizer\.weight_decay=[0-9.e-]+~[0-9a-f]{6}", t)
            for t in _metrics(search)
        )
        assert len(trials) == 2 and result["best_value"] == max(m["val/acc"] for m in trials)  # validation, not test
        assert set(best) == {"optimizer.lr", "optimizer.weight_decay"} and 0.003 <= best["optimizer.lr"] <= 0.5
        (run,) = [p.parent for p in (out / "g").glob("*/metrics.json") if name in p.parent.name]
        assert yaml.safe_load((run / "config.yaml").read_text())["optimizer"]["lr"] == pytest.approx(
            best["optimizer.lr"]
        )
    summary = (out / "summary.md").read_text()
    assert "## Tuned hyperparameters" in summary and "downsample=maxpool" in summary


def test_reference_table_puts_ours_beside_the_papers(tmp_path):
    from stridelab.errors import ConfigError
    from stridelab.studies.reference import check_reference, reference_md

    ref = {
        "source": "Someone 2020, Table 1; accuracy (%)",
        "scale": 100,
        "figures": {"similar": ["test/acc", "train_images/acc"]},
        "rows": {
            "S-zero": {"match": {"padding": "zeros", "padding_amount": "same"}, "similar": 99.8},
            "S-circular": {"match": {"padding": "circular"}, "similar": 73.7},
            "F-any": {"match": {"padding_amount": "full"}, "similar": 89.7},
        },
    }
    assert check_reference(ref, "s.yaml") is ref
    rows = [
        {"padding": "zeros", "padding_amount": "same", "n_seeds": "10", "test/acc/mean": "0.995",
         "test/acc/ci95": "0.002", "train_images/acc/mean": "0.998", "train_images/acc/ci95": "nan"},
        {"padding": "circular", "padding_amount": "same", "n_seeds": "3", "test/acc/mean": "0.634",
         "test/acc/ci95": "0.024", "train_images/acc/mean": "0.71", "train_images/acc/ci95": "0.031"},
        {"padding": "zeros", "padding_amount": "full", "n_seeds": "3", "test/acc/mean": "0.85"},
        {"padding": "reflect", "padding_amount": "full", "n_seeds": "3", "test/acc/mean": "0.9"},
    ]  # fmt: skip
    text = "\n".join(reference_md(ref, rows))
    assert (
        "| paper's row | our seeds | similar: paper | similar: ours, `test/acc` | similar: ours, `train_images/acc` |"
        in (text)
    )
    assert "| S-zero | 10 | 99.8 | 99.5 ± 0.2 | 99.8 |" in text  # no interval where it is not finite
    assert "| S-circular | 3 | 73.7 | 63.4 ± 2.4 | 71.0 ± 3.1 |" in text
    assert "| F-any | 2 variants match | 89.7 | - | - |" in text  # ambiguous: nothing is guessed
    # The free form stays a list; a malformed table is refused with what to write.
    assert "* conv: 12.3" in reference_md({"source": "x", "conv": 12.3}, [])
    for bad in (
        {"figures": {"similar": "test/acc"}, "rows": {"a": {"match": {}}}},
        {"figures": {"similar": ["test/acc"]}, "rows": {"a": {"similar": 1.0}}},
        {"figures": {"similar": ["test/acc"]}, "rows": {"a": {"match": {}, "dissimilar": 1.0}}},
        {"figures": {"similar": ["test/acc"]}, "rows": {"a": {"match": {}, "similar": "high"}}},
    ):
        with pytest.raises(ConfigError, match="reference"):
            check_reference(bad, "s.yaml")


def test_a_study_file_names_how_its_verdicts_are_corrected(tmp_path):
    from stridelab.studies.runner import load_study

    body = "question: q\ngrids:\n  a:\n    overrides: [experiment=smoke]\n    params: {seed: '0,1'}\n"
    (tmp_path / "default.yaml").write_text(body)
    (tmp_path / "holm.yaml").write_text(body + "verdicts: {correction: holm}\n")
    (tmp_path / "bad.yaml").write_text(body + "verdicts: {correction: bonferroni}\n")
    assert load_study(str(tmp_path / "default.yaml")).correction == "fdr"
    assert load_study(str(tmp_path / "holm.yaml")).correction == "holm"
    with pytest.raises(ConfigError, match="'verdicts' takes one key, correction: fdr .* got .*bonferroni"):
        load_study(str(tmp_path / "bad.yaml"))
