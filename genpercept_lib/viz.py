"""Colour maps and figure helpers shared by the notebooks (matplotlib, Agg-safe)."""

from __future__ import annotations

import numpy as np

from .images import colorize_depth, normals_to_rgb  # noqa: F401 (the colour maps live with the image math)
from .metrics.depth import align_depth


def aligned_depth_rgb(pred, gt, valid, space: str = "depth", cmap: str = "Spectral"):
    """[H, W] affine-invariant prediction -> [H, W, 3] RGB as the metric sees it: aligned to the ground truth
    (least-squares scale and shift in ``space``, the evaluation's eq. (A)) and coloured on the ground truth's range
    (its 2%/98% quantiles), so it can be read against ``colorize_depth(gt, valid)`` pixel by pixel. Pixels where
    the ground truth is invalid are black, as in the ground truth's panel."""
    gt, valid = np.asarray(gt, np.float64), np.asarray(valid, bool)  # [H, W]
    aligned = align_depth(np.asarray(pred, np.float64), gt, valid, space)  # [H, W] metres
    lo, hi = np.quantile(gt[valid], [0.02, 0.98]) if valid.any() else (None, None)
    return colorize_depth(aligned, valid, cmap, lo, hi)


def chw_to_hwc(image):
    """[3, H, W] (numpy or torch) -> [H, W, 3] numpy clipped to [0, 1]."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    return np.clip(np.moveaxis(arr, 0, -1), 0, 1)


def image_grid(rows, row_titles=None, col_titles=None, cell: float = 1.8, suptitle: str | None = None):
    """A figure of images: ``rows`` is a list of lists of [H, W] or [H, W, 3] arrays (None = empty)."""
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols, cell * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            img = row[j] if j < len(row) else None
            if img is not None:
                ax.imshow(img, cmap="gray" if np.ndim(img) == 2 else None, interpolation="nearest")
            else:
                ax.axis("off")
            if i == 0 and col_titles:
                ax.set_title(col_titles[j], fontsize=9)
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_table(df, digits: int = 3, max_rows: int = 30, where: str | None = None):
    """Display ``df`` as a plain HTML table (GitHub and nbviewer render it; a pandas Styler shows as its repr
    outside Jupyter), numbers to ``digits`` decimals, at most ``max_rows`` rows; a longer table shows its first
    rows and says where the whole one is (``where``, e.g. the CSV it was written to)."""
    from IPython.display import HTML, display

    shown = df.head(max_rows)
    html = shown.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", border=0)
    if len(df) > max_rows:
        html += f"<p><i>{max_rows} of {len(df)} rows" + (f"; all of them in {where}" if where else "") + "</i></p>"
    display(HTML(html))
