"""CIFAR-10 on disk: the official binary distribution, read with numpy.

Layout (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"): ``cifar-10-batches-bin/``
holds ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``, each 10000 records of
3073 bytes: one label byte (0-9), then 1024 red, 1024 green and 1024 blue bytes, row-major 32x32.

torchvision's ``cifar-10-batches-py`` (Python pickles) is accepted only when every file's MD5 is
the official one, and is then read with an unpickler that allows nothing but numpy arrays.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
import urllib.parse
from pathlib import Path

import numpy as np

from stridelab.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
BIN_DIR = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
RECORD_BYTES = 1 + 3 * 32 * 32
RECORDS_PER_FILE = 10000
# Written by write_generated into a stand-in's folder: its files may hold any number of records.
GENERATED_MARK = "GENERATED.txt"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

PY_DIR = "cifar-10-batches-py"
# Official MD5s of the python-version files (the same ones torchvision checks).
PY_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
OFFLINE_DATASETS = "data=shapes10 and data=redgreen"


def read_binary_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One ``.bin`` file -> (uint8 images N x 3 x 32 x 32, int64 labels N)."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(
            f"{path} holds {raw.size} bytes, which is not a whole number of {RECORD_BYTES}-byte CIFAR-10 "
            f"records (a complete file is {RECORD_BYTES * RECORDS_PER_FILE} bytes): it is truncated or not "
            f"from cifar-10-binary.tar.gz. Delete {path.parent} and run again to download a fresh copy, or "
            "extract the official archive there yourself."
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASSES):
        bad = int(np.argmax(labels >= len(CLASSES)))
        raise DataError(
            f"{path} is corrupt: record {bad} has label byte {labels[bad]}, but CIFAR-10 labels are 0-9. "
            f"Delete {path.parent} and run again to download a fresh copy."
        )
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def write_binary_batch(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> None:
    """Write uint8 N x 3 x 32 x 32 ``images`` and ``labels`` (0-9) as one file of the binary
    version (the inverse of :func:`read_binary_batch`); for generated stand-ins of CIFAR-10."""
    images, labels = np.asarray(images, np.uint8), np.asarray(labels)
    if images.shape[1:] != (3, 32, 32) or len(images) != len(labels) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"need N x 3 x 32 x 32 uint8 images and N labels in 0-9 (got {images.shape}, {labels.shape})")
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
    Path(path).write_bytes(records.tobytes())


def write_generated(root: str | os.PathLike, train_size: int = 50000, test_size: int = 10000, seed: int = 0) -> Path:
    """A stand-in of CIFAR-10 with its shapes and file layout (random images and labels) under
    ``root``, readable by :func:`load_cifar10`; sizes split over the usual 5 + 1 files."""
    rng = np.random.default_rng(seed)
    directory = Path(root) / BIN_DIR
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GENERATED_MARK).write_text(
        "A generated stand-in of CIFAR-10 (random images, any number of records "
        "per file; stridelab.data.cifar10.write_generated), not the real data.\n"
    )
    for names, total in ((TRAIN_FILES, train_size), (TEST_FILES, test_size)):
        for i, name in enumerate(names):
            n = total // len(names) + (i < total % len(names))
            write_binary_batch(
                directory / name, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)
            )
    return directory


def check_complete(directory: Path) -> Path:
    """Every file of the binary version is there and, unless the folder is a generated stand-in
    (:data:`GENERATED_MARK`), holds exactly :data:`RECORDS_PER_FILE` records: a file cut short, even at
    a record boundary, is refused by its size before anything is read."""
    missing = [n for n in TRAIN_FILES + TEST_FILES if not (directory / n).is_file()]
    if missing:
        raise DataError(
            f"{directory} is incomplete: {', '.join(missing)} missing. Delete the folder and run again to download "
            "a fresh copy, or extract the official cifar-10-binary.tar.gz there."
        )
    if (directory / GENERATED_MARK).is_file():
        return directory
    expected = RECORD_BYTES * RECORDS_PER_FILE
    for name in TRAIN_FILES + TEST_FILES:
        size = (directory / name).stat().st_size
        if size != expected:
            stray = size % RECORD_BYTES
            raise DataError(
                f"{directory / name} holds {size // RECORD_BYTES} records of {RECORD_BYTES} bytes"
                f"{f' and {stray} stray bytes' if stray else ''} ({size} bytes), but every file of the official "
                f"CIFAR-10 binary version holds exactly {RECORDS_PER_FILE} records ({expected} bytes): it was cut "
                f"short or is not from cifar-10-binary.tar.gz. Delete {directory} and run again to download a fresh "
                "copy (data.download=true), or extract the official archive there yourself."
            )
    return directory


def _read_split(directory: Path, names) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_binary_batch(directory / n) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class _ArraysOnly(pickle.Unpickler):
    """Unpickler for the CIFAR python files: numpy arrays and builtins, nothing executable."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # protocol-2 bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_python_version(directory: Path, checksums: dict[str, str] = PY_MD5):
    """torchvision's python-format copy, after every file's MD5 matched ``checksums``."""
    for name, expected in checksums.items():
        f = directory / name
        if not f.is_file():
            raise DataError(
                f"{directory} lacks {name}: the python-format copy of CIFAR-10 is incomplete. "
                f"Delete it, or place the binary version in {directory.parent / BIN_DIR}."
            )
        got = md5(f)
        if got != expected:
            raise DataError(
                f"{f} does not match the official CIFAR-10 file (MD5 {got}, expected {expected}), so stridelab "
                f"will not unpickle it. Delete {directory} and let stridelab download the binary version, or "
                f"place the official cifar-10-batches-bin files in {directory.parent / BIN_DIR}."
            )

    def load(names):
        xs, ys = [], []
        for n in names:
            with open(directory / n, "rb") as fh:
                d = _ArraysOnly(io.BytesIO(fh.read()), encoding="latin1").load()
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d["labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    train = load([n for n in checksums if n.startswith("data_batch")])
    test = load([n for n in checksums if n.startswith("test")])
    return train, test


def _offline_message(root: Path, why: str) -> str:
    return (
        f"CIFAR-10 is not under {root} and could not be downloaded ({why}). Place the official binary "
        f"version there: download cifar-10-binary.tar.gz from {URL.rsplit('/', 1)[0]}/cifar.html on a "
        f"machine with network access and extract it into {root}, so that {root / BIN_DIR}/data_batch_1.bin "
        f"exists (torchvision's verified {PY_DIR} is accepted too), or point data.root at an existing copy. "
        f"To work offline without CIFAR-10, use one of the generated data sets: {OFFLINE_DATASETS}."
    )


def download(root: Path, url: str = URL, timeout: float = 10.0) -> None:
    """Fetch and extract the binary archive with torchvision's utilities (MD5-checked)."""
    fetch_archive(root, url, ARCHIVE_MD5, lambda why: _offline_message(root, why), timeout)


def fetch_archive(root: Path, url: str, md5_sum: str, offline_message, timeout: float = 10.0) -> None:
    """Download ``url`` into ``root`` and extract it, MD5-checked; a DataError with
    ``offline_message(why)`` when there is no network or the download fails."""
    host = urllib.parse.urlparse(url).hostname
    try:  # fail in seconds, not minutes, when there is no network
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        raise DataError(offline_message(f"no network: cannot reach {host}: {err}")) from None
    from torchvision.datasets.utils import download_and_extract_archive  # ~4 s to import: after the probe

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(url, download_root=str(root), md5=md5_sum)
    except Exception as err:  # urllib, tarfile and checksum errors all mean the same to the user
        raise DataError(offline_message(f"download failed: {type(err).__name__}: {err}")) from None
    finally:
        socket.setdefaulttimeout(old)


def ensure_available(root: str | os.PathLike, download_if_missing: bool = True) -> Path:
    """Make sure a copy is under ``root`` (downloading it if allowed); return the folder to read.

    Needs only numpy and the standard library, so the CLI can call it before importing torch and
    Lightning (about 5 s) and report missing data at once.
    """
    root = Path(root).expanduser()
    bin_dir, py_dir = root / BIN_DIR, root / PY_DIR
    if (bin_dir / TRAIN_FILES[0]).exists():
        return check_complete(bin_dir)
    if py_dir.is_dir():
        return py_dir
    if not download_if_missing:
        raise DataError(_offline_message(root, "data.download=false"))
    download(root)
    return check_complete(bin_dir)


def load_cifar10(root: str | os.PathLike, download_if_missing: bool = True):
    """Return ``((train_x, train_y), (test_x, test_y))`` as uint8 NCHW images and int64 labels."""
    directory = ensure_available(root, download_if_missing)  # the binary version: check_complete'd
    if directory.name == PY_DIR:
        return read_python_version(directory)
    return _read_split(directory, TRAIN_FILES), _read_split(directory, TEST_FILES)
