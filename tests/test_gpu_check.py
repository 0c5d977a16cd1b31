"""scripts/gpu-check's step runner and report (issue 22): a failing or overlong step is recorded and the
next one runs; the report names every step with its status. The whole dry run is in .ci/run."""

from __future__ import annotations

import json
import sys

from stridelab.bench.gpu_check import ENV_PROBE, Step, report_md, run_step


def test_steps_record_success_failure_and_time_limit_and_the_report_names_each(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"rows": [{"downsample": "conv", "median_images_per_s": 12.0}]}))
    ok = run_step(Step("zoo", [sys.executable, "-c", "print('fine')"], 30, "r.json"), tmp_path)
    bad = run_step(Step("broken", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 30), tmp_path)
    slow = run_step(Step("slow", [sys.executable, "-c", "import time; time.sleep(5)"], 0.5), tmp_path)
    env = run_step(Step("environment", [sys.executable, "-c", ENV_PROBE], 60), tmp_path)
    assert ok.status == "ok" and ok.result["rows"][0]["downsample"] == "conv"
    assert bad.status == "failed (exit 3)" and "boom" in bad.tail
    assert slow.status.startswith("timed out") and slow.seconds < 4
    assert env.status == "ok" and "torch" in env.result and "cuda_available" in env.result
    from dataclasses import asdict

    md = report_md({"dry_run": True, "steps": [asdict(s) for s in (env, ok, bad, slow)]})
    assert "| zoo | ok |" in md and "conv 12 img/s" in md and "| broken | failed (exit 3) |" in md and "boom" in md
    assert "| slow | timed out" in md and "Environment: python" in md


def test_the_packing_step_reports_each_k_and_the_recommended_one():
    from stridelab.bench.packing import recommend, slots_said

    def row(k, per_run, slots=None):
        slots = slots or k
        return {"runs_per_device": k, "runs": k, "wall_s": 10.0, "runs_per_hour": 360.0 * k, "images_per_s": 1.0,
                "fit_images_per_s_per_run": per_run, "train_images_per_s": per_run * slots,
                "overhead_s_per_run": 5.0, "study_hours": 1.0 / k}  # fmt: skip

    rows = [row(1, 1000), row(2, 900), row(4, 600), row(8, 310)]  # 1000, 1800, 2400, 2480 img/s
    pick = recommend(rows)
    assert pick["runs_per_device"] == 4 and pick["vs_k1"] == 2.4  # 2400 is within 5% of 2480: the smaller K
    assert recommend([{"runs_per_device": 1, "error": "boom"}]) is None
    assert slots_said("[HYDRA] launcher=packed: 8 run(s), 4 at a time on each of 2 GPU(s): 8 at once, 2 CPU", 4) == 8
    failed = {"runs_per_device": 2, "runs": 2, "ok": 0, "wall_s": 3.0, "exit": 1, "error": "boom"}
    step = {"name": "packing", "status": "ok", "seconds": 9.0, "tail": "",
            "result": {"rows": [*rows, failed], "recommend": pick, "mps": "MPS: not used (no GPU)"}}  # fmt: skip
    md = report_md({"dry_run": True, "steps": [step]})
    assert "K=4: 2400 train img/s" in md and "K=2: failed" in md and "recommended K=4" in md
    assert "runs_per_device=4` (the smallest K within 5%" in md and "2.40x the training throughput" in md
    assert "| 8 | 8 | 10 | 2880 |" in md and "MPS: not used (no GPU)." in md
