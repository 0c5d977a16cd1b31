"""Figures of one run's measurements (matplotlib, Agg backend)."""

from __future__ import annotations

import torch


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: a run without figures never pays it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig, dpi: int | None = None) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def stability_figure(curve: dict[int, float], title: str = ""):
    if not curve:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    ds = sorted(curve)
    ax.plot(ds, [curve[d] for d in ds], marker="o")
    ax.set_xlabel("diagonal shift d (pixels)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "stability under diagonal shift (Zhang 2019)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def map_figure(values: torch.Tensor, title: str, label: str, cmap: str = "magma"):
    if values is None:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 3.2), dpi=100)
    im = ax.imshow(values.detach().cpu().float().numpy(), cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig
