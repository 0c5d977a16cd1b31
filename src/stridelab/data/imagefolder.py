"""ImageNet-style image folders: ``data=imagefolder data.root=...``.

Layouts (found by :func:`find_layout`):

- ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``: ImageNet (after the usual val
  re-sorting), Imagenette, most folder data sets; images may sit in sub-folders of a class folder;
- Tiny-ImageNet as it ships: ``root/train/<wnid>/images/*.JPEG`` and ``root/val/images/*.JPEG`` with
  ``root/val/val_annotations.txt`` (file name, wnid, box: tab-separated) giving each val image's class.

The classes are the train folder's class folders, sorted. The ``val`` folder is the test set (the
metrics' images); ``data.val_size`` images held out of ``train`` (by a seeded draw) are the
validation set. Images are decoded with ``torchvision.io`` (JPEG, PNG, GIF, WebP; grey and RGBA made
RGB) in DataLoader worker processes: training with ``RandomResizedCrop(image_size)`` (scale 0.08-1,
Szegedy et al. 2015, torchvision's ImageNet recipe) and a horizontal flip, evaluation with a resize of
the short side to ``image_size / crop_ratio`` and a centre crop (0.875: 224 of 256). Batches travel as
uint8 and are normalised on the training device. A file that cannot be read or decoded stops the run
with one paragraph naming it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stridelab.data.augment import BatchTransform
from stridelab.data.datamodule import DATA_REGISTRY, ImageDataModule, Splits
from stridelab.errors import ConfigError, DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
TINY_ANNOTATIONS = "val_annotations.txt"


@dataclass
class ImageFiles:
    """One split: image paths and their int64 labels."""

    paths: list[str]
    labels: np.ndarray

    def subset(self, index) -> ImageFiles:
        index = np.arange(len(self.paths))[index]
        return ImageFiles([self.paths[i] for i in index], self.labels[index])


def _images_under(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def find_layout(root: str | os.PathLike) -> tuple[list[str], ImageFiles, ImageFiles]:
    """``(classes, train, test)`` of an image folder (see the module docstring for the layouts)."""
    root = Path(root).expanduser()
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise DataError(
            f"data.root={root} is not an image folder data set: it needs a train/ and a val/ folder "
            f"({'found' if train_dir.is_dir() else 'no'} train/, {'found' if val_dir.is_dir() else 'no'} val/), "
            "each with one folder of images per class (ImageNet, Imagenette), or Tiny-ImageNet as it ships "
            "(val/images and val/val_annotations.txt). Point data.root at such a folder."
        )
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{train_dir} holds no class folders: put each class's training images in train/<class>/.")
    index = {c: i for i, c in enumerate(classes)}
    paths, labels, empty = [], [], []
    for c in classes:
        found = _images_under(train_dir / c)
        paths += found
        labels += [index[c]] * len(found)
        empty += [] if found else [c]
    if empty:
        raise DataError(
            f"{train_dir} has class folders without images ({', '.join(empty[:5])}{', ...' * (len(empty) > 5)}): "
            f"stridelab reads files ending in {', '.join(EXTENSIONS)}. Remove the empty folders or add their images."
        )
    train = ImageFiles(paths, np.asarray(labels, np.int64))
    return classes, train, _val_split(val_dir, index)


def _val_split(val_dir: Path, index: dict[str, int]) -> ImageFiles:
    annotations = val_dir / TINY_ANNOTATIONS
    if annotations.is_file():  # Tiny-ImageNet: val/images/*.JPEG, classes in the annotations file
        paths, labels = [], []
        for n, line in enumerate(annotations.read_text().splitlines(), 1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(
                    f"{annotations}, line {n}: {line[:80]!r} does not name an image and one of the train folder's "
                    "classes (file name, class, box, tab-separated). Restore the file from the data set's archive."
                )
            path = val_dir / "images" / fields[0]
            if not path.is_file():
                raise DataError(f"{annotations}, line {n} names {path}, which does not exist.")
            paths.append(str(path))
            labels.append(index[fields[1]])
        return ImageFiles(paths, np.asarray(labels, np.int64))
    folders = sorted(p.name for p in val_dir.iterdir() if p.is_dir())
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DataError(
            f"{val_dir} has class folders the train folder lacks ({', '.join(unknown[:5])}): val/ and train/ must "
            "name the same classes (for Tiny-ImageNet keep val/val_annotations.txt)."
        )
    paths, labels = [], []
    for c in folders:
        found = _images_under(val_dir / c)
        paths += found
        labels += [index[c]] * len(found)
    if not paths:
        raise DataError(f"{val_dir} holds no images: put each class's test images in val/<class>/.")
    return ImageFiles(paths, np.asarray(labels, np.int64))


def decode(path: str) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (3, H, W); a DataError naming the file when it cannot be read."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        return decode_image(read_file(path), mode=ImageReadMode.RGB)
    except Exception as err:
        raise DataError(
            f"cannot read the image {path} ({type(err).__name__}: {' '.join(str(err).split())[:160]}): the file is "
            "damaged, empty or not an image. Replace or delete it and run again."
        ) from None


def eval_transform(image_size: int, crop_ratio: float):
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(round(image_size / crop_ratio), antialias=True), v2.CenterCrop(image_size)])


def train_transform(image_size: int, flip: bool, scale: tuple[float, float]):
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True)]
    return v2.Compose(steps + ([v2.RandomHorizontalFlip()] if flip else []))


class FolderDataset(torch.utils.data.Dataset):
    """Decoded, transformed images of :class:`ImageFiles`: ``(uint8 image, label, error)``; a file
    that fails gives an empty error-marked sample, raised in the main process by :class:`Batches`
    (a worker's exception would arrive wrapped in its traceback)."""

    def __init__(self, files: ImageFiles, transform, image_size: int) -> None:
        self.files, self.transform, self.image_size = files, transform, image_size

    def __len__(self) -> int:
        return len(self.files.paths)

    def __getitem__(self, i: int):
        try:
            image = self.transform(decode(self.files.paths[i]))
        except DataError as err:
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), -1, str(err)
        return image, int(self.files.labels[i]), ""


class Batches:
    """A DataLoader's ``(images, labels)`` batches; the first failed file raises its DataError.
    ``epoch()``: the epoch whose order its sampler draws (a new permutation each epoch)."""

    def __init__(self, loader, epoch=None) -> None:
        self.loader, self.epoch = loader, epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.epoch is not None and hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(self.epoch())
        for images, labels, errors in self.loader:
            failed = next((e for e in errors if e), None)
            if failed:
                raise DataError(failed)
            yield images, labels


class DecodedImages(Sequence):
    """The images of :class:`ImageFiles` as a lazy uint8 N x 3 x S x S array: indexing gives a smaller
    lazy array, ``np.asarray`` decodes (threads), so the metrics read only the subset they measure."""

    def __init__(self, files: ImageFiles, image_size: int, crop_ratio: float) -> None:
        self.files, self.image_size, self.crop_ratio = files, image_size, crop_ratio

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files.paths), 3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.files.paths)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return np.asarray(self[[int(index)]])[0]
        return DecodedImages(self.files.subset(index), self.image_size, self.crop_ratio)

    def __array__(self, dtype=None, copy=None):
        transform = eval_transform(self.image_size, self.crop_ratio)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            images = list(pool.map(lambda p: transform(decode(p)).numpy(), self.files.paths))
        out = np.stack(images) if images else np.zeros(self.shape, np.uint8)
        return out if dtype is None else out.astype(dtype)


def write_generated(
    root: str | os.PathLike, train_size: int = 500, test_size: int = 100, layout: str = "imagenet", seed: int = 0
) -> Path:
    """shapes10 images (:mod:`stridelab.data.probes`) written as an image folder under ``root``:
    ``layout="imagenet"`` (train/ and val/ class folders, JPEG) or ``"tiny"`` (Tiny-ImageNet's: train/<c>/images,
    val/images and val/val_annotations.txt, JPEG); every fifth image is a PNG. For tests and offline demos."""
    from torchvision.io import encode_jpeg, encode_png

    from stridelab.data.probes import SHAPES10_CLASSES, make_shapes10

    root = Path(root)
    lines = []
    for split, n, data_seed in (("train", train_size, seed), ("val", test_size, seed + 1)):
        images, labels = make_shapes10(n, seed=data_seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            cls = SHAPES10_CLASSES[int(label)]
            png = i % 5 == 4
            name = f"{split}_{i}.{'png' if png else 'JPEG'}"
            if split == "val" and layout == "tiny":
                path = root / "val" / "images" / name
                lines.append(f"{name}\t{cls}\t0\t0\t{image.shape[-1]}\t{image.shape[-2]}")
            else:
                path = root / split / cls / ("images" if layout == "tiny" else "") / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tensor = torch.from_numpy(np.ascontiguousarray(image))
            data = encode_png(tensor) if png else encode_jpeg(tensor, quality=95)
            path.write_bytes(data.numpy().tobytes())
    if layout == "tiny":
        (root / "val" / TINY_ANNOTATIONS).write_text("\n".join(lines) + "\n")
    return root


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@DATA_REGISTRY.register()
class ImageFolderDataModule(ImageDataModule):
    """Images from ``root`` (see the module docstring), decoded in ``num_workers`` worker processes
    (null: up to 8, one per CPU core), batches normalised on the training device."""

    name = "imagefolder"
    in_chans = 3
    classes: tuple[str, ...] = ()  # known once the folder is read
    image_size = 224  # the default; an instance's is data.image_size

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        crop_ratio: float = 0.875,
        scale: Sequence[float] = (0.08, 1.0),
        num_workers: int | None = None,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        val_size: int = 0,
        limit_train: int | None = None,
        limit_test: int | None = None,
        augment: bool = True,
        flip: bool = True,
        normalize: bool = True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        split_seed: int = 0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if root is None or str(root) in ("", "???"):
            raise ConfigError("data=imagefolder needs data.root=FOLDER: a folder with train/ and val/ image folders.")
        if int(image_size) < 8 or not 0 < float(crop_ratio) <= 1:
            raise ConfigError(
                f"data.image_size={image_size} / data.crop_ratio={crop_ratio}: the image size must be >= 8 px and "
                "the crop ratio in (0, 1] (0.875: a 224 px centre crop of the image resized to 256)."
            )
        for knob, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                raise ConfigError(f"data.{knob} must be >= 1 (got {value}).")
        self.root, self.image_size, self.crop_ratio = root, int(image_size), float(crop_ratio)
        self.scale = tuple(float(s) for s in scale)
        # the cores this process may run on (a packed run's share, launcher=packed), not the host's
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.num_workers = min(8, usable) if num_workers is None else int(num_workers)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.val_size, self.limit_train, self.limit_test = int(val_size or 0), limit_train, limit_test
        self.augment, self.flip, self.normalize = augment, flip, normalize
        self.mean, self.std = list(mean), list(std)
        self.split_seed, self.channels_last = split_seed, channels_last
        self.splits: Splits | None = None
        self.files: dict[str, ImageFiles] = {}
        self.seed: int | None = None
        self._norm: dict = {}

    def load(self) -> Splits:
        """List the files (nothing is decoded), hold out validation, apply limits."""
        if self.splits is not None:
            return self.splits
        classes, train, test = find_layout(self.root)
        self.classes = tuple(classes)
        val = None
        if self.val_size:
            held, kept = self.hold_out(len(train.paths))
            val, train = train.subset(held), train.subset(kept)
        if self.limit_train is not None:
            train = train.subset(slice(0, int(self.limit_train)))
        if self.limit_test is not None:
            test = test.subset(slice(0, int(self.limit_test)))
        self.check_batch(len(train.paths))
        self.files = {"train": train, "test": test, **({"val": val} if val is not None else {})}
        lazy = {k: (DecodedImages(v, self.image_size, self.crop_ratio), v.labels) for k, v in self.files.items()}
        info = {"root": str(self.root), **{f"{k}_size": len(v.paths) for k, v in self.files.items()}}
        self.splits = Splits(train=lazy["train"], tests={"test": lazy["test"]}, val=lazy.get("val"), info=info)
        return self.splits

    # Lightning hooks ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.load()

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _loader(self, split: str, train: bool):
        files = self.files[split]
        if train and self.augment:
            transform = train_transform(self.image_size, self.flip, self.scale)
        else:
            transform = eval_transform(self.image_size, self.crop_ratio)
        dataset = FolderDataset(files, transform, self.image_size)
        t = self.trainer
        world, rank = (t.world_size, t.global_rank) if t is not None else (1, 0)
        sampler = None
        if world > 1 or train:
            seed = int(self.seed or 0)
            sampler = torch.utils.data.DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=train, seed=seed, drop_last=train
            )
        generator = torch.Generator().manual_seed(int(self.seed or 0) * 1000 + rank)  # worker seeds: augmentation
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            generator=generator,
        )
        return Batches(loader, (lambda: t.current_epoch) if t is not None else None)

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False) if "val" in self.files else []

    def test_dataloader(self):
        return [self._loader("test", train=False)]

    def transform_on(self, device) -> BatchTransform:
        """Normalisation (no augmentation: the workers did it) on ``device``."""
        key = str(device)
        if key not in self._norm:
            self._norm[key] = BatchTransform(
                mean=self.mean, std=self.std, normalize=self.normalize, channels_last=self.channels_last
            ).to(device)
        return self._norm[key]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return (self.transform_on(x.device)(x) if x.dtype == torch.uint8 else x), y

    def model_inputs(self, images, device="cpu") -> torch.Tensor:
        """uint8 NCHW images (numpy, or a lazy :class:`DecodedImages`) -> the float batch the model sees."""
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(images))).to(device)
        return self.transform_on(device)(x)
