"""CIFAR-100 on disk: the official binary distribution, read with numpy.

Layout (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"): ``cifar-100-binary/`` holds
``train.bin`` (50000 records) and ``test.bin`` (10000), each record 3074 bytes: the coarse label byte
(0-19, the superclass), the fine label byte (0-99), then 1024 red, 1024 green and 1024 blue bytes,
row-major 32x32. ``labels="fine"`` (the usual 100-class task) or ``"coarse"`` (20 superclasses).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stridelab.data.cifar10 import OFFLINE_DATASETS, fetch_archive
from stridelab.errors import DataError, choose

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
ARCHIVE_MD5 = "03b5dce01913d631647c71ecec9e9cb8"
BIN_DIR = "cifar-100-binary"
FILES = {"train": ("train.bin", 50000), "test": ("test.bin", 10000)}
RECORD_BYTES = 2 + 3 * 32 * 32
GENERATED_MARK = "GENERATED.txt"  # a generated stand-in: any number of records per file
LABELS = ("fine", "coarse")
# The archive's fine_label_names.txt and coarse_label_names.txt, in label order.
FINE_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
    can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
    dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
    lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
    pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
    seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
    tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
    worm""".split()
)
COARSE_CLASSES = tuple(
    """aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices
    household_furniture insects large_carnivores large_man-made_outdoor_things
    large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals non-insect_invertebrates
    people reptiles small_mammals trees vehicles_1 vehicles_2""".split()
)


def classes(labels: str = "fine") -> tuple[str, ...]:
    choose("data.labels", labels, LABELS)
    return FINE_CLASSES if labels == "fine" else COARSE_CLASSES


def read_binary(path: str | os.PathLike, labels: str = "fine") -> tuple[np.ndarray, np.ndarray]:
    """One ``.bin`` file -> (uint8 images N x 3 x 32 x 32, int64 fine or coarse labels N)."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(
            f"{path} holds {raw.size} bytes, which is not a whole number of {RECORD_BYTES}-byte CIFAR-100 "
            f"records: it is truncated or not from cifar-100-binary.tar.gz. Delete {path.parent} and run again "
            "to download a fresh copy, or extract the official archive there yourself."
        )
    records = raw.reshape(-1, RECORD_BYTES)
    coarse, fine = records[:, 0].astype(np.int64), records[:, 1].astype(np.int64)
    for name, values, count in (("coarse", coarse, 20), ("fine", fine, 100)):
        if values.max() >= count:
            bad = int(np.argmax(values >= count))
            raise DataError(
                f"{path} is corrupt: record {bad} has {name} label {values[bad]}, but CIFAR-100 {name} labels are "
                f"0-{count - 1}. Delete {path.parent} and run again to download a fresh copy."
            )
    return records[:, 2:].reshape(-1, 3, 32, 32), fine if labels == "fine" else coarse


def write_binary(path: str | os.PathLike, images: np.ndarray, fine: np.ndarray, coarse: np.ndarray) -> None:
    """Write uint8 N x 3 x 32 x 32 ``images`` with their labels as one file of the binary version."""
    images = np.asarray(images, np.uint8)
    columns = [
        np.asarray(coarse, np.uint8)[:, None],
        np.asarray(fine, np.uint8)[:, None],
        images.reshape(len(images), -1),
    ]
    Path(path).write_bytes(np.concatenate(columns, axis=1).tobytes())


def write_generated(root: str | os.PathLike, train_size: int = 50000, test_size: int = 10000, seed: int = 0) -> Path:
    """A stand-in of CIFAR-100 with its file layout (random images, fine labels, their real superclass
    is not kept: coarse = fine // 5) under ``root``, readable by :func:`load_cifar100`."""
    rng = np.random.default_rng(seed)
    directory = Path(root) / BIN_DIR
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GENERATED_MARK).write_text("A generated stand-in of CIFAR-100 (random images), not the real data.\n")
    for (name, _), n in zip(FILES.values(), (train_size, test_size)):
        fine = rng.integers(0, 100, n)
        write_binary(directory / name, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), fine, fine // 5)
    return directory


def _offline_message(root: Path, why: str) -> str:
    return (
        f"CIFAR-100 is not under {root} and could not be downloaded ({why}). Place the official binary "
        f"version there: download cifar-100-binary.tar.gz from {URL.rsplit('/', 1)[0]}/cifar.html on a machine "
        f"with network access and extract it into {root}, so that {root / BIN_DIR}/train.bin exists, or point "
        f"data.root at an existing copy. To work offline without it, use {OFFLINE_DATASETS}."
    )


def check_complete(directory: Path) -> Path:
    """Both files are there with the official number of records (any number in a generated stand-in)."""
    missing = [name for name, _ in FILES.values() if not (directory / name).is_file()]
    if missing:
        raise DataError(
            f"{directory} is incomplete: {', '.join(missing)} missing. Delete the folder and run again to download "
            "a fresh copy, or extract the official cifar-100-binary.tar.gz there."
        )
    if (directory / GENERATED_MARK).is_file():
        return directory
    for name, records in FILES.values():
        size = (directory / name).stat().st_size
        if size != records * RECORD_BYTES:
            raise DataError(
                f"{directory / name} holds {size} bytes, but the official file holds {records} records of "
                f"{RECORD_BYTES} bytes ({records * RECORD_BYTES} bytes): it was cut short or is not from "
                f"cifar-100-binary.tar.gz. Delete {directory} and run again to download a fresh copy "
                "(data.download=true), or extract the official archive there yourself."
            )
    return directory


def ensure_available(root: str | os.PathLike, download_if_missing: bool = True) -> Path:
    """Make sure a copy is under ``root`` (downloading it if allowed); return its folder (numpy only)."""
    root = Path(root).expanduser()
    directory = root / BIN_DIR
    if (directory / FILES["train"][0]).exists():
        return check_complete(directory)
    if not download_if_missing:
        raise DataError(_offline_message(root, "data.download=false"))
    fetch_archive(root, URL, ARCHIVE_MD5, lambda why: _offline_message(root, why))
    return check_complete(directory)


def load_cifar100(root: str | os.PathLike, download_if_missing: bool = True, labels: str = "fine"):
    """``((train_x, train_y), (test_x, test_y))``: uint8 NCHW images, int64 fine or coarse labels."""
    choose("data.labels", labels, LABELS)
    directory = ensure_available(root, download_if_missing)
    return tuple(read_binary(directory / name, labels) for name, _ in FILES.values())
