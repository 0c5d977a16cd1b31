"""Costs of library networks and image folders: ``python -m stridelab.bench.zoo strategies|loader``.

``strategies``: a network built with each downsampling strategy (a torchvision or timm network
converted, the CIFAR ResNet-18 by default, or a built-in model such as ``resnet20``): the build's
time (for a library network: build, convert, find stages) and training images/s on one fixed
CIFAR-shaped batch (:func:`stridelab.metrics.training_throughput`), against the first strategy. A
strategy with options is written ``name:key=value`` (``blurpool:filter=ideal``).
``loader``: images/s of ``data=imagefolder``'s training loader alone (decode, RandomResizedCrop,
flip, collate) on a generated folder of JPEGs, per number of worker processes. Both print a
markdown table (docs/performance.md) and write JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from stridelab.errors import ConfigError, StridelabError
from stridelab.files import atomic_write_text

STRATEGIES = ("conv", "blurpool", "blurpool:filter=ideal", "aps", "lps", "tips", "flc", "asap", "ddac")
LIBRARIES = ("torchvision", "timm")


def parse_strategy(spec: str) -> tuple[str, dict]:
    """``"blurpool:filter=ideal"`` -> ``("blurpool", {"filter": "ideal"})`` (values parsed as YAML)."""
    import yaml

    name, *options = spec.split(":")
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ConfigError(f"strategy '{spec}': options are written name:key=value (e.g. blurpool:filter=ideal).")
        kwargs[key] = yaml.safe_load(value)
    return name, kwargs


def strategy_costs(
    library: str = "torchvision",
    arch: str = "resnet18",
    strategies: tuple[str, ...] = STRATEGIES,
    padding: str | None = None,
    cifar_stem: bool = True,
    batch: int = 64,
    image_size: int = 32,
    seconds: float = 3.0,
    repeats: int = 3,
    device: str = "cpu",
) -> list[dict]:
    """One row per strategy: seconds to build and convert the network and find its stages (after
    one untimed build), training images/s (median of ``repeats``
    interleaved timings of at least ``seconds``), the ratio to the first strategy."""
    import torch

    from stridelab.layers import PaddingSpec, create_downsample
    from stridelab.metrics.cost import training_throughput
    from stridelab.models import create_model

    def build(spec):
        name, kwargs = parse_strategy(spec)
        ds = create_downsample(name, **kwargs)
        if library in LIBRARIES:
            return create_model(
                library, arch=arch, num_classes=10, downsample=ds, padding=padding, cifar_stem=cifar_stem
            )
        return create_model(library, num_classes=10, downsample=ds, padding=PaddingSpec(padding or "zeros"))

    build(strategies[0])  # untimed: the first build imports the library's model code
    built, rows = {}, []
    for name in strategies:
        torch.manual_seed(0)
        start = time.perf_counter()
        built[name] = build(name).to(device)
        rows.append({"downsample": name, "convert_s": time.perf_counter() - start, "images_per_s": []})
    x = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    for _ in range(repeats):  # interleaved, so a slow moment of the machine hits every strategy alike
        for row in rows:
            rate = training_throughput(built[row["downsample"]], x, y, steps=2, warmup=1, min_seconds=seconds)
            row["images_per_s"].append(rate)
    for row in rows:
        rates = sorted(row["images_per_s"])
        row["median_images_per_s"] = rates[len(rates) // 2]
        row["vs_first"] = row["median_images_per_s"] / rows[0]["median_images_per_s"]
    return rows


def loader_rate(
    images: int = 1000,
    image_size: int = 224,
    source: int = 320,
    workers: tuple[int, ...] = (0, 2),
    batch: int = 64,
    folder: Path | None = None,
) -> list[dict]:
    """One row per worker count: training images/s of the image-folder loader over ``images`` JPEGs
    of ``source`` px (shapes10 images resized up), cropped to ``image_size``."""
    import torch
    from torchvision.io import encode_jpeg
    from torchvision.transforms.v2.functional import resize

    from stridelab.data.imagefolder import ImageFolderDataModule
    from stridelab.data.probes import SHAPES10_CLASSES, make_shapes10

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(folder or tmp)
        pictures, labels = make_shapes10(images, seed=0)
        for i, (picture, label) in enumerate(zip(pictures, labels)):
            for split in ("train",) + (("val",) if i < 10 else ()):
                path = root / split / SHAPES10_CLASSES[int(label)] / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                big = resize(torch.from_numpy(picture), [source, source], antialias=True)
                path.write_bytes(encode_jpeg(big, quality=90).numpy().tobytes())
        rows = []
        for n in workers:
            dm = ImageFolderDataModule(str(root), image_size=image_size, batch_size=batch, num_workers=n, val_size=0)
            dm.load()
            count, start = 0, time.perf_counter()
            for x, _ in dm.train_dataloader():
                count += len(x)
            rows.append({"workers": n, "images": count, "images_per_s": count / (time.perf_counter() - start)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stridelab.bench.zoo", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("strategies", help="a network's training images/s per downsampling strategy")
    s.add_argument(
        "--library",
        default="torchvision",
        help="torchvision | timm | a built-in model, e.g. resnet20 (default torchvision)",
    )
    s.add_argument("--arch", default="resnet18")
    s.add_argument("--strategies", default=",".join(STRATEGIES), help="name or name:key=value, comma-separated")
    s.add_argument("--padding", default=None, help="a padding mode (default: the network's own)")
    s.add_argument("--no-cifar-stem", action="store_true")
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--image-size", type=int, default=32)
    s.add_argument("--seconds", type=float, default=3.0)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--device", default="cuda" if _cuda() else "cpu")
    f = sub.add_parser("loader", help="images/s of data=imagefolder's training loader alone")
    f.add_argument("--images", type=int, default=1000)
    f.add_argument("--image-size", type=int, default=224)
    f.add_argument("--source", type=int, default=320, help="the JPEGs' side in px (default 320)")
    f.add_argument("--workers", default=f"0,{min(8, os.cpu_count() or 1)}")
    f.add_argument("--batch", type=int, default=64)
    for q in (s, f):
        q.add_argument("--out", type=Path, default=None, help="JSON file (default logs/bench/zoo-<what>.json)")
    a = p.parse_args(argv)
    try:
        if a.what == "strategies":
            rows = strategy_costs(
                a.library, a.arch, tuple(a.strategies.split(",")), a.padding, not a.no_cifar_stem,
                a.batch, a.image_size, a.seconds, a.repeats, a.device,
            )  # fmt: skip
            lines = [f"| downsample | train img/s | vs {rows[0]['downsample']} | conversion s |", "|---|---|---|---|"]
            lines += [
                f"| {r['downsample']} | {r['median_images_per_s']:.0f} | {r['vs_first']:.2f} | {r['convert_s']:.2f} |"
                for r in rows
            ]
        else:
            workers = tuple(int(w) for w in a.workers.split(","))
            rows = loader_rate(a.images, a.image_size, a.source, workers, a.batch)
            lines = ["| workers | images | images/s |", "|---|---|---|"]
            lines += [f"| {r['workers']} | {r['images']} | {r['images_per_s']:.0f} |" for r in rows]
    except StridelabError as err:
        print(f"\nstridelab bench: error: {err}\n", file=sys.stderr)
        return 2
    out = a.out or Path("logs") / "bench" / f"zoo-{a.what}.json"
    atomic_write_text(out, json.dumps({"what": a.what, "args": vars(a) | {"out": str(out)}, "rows": rows}, indent=2))
    print("\n".join(lines))
    print(f"\nstridelab bench: JSON in {out}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
