"""AERNet ablations: attention kind and placement are keywords of the one ResNet implementation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadx.models import count_parameters, create_model
from cadx.models.layers.cbam import CBAM
from cadx.models.resnet import Bottleneck


def test_no_attention_equals_resnet50_backbone() -> None:
    with torch.device("meta"):
        plain = create_model("resnet50", 3, 2)
        aer = create_model("aernet", 3, 2, attention="none")
    backbone = count_parameters(plain) - count_parameters(plain.fc)
    assert count_parameters(aer) == backbone + count_parameters(aer.fc)
    assert count_parameters(aer.fc) == 2048 * 512 + 512 + 512 * 2 + 2
    assert not any(isinstance(m, CBAM) for m in aer.modules())


def test_head_layout_and_options() -> None:
    with torch.device("meta"):
        model = create_model("aernet", 1, 3)
        custom = create_model("aernet", 1, 3, hidden=128, dropout=0.3)
    assert isinstance(model.fc, nn.Sequential)
    assert (model.fc[0].in_features, model.fc[0].out_features) == (2048, 512)
    assert isinstance(model.fc[1], nn.ReLU) and model.fc[2].p == 0.5
    assert (model.fc[3].in_features, model.fc[3].out_features) == (512, 3)
    assert custom.fc[0].out_features == 128 and custom.fc[2].p == 0.3


def test_stage_placement_widths_and_cam_layer() -> None:
    with torch.device("meta"):
        model = create_model("aernet", 3, 2)
    cbams = [getattr(model, f"attn{i}") for i in range(1, 5)]
    assert all(isinstance(c, CBAM) and c.mode == "cbam" for c in cbams)
    assert [c.channels for c in cbams] == [256, 512, 1024, 2048]
    assert sum(isinstance(m, CBAM) for m in model.modules()) == 4
    assert model.cam_layer == "attn4"
    assert model.stage_names == ["attn1", "attn2", "attn3", "attn4"]


def test_block_placement_inside_every_bottleneck() -> None:
    with torch.device("meta"):
        model = create_model("aernet", 3, 2, placement="block")
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    assert all(isinstance(b.attn, CBAM) and b.attn.channels == b.bn3.num_features for b in blocks)
    assert all(isinstance(getattr(model, f"attn{i}"), nn.Identity) for i in range(1, 5))
    assert model.cam_layer == "layer4"


@pytest.mark.parametrize("placement", ["stage", "block"])
@pytest.mark.parametrize("attention", ["none", "channel", "spatial", "cbam"])
def test_ablations_build_and_run(attention: str, placement: str) -> None:
    model = create_model("aernet", 1, 2, attention=attention, placement=placement).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)


def test_invalid_ablation_values() -> None:
    with pytest.raises(ValueError, match="attention"):
        create_model("aernet", attention="se")
    with pytest.raises(ValueError, match="placement"):
        create_model("aernet", placement="everywhere")
