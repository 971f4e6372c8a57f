"""Occlusion sensitivity (Zeiler & Fergus 2014): how much the explained class's log-probability drops when a patch
of the input is greyed out. It assumes nothing about the head, so it is the reference the CAM methods are checked
against (``benchmarks/faithfulness/``).

Why not ``monai.visualize.OcclusionSensitivity``: it was no faster (resnet18 at 128 px, 1 CPU thread, about the same
patch grid: 1.64 s against 1.74 s here, one measurement), but it maps the raw outputs of every class, where cadx
explains one class's log-probability under its own single-logit and multi-label conventions, and it raises torch
indexing deprecation warnings with torch 2.13. The maths is the same: each pixel gets the mean score drop of the
patches covering it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def occlusion_patch(side: int) -> tuple[int, int]:
    """Patch and stride for a ``side``-px model input: a patch of 1/6 of the side (8 px at 48, 21 at 128, about the
    size of a small lesion), moved by half a patch."""
    patch = max(4, round(side / 6))
    return patch, max(2, patch // 2)


def _starts(side: int, patch: int, stride: int) -> list[int]:
    """Patch origins covering the whole side; the last patch is aligned to the border."""
    starts = list(range(0, max(side - patch, 0) + 1, stride))
    if starts[-1] + patch < side:
        starts.append(side - patch)
    return starts


def occlusion_map(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, patch: int | None = None,
                  stride: int | None = None, batch_size: int = 64) -> torch.Tensor:
    """(1, C, H, W) normalised input -> (1, 1, H, W) map of score drops (positive = evidence for the class).

    ``score`` maps a batch to one number per image (e.g. log p of the explained class). Occluded pixels take the
    image's own per-channel mean, a grey that carries no structure.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected a (1, C, H, W) input, got {tuple(x.shape)}")
    height, width = x.shape[2:]
    default_patch, default_stride = occlusion_patch(min(height, width))
    patch = min(patch or default_patch, height, width)
    stride = stride or default_stride
    fill = x.mean(dim=(2, 3), keepdim=True)
    origins = [(y, x0) for y in _starts(height, patch, stride) for x0 in _starts(width, patch, stride)]
    with torch.no_grad():
        reference = score(x).reshape(-1)[0]
        drops = torch.zeros(len(origins), dtype=torch.float32, device=x.device)
        for begin in range(0, len(origins), batch_size):
            chunk = origins[begin:begin + batch_size]
            batch = x.repeat(len(chunk), 1, 1, 1)
            for i, (y, x0) in enumerate(chunk):
                batch[i, :, y:y + patch, x0:x0 + patch] = fill[0]
            drops[begin:begin + len(chunk)] = reference - score(batch).reshape(-1).float()
        total = torch.zeros((height, width), dtype=torch.float32, device=x.device)
        count = torch.zeros_like(total)
        for (y, x0), drop in zip(origins, drops, strict=True):
            total[y:y + patch, x0:x0 + patch] += drop
            count[y:y + patch, x0:x0 + patch] += 1
    return (total / count.clamp_min(1)).clamp_min(0)[None, None]
