"""Device-resident data modules: the whole split lives on the training device as uint8.

Batches are cut by index from that tensor and augmented on the device by :class:`BatchTransform`;
a plain iterable (:class:`DeviceBatches`) hands them to Lightning. No DataLoader, no workers, no
per-image Python work. ``load()`` reads or generates the data once (and fails fast, before any
model or trainer is built); ``setup()`` moves it to the trainer's device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch

from stridelab.data import cifar10, cifar100
from stridelab.data.augment import BatchTransform
from stridelab.data.batches import DeviceBatches
from stridelab.data.probes import REDGREEN_CLASSES, SHAPES10_CLASSES, make_redgreen, make_shapes10, move_boxes
from stridelab.errors import ConfigError
from stridelab.registry import Registry


@dataclass
class Splits:
    """uint8 NCHW images and int64 labels as numpy arrays; ``tests`` maps a name to a test set."""

    train: tuple[np.ndarray, np.ndarray]
    tests: dict[str, tuple[np.ndarray, np.ndarray]]
    val: tuple[np.ndarray, np.ndarray] | None = None
    info: dict = field(default_factory=dict)


class _ReadCache:
    """The last data sets read in this process, so the runs of a sweep (one process) read or generate
    their data once: 0.2-0.6 s a run. Arrays are shared between runs and never written in place."""

    def __init__(self, size: int = 2) -> None:
        self.size, self.entries = size, {}

    def get(self, key, read) -> Splits:
        if key is None:
            return read()
        if key not in self.entries:
            s = read()
            self.entries[key] = (s.train, dict(s.tests), s.val, dict(s.info))
            while len(self.entries) > self.size:
                self.entries.pop(next(iter(self.entries)))
        train, tests, val, info = self.entries[key]
        return Splits(train=train, tests=dict(tests), val=val, info=dict(info))


READ_CACHE = _ReadCache()


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and std of uint8 images in [0, 1] units, via value histograms."""
    means, stds = [], []
    values = np.arange(256, dtype=np.float64) / 255
    for c in range(images.shape[1]):
        hist = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        m = float((p * values).sum())
        means.append(m)
        stds.append(float(np.sqrt(max((p * values**2).sum() - m * m, 1e-12))))
    return means, stds


DATA_REGISTRY = Registry("data")  # each data module below registers itself under its ``name``


class ImageDataModule(L.LightningDataModule):
    """What a run asks of every data module: its classes, input shape and test sets, from ``load()``
    (which also splits validation off and checks the batch fits: :meth:`hold_out`, :meth:`check_batch`)."""

    name = "base"
    classes: tuple[str, ...] = ()
    in_chans = 3
    image_size = 32
    val_size = 0
    split_seed = 0
    batch_size = 1

    @property
    def num_classes(self) -> int:
        if not self.classes:
            self.load()  # an image folder knows its classes once it is read
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    @property
    def test_names(self) -> list[str]:
        return list(self.load().tests)

    def load(self) -> Splits:
        raise NotImplementedError

    def hold_out(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(validation, training) indices of a train split of ``n``: ``val_size`` drawn with ``split_seed``."""
        if self.val_size >= n:
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no training images: {self.name} has "
                f"{n} in its train split. Use a smaller data.val_size (0 for none)."
            )
        perm = np.random.default_rng(self.split_seed).permutation(n)
        return perm[: self.val_size], perm[self.val_size :]

    def check_batch(self, n: int) -> None:
        """Refuse a batch larger than the ``n`` training images (every batch would be dropped)."""
        if n < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the {n} training images "
                f"of {self.name}: every training batch would be dropped. Lower data.batch_size "
                "or raise data.limit_train."
            )


class DeviceDataModule(ImageDataModule):
    """Common machinery; subclasses implement :meth:`read` and set the class attributes."""

    def __init__(
        self,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        val_size: int = 5000,
        limit_train: int | None = None,
        limit_test: int | None = None,
        augment: bool = True,
        flip: bool = True,
        crop_padding: int = 4,
        crop_fill: str = "zeros",
        normalize: bool = True,
        mean=None,
        std=None,
        split_seed: int = 0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(
                f"data.batch_size and data.eval_batch_size must be >= 1 (got {batch_size}, {eval_batch_size})."
            )
        for knob, limit in (("limit_train", limit_train), ("limit_test", limit_test)):
            if limit is not None and int(limit) < 1:  # 0 used to mean "all": a smoke run became a full run
                raise ConfigError(
                    f"data.{knob}={limit} is not valid: give N >= 1 (the first N images), or null for all of them."
                )
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.val_size, self.split_seed = int(val_size or 0), split_seed
        self.limit_train, self.limit_test = limit_train, limit_test
        self.augment, self.flip, self.crop_padding, self.crop_fill = augment, flip, crop_padding, crop_fill
        self.normalize, self.mean, self.std = normalize, mean, std
        self.channels_last = channels_last
        self.splits: Splits | None = None
        self._device_data: dict | None = None
        self.train_batches: DeviceBatches | None = None  # the training loader in use (its order and position)
        self.seed: int | None = None  # the run's seed (set by the run): data order and augmentation draws
        self._train_resume: tuple | None = None

    def read(self) -> Splits:
        raise NotImplementedError

    def cache_key(self):
        """What identifies the data :meth:`read` returns, for :data:`READ_CACHE` (None: not cached)."""
        return None

    def load(self) -> Splits:
        """Read or generate the data once, hold out validation, apply limits, compute statistics."""
        if self.splits is not None:
            return self.splits
        s = READ_CACHE.get(self.cache_key(), self.read)
        x, y = s.train
        if s.val is None and self.val_size:
            val, kept = self.hold_out(len(y))
            s.val = (x[val], y[val])
            x, y = x[kept], y[kept]
        if self.limit_train is not None:
            x, y = x[: self.limit_train], y[: self.limit_train]
        if self.limit_test is not None:
            s.tests = {k: (v[0][: self.limit_test], v[1][: self.limit_test]) for k, v in s.tests.items()}
        self.check_batch(len(y))
        s.train = (x, y)
        if self.mean is None or self.std is None:
            mean, std = channel_stats(x)
            self.mean = self.mean if self.mean is not None else mean
            self.std = self.std if self.std is not None else std
        s.info.update(
            train_size=len(y),
            val_size=0 if s.val is None else len(s.val[1]),
            **{f"{k}_size": len(v[1]) for k, v in s.tests.items()},
        )
        self.splits = s
        return s

    # Lightning hooks ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.load()

    def setup(self, stage: str | None = None) -> None:
        s = self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self._device_data is not None and self._device_data["device"] == device:
            return

        def put(pair):
            return torch.from_numpy(np.ascontiguousarray(pair[0])).to(device), torch.from_numpy(pair[1]).to(device)

        self._device_data = {
            "device": device,
            "train": put(s.train),
            "val": put(s.val) if s.val is not None else None,
            "tests": {k: put(v) for k, v in s.tests.items()},
        }
        common = dict(mean=self.mean, std=self.std, normalize=self.normalize, channels_last=self.channels_last)
        self.train_transform = BatchTransform(
            flip=self.augment and self.flip,
            crop_padding=self.crop_padding if self.augment else 0,
            crop_fill=self.crop_fill,
            **common,
        ).to(device)
        if self.seed is not None:  # a generator of its own, per DDP rank
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self.train_transform.generator = torch.Generator(device=device).manual_seed(int(self.seed) * 1000 + rank)
            if getattr(self, "_augment_state", None) is not None:  # restored before setup
                self.train_transform.generator.set_state(self._augment_state)
        self.eval_transform = self.eval_transform_on(device)

    def eval_transform_on(self, device) -> BatchTransform:
        """The evaluation transform (normalise, no augmentation) on ``device``."""
        self.load()
        return BatchTransform(
            mean=self.mean, std=self.std, normalize=self.normalize, channels_last=self.channels_last
        ).to(device)

    def model_inputs(self, images: np.ndarray, device="cpu") -> torch.Tensor:
        """uint8 NCHW images (numpy) -> the float batch the model sees at evaluation, on ``device``."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        return self.eval_transform_on(device)(x)

    def _shard(self) -> dict:
        t = self.trainer
        return {"rank": t.global_rank, "world_size": t.world_size} if t is not None else {}

    def train_dataloader(self):
        x, y = self._device_data["train"]
        self.train_batches = DeviceBatches(
            x,
            y,
            self.batch_size,
            self.train_transform,
            shuffle=True,
            drop_last=True,
            defer_transform=True,
            order_seed=self.seed,
            epoch=(lambda: self.trainer.current_epoch) if self.trainer is not None else None,
            **self._shard(),
        )
        if self._train_resume is not None:  # a checkpoint taken mid-epoch: the same order, the next batch
            self.train_batches.resume_at(*self._train_resume)
            self._train_resume = None
        return self.train_batches

    def augment_state(self) -> torch.Tensor | None:
        """The augmentation generator's state (a checkpoint saves it)."""
        g = getattr(getattr(self, "train_transform", None), "generator", None)
        return None if g is None else g.get_state()

    def set_augment_state(self, state: torch.Tensor | None) -> None:
        g = getattr(getattr(self, "train_transform", None), "generator", None)
        if g is not None and state is not None:
            g.set_state(state)
        self._augment_state = state

    def resume_train(self, order: torch.Tensor | None, position: int) -> None:
        """The next training loader continues an epoch: ``order`` and ``position`` as a checkpoint saved
        them from :attr:`train_batches` (``order``, batches consumed)."""
        self._train_resume = (order, position)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # The training loader defers its augmentation to here, the step that uses the batch (see
        # DeviceBatches): Lightning prefetches a batch ahead of its step.
        x, y = batch
        if x.dtype == torch.uint8 and self.trainer is not None and self.trainer.training:
            x = self.train_transform(x)
        return x, y

    def val_dataloader(self):
        if self._device_data["val"] is None:
            return []
        x, y = self._device_data["val"]
        return DeviceBatches(x, y, self.eval_batch_size, self.eval_transform, **self._shard())

    def test_dataloader(self):
        return [
            DeviceBatches(x, y, self.eval_batch_size, self.eval_transform, **self._shard())
            for x, y in self._device_data["tests"].values()
        ]


@DATA_REGISTRY.register()
class Cifar10DataModule(DeviceDataModule):
    """Real CIFAR-10 from ``root`` (downloaded there when missing and ``download`` is true)."""

    name = "cifar10"
    classes = cifar10.CLASSES

    def __init__(self, root: str = "data/cifar10", download: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root, self.download = root, download

    def cache_key(self):
        directory = Path(self.root).expanduser() / cifar10.BIN_DIR
        files = sorted(directory.glob("*.bin")) if directory.is_dir() else []
        if not files:
            return None  # missing (to download) or the python version: read as usual
        return (
            "cifar10",
            str(directory.resolve()),
            tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files),
        )

    def read(self) -> Splits:
        train, test = cifar10.load_cifar10(self.root, download_if_missing=self.download)
        return Splits(train=train, tests={"test": test}, info={"root": str(self.root)})


@DATA_REGISTRY.register()
class Cifar100DataModule(DeviceDataModule):
    """Real CIFAR-100 from ``root`` (downloaded there when missing and ``download`` is true);
    ``labels``: ``fine`` (100 classes) or ``coarse`` (20 superclasses)."""

    name = "cifar100"
    classes = cifar100.FINE_CLASSES

    def __init__(self, root: str = "data/cifar100", download: bool = True, labels: str = "fine", **kwargs) -> None:
        super().__init__(**kwargs)
        self.root, self.download, self.labels = root, download, labels
        self.classes = cifar100.classes(labels)

    def cache_key(self):
        directory = Path(self.root).expanduser() / cifar100.BIN_DIR
        files = sorted(directory.glob("*.bin")) if directory.is_dir() else []
        if not files:
            return None
        stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        return ("cifar100", str(directory.resolve()), self.labels, stamp)

    def read(self) -> Splits:
        train, test = cifar100.load_cifar100(self.root, download_if_missing=self.download, labels=self.labels)
        return Splits(train=train, tests={"test": test}, info={"root": str(self.root)})


class GeneratedDataModule(DeviceDataModule):
    """A probe set generated from ``data_seed``: ``train_size`` images are trained on (``val_size``
    more are generated and held out); the test set comes from a separate seed."""

    TEST_SEED_OFFSET = 1_000_003
    default_sizes = (10000, 2000)

    def __init__(
        self, train_size: int | None = None, test_size: int | None = None, data_seed: int = 0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.train_size = int(train_size if train_size is not None else self.default_sizes[0])
        self.test_size = int(test_size if test_size is not None else self.default_sizes[1])
        self.data_seed = int(data_seed)

    @property
    def test_seed(self) -> int:
        return self.data_seed + self.TEST_SEED_OFFSET

    def cache_key(self):
        return (self.name, self.train_size + self.val_size, self.test_size, self.data_seed)


@DATA_REGISTRY.register()
class Shapes10DataModule(GeneratedDataModule):
    """Generated shapes and textures (see :mod:`stridelab.data.probes`)."""

    name = "shapes10"
    classes = SHAPES10_CLASSES
    default_sizes = (10000, 2000)

    def read(self) -> Splits:
        train = make_shapes10(self.train_size + self.val_size, seed=self.data_seed)
        return Splits(train=train, tests={"test": make_shapes10(self.test_size, seed=self.test_seed)})


@DATA_REGISTRY.register()
class RedGreenDataModule(GeneratedDataModule):
    """Kayhan & van Gemert's red-green task, with the ``test_dissimilar`` set reported apart."""

    name = "redgreen"
    classes = REDGREEN_CLASSES
    default_sizes = (2000, 1000)

    def __init__(self, test_train: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        # The authors' released code reseeds numpy before generating each set, so its validation and
        # "similar" test sets are the first training images (and the dissimilar set those moved).
        # test_train adds those two sets (train_images, train_images_dissimilar) beside our held-out
        # ones, so a run reports both protocols from one training (experiments/kayhan_redgreen.yaml).
        self.test_train = bool(test_train)

    def read(self) -> Splits:
        x, y, _ = make_redgreen(self.train_size + self.val_size, seed=self.data_seed)
        tx, ty, tx_moved = make_redgreen(self.test_size, seed=self.test_seed)
        return Splits(train=(x, y), tests={"test": (tx, ty), "test_dissimilar": (tx_moved, ty)})

    def load(self) -> Splits:
        fresh = self.splits is None
        s = super().load()
        if fresh and self.test_train:
            x, y = s.train
            n = min(self.test_size, len(y)) if self.limit_test is None else min(self.limit_test, len(y))
            s.tests = {
                **s.tests,
                "train_images": (x[:n], y[:n]),
                "train_images_dissimilar": (move_boxes(x[:n], y[:n]), y[:n]),
            }
            s.info.update(train_images_size=n, train_images_dissimilar_size=n)
        return s
