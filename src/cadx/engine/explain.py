"""Heatmaps for every cadx model: Grad-CAM, Grad-CAM++, Layer-CAM and occlusion, plus per-stage feature maps.

Which method fits which head (measured in ``benchmarks/faithfulness/``, summarised in ``docs/explanations.md``):
Grad-CAM and Grad-CAM++ weight each channel by one number, which assumes a global-average-pooled head; behind a
flatten + dense head (``simple_cnn``, AlexNet, VGG) the mean gradient can invert the map. Layer-CAM (Jiang et al.
2021) weights every position by its own positive gradient and needs no such assumption; occlusion assumes nothing.
Each architecture's default method and layer is the registry's ``explain_default``, chosen by that benchmark.

Why not ``monai.visualize.GradCAM`` (read in MONAI 1.6, ``class_activation_maps.py``):

* its ``ModelWithHooks`` registers forward/backward hooks in ``__init__`` and never keeps the handles, so they are
  never removed: one ``GradCAM`` per request adds two hooks per call to the shared model (a leak, and every later
  forward pass keeps references to its activations); one long-lived ``GradCAM`` keeps the last graph alive instead;
* it runs a full ``backward()`` that fills every parameter's ``.grad`` (a copy of the weights kept around) and
  back-propagates through the whole backbone, where Grad-CAM only needs d(score)/d(target-layer output);
* the score is ``logits[:, class_idx]``, so a single-logit binary head can only ever be explained towards the
  positive class (no sign flip for the negative one);
* its Grad-CAM++ denominator sums A * g**3 over positions instead of sum(A) * g**3 (the paper's eq. 19), multiplies
  by exp(score), which overflows for confident logits, and its default normaliser maps the maximum to 0.

So the ~40 lines of maths live here, in plain torch: the forward pass runs under ``no_grad`` until the target layer,
whose output is swapped for a fresh leaf that requires grad; ``torch.autograd.grad`` then differentiates the score
with respect to that leaf only. Cost: one forward plus a backward through the head alone; no parameter ``.grad`` is
written and frozen backbones work. Hooks are per call, removed in ``finally``, and ignore other threads, so a model
shared with a ``Predictor`` on a web server is never affected. MONAI's ``default_upsampler`` does the resize.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize.visualizer import default_upsampler
from torch import nn

from cadx.data.transforms import to_model_input
from cadx.engine.calibration import probabilities as calibrated_probabilities
from cadx.engine.decision import Decision
from cadx.engine.faithfulness import Curves, deletion_insertion
from cadx.engine.feature_maps import render_feature_maps, render_overlay
from cadx.engine.inference import Predictor
from cadx.engine.occlusion import occlusion_map, occlusion_patch
from cadx.models.registry import get_model_info

METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "Layer-CAM", "occlusion": "occlusion"}
GRADIENT_METHODS = ("gradcam", "gradcam++", "layercam")  # the methods that need a target layer
_ALIASES = {"grad-cam": "gradcam", "gradcampp": "gradcam++", "grad-cam++": "gradcam++", "gradcam_pp": "gradcam++",
            "layer-cam": "layercam"}


@dataclass
class Explanation:
    heatmap: np.ndarray  # float32 (H, W) in [0, 1], original image size
    overlay_png: bytes  # PNG bytes of the overlay figure
    feature_maps_png: bytes | None  # PNG bytes of the tiled feature maps (None if feature_maps=0)
    target_class: str
    target_index: int
    probabilities: np.ndarray  # (K,) class probabilities of this image
    seconds: float  # wall time of the explanation (forward + backward + rendering)
    decision: Decision | None = None  # the caller's decision, when it chose the target by one (``decide``)


class HeatmapPass(NamedTuple):
    """One forward + backward pass: the map at the image's size, the class it explains, the probabilities of the
    same forward pass, detached stage outputs (when asked for) and the caller's decision (when ``decide`` chose the
    target)."""

    heatmap: np.ndarray
    target_index: int
    probabilities: np.ndarray
    stages: dict
    decision: Decision | None


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def canonical_method(method: str) -> str:
    """``method`` lower-cased with its aliases resolved (ValueError listing the methods)."""
    key = method.lower().strip()
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return key


def default_explanation(architecture: str, model: nn.Module) -> tuple[str, str | None]:
    """The registry's measured ``explain_default`` (method, layer) for ``architecture``; Grad-CAM at the model's
    ``cam_layer`` for a network the registry does not know, or whose default layer it lacks."""
    fallback = ("gradcam", getattr(model, "cam_layer", None))
    try:
        method, layer = get_model_info(architecture).explain_default
    except ValueError:
        return fallback
    if method != "occlusion" and layer is None:
        layer = fallback[1]
    if layer is not None and layer not in dict(model.named_modules()):
        return fallback
    return method, layer


def resolve_layer(model: nn.Module, layer: str | None) -> str:
    """The model's default CAM layer, or ``layer`` if the model has it (ValueError listing the valid names)."""
    name = layer or getattr(model, "cam_layer", None)
    if name is None:
        raise ValueError(f"{type(model).__name__} has no default cam_layer; pass a layer name")
    valid = layer_names(model)
    if name not in valid:
        raise ValueError(f"unknown layer {name!r} for {type(model).__name__}; valid layer names: {', '.join(valid)}")
    return name


def gradcam_map(activation: torch.Tensor, gradient: torch.Tensor, method: str) -> torch.Tensor:
    """(1, C, h, w) activation and d(score)/d(activation) -> non-negative (1, 1, h, w) map.

    Layer-CAM sums relu(g) * A over channels, position by position, so a dense head's position-specific weights
    are kept. Grad-CAM weights channels by their mean gradient. Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19 with the
    exponential score; its exp factor is a per-image constant that cancels in the normalisation) weights the
    positive gradients by alpha = g^2 / (2 g^2 + sum_ab(A) g^3), which lets several small regions share the credit.
    """
    if method == "layercam":  # Jiang et al. 2021: each position weighted by its own positive gradient
        return F.relu((F.relu(gradient) * activation).sum(dim=1, keepdim=True))
    if method == "gradcam":
        weights = gradient.mean(dim=(2, 3), keepdim=True)
    else:
        g2 = gradient.pow(2)
        denominator = 2 * g2 + activation.sum(dim=(2, 3), keepdim=True) * g2 * gradient
        alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
        weights = (alpha * F.relu(gradient)).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(dim=1, keepdim=True))


def upsample_map(cam: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear to ``size`` (the original image), then divided by its maximum: 0 = no evidence, 1 = strongest."""
    heat = default_upsampler(size)(cam.float())[0, 0].clamp_min(0)
    peak = float(heat.max())
    if not np.isfinite(peak) or peak <= 0:
        return np.zeros(size, dtype=np.float32)
    return (heat / peak).cpu().numpy().astype(np.float32)


class Explainer:
    """Explains single images for one ``Predictor``; cheap to build, safe to reuse for thousands of images.

    It explains a class it is given (as MONAI's ``class_idx``) and knows nothing of thresholds: a caller that wants
    the finding explained passes ``decide`` (e.g. ``predictor.decide``), which turns the forward pass's
    probabilities into the :class:`Decision` whose ``target_index`` is explained; with neither, the most probable
    class is.
    """

    def __init__(self, predictor: Predictor, *, method: str | None = None, layer: str | None = None) -> None:
        """``method``/``layer`` None: the architecture's measured default (``explain_default`` in the registry); a
        method named without a layer gets the default layer. Occlusion needs no layer (``layer`` is None)."""
        self.predictor = predictor
        self.model = predictor.model
        default_method, default_layer = default_explanation(predictor.meta.model.name, self.model)
        self.method = canonical_method(method) if method is not None else default_method
        if self.method == "occlusion":
            if layer is not None:
                raise ValueError("occlusion perturbs the input and takes no layer")
            self.layer: str | None = None
        else:
            self.layer = resolve_layer(self.model, layer or default_layer)
        self.modules = dict(self.model.named_modules())
        self.stage_names = [s for s in getattr(self.model, "stage_names", []) if s in self.modules]
        self.classes = list(predictor.classes)
        self.meta = predictor.meta
        self._single_logit = self.meta.model.num_classes == 1  # confirmed per call

    def class_index(self, target: str | int) -> int:
        """Index of a class given by name or number (ValueError listing the classes)."""
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            if not 0 <= int(target) < len(self.classes):
                raise ValueError(f"class index {target} out of range 0..{len(self.classes) - 1}")
            return int(target)
        if target not in self.classes:
            raise ValueError(f"unknown class {target!r}; the model's classes are: {', '.join(self.classes)}")
        return self.classes.index(target)

    def _positive(self) -> int:
        """Positive class of a binary model (the checkpoint's, else the second name)."""
        pos = self.meta.positive_index
        return 1 if pos is None else int(pos)

    # -- scores --------------------------------------------------------------------------------------------------
    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        return self._probability_rows(logits[:1].detach())[0].cpu().numpy().astype(np.float32)

    def _probability_rows(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, outputs) logits -> (B, K) calibrated class probabilities: the predictor's one function."""
        return calibrated_probabilities(logits, self.meta)

    def class_probability(self, index: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Normalised input batch -> probability of class ``index`` per image (for occlusion and faithfulness)."""
        def probability(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self._probability_rows(self.model(x))[:, index]
        return probability

    def model_input(self, image: np.ndarray) -> torch.Tensor:
        """A decoded image as the (1, C, S, S) normalised tensor the network sees."""
        prepared = self.predictor.prepare(image)
        return to_model_input(torch.tensor(prepared)[None].to(self.predictor.device), self.predictor.pre)

    def _score(self, logits: torch.Tensor, index: int) -> torch.Tensor:
        if logits.shape[1] == 1:  # the logit speaks for the positive class; its negation for the negative one
            positive = self._positive() if len(self.classes) == 2 else 0
            return logits[0, 0] if index == positive else -logits[0, 0]
        return logits[0, index]

    # -- forward / backward --------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, with_stages: bool) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """Logits, the target layer's output as a grad-requiring leaf (None for occlusion), and detached stage
        outputs."""
        owner = threading.get_ident()
        captured: dict[str, torch.Tensor] = {}
        stages: dict[str, torch.Tensor] = {}

        def grab(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if threading.get_ident() != owner:
                return None
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"layer {self.layer!r} outputs {shape}; Grad-CAM needs a (B, C, H, W) feature map")
            torch.set_grad_enabled(True)  # from here on build the graph; the outer no_grad restores the mode
            captured["activation"] = output.detach().requires_grad_(True)
            return captured["activation"]

        def keep(name: str):
            def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
                if threading.get_ident() == owner and isinstance(output, torch.Tensor) and output.ndim == 4:
                    stages[name] = output.detach()
            return hook

        handles = [] if self.layer is None else [self.modules[self.layer].register_forward_hook(grab)]
        if with_stages:
            handles += [self.modules[s].register_forward_hook(keep(s)) for s in self.stage_names]
        try:
            with torch.no_grad():
                logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        if self.layer is not None and "activation" not in captured:
            raise ValueError(f"layer {self.layer!r} was not used in the forward pass")
        return logits, captured.get("activation"), stages

    def heatmap_and_scores(self, image: np.ndarray, target: str | int | None = None, *, with_stages: bool = False,
                           decide: Callable[[np.ndarray], Decision] | None = None) -> HeatmapPass:
        """Heatmap for ``target``, else for ``decide(probabilities).target_index``, else for the most probable
        class; no rendering. ``decide`` (when given) is applied whatever the target, so its decision comes back."""
        if image.ndim not in (2, 3):
            raise ValueError(f"expected a decoded (H, W) or (H, W, 3) image, got shape {image.shape}")
        was_training = self.model.training
        self.model.eval()  # dropout off, batch-norm statistics frozen
        try:
            with torch.inference_mode(False):  # callers may sit inside inference_mode (a web handler)
                x = self.model_input(image)
                logits, activation, stages = self._forward(x, with_stages)
                self._single_logit = logits.shape[1] == 1
                probs = self._probabilities(logits)
                decision = decide(probs) if decide is not None else None
                if target is not None:
                    index = self.class_index(target)
                else:
                    index = decision.target_index if decision is not None else int(np.argmax(probs))
                if activation is None:  # occlusion: drop in log p(class) when a patch is greyed out
                    probability = self.class_probability(index)
                    cam = occlusion_map(lambda b: torch.log(probability(b).clamp_min(1e-12)), x)
                else:
                    with torch.enable_grad():
                        score = self._score(logits, index)
                    (gradient,) = torch.autograd.grad(score, activation)
                    cam = gradcam_map(activation.detach(), gradient, self.method)
        finally:
            self.model.train(was_training)
        return HeatmapPass(upsample_map(cam, image.shape[:2]), index, probs, stages, decision)

    def explain(self, image: np.ndarray, *, target: str | int | None = None,
                decide: Callable[[np.ndarray], Decision] | None = None, feature_maps: int = 8,
                title: str | None = None) -> Explanation:
        """Explain one decoded uint8 image (e.g. ``predictor.read(path)``): heatmap, overlay and feature maps.

        One forward pass serves the probabilities, the caller's decision (``decide``) and the heatmap, so callers
        need no separate prediction.
        """
        started = time.perf_counter()
        if feature_maps < 0:
            raise ValueError(f"feature_maps must be >= 0, got {feature_maps}")
        result = self.heatmap_and_scores(image, target, with_stages=feature_maps > 0, decide=decide)
        index, probs = result.target_index, result.probabilities
        title = title or self.default_title(index, probs, result.decision)
        if not result.heatmap.any():  # ReLU removed everything: say so rather than show a uniform wash
            title += f"\n(no positive evidence for {self.classes[index]}: empty map)"
        overlay = render_overlay(image, result.heatmap, title, METHODS[self.method])
        features = render_feature_maps(result.stages, feature_maps) if feature_maps > 0 else None
        return Explanation(heatmap=result.heatmap, overlay_png=overlay, feature_maps_png=features,
                           target_class=self.classes[index], target_index=index, probabilities=probs,
                           seconds=time.perf_counter() - started, decision=result.decision)

    def default_title(self, index: int, probs: np.ndarray, decision: Decision | None = None) -> str:
        """What the overlay says: the decision (with its threshold) when there is one, and which class is shown."""
        if decision is not None:
            p = "-" if decision.probability is None else f"{decision.probability:.3f}"
            cut = f", threshold {decision.threshold:.3f}" if decision.threshold is not None else ""
            line = f"predicted {decision.label} (p = {p}{cut})"
            shown = decision.target_index
        else:
            line = f"most probable {self.classes[int(np.argmax(probs))]} (p = {float(np.max(probs)):.3f})"
            shown = int(np.argmax(probs))
        if index != shown:
            line += f"\n{METHODS[self.method]} for {self.classes[index]} (p = {probs[index]:.3f})"
        return f"{line}\n{self.describe()}"

    def describe(self) -> str:
        """``Layer-CAM at layer3`` / ``occlusion, 21 px patches, stride 10``: what made the map."""
        if self.layer is None:
            patch, stride = occlusion_patch(self.predictor.pre.image_size)
            return f"{METHODS[self.method]}, {patch} px patches, stride {stride}"
        return f"{METHODS[self.method]} at {self.layer}"

    def faithfulness(self, image: np.ndarray, heatmap: np.ndarray, target_index: int, **kwargs: int) -> Curves:
        """Deletion / insertion curves of ``heatmap`` for class ``target_index`` on this image
        (:func:`cadx.engine.faithfulness.deletion_insertion`)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(False):
                return deletion_insertion(self.class_probability(target_index), self.model_input(image), heatmap,
                                          **kwargs)
        finally:
            self.model.train(was_training)


def explain(predictor: Predictor, image: np.ndarray, *, target: str | int | None = None, method: str | None = None,
            layer: str | None = None, feature_maps: int = 8) -> Explanation:
    """One-off convenience wrapper around :class:`Explainer`: explains ``target``, else the predictor's decision."""
    return Explainer(predictor, method=method, layer=layer).explain(image, target=target, decide=predictor.decide,
                                                                    feature_maps=feature_maps)
