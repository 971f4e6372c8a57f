"""Pretrained-weight loading from local files (never downloads) and backbone freezing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cadx.models import count_parameters, create_model, freeze_backbone, load_pretrained_weights
from cadx.models.resnet import BasicBlock, ResNet
from cadx.models.vgg import VGG


@pytest.fixture(scope="module")
def imagenet_resnet18() -> dict[str, torch.Tensor]:
    """Stand-in for torchvision's resnet18 ImageNet weights: same names, 3 channels, 1000 classes."""
    torch.manual_seed(0)
    return create_model("resnet18", in_channels=3, num_classes=1000).state_dict()


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_rgb_to_grey_and_new_head(tmp_path: Path, imagenet_resnet18: dict[str, torch.Tensor]) -> None:
    path = _save(imagenet_resnet18, tmp_path / "r18.pth")
    model = create_model("resnet18", in_channels=1, num_classes=2)
    report = load_pretrained_weights(model, path)
    expected = imagenet_resnet18["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(model.conv1.weight, expected)
    assert report.adapted == ["conv1.weight"]
    assert model.fc.weight.shape == (2, 512)
    assert sorted(report.reinitialized) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.layer4[1].bn2.running_var, imagenet_resnet18["layer4.1.bn2.running_var"])


def test_grey_to_rgb_and_wrappers(tmp_path: Path) -> None:
    grey = create_model("resnet18", in_channels=1, num_classes=2).state_dict()
    wrapped = {"state_dict": {f"model._orig_mod.{k}": v for k, v in grey.items()}, "epoch": 3}
    wrapped["state_dict"]["criterion.weight"] = torch.ones(2)  # a LightningModule's own buffer
    model = create_model("resnet18", in_channels=3, num_classes=2)
    report = load_pretrained_weights(model, _save(wrapped, tmp_path / "ckpt.ckpt"))
    assert torch.allclose(model.conv1.weight, grey["conv1.weight"].repeat(1, 3, 1, 1) / 3)
    assert torch.equal(model.fc.weight, grey["fc.weight"])  # same shape: head is kept
    assert report.reinitialized == [] and "criterion.weight" in report.ignored


def test_module_prefix_and_timm_head(tmp_path: Path, imagenet_resnet18: dict[str, torch.Tensor]) -> None:
    renamed = {("module." + k.replace("fc.", "head.fc.")): v for k, v in imagenet_resnet18.items()}
    model = create_model("resnet18", in_channels=3, num_classes=1000)
    load_pretrained_weights(model, _save({"model": renamed}, tmp_path / "timm.pth"))
    assert torch.equal(model.fc.weight, imagenet_resnet18["fc.weight"])


def test_wrong_backbone_keys_raise(tmp_path: Path, imagenet_resnet18: dict[str, torch.Tensor]) -> None:
    bad = {k.replace("layer3.", "stage3."): v for k, v in imagenet_resnet18.items()}
    model = create_model("resnet18", in_channels=1, num_classes=2)
    with pytest.raises(ValueError) as err:
        load_pretrained_weights(model, _save(bad, tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "missing" in msg and "layer3.0.conv1.weight" in msg
    assert "unexpected" in msg and "stage3.0.conv1.weight" in msg
    report = load_pretrained_weights(model, tmp_path / "bad.pth", strict_backbone=False)
    assert "layer3.0.conv1.weight" in report.missing and "stage3.0.conv1.weight" in report.unexpected


def test_attention_modules_keep_their_init(tmp_path: Path, imagenet_resnet18: dict[str, torch.Tensor]) -> None:
    """ImageNet ResNet weights into the CBAM variant: new attention + AERNet-style head stay fresh."""
    model = ResNet(BasicBlock, (2, 2, 2, 2), in_channels=1, num_classes=2, attention="cbam", hidden=16)
    report = load_pretrained_weights(model, _save(imagenet_resnet18, tmp_path / "r18.pth"))
    assert any(k.startswith("attn4.channel.") for k in report.kept_init)
    assert {"fc.0.weight", "fc.3.weight"} <= set(report.reinitialized)
    assert torch.equal(model.layer1[0].conv1.weight, imagenet_resnet18["layer1.0.conv1.weight"])


def test_googlenet_aux_heads_are_optional(tmp_path: Path) -> None:
    source = create_model("googlenet", in_channels=3, num_classes=1000, aux_logits=True).state_dict()
    path = _save(source, tmp_path / "g.pth")
    report = load_pretrained_weights(create_model("googlenet", in_channels=1, num_classes=2), path)
    assert any(k.startswith("aux1.") for k in report.ignored)
    with_aux = create_model("googlenet", in_channels=3, num_classes=2, aux_logits=True)
    report = load_pretrained_weights(with_aux, path)
    assert "aux2.fc2.weight" in report.reinitialized and "aux2.fc1.weight" in report.loaded


def test_old_torchvision_densenet_keys(tmp_path: Path) -> None:
    source = create_model("densenet121", in_channels=3, num_classes=1000).state_dict()
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in source.items()}
    model = create_model("densenet121", in_channels=3, num_classes=1000)
    report = load_pretrained_weights(model, _save(old, tmp_path / "d.pth"))
    assert report.missing == [] and len(report.loaded) == len(source)
    key = "features.denseblock2.denselayer3.conv2.weight"
    assert torch.equal(model.state_dict()[key], source[key])


def test_freeze_backbone_leaves_only_classifier(imagenet_resnet18: dict[str, torch.Tensor]) -> None:
    for name in ("resnet18", "simple_cnn"):
        model = create_model(name, num_classes=2)
        trainable = freeze_backbone(model)
        cls = model.classifier_name
        assert trainable == count_parameters(model, trainable_only=True)
        assert trainable == count_parameters(dict(model.named_modules())[cls])
        for pname, p in model.named_parameters():
            assert p.requires_grad == pname.startswith(cls + ".")


def test_timm_vgg_conv_mlp_is_reshaped(tmp_path: Path) -> None:
    """timm stores VGG's first two FC layers as convs (pre_logits) and the last as head.fc."""
    torch.manual_seed(0)
    source = VGG([8, "M"], False, in_channels=3, num_classes=10, hidden=16).state_dict()
    timm = {k: v for k, v in source.items() if k.startswith("features.")}
    timm["pre_logits.fc1.weight"] = source["classifier.0.weight"].reshape(16, 8, 7, 7)
    timm["pre_logits.fc1.bias"] = source["classifier.0.bias"]
    timm["pre_logits.fc2.weight"] = source["classifier.3.weight"][:, :, None, None]
    timm["pre_logits.fc2.bias"] = source["classifier.3.bias"]
    timm["head.fc.weight"], timm["head.fc.bias"] = source["classifier.6.weight"], source["classifier.6.bias"]
    model = VGG([8, "M"], False, in_channels=1, num_classes=2, hidden=16)
    report = load_pretrained_weights(model, _save(timm, tmp_path / "timm_vgg.pth"))
    assert torch.equal(model.classifier[0].weight, source["classifier.0.weight"])
    assert torch.equal(model.classifier[3].weight, source["classifier.3.weight"])
    assert model.classifier[6].weight.shape == (2, 16) and "classifier.6.weight" in report.reinitialized
