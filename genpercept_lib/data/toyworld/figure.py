"""A sample grid of every domain and label (``genpercept toyworld -o``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...cache import atomic_path
from ...domains import CLASSES, DEFAULT_SIZE, DOMAIN_INFO, DOMAINS, SEMANTIC_COLORS, SKELETON
from ...images import colorize_depth, normals_to_rgb
from .render import render


# --- figure ----------------------------------------------------------------------------------------------
def write_sample_grid(path, size: int = DEFAULT_SIZE, index: int = 0) -> Path:
    """A PNG grid, one row per domain: rgb | depth | normal | mask | alpha | semantic | keypoints."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    if path.is_dir():  # else savefig's IsADirectoryError, after the whole grid was rendered
        raise ValueError(f"{path} is a folder: expected the path of the PNG file to write, "
                         f"e.g. {path / 'toyworld.png'}")
    cols = ["rgb", "depth", "normal", "mask", "alpha", "semantic", "keypoints"]
    fig = Figure(figsize=(1.5 * len(cols) + 0.6, 1.5 * len(DOMAINS) + 0.9), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(DOMAINS), len(cols), squeeze=False)
    for r, dom in enumerate(DOMAINS):
        s = render(dom, index, size)
        d = s["depth"][s["valid"]]
        rgb = s["rgb"].transpose(1, 2, 0)
        depth = colorize_depth(s["depth"], s["valid"], lo=d.min() if d.size else 0, hi=d.max() if d.size else 1)
        imgs = [rgb, depth, normals_to_rgb(s["normal"], s["valid"]), s["mask"], s["alpha"],
                SEMANTIC_COLORS[s["semantic"]], rgb]
        for c, ax in enumerate(axes[r]):
            ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
        for kp in s["keypoints"]:
            for a, b in SKELETON:
                if kp[a, 2] > 0 and kp[b, 2] > 0:
                    axes[r, -1].plot(kp[[a, b], 0], kp[[a, b], 1], "-", color="lime", lw=0.8)
            on = kp[:, 2] > 0
            colours = np.where(kp[on, 2] == 2, "red", "yellow")
            axes[r, -1].scatter(kp[on, 0], kp[on, 1], s=5, c=colours, zorder=3)
        axes[r, -1].set_xlim(-0.5, size - 0.5)
        axes[r, -1].set_ylim(size - 0.5, -0.5)
        rng_m = DOMAIN_INFO[dom]["depth_range"]
        axes[r, 0].set_ylabel(f"{dom}\n({rng_m[0]:g}-{rng_m[1]:g} m)", fontsize=6.5)
    handles = [Patch(color=SEMANTIC_COLORS[i], label=name) for i, name in enumerate(CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=6.5, frameon=False)
    fig.suptitle(f"Toy world, scene index {index}, {size}x{size}: depth near=red far=blue (invalid black), "
                 "normal (n+1)/2, keypoints red=visible yellow=occluded", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.98))
    with atomic_path(path) as tmp:  # a temporary file renamed over ``path``, with the user's usual mode
        fig.savefig(tmp, format="png")
    return path
