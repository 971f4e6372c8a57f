"""Grad-CAM / Grad-CAM++ / Layer-CAM / occlusion: they point at the evidence (the registry's default on a
presence-vs-absence task with a decoy), fit every architecture, handle every head, leak nothing."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cadx.data.transforms import Preprocessing, prepare_image, to_model_input
from cadx.engine.explain import Explainer, explain, gradcam_map
from cadx.engine.inference import Predictor
from cadx.engine.occlusion import occlusion_map
from cadx.models import create_model, list_models
from tests.conftest import memory_predictor

SIZE, BLOB = 32, 6  # a smaller version of benchmarks/pointing_game.py (64 px, 10 px blobs)


def blob_image(label: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """Textured background; class 1 = a bright blob, class 0 = a dark one; returns the image and blob corner.

    The background level is random and a few single pixels are pinned to 0 and 255, so the per-image min-max
    stretch of ``prepare_image`` is a no-op: otherwise it shifts the whole background by class and the network
    (rightly, Grad-CAM shows it) learns that global shortcut instead of the blob.
    """
    img = rng.normal(rng.uniform(96, 160), 18, (SIZE, SIZE))
    y, x = (int(v) for v in rng.integers(0, SIZE - BLOB + 1, 2))
    img[y:y + BLOB, x:x + BLOB] = 230 if label else 25
    flat = img.reshape(-1)
    flat[rng.choice(flat.size, 6, replace=False)] = [0, 0, 0, 255, 255, 255]
    return img.clip(0, 255).astype(np.uint8), (y, x)


def make_predictor(model: torch.nn.Module, *, classes=("dark", "bright"), size: int = SIZE, channels: int = 1,
                   task: str = "multiclass", threshold: float = 0.5, outputs: int | None = None) -> Predictor:
    return memory_predictor(model, classes, size=size, channels=channels, task=task, outputs=outputs,
                            decision_threshold=threshold)


def hit(heatmap: np.ndarray, corner: tuple[int, int], tol: int) -> bool:
    py, px = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    y, x = corner
    return y - tol <= py < y + BLOB + tol and x - tol <= px < x + BLOB + tol


@pytest.fixture(scope="module")
def trained() -> Predictor:
    """simple_cnn trained a few seconds with a plain loop on the blob task (the engine path is the benchmark's)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pre = Preprocessing(SIZE, 1)
    labels = np.arange(384) % 2
    x = torch.from_numpy(np.stack([prepare_image(blob_image(int(y), rng)[0], pre) for y in labels]))
    y = torch.from_numpy(labels)
    model = create_model("simple_cnn", in_channels=1, num_classes=2, hidden=64, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(4):
        for i in torch.randperm(len(y)).split(32):
            loss = torch.nn.functional.cross_entropy(model(to_model_input(x[i], pre)), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return make_predictor(model)


def pointing_hits(explainer: Explainer, n: int = 40, seed: int = 1) -> tuple[float, float, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    hits, correct, maps = 0, 0, []
    for i in range(n):
        img, corner = blob_image(i % 2, rng)
        heat, index, _, _, _ = explainer.heatmap_and_scores(img)
        hits += hit(heat, corner, tol=4)  # half a CAM cell: simple_cnn's map is 4x4 at 32 px (8 px cells)
        correct += index == i % 2
        maps.append(heat)
    return hits / n, correct / n, maps


def test_gradcam_points_at_the_blob(trained: Predictor) -> None:
    rate, accuracy, _ = pointing_hits(Explainer(trained))
    assert accuracy >= 0.9, accuracy
    assert rate >= 0.7, f"Grad-CAM hit the blob in only {rate:.0%} of images"  # chance: (6+2*4)^2/32^2 = 19 %


def test_gradcam_plus_plus_differs_but_also_localises(trained: Predictor) -> None:
    rate_pp, _, maps_pp = pointing_hits(Explainer(trained, method="gradcam++"))
    _, _, maps = pointing_hits(Explainer(trained))
    assert rate_pp >= 0.7, rate_pp
    assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(maps, maps_pp, strict=True))


def test_heatmap_has_the_original_size_and_outputs_are_pngs(trained: Predictor) -> None:
    img = np.random.default_rng(3).integers(0, 255, (50, 70), dtype=np.uint8)
    result = explain(trained, img, feature_maps=4)
    assert result.heatmap.shape == (50, 70) and result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    for png in (result.overlay_png, result.feature_maps_png):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(png)).format == "PNG"
    assert result.probabilities.shape == (2,) and abs(float(result.probabilities.sum()) - 1) < 1e-5
    assert result.seconds > 0
    assert explain(trained, img, feature_maps=0).feature_maps_png is None
    colour = np.dstack([img, img, np.zeros_like(img)])
    assert explain(trained, colour, feature_maps=0).heatmap.shape == (50, 70)


def test_target_by_name_index_and_unknown_class(trained: Predictor) -> None:
    img, _ = blob_image(1, np.random.default_rng(5))
    explainer = Explainer(trained)
    dark, bright = explainer.explain(img, target="dark", feature_maps=0), explainer.explain(img, target=1)
    assert (dark.target_class, dark.target_index, bright.target_class) == ("dark", 0, "bright")
    assert not np.allclose(dark.heatmap, bright.heatmap)
    with pytest.raises(ValueError, match="dark, bright"):
        explainer.explain(img, target="cat")


def test_bad_layer_lists_valid_names(trained: Predictor) -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'nope'.*features\.block3"):
        Explainer(trained, layer="nope")
    explainer = Explainer(trained, layer="classifier")  # exists, but is not a feature map
    with pytest.raises(ValueError, match="feature map"):
        explainer.heatmap_and_scores(np.zeros((8, 8), np.uint8))
    assert _hook_count(trained.model) == 0
    override = Explainer(trained, layer="features.block2")
    assert override.explain(blob_image(1, np.random.default_rng(0))[0], feature_maps=0).heatmap.max() == 1.0


@pytest.mark.parametrize("name", [info.name for info in list_models()])
def test_every_architecture_gives_a_finite_nonconstant_cam(name: str) -> None:
    """At the default layer, both methods. Random weights may hold no positive evidence for one class (an all-zero
    map after the ReLU is then the right answer), so non-constancy is required of at least one class per method."""
    torch.manual_seed(0)
    predictor = make_predictor(create_model(name, in_channels=1, num_classes=2), size=64)
    img, _ = blob_image(1, np.random.default_rng(0))
    for method in ("gradcam", "gradcam++", "layercam"):
        explainer = Explainer(predictor, method=method)
        ranges = []
        for target in (0, 1):
            heat, _, _, stages, _ = explainer.heatmap_and_scores(img, target, with_stages=True)
            assert np.isfinite(heat).all() and heat.shape == img.shape
            assert heat.min() >= 0.0 and heat.max() <= 1.0
            ranges.append(float(heat.max() - heat.min()))
        assert max(ranges) > 1e-2, f"{name}/{method}: constant CAM for both classes"
        assert list(stages) == predictor.model.stage_names
    assert _hook_count(predictor.model) == 0


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_no_hooks_graph_or_grads_left_after_many_calls(trained: Predictor) -> None:
    explainer = Explainer(trained)
    img, _ = blob_image(0, np.random.default_rng(0))
    explainer.explain(img)

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    gc.collect()
    objects, tensors = len(gc.get_objects()), live_tensors()
    for i in range(200):
        explainer.heatmap_and_scores(img, with_stages=i % 2 == 0)
    gc.collect()
    assert live_tensors() <= tensors + 5
    assert len(gc.get_objects()) < objects + 2000  # flat: 200 calls, no per-call survivors
    assert _hook_count(trained.model) == 0
    assert all(p.grad is None for p in trained.model.parameters())
    assert not trained.model.training


def test_binary_threshold_multilabel_and_single_logit_targets() -> None:
    torch.manual_seed(0)
    img, _ = blob_image(1, np.random.default_rng(0))
    model = create_model("simple_cnn", in_channels=1, num_classes=2)
    strict = make_predictor(model, threshold=0.999)  # the positive class needs p >= 0.999
    result = explain(strict, img, feature_maps=0)  # the wrapper explains the predictor's decision
    assert (result.target_class,) == strict.decide(result.probabilities).findings == ("dark",)
    assert result.decision == strict.decide(result.probabilities)
    plain = Explainer(strict).explain(img, feature_maps=0)  # no decision given: the most probable class
    assert plain.target_index == int(np.argmax(plain.probabilities)) and plain.decision is None
    multi = make_predictor(create_model("simple_cnn", in_channels=1, num_classes=3), classes=("a", "b", "c"),
                           task="multilabel")
    result = explain(multi, img, feature_maps=0)
    assert result.target_index == result.decision.target_index
    assert not np.isclose(result.probabilities.sum(), 1.0)  # sigmoids, not a softmax
    single = make_predictor(create_model("simple_cnn", in_channels=1, num_classes=1), outputs=1)
    explainer = Explainer(single)
    default, neg, pos = (explainer.explain(img, target=t, feature_maps=0) for t in (None, "dark", "bright"))
    p_pos = float(pos.probabilities[1])
    assert default.target_class == ("bright" if p_pos >= 0.5 else "dark")
    assert np.isclose(neg.probabilities.sum(), 1.0)
    assert not np.allclose(neg.heatmap, pos.heatmap)  # the negative class is the sign-flipped logit


def test_frozen_weights_and_inference_mode_callers(trained: Predictor) -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", in_channels=1, num_classes=2)
    for p in model.parameters():
        p.requires_grad_(False)
    predictor = make_predictor(model, size=64)
    img, _ = blob_image(1, np.random.default_rng(0))
    with torch.inference_mode():
        result = explain(predictor, img, feature_maps=0)
    assert result.heatmap.max() == 1.0 and torch.is_grad_enabled()


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="gradcam, gradcam\\+\\+, layercam, occlusion"):
        Explainer(make_predictor(create_model("small_cnn", in_channels=1, num_classes=2)), method="lime")


def test_explanation_probabilities_equal_prediction_and_the_decision_picks_target(trained: Predictor) -> None:
    """The server takes its probabilities from the explanation: they must be cadx predict's; the explainer knows no
    threshold, the caller's decision chooses what it explains."""
    img, _ = blob_image(1, np.random.default_rng(11))
    explainer = Explainer(trained)
    expected = trained.predict_batch(trained.prepare(img)[None])[0]
    e = explainer.explain(img, feature_maps=0, decide=lambda p: trained.decide(p, 0.0))
    assert np.allclose(e.probabilities, expected, atol=1e-6)
    positive = trained.meta.positive_index
    assert e.target_index == positive and e.decision.threshold == 0.0  # threshold 0: always the positive class
    strict = explainer.explain(img, feature_maps=0, decide=lambda p: trained.decide(p, 1.0))
    assert strict.target_index == (positive if e.probabilities[positive] >= 1.0 else 1 - positive)
    assert explainer.explain(img, feature_maps=0, target="dark").decision is None


# -- presence vs absence: the registry's default must point at the lesion, as often as occlusion does -------------
LESION_SIDE = 40


def lesion_image(label: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float], float]:
    """Texture; class 1 = one bright disc at a random place, class 0 = a dimmer ring (a decoy) instead."""
    side = LESION_SIDE
    img = rng.uniform(90, 130) + rng.normal(0, 10, (side, side))
    r = float(rng.uniform(3.0, 4.5))
    cy, cx = rng.uniform(r + 1, side - r - 1, 2)
    yy, xx = np.mgrid[:side, :side]
    d = np.hypot(yy - cy, xx - cx)
    img += rng.uniform(70, 100) * (d <= r) if label else 40.0 * ((d >= 0.6 * r) & (d <= r))
    img.reshape(-1)[rng.choice(img.size, 4, replace=False)] = [0, 0, 255, 255]  # no min-max stretch
    return img.clip(0, 255).astype(np.uint8), (float(cy), float(cx)), r


@pytest.fixture(scope="module")
def presence() -> Predictor:
    """simple_cnn (registered name, so its ``explain_default`` applies), trained a few seconds, seeded."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pre = Preprocessing(LESION_SIDE, 1)
    labels = np.arange(320) % 2
    x = torch.from_numpy(np.stack([prepare_image(lesion_image(int(y), rng)[0], pre) for y in labels]))
    y = torch.from_numpy(labels)
    model = create_model("simple_cnn", in_channels=1, num_classes=2, hidden=64, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(5):
        for i in torch.randperm(len(y)).split(32):
            loss = torch.nn.functional.cross_entropy(model(to_model_input(x[i], pre)), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return memory_predictor(model, ("clear", "lesion"), size=LESION_SIDE, name="simple_cnn")


def lesion_hit_rate(explainer: Explainer, n: int = 30) -> float:
    """Share of lesion images whose heatmap peak lies inside the disc (no tolerance)."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(n):
        img, (cy, cx), r = lesion_image(1, rng)
        heat = explainer.heatmap_and_scores(img, target="lesion").heatmap
        py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hits += bool(heat.max() > 0 and np.hypot(py - cy, px - cx) <= r)
    return hits / n


def test_default_explanation_points_at_the_lesion_as_often_as_occlusion(presence: Predictor) -> None:
    default = Explainer(presence)
    assert (default.method, default.layer) == ("layercam", "features.block2")  # the registry's explain_default
    rate, reference = lesion_hit_rate(default), lesion_hit_rate(Explainer(presence, method="occlusion"))
    assert rate >= 0.9, f"default hit the lesion in {rate:.0%}"
    assert rate >= reference - 0.05, (rate, reference)


def test_default_layer_applies_to_a_named_method_and_occlusion_takes_none(presence: Predictor) -> None:
    assert Explainer(presence, method="gradcam").layer == "features.block2"
    assert Explainer(presence, method="gradcam", layer="features.block3").layer == "features.block3"
    occlusion = Explainer(presence, method="occlusion")
    assert occlusion.layer is None and occlusion.describe().startswith("occlusion, 7 px patches")
    with pytest.raises(ValueError, match="takes no layer"):
        Explainer(presence, method="occlusion", layer="features.block2")
    img, _, _ = lesion_image(1, np.random.default_rng(3))
    result = occlusion.explain(img, feature_maps=2)  # feature maps still come from the stages
    assert result.heatmap.shape == img.shape and result.feature_maps_png[:4] == b"\x89PNG"
    assert _hook_count(presence.model) == 0


def test_layercam_is_positive_gradient_times_activation_per_position() -> None:
    activation = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]], [[2.0, 0.0], [1.0, 1.0]]]])  # (1, 2, 2, 2)
    gradient = torch.tensor([[[[1.0, -1.0], [2.0, 0.5]], [[-3.0, 1.0], [1.0, 2.0]]]])
    cam = gradcam_map(activation, gradient, "layercam")
    expected = torch.tensor([[[[1.0, 0.0], [1.0, 3.5]]]])  # sum_c relu(g) * A; no channel averaging
    assert cam.shape == (1, 1, 2, 2) and torch.allclose(cam, expected)
    assert (gradcam_map(torch.rand(1, 4, 5, 5), torch.randn(1, 4, 5, 5), "layercam") >= 0).all()
    # one channel, evidence at one position with a gradient there only: Grad-CAM's mean weight dilutes it,
    # Layer-CAM keeps exactly that position
    act, grad = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    grad[0, 0, 2, 1] = 1.0
    layer = gradcam_map(act, grad, "layercam")[0, 0]
    assert layer[2, 1] == 1.0 and layer.sum() == 1.0


def test_occlusion_map_marks_the_pixels_the_score_reads() -> None:
    x = torch.rand(1, 1, 24, 24)
    x[0, 0, 4:8, 14:18] = 3.0

    def score(batch: torch.Tensor) -> torch.Tensor:  # reads one 4 x 4 region only
        return batch[:, 0, 4:8, 14:18].mean(dim=(1, 2))

    heat = occlusion_map(score, x, patch=4, stride=2, batch_size=7)  # several batches
    assert heat.shape == (1, 1, 24, 24) and (heat >= 0).all()
    py, px = np.unravel_index(int(heat.argmax()), (24, 24))
    assert 4 <= py < 8 and 14 <= px < 18
    assert float(heat[0, 0, 16:, :8].max()) == 0.0  # far from the region nothing changes the score
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        occlusion_map(score, x[0])
