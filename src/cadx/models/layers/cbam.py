"""Convolutional Block Attention Module (Woo et al., ECCV 2018), used by AERNet.

Channel attention answers *what* is informative, spatial attention *where*; CBAM applies them in
that order. Kept as standalone modules so any backbone can take attention as a keyword.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_KINDS = ("none", "channel", "spatial", "cbam")


class ChannelAttention(nn.Module):
    """Re-weights channels with a shared MLP over global average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channels = channels
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel weights in (0, 1), shape (B, C, 1, 1)."""
        avg = self.mlp(torch.mean(x, dim=(2, 3), keepdim=True))
        mx = self.mlp(torch.amax(x, dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + mx)[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_weights(x)


class SpatialAttention(nn.Module):
    """Re-weights positions with a k x k conv over the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        # conv without bias + BN, as in the authors' reference implementation
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial weights in (0, 1), shape (B, 1, H, W)."""
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(desc)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)


class CBAM(nn.Module):
    """Channel then spatial attention; ``mode`` keeps one of the two for ablations."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, mode: str = "cbam") -> None:
        super().__init__()
        if mode not in ("cbam", "channel", "spatial"):
            raise ValueError(f"CBAM mode must be 'cbam', 'channel' or 'spatial', got {mode!r}")
        self.channels = channels
        self.mode = mode
        self.channel: nn.Module = (
            ChannelAttention(channels, reduction) if mode in ("cbam", "channel") else nn.Identity()
        )
        self.spatial: nn.Module = SpatialAttention(kernel_size) if mode in ("cbam", "spatial") else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


def make_attention(kind: str, channels: int, reduction: int = 16, kernel_size: int = 7) -> nn.Module:
    """Attention module by name; ``"none"`` gives an Identity so callers need no branching."""
    if kind == "none":
        return nn.Identity()
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention {kind!r}; choose one of {', '.join(ATTENTION_KINDS)}")
    return CBAM(channels, reduction=reduction, kernel_size=kernel_size, mode=kind)
