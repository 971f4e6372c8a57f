"""CBAM building blocks: shapes and ranges that the attention maths guarantees."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadx.models.layers.cbam import CBAM, ChannelAttention, SpatialAttention, make_attention


def test_cbam_keeps_shape() -> None:
    x = torch.randn(2, 32, 9, 7)
    for mode in ("cbam", "channel", "spatial"):
        assert CBAM(32, mode=mode)(x).shape == x.shape


def test_channel_weights_in_unit_interval() -> None:
    att = ChannelAttention(32, reduction=8)
    w = att.attention_weights(torch.randn(3, 32, 8, 8))  # large inputs saturate to 1.0 in float32
    assert w.shape == (3, 32, 1, 1)
    assert ((w > 0) & (w < 1)).all()


def test_spatial_map_shape() -> None:
    att = SpatialAttention(kernel_size=7)
    m = att.attention_map(torch.randn(2, 16, 12, 10))
    assert m.shape == (2, 1, 12, 10)
    assert ((m >= 0) & (m <= 1)).all()
    with pytest.raises(ValueError):
        SpatialAttention(kernel_size=4)


def test_cbam_order_and_modes() -> None:
    full = CBAM(16)
    assert isinstance(full.channel, ChannelAttention) and isinstance(full.spatial, SpatialAttention)
    assert isinstance(CBAM(16, mode="channel").spatial, nn.Identity)
    assert isinstance(CBAM(16, mode="spatial").channel, nn.Identity)
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        assert torch.allclose(full(x), full.spatial(full.channel(x)))


def test_make_attention() -> None:
    assert isinstance(make_attention("none", 64), nn.Identity)
    assert make_attention("cbam", 64).channels == 64
    assert make_attention("channel", 64).mode == "channel"
    with pytest.raises(ValueError, match="cbam"):
        make_attention("se", 64)
