"""Building blocks shared by several architectures."""

from cadx.models.layers.cbam import CBAM, ChannelAttention, SpatialAttention, make_attention

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention", "make_attention"]
