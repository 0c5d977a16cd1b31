"""What one run of the measurement suite produced: its flat figures, the data behind its plots and
tables, and how they are written (plots/*.png, padding_audit.md) and logged (TensorBoard)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stridelab.files import atomic_write_bytes, atomic_write_text


@dataclass
class Measurement:
    """What one suite run produced: flat ``metrics`` plus the data behind its figures and tables."""

    metrics: dict = field(default_factory=dict)
    stability: dict[int, float] = field(default_factory=dict)
    border_heatmap: torch.Tensor | None = None
    coverage_map: torch.Tensor | None = None
    audit_md: str = ""
    _pngs: dict | None = field(default=None, repr=False)

    def pngs(self) -> dict[str, bytes]:
        """The run's figures as PNG bytes by TensorBoard tag, rendered once."""
        if self._pngs is None:
            from stridelab.metrics import plots

            figs = {
                "crop/stability_curve": plots.stability_figure(self.stability),
                "border/features_heatmap": plots.map_figure(
                    self.border_heatmap,
                    "border deviation of the features\n(constant input; Alsallakh et al. 2021)",
                    "|F - interior median| / RMS",
                ),
                "coverage/input_map": plots.map_figure(
                    self.coverage_map, "input coverage (transposed pass of ones)", "paths to the output", "viridis"
                ),
            }
            self._pngs = {tag: plots.to_png(fig) for tag, fig in figs.items() if fig is not None}
        return self._pngs

    def save(self, run_dir: str | Path) -> list[Path]:
        """Write ``plots/*.png`` and ``padding_audit.md`` into ``run_dir`` (each file atomically)."""
        run_dir = Path(run_dir)
        written = []
        if self.audit_md:
            atomic_write_text(run_dir / "padding_audit.md", "# Uneven-padding audit\n\n" + self.audit_md)
            written.append(run_dir / "padding_audit.md")
        for tag, png in self.pngs().items():
            path = run_dir / "plots" / (tag.replace("/", "_") + ".png")
            atomic_write_bytes(path, png)
            written.append(path)
        return written

    def log_tensorboard(self, writer, step: int = 0) -> None:
        """Scalars, figures and the audit table into a ``SummaryWriter``."""
        for k, v in self.metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                writer.add_scalar(k, v, step)
        if self.pngs():
            import io

            import matplotlib.image as mpimg

            for tag, png in self.pngs().items():
                writer.add_image(tag, mpimg.imread(io.BytesIO(png), format="png")[..., :3], step, dataformats="HWC")
        if self.audit_md:
            writer.add_text("audit/padding", self.audit_md, step)
