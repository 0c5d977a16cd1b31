"""The benchmark's console table (also pasted into docs/performance.md)."""

from __future__ import annotations

LABELS = {
    "bare": "(a) bare PyTorch loop, fixed batch",
    "stridelab": "(b) stridelab: data module + Lightning",
}


def _label(name: str) -> str:
    if name.startswith("torchvision_w"):
        return f"(c) torchvision CIFAR10 + PIL, {name[len('torchvision_w') :]} workers"
    return LABELS.get(name, name)


def table(result: dict) -> str:
    s, m = result["setup"], result["machine"]
    device = m.get("gpu") if s["device"].startswith("cuda") else f"{m['cpu']}, {m['torch_threads']} threads"
    quick = ", QUICK: sizes too small to mean anything" if result["quick"] else ""
    lines = [
        f"stridelab bench ({result['preset']} preset{quick})",
        f"  {s['model']} ({' '.join(result['overrides']) or 'defaults'}), batch {s['batch_size']}, "
        f"{s['device']} ({device}), {s['precision']}"
        f"{', channels_last' if s['channels_last'] else ''}{', torch.compile' if s['compile'] else ''}",
        f"  median of {s['repeats']} repeats of {s['steps']} steps after {s['warmup']} warm-up steps "
        "(ratios: median of per-repeat ratios);",
        f"  (a) and (b) alternate in blocks of {s.get('block', '?')} steps within each repeat, "
        f"(c) runs in the first {s.get('baseline_repeats', s['repeats'])} repeats",
        f"  torch {m['torch']}, lightning {m['lightning']}",
        "",
        f"  {'path':<44} {'images/s':>10} {'vs (a)':>7} {'step ms':>8} {'1st step s':>10}"
        + (f" {'MFU':>6}" if "peak_flops" in s else ""),
    ]
    r = result["ratios"]
    for name, p in result["paths"].items():
        row = (
            f"  {_label(name):<44} {p['images_per_s']:>10.0f} {p['vs_bare']:>7.2f} "
            f"{p['step_ms']:>8.1f} {p['first_step_s']:>10.2f}"
        )
        if "mfu" in p:
            row += f" {100 * p['mfu']:>5.1f}%"
        lines.append(row)
    spread = r["stridelab_vs_bare_repeats"]
    lines += [
        "",
        f"  stridelab / bare per repeat: {' '.join(f'{v:.2f}' for v in spread)}",
        f"  stridelab / best torchvision ({r['torchvision_best'].replace('torchvision_w', '')} workers): "
        f"{r['stridelab_vs_torchvision']:.2f}x",
    ]
    if "syncs_per_step" in result["paths"]["stridelab"]:
        p = result["paths"]["stridelab"]
        sites = f" at {', '.join(p['sync_sites'])}" if p["sync_sites"] else ""
        lines.append(
            f"  host waits for the GPU inside a stridelab step (CUDA sync debug mode, warm-up steps): "
            f"{p['syncs_per_step']:.2f} per step{sites}"
        )
    if "peak_flops" in s:
        lines.append(
            f"  MFU: {s['train_flops_per_image'] / 1e9:.3f} GFLOP per training image x images/s / "
            f"{s['peak_flops_source']}"
        )
    if "run_cost" in result:
        c = result["run_cost"]
        first = c["first_run_in_process"]
        lines += [
            "",
            f"  one run in a sweep: {c['total_s']:.2f} s = {c['train_batches_s']:.2f} s training batches "
            f"+ {c['eval_batches_s']:.2f} s val/test batches + {c['suite_s']:.2f} s measurement suite "
            f"+ {c['fixed_s']:.2f} s fixed cost",
            f"  (the first run of a process: {first['fixed_s']:.2f} s fixed cost; "
            f"config composition {c['compose_s'] * 1000:.0f} ms of it)",
        ]
    if "suite_on_demo" in result:
        d = result["suite_on_demo"]
        lines.append(
            f"  measurement suite on a standard run ({d['run']}): {d['suite_s']:.2f} s on top of "
            f"{d['total_s'] - d['suite_s']:.1f} s = +{100 * d['suite_share']:.1f}%"
        )
    lines += ["", "  bars:"]
    for b in result["bars"]:
        verdict = ("met" if b["met"] else "NOT MET") if b["applies"] else "n/a here"
        value = f"{100 * b['value']:.1f}%" if b.get("percent") else f"{b['value']:.2f}"
        lines.append(f"    {b['bar']:<44} {value:>8}  {verdict}")
    return "\n".join(lines)
