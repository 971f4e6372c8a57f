"""Every registered model: shapes, module-name attributes, parameter counts, registry errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadx.models import count_parameters, create_model, get_model_info, list_models

ALL = [info.name for info in list_models()]
HEAVY = {"vgg16", "vgg16_bn", "alexnet"}  # ~0.1 B params: no backward test
# (1, 2) and (3, 4) cover both channel counts and both class counts with half the builds
CASES = [(m, c, n) for m in ALL for c, n in ((1, 2), (3, 4))]


def _input_size(name: str) -> int:
    return 28 if name == "small_cnn" else 64


def test_registry_has_every_family() -> None:
    expected = {
        "resnet18",
        "resnet34",
        "resnet50",
        "aernet",
        "densenet121",
        "vgg16",
        "vgg16_bn",
        "alexnet",
        "googlenet",
        "simple_cnn",
        "small_cnn",
    }
    assert expected <= set(ALL)


@pytest.mark.parametrize(("name", "in_channels", "num_classes"), CASES)
def test_forward_shape_and_named_modules(name: str, in_channels: int, num_classes: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=in_channels, num_classes=num_classes).eval()
    modules = dict(model.named_modules())
    for attr in (model.cam_layer, model.classifier_name, *model.stage_names):
        assert attr in modules, f"{name}: {attr!r} does not resolve"
    assert model.cam_layer == model.stage_names[-1]  # Grad-CAM looks at the deepest stage
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        modules[n].register_forward_hook(lambda _m, _i, o, n=n: outputs.__setitem__(n, o))
        for n in {*model.stage_names, model.cam_layer}
    ]
    size = _input_size(name)
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, size, size))
    for h in hooks:
        h.remove()
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    assert all(outputs[n].ndim == 4 for n in outputs), f"{name}: a stage output is not 4-D"
    # stages go shallow -> deep: spatial size never grows
    sizes = [outputs[n].shape[-1] for n in model.stage_names]
    assert sizes == sorted(sizes, reverse=True)


EXPECTED_PARAMS_M = {
    "alexnet": 61.1,
    "vgg16": 138.4,
    "googlenet": 6.6,
    "resnet18": 11.7,
    "resnet50": 25.6,
    "densenet121": 8.0,
    "resnet34": 21.8,
    "vgg16_bn": 138.4,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_M))
def test_parameter_count_imagenet(name: str) -> None:
    with torch.device("meta"):  # count without allocating or running anything
        model = create_model(name, in_channels=3, num_classes=1000)
    count = count_parameters(model) / 1e6
    assert count == pytest.approx(EXPECTED_PARAMS_M[name], rel=0.02)


def test_small_cnn_matches_keras_count() -> None:
    # Keras MNIST example: 320 + 18,496 + 36,928 + 36,928 + 650
    assert count_parameters(create_model("small_cnn", 1, 10)) == 93_322


def test_googlenet_aux_logits_only_in_training() -> None:
    model = create_model("googlenet", 1, 3, aux_logits=True)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        out = model.train()(x)
        assert isinstance(out, tuple) and len(out) == 3
        assert all(o.shape == (2, 3) for o in out)
        assert model.eval()(x).shape == (2, 3)
        assert create_model("googlenet", 1, 3).train()(x).shape == (2, 3)


def test_default_in_channels_and_info() -> None:
    info = get_model_info("simple_cnn")
    assert (info.default_in_channels, info.default_input_size) == (1, 128)
    assert get_model_info("small_cnn").default_input_size == 28
    assert get_model_info("resnet50").default_in_channels == 3
    assert get_model_info("aernet").options["attention"] == "cbam"
    first_conv = next(m for m in create_model("simple_cnn").modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet50") as err:
        create_model("resnet51")
    assert "resnet51" in str(err.value)
    with pytest.raises(ValueError, match="densenet121"):
        get_model_info("nope")


def test_unknown_option_is_named() -> None:
    with pytest.raises(TypeError, match="attenshun"):
        create_model("aernet", attenshun="cbam")
    with pytest.raises(TypeError, match="attention"):
        create_model("resnet50", attention="cbam")  # attention belongs to aernet only


@pytest.mark.parametrize("name", [m for m in ALL if m not in HEAVY])
def test_cam_layer_supports_gradcam_hooks(name: str) -> None:
    """Forward + full backward hooks on cam_layer (what Grad-CAM does) must work and give grads."""
    model = create_model(name, in_channels=1, num_classes=2).eval()
    layer = dict(model.named_modules())[model.cam_layer]
    seen: dict[str, torch.Tensor] = {}
    layer.register_forward_hook(lambda _m, _i, o: seen.__setitem__("act", o))
    layer.register_full_backward_hook(lambda _m, _gi, go: seen.__setitem__("grad", go[0]))
    size = 28 if name == "small_cnn" else 32
    model(torch.randn(1, 1, size, size))[0, 1].backward()
    assert seen["act"].shape == seen["grad"].shape and seen["grad"].abs().sum() > 0
