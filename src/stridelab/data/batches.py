"""Batches cut by index from device-resident tensors: :class:`DeviceBatches`, the data modules' loader.

No DataLoader, no workers, no per-image Python work; the order is seeded per epoch, sharded per DDP
rank, and can be read and resumed mid-epoch (a checkpoint saves ``order`` and ``position``).
"""

from __future__ import annotations

import math

import torch


class DeviceBatches:
    """Iterable of ``(images, labels)`` batches cut from device tensors, augmented per batch.

    ``defer_transform``: yield the uint8 batch and leave ``transform`` to the consumer (the training
    loader: :meth:`DeviceDataModule.on_after_batch_transfer` applies it when the step runs, not when
    Lightning prefetches the batch, so the random augmentation of step k is drawn in step k and a
    checkpoint's RNG state is the state before the next step's). The current order and position
    can be read (``order``, ``position``) and an iteration resumed from them (:meth:`resume_at`):
    that is how a checkpoint taken mid-epoch continues with the same batches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        transform,
        shuffle: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        defer_transform: bool = False,
        order_seed: int | None = None,
        epoch=None,
    ) -> None:
        self.images, self.labels = images, labels
        # With order_seed, epoch e's order is a permutation drawn from its own generator seeded by
        # (order_seed, e): the same for every run with that seed, whatever its model drew before.
        self.order_seed, self.epoch = order_seed, epoch or self._count_epochs
        self._iterations = 0
        self.batch_size, self.transform = int(batch_size), transform
        self.shuffle, self.drop_last, self.defer_transform = shuffle, drop_last, defer_transform
        # Under DDP each process takes every world_size-th image (of one shared permutation when
        # shuffling: every rank draws it from the same seeded generator state).
        self.rank, self.world_size = int(rank), max(1, int(world_size))
        self.order: torch.Tensor | None = None  # this iteration's (full, unsharded) order; None: in order
        self.position = 0  # batches yielded in this iteration
        self._resume: tuple[torch.Tensor | None, int] | None = None

    def _local_count(self) -> int:
        n = len(self.labels)
        if self.drop_last:  # every rank the same number of training steps, or DDP would hang
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._local_count()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _count_epochs(self) -> int:
        return self._iterations

    def _permutation(self, n: int, device) -> torch.Tensor:
        if self.order_seed is None:
            return torch.randperm(n, device=device)
        g = torch.Generator().manual_seed(int(self.order_seed) * 100_003 + int(self.epoch()))
        return torch.randperm(n, generator=g).to(device)

    def resume_at(self, order: torch.Tensor | None, position: int) -> None:
        """The next iteration uses ``order`` (as saved from ``self.order``) and starts at batch ``position``."""
        if order is not None and len(order) != len(self.labels):
            raise ValueError(f"a saved data order of {len(order)} images does not fit {len(self.labels)} images")
        self._resume = (order, int(position))

    def __iter__(self):
        n, bs = len(self.labels), self.batch_size
        device = self.labels.device
        start = 0
        if self._resume is not None:
            order, start = self._resume
            order = order.to(device) if order is not None else None
            self._resume = None
        elif self.shuffle:
            order = self._permutation(n, device)
        else:
            order = None
        self._iterations += 1
        self.order, self.position = order, start
        if order is None and self.world_size > 1:
            order = torch.arange(n, device=device)
        if order is not None and self.world_size > 1:
            order = order[self.rank :: self.world_size][: self._local_count()]
        local = self._local_count()
        for i in range(start, len(self)):
            sl = slice(i * bs, min(local, (i + 1) * bs))
            idx = order[sl] if order is not None else sl
            self.position = i + 1
            x = self.images[idx]
            yield (x if self.defer_transform else self.transform(x)), self.labels[idx]
