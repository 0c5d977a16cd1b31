"""Offline probe data sets, generated procedurally and deterministically from a seed.

* ``redgreen``: Kayhan & van Gemert (CVPR 2020), Sec. 4.1. 32x32 black images with a red and a green
  4x4 box. Class 0: red left of green, both boxes near row 7; class 1: green left of red, near
  row 23. Each box's row is jittered by -4..3, the left box starts in columns 0..9, the right one at
  least 5 columns further. The *dissimilar* test set holds the same images with both boxes moved
  16 rows (class 0 down, class 1 up): a network that classifies by absolute position fails on it,
  one that uses the colour order does not. Written from the paper's description; box size,
  offsets and jitter as in the authors' released experiment settings.
* ``shapes10``: 10 classes of shapes and fine textures (period-2 stripes and checkerboards, which
  alias under stride-2 subsampling) at random positions, often cut by the image border, in random
  colours on random backgrounds with mild noise. A CIFAR-shaped task on which aliasing and border
  handling matter, and which a small CNN learns in seconds on a CPU.
"""

from __future__ import annotations

import numpy as np

SHAPES10_CLASSES = ("square", "disk", "triangle", "ring", "frame", "plus", "cross", "hstripes", "vstripes", "checker")
REDGREEN_CLASSES = ("red-green", "green-red")


def make_shapes10(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N x 3 x size x size), balanced labels, a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SHAPES10_CLASSES)).astype(np.int64)
    # Centres anywhere in the image, so many objects touch or cross the border.
    cy = rng.uniform(0, size - 1, n)[:, None, None]
    cx = rng.uniform(0, size - 1, n)[:, None, None]
    r = rng.uniform(5, 10, n)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.integers(0, 2, n)[:, None, None]
    mask = np.zeros((n, size, size), dtype=bool)
    for c in range(len(SHAPES10_CLASSES)):
        sel = labels == c
        mask[sel] = _shape_mask(c, yy[None] - cy[sel], xx[None] - cx[sel], r[sel], phase[sel])
    # Contrasting colours: one dark, one bright, randomly which is the object.
    dark = rng.uniform(0, 100, (n, 3))
    bright = rng.uniform(140, 255, (n, 3))
    swap = rng.random(n) < 0.5
    fg = np.where(swap[:, None], dark, bright)
    bg = np.where(swap[:, None], bright, dark)
    img = np.where(mask[:, None], fg[:, :, None, None], bg[:, :, None, None])
    img = img.astype(np.float32) + 8 * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels


def _shape_mask(c: int, dy: np.ndarray, dx: np.ndarray, r: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Pixels of class ``c``'s object, from offsets to the object's centre and its radius ``r``."""
    ady, adx = np.abs(dy), np.abs(dx)
    cheb = np.maximum(adx, ady)
    in_box = cheb <= r
    if c in (1, 3):
        dist = np.sqrt(dx**2 + dy**2)
        return (dist <= r) if c == 1 else (dist <= r) & (dist >= r - 2.5)  # disk, ring
    yi = np.rint(dy + 1e6).astype(np.int64)  # integer row/column parity, shift-proof
    xi = np.rint(dx + 1e6).astype(np.int64)
    return {
        0: lambda: in_box,  # square
        2: lambda: (ady <= r) & (adx <= (dy + r) / 2),  # triangle, apex up
        4: lambda: in_box & (cheb >= r - 2),  # frame (hollow square)
        5: lambda: ((adx <= 1.5) & (ady <= r)) | ((ady <= 1.5) & (adx <= r)),  # plus
        6: lambda: (np.abs(adx - ady) <= 1.5) & in_box,  # cross (X)
        7: lambda: in_box & ((yi + phase) % 2 == 0),  # horizontal stripes, period 2
        8: lambda: in_box & ((xi + phase) % 2 == 0),  # vertical stripes, period 2
        9: lambda: in_box & ((xi + yi + phase) % 2 == 0),  # checkerboard, period 2
    }[c]()


def make_redgreen(
    n: int, seed: int, size: int = 32, box: int = 4, rows: tuple[int, int] = (7, 23), shift: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(images, labels, dissimilar_images)``: the dissimilar set moves each image's boxes
    ``shift`` rows (class 0 down, class 1 up), labels unchanged."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int64)
    span = size - box  # last top-left column/row a box can take
    jitter = span // 6  # rows jitter by -jitter .. jitter-1
    x_left = rng.integers(0, span // 2 - box, n)
    x_right = x_left + box + 1 + (rng.random(n) * (span - x_left - box - 1)).astype(np.int64)
    row = np.asarray(rows)[labels]
    y_left = row + rng.integers(-jitter, jitter, n)
    y_right = row + rng.integers(-jitter, jitter, n)
    # Class 0: red (channel 0) on the left, green (channel 1) on the right; class 1 the reverse.
    ch_left, ch_right = labels, 1 - labels
    img = np.zeros((n, 3, size, size), dtype=np.uint8)
    idx = np.arange(n)[:, None, None]
    oy, ox = np.mgrid[0:box, 0:box]
    for ch, y, x in ((ch_left, y_left, x_left), (ch_right, y_right, x_right)):
        img[idx, ch[:, None, None], y[:, None, None] + oy, x[:, None, None] + ox] = 255
    return img, labels, move_boxes(img, labels, shift)


def move_boxes(images: np.ndarray, labels: np.ndarray, shift: int = 16) -> np.ndarray:
    """Red-green images with their boxes moved ``shift`` rows as in the dissimilar set (class 0
    down, class 1 up). A roll is exact: the rows it wraps around are black."""
    moved = images.copy()
    for label, rows in ((0, shift), (1, -shift)):
        moved[labels == label] = np.roll(images[labels == label], rows, axis=2)
    return moved
