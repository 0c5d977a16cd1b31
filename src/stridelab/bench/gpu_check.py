"""One prepared command for a lent GPU: ``scripts/gpu-check OUT_DIR`` (``python -m stridelab.bench.gpu_check``).

A GPU is lent for minutes, so there is no time to explore: this runs every GPU check that exists as a
step of its own, each in a subprocess with its own time limit (a step that fails or runs over is
recorded and the next one runs), and writes ``gpu-check.json`` and a readable ``gpu-check.md`` into
OUT_DIR, the steps' own JSON under ``OUT_DIR/steps`` (7 files, one folder down: within the device
tool's limits on what comes back), printing the summary. ``--dry-run`` runs the same steps on the
CPU at tiny sizes, so CI (``.ci/run``) keeps it from rotting.

Steps, in order of what matters most if time runs short: the environment (GPU, driver, torch, CUDA,
cuDNN); the GPU-marked tests (``tests/test_gpu.py``: bf16 steps, channels_last, the suite, LPS/TIPS/FLC/DDAC
under autocast, ``module.compile=true``, a checkpoint resumed on the GPU, DDP with one process, two runs
packed onto the GPU; skipped in a dry run); ``make bench``'s GPU preset, short; the packed study
throughput for K = 1, 2, 4, 8 runs per GPU with a recommended K (:mod:`stridelab.bench.packing`); the
airbench-sized preset; the training cost of every downsampling strategy on ResNet-20 and on the
converted CIFAR ResNet-18 (``stridelab.bench.zoo``). The whole check keeps within ``--budget-s``
(default 450 s, for the issue's 8 minutes): a step gets at most what is left, and a step with less
than 20 s left is not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stridelab.bench.packing import table as packing_table
from stridelab.files import atomic_write_text

ENV_PROBE = """
import json, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                capability=".".join(map(str, torch.cuda.get_device_capability(0))))
print(json.dumps(info))
"""


MIN_STEP_S = 20  # a step with less time left than this is not started


@dataclass
class Step:
    """One check: a command, its time limit, and the JSON file it writes (read into the report)."""

    name: str
    argv: list[str]
    limit_s: float
    json_out: str | None = None
    status: str = "not run"  # ok | failed | timed out | not run
    seconds: float = 0.0
    result: dict | list | None = None
    tail: str = ""


def steps(out: Path, dry_run: bool) -> list[Step]:
    """The checks, in order; ``dry_run``: tiny sizes on the CPU."""
    py = sys.executable
    device = ["--device", "cpu"] if dry_run else ["--device", "cuda"]
    zoo_size = ["--batch", "2", "--seconds", "0", "--repeats", "1"] if dry_run else ["--batch", "256", "--seconds", "2"]
    bench_size = ["--quick"] if dry_run else ["--repeats", "3", "--no-demo", "--no-run-cost"]
    gpu = [] if dry_run else ["--preset", "gpu"]
    air = ["model.width=8"] if dry_run else ["--preset", "airbench"]
    packing = (["--device", "cpu", "--runs-per-device", "1,2", "--train-size", "256", "--epochs", "1"]
               if dry_run else ["--runs-per-device", "1,2,4,8"])  # fmt: skip
    return [
        Step("environment", [py, "-c", ENV_PROBE], 60),
        Step("gpu_tests", [py, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "-m", "gpu", "tests/test_gpu.py"],
             240),
        Step("bench_gpu", [py, "-m", "stridelab.bench", *bench_size, *gpu, "--out", str(out / "bench_gpu.json")],
             120, "bench_gpu.json"),
        Step("packing", [py, "-m", "stridelab.bench.packing", *packing, "--out", str(out / "packing.json")],
             180, "packing.json"),
        Step("bench_airbench", [py, "-m", "stridelab.bench", *bench_size, *air, "--out", str(out / "bench_air.json")],
             120, "bench_air.json"),
        Step("strategies_resnet20", [py, "-m", "stridelab.bench.zoo", "strategies", "--library", "resnet20",
             *device, *zoo_size, "--out", str(out / "zoo_r20.json")], 90, "zoo_r20.json"),
        Step("strategies_resnet18", [py, "-m", "stridelab.bench.zoo", "strategies", *device, *zoo_size,
             "--out", str(out / "zoo_r18.json")], 90, "zoo_r18.json"),
    ]  # fmt: skip


def run_step(step: Step, work: Path) -> Step:
    """Run ``step`` within its limit; its status, time, output's end and JSON result go into it."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(step.argv, capture_output=True, text=True, timeout=step.limit_s)
        step.status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        step.status = f"timed out after {step.limit_s:.0f} s"
        output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
    step.seconds = time.perf_counter() - start
    step.tail = output[-2000:]
    if step.name == "environment" and step.status == "ok":
        step.result = json.loads(output.strip().splitlines()[-1])
    elif step.json_out and (work / step.json_out).is_file():
        step.result = json.loads((work / step.json_out).read_text())
    return step


def report_md(report: dict) -> str:
    """The readable report: each step with its status and its headline figures."""
    lines = [f"# gpu-check ({'dry run on the CPU' if report['dry_run'] else 'GPU'})", ""]
    env = next((s["result"] for s in report["steps"] if s["name"] == "environment" and s["result"]), {})
    if env:
        lines += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    lines += ["| step | status | seconds | figures |", "|---|---|---|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {_figures(s)} |")
    packed = next((s["result"] for s in report["steps"] if s["name"] == "packing" and s["result"]), None)
    if packed:
        lines += ["", "## Runs packed onto one device (launcher=packed)", "", packing_table(packed["rows"])]
        lines += ["", f"{packed['mps']}."] if packed.get("mps") else []
        if packed.get("recommend"):
            pick = packed["recommend"]
            gain = f"; {pick['vs_k1']:.2f}x the training throughput of one run at a time" if pick.get("vs_k1") else ""
            k = pick["runs_per_device"]
            lines += ["", f"Recommended: `hydra.launcher.runs_per_device={k}` ({pick['why']}{gain})."]
    return "\n".join(lines) + "\n"


def _figures(step: dict) -> str:
    r = step.get("result")
    if isinstance(r, dict) and "recommend" in r:  # packing: throughput per K, the K to use
        rows = "; ".join(
            f"K={row['runs_per_device']}: {row['train_images_per_s']:.0f} train img/s, "
            f"{row['runs_per_hour']:.0f} runs/h, study {row['study_hours']:.2f} h"
            if "error" not in row
            else f"K={row['runs_per_device']}: failed"
            for row in r["rows"]
        )
        pick = r["recommend"]
        return rows + (f"; recommended K={pick['runs_per_device']}" if pick else "")
    if isinstance(r, dict) and "rows" in r:  # zoo: images/s per strategy, against the first
        return "; ".join(f"{row['downsample']} {row['median_images_per_s']:.0f} img/s" for row in r["rows"])
    if isinstance(r, dict) and "bars" in r:  # bench: its bars (some apply to one device or preset only)
        shown = [b for b in r["bars"] if b.get("value") is not None]
        verdict = {True: "met", False: "not met"}
        return "; ".join(
            f"{b['bar']}: {_value(b)} ({verdict[bool(b['met'])]}{'' if b['applies'] else ', no bar here'})"
            for b in shown
        )
    if step["status"] == "ok":  # e.g. pytest's summary line ("7 passed in 91.2s")
        lines = [line for line in step.get("tail", "").splitlines() if line.strip()]
        return lines[-1].replace("|", "/")[:200] if lines and step["name"] != "environment" else ""
    return step.get("tail", "")[-200:].replace("\n", " ").replace("|", "/")


def _value(bar: dict) -> str:
    return f"{100 * bar['value']:.1f}%" if bar.get("percent") else f"{bar['value']:.3g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for gpu-check.json and gpu-check.md")
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at tiny sizes (CI)")
    p.add_argument("--budget-s", type=float, default=450, help="time for all steps together (default 450 s)")
    a = p.parse_args(argv)
    try:
        a.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"gpu-check: cannot create {a.out} ({err.strerror}): give a writable folder.", file=sys.stderr)
        return 2
    work = a.out / "steps"  # the steps' own JSON files; the report holds what they said
    work.mkdir(exist_ok=True)
    done = []
    deadline = time.monotonic() + a.budget_s
    for step in steps(work, a.dry_run):
        left = deadline - time.monotonic()
        if left < MIN_STEP_S:
            step.status = f"not run (the {a.budget_s:.0f} s budget was spent)"
            done.append(step)
            print(f"gpu-check: {step.name}: {step.status}", flush=True)
            continue
        step.limit_s = min(step.limit_s, left)
        print(f"gpu-check: {step.name} (limit {step.limit_s:.0f} s) ...", flush=True)
        done.append(run_step(step, work))
        print(f"gpu-check: {step.name}: {step.status} in {step.seconds:.1f} s", flush=True)
    report = {"dry_run": a.dry_run, "steps": [asdict(s) for s in done]}
    atomic_write_text(a.out / "gpu-check.json", json.dumps(report, indent=2, default=str))
    md = report_md(report)
    atomic_write_text(a.out / "gpu-check.md", md)
    print(md)
    return 0 if all(s.status == "ok" for s in done) else 1


if __name__ == "__main__":
    sys.exit(main())
