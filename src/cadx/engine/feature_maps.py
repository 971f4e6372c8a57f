"""Pictures for explanations: the Grad-CAM overlay and the per-stage feature-map tiles, as PNG bytes.

Figures use matplotlib's object API with an Agg canvas (no pyplot global state, so a web server may render from
several threads) and are encoded by Pillow from one ``canvas.draw()``: ``savefig`` draws the figure a second time
and costs ~3x more, which matters when every web prediction is explained.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

DISPLAY_MAX = 512  # longest side of the image inside the overlay figure; the .npy heatmap keeps full size
TILE = 64  # pixels per feature-map tile in the mosaic
HEATMAP_CMAP = "jet"
HEATMAP_ALPHA = 0.45


def figure_png(fig: Figure) -> bytes:
    """Draw once and encode with Pillow (fast zlib level; these are previews, not archives)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).convert("L"))
    return image


def _display_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, DISPLAY_MAX / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def render_overlay(image: np.ndarray, heatmap: np.ndarray, title: str, label: str = "Grad-CAM") -> bytes:
    """Grey image, heatmap on top with alpha, colour bar and title; big images are shown downscaled.

    Axes are placed by hand: ``tight_layout`` would draw the whole figure once more just to measure it.
    """
    grey = _grey(image)
    h, w = _display_size(*grey.shape)
    if (h, w) != grey.shape:
        grey = np.asarray(Image.fromarray(grey).resize((w, h), Image.BILINEAR))
        heatmap = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    box_h = 4.6
    box_w = box_h * min(max(w / h, 0.4), 2.5)
    margin, top, bar_gap, bar_w, bar_labels = 0.1, 0.8, 0.15, 0.18, 0.75
    fig_w, fig_h = margin + box_w + bar_gap + bar_w + bar_labels, margin + box_h + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((margin / fig_w, margin / fig_h, box_w / fig_w, box_h / fig_h))
    ax.imshow(grey, cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
    ax.imshow(heatmap, cmap=HEATMAP_CMAP, alpha=HEATMAP_ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / fig_h, va="top")
    cax = fig.add_axes(((margin + box_w + bar_gap) / fig_w, margin / fig_h, bar_w / fig_w, box_h / fig_h))
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), HEATMAP_CMAP), cax=cax)
    bar.set_label(f"{label} (relative)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return figure_png(fig)


def top_channels(activation: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` channels with the highest mean activation: (maps (k, h, w), channel indices (k,))."""
    maps = activation[0].float()
    k = min(n, maps.shape[0])
    order = maps.mean(dim=(1, 2)).topk(k).indices
    return maps[order], order


def feature_mosaic(stages: dict[str, torch.Tensor], n: int, tile: int = TILE) -> tuple[np.ndarray, list[str]]:
    """One row per stage, ``n`` tiles each (each channel min-max scaled on its own, NaN gaps between tiles).

    Tiles are enlarged with nearest-neighbour so a deep 7x7 map shows its true resolution instead of a blur.
    """
    pad = max(1, tile // 16)
    mosaic = np.full((len(stages) * (tile + pad) - pad, n * (tile + pad) - pad), np.nan, dtype=np.float32)
    labels = []
    for row, (name, act) in enumerate(stages.items()):
        maps, _ = top_channels(act, n)
        lo = maps.amin(dim=(1, 2), keepdim=True)
        hi = maps.amax(dim=(1, 2), keepdim=True)
        scaled = (maps - lo) / (hi - lo).clamp_min(1e-12)
        tiles = F.interpolate(scaled[:, None], size=(tile, tile), mode="nearest")[:, 0].cpu().numpy()
        y = row * (tile + pad)
        for col, t in enumerate(tiles):
            x = col * (tile + pad)
            mosaic[y:y + tile, x:x + tile] = t
        c, h, w = act.shape[1:]
        labels.append(f"{name}\n{c} ch, {h}x{w}")
    return mosaic, labels


def render_feature_maps(stages: dict[str, torch.Tensor], n: int, title: str | None = None) -> bytes:
    """Tiled PNG of the ``n`` most active channels of every stage, shallow (top) to deep (bottom)."""
    if not stages:
        raise ValueError("no stage activations to draw (the model's stage_names produced no 4-D outputs)")
    mosaic, labels = feature_mosaic(stages, n)
    rows = len(labels)
    left, top, cell = 1.5, 0.4, 0.85
    fig_w, fig_h = left + cell * n + 0.1, top + cell * rows + 0.1
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / fig_w, 0.1 / fig_h, cell * n / fig_w, cell * rows / fig_h))
    ax.imshow(mosaic, cmap=colormaps["viridis"].with_extremes(bad="white"), vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_xticks([])
    step = mosaic.shape[0] / rows
    ax.set_yticks([step * (i + 0.5) for i in range(rows)], labels, fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title or f"top {n} channels by mean activation, per stage (shallow to deep)", fontsize=9)
    return figure_png(fig)
