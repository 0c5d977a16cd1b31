"""Study throughput with runs packed onto a GPU: ``python -m stridelab.bench.packing``.

For each K in ``--runs-per-device`` (default 1, 2, 4, 8) this runs a real packed sweep of K short
ResNet-20 runs (one wave: every slot busy from the start; ``experiment=cifar10_resnet20`` on a
generated stand-in of CIFAR-10, written in the real format; ``launcher=packed
hydra.launcher.runs_per_device=K``) through ``python -m stridelab.train``, as a study would, and
measures

- ``runs_per_hour``: runs finished per hour of wall-clock time (process start, data, build and
  training included: what a study of short runs gets);
- ``images_per_s``: training images of all runs per second of the sweep's wall-clock time;
- ``fit_images_per_s_per_run``: one run's training speed while packed (its images over its fit time);
- ``study_hours``: the time a 90-run, 40-epoch CIFAR-10 ResNet-20 study (issue 22's goal: under an
  hour on one H200) would take at these rates: each slot runs ``ceil(90 / slots)`` runs, each paying
  the measured per-run overhead plus 40 epochs of 45 000 images at the packed per-run speed.

The recommendation is the smallest K whose training throughput (slots x per-run speed) is within 5 %
of the best: more runs at once cost memory and make every run slower, for nothing past that point.
``--dry-run``-sized options (``--device cpu --train-size 256``) run the same path on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stridelab.files import atomic_write_text

STUDY_RUNS, STUDY_EPOCHS, CIFAR_TRAIN = 90, 40, 45_000  # the goal's study (50 000 minus the 5 000 validation)
WITHIN = 0.95  # a K within 5 % of the best throughput is as good


def sweep_args(k: int, runs: int, root: Path, sweep: Path, device: str, epochs: int, extra: list[str]) -> list[str]:
    """The packed sweep's command line (a study's runs: the preset, K at a time, ``runs`` seeds)."""
    cpu = ["trainer=cpu", "model.widths=[4,8,8]", "data.batch_size=64"] if device == "cpu" else []
    return [
        "-m",
        "experiment=cifar10_resnet20",
        f"data.root={root}",
        "data.val_size=0",
        f"trainer.max_epochs={epochs}",
        "~metrics",
        "logger=csv",
        "save_weights=false",
        "checkpoint.every_n_epochs=null",
        "hydra.callbacks.aggregate.enabled=false",
        "launcher=packed",
        f"hydra.launcher.runs_per_device={k}",
        f"seed={','.join(map(str, range(runs)))}",
        f"hydra.sweep.dir={sweep}",
        *cpu,
        *extra,
    ]


def measure(
    k: int, runs: int, root: Path, work: Path, device: str, epochs: int, extra: list[str], mps_env: dict | None = None
) -> dict:
    """One packed sweep of ``runs`` runs, K at a time; its figures (see the module docstring).
    ``mps_env``: an MPS daemon's environment, which every K's sweep then uses."""
    sweep = work / f"k{k}"
    env = {**os.environ, **(mps_env or {}), "STRIDELAB_ROOT": str(work), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "stridelab.train", *sweep_args(k, runs, root, sweep, device, epochs, extra)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    done = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    ok = [m for m in done if m.get("status") == "ok"]
    row = {"runs_per_device": k, "runs": runs, "ok": len(ok), "wall_s": wall, "exit": proc.returncode}
    if proc.returncode != 0 or not ok:
        row["error"] = (proc.stdout + proc.stderr)[-1500:]
        return row
    images = [m["data/train_size"] * m["train/epochs"] for m in ok]
    fit = [m["time/fit_s"] for m in ok]
    slots = min(runs, slots_said(proc.stdout + proc.stderr, k))
    per_run = sum(i / f for i, f in zip(images, fit)) / len(ok)
    overhead = max(0.0, wall * slots / len(ok) - sum(fit) / len(ok))  # a slot's time per run, beyond the fit
    study_s = math.ceil(STUDY_RUNS / slots) * (overhead + STUDY_EPOCHS * CIFAR_TRAIN / per_run)
    row.update(
        slots=slots,
        runs_per_hour=3600 * len(ok) / wall,
        images_per_s=sum(images) / wall,
        fit_images_per_s_per_run=per_run,
        train_images_per_s=per_run * slots,
        overhead_s_per_run=overhead,
        study_hours=study_s / 3600,
        mps=_mps_note(proc.stdout + proc.stderr),
    )
    return row


def slots_said(output: str, k: int) -> int:
    """Runs at once, as the launcher said it ("... N at once ...")."""
    for line in output.splitlines():
        if "launcher=packed:" in line and " at once," in line:
            return int(line.split(" at once,")[0].rsplit(": ", 1)[-1].split()[-1])
    return k


def _mps_note(output: str) -> str:
    for line in output.splitlines():
        if "launcher=packed:" in line and "MPS:" in line:
            return "MPS:" + line.split("MPS:", 1)[1].split(". Sweep folder")[0]
    return ""


def recommend(rows: list[dict]) -> dict | None:
    """The smallest K within 5 % of the best training throughput, with the reason."""
    good = [r for r in rows if r.get("train_images_per_s")]
    if not good:
        return None
    best = max(r["train_images_per_s"] for r in good)
    pick = min((r for r in good if r["train_images_per_s"] >= WITHIN * best), key=lambda r: r["runs_per_device"])
    base = next((r for r in good if r["runs_per_device"] == 1), None)
    gain = pick["train_images_per_s"] / base["train_images_per_s"] if base else None
    return {
        "runs_per_device": pick["runs_per_device"],
        "train_images_per_s": pick["train_images_per_s"],
        "vs_k1": gain,
        "study_hours": pick["study_hours"],
        "why": f"the smallest K within {100 * (1 - WITHIN):.0f}% of the best training throughput ({best:.0f} img/s)",
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| K (runs per GPU) | runs | wall s | runs/hour | images/s (wall) | per-run img/s | train img/s | "
        f"overhead s/run | {STUDY_RUNS}-run study, h |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['runs_per_device']} | {r['ok']}/{r['runs']} ok | {r['wall_s']:.0f} | failed (exit "
                         f"{r['exit']}) | | | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['runs_per_device']} | {r['runs']} | {r['wall_s']:.0f} | {r['runs_per_hour']:.0f} | "
            f"{r['images_per_s']:.0f} | {r['fit_images_per_s_per_run']:.0f} | {r['train_images_per_s']:.0f} | "
            f"{r['overhead_s_per_run']:.1f} | {r['study_hours']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stridelab.bench.packing", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-per-device", default="1,2,4,8", help="the Ks to measure, comma-separated")
    p.add_argument("--runs", type=int, default=None, help="runs per sweep (default K: one wave)")
    p.add_argument("--train-size", type=int, default=20000, help="generated CIFAR-10 training images per run")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (long enough that the runs overlap)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--out", type=Path, default=None, help="write the rows and the recommendation as JSON here")
    p.add_argument("overrides", nargs="*", help="more overrides for every run (e.g. model.width=8)")
    a = p.parse_args(argv)
    try:
        ks = [int(k) for k in a.runs_per_device.split(",")]
        assert ks and all(k >= 1 for k in ks)
    except (ValueError, AssertionError):
        p.error(f"--runs-per-device takes whole numbers >= 1 separated by commas (1,2,4,8), got {a.runs_per_device!r}")
    from stridelab.data import cifar10
    from stridelab.training.sharing import Mps

    rows = []
    # One MPS daemon for every K (where it works): each sweep's launcher finds it running.
    with tempfile.TemporaryDirectory(prefix="stridelab-packing-") as tmp, Mps("auto", a.device == "cuda", 2) as mps:
        print(f"packing: {mps.note}", flush=True)
        work = Path(tmp)
        cifar10.write_generated(work / "cifar10", a.train_size, 256)
        for k in ks:
            print(f"packing: K={k} ({a.runs or k} runs) ...", flush=True)
            row = measure(k, a.runs or k, work / "cifar10", work, a.device, a.epochs, a.overrides, mps.env)
            rows.append(row)
            said = "failed" if "error" in row else f"{row['train_images_per_s']:.0f} train img/s"
            print(f"packing: K={k}: {said} in {row['wall_s']:.0f} s", flush=True)
    pick = recommend(rows)
    result = {"device": a.device, "train_size": a.train_size, "epochs": a.epochs, "mps": mps.note, "rows": rows}
    result["recommend"] = pick
    print(table(rows))
    if pick:
        print(f"recommended: runs_per_device={pick['runs_per_device']} ({pick['why']})")
    if a.out:
        atomic_write_text(a.out, json.dumps(result, indent=2))
    return 0 if rows and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
