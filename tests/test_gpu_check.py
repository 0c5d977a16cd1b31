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
