"""ONNX Runtime copies of a checkpoint (fp32, and int8 statically quantised), each verified against the torch model
on the checkpoint's own validation split before it is accepted.

The graph takes the prepared uint8 (B, C, S, S) images and does the normalisation itself, so running it needs neither
torch nor cadx's transforms. Besides the logits it returns every stage's channel means and standard deviations
(:func:`cadx.engine.ood.logits_and_features`), so the out-of-distribution score, and with it "not assessed", works on
the ONNX backend exactly as on torch. Gradient methods (Grad-CAM and its kin) stay on torch: an ONNX graph has no
backward pass.

int8: static QDQ quantisation by ONNX Runtime (per-channel int8 weights, uint8 activations, min-max calibration on
the checkpoint's training images), of the convolutions and the dense layer only, so the pooled features the
out-of-distribution score reads stay float. uint8 activations are what the CPU's VNNI instructions multiply fast;
int8 activations were measured ~2x slower on the chest model (benchmarks/speed/).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from cadx.data.cache import DecodedImages
from cadx.data.transforms import Preprocessing, to_model_input
from cadx.engine.decision import decision_indices
from cadx.engine.hardware import cpu_flags, cpu_kind
from cadx.engine.inference import Predictor
from cadx.engine.onnx_runtime import (
    BACKEND_FILES,
    FEATURES_KEY,
    MAX_ACCURACY_DROP,
    MAX_AUC_DROP,
    MIN_ASSESSED_AGREEMENT,
    OnnxNetwork,
    Verification,
    onnxruntime_version,
    verification_path,
)
from cadx.engine.ood import OodModel, keep_threshold, logits_and_features

CALIBRATION_IMAGES = 256  # training images the int8 ranges are calibrated on (a seeded sample)
OPSET = 18


class ScoringNetwork(Protocol):
    """What is verified against the fp32 torch model: an ONNX copy, or the torch-bf16 predictor."""

    def logits_and_features(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


class _ScoringGraph(nn.Module):
    """uint8 images -> logits and the out-of-distribution features, as one traceable module."""

    def __init__(self, model: nn.Module, pre: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.pre = pre

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, features = logits_and_features(self.model, to_model_input(images, self.pre))
        return (logits, *features.values())


def export_onnx(model: nn.Module, pre: Preprocessing, path: str | Path) -> list[str]:
    """Write the fp32 graph; returns the feature outputs' names (also stored in the file's metadata)."""
    import onnx

    model = model.eval()
    example = torch.zeros((2, pre.channels, pre.image_size, pre.image_size), dtype=torch.uint8)
    with torch.no_grad():
        _, features = logits_and_features(model, to_model_input(example, pre))
    names = list(features)
    outputs = ["logits", *(f"feature_{i}" for i in range(len(names)))]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch")
    # the dynamo exporter: the TorchScript one cannot export an adaptive pool that enlarges (simple_cnn < 64 px)
    quiet = logging.getLogger("torch.onnx")  # its notes (e.g. "torchvision is not installed") are not the user's
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(_ScoringGraph(model, pre), (example,), str(path), input_names=["images"],
                              output_names=outputs, opset_version=OPSET, dynamo=True,
                              dynamic_shapes=({0: batch},), verbose=False)
    finally:
        quiet.setLevel(level)
    graph = onnx.load(str(path))  # with the weights the exporter may have written to <name>.data
    graph.metadata_props.add(key=FEATURES_KEY, value=json.dumps(names))
    onnx.save(graph, str(path))  # one self-contained file
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    return names


def int8_dot_product() -> bool:
    """Whether this CPU has VNNI (AVX512-VNNI or AVX-VNNI): int8 products summed in int32, no saturation."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def quantize_int8(fp32: str | Path, dst: str | Path, calibration: np.ndarray, *, batch_size: int = 32) -> Path:
    """Static int8 copy of an fp32 graph from :func:`export_onnx`, calibrated on prepared uint8 images.

    Without VNNI (e.g. an AVX2-only CPU), ONNX Runtime's u8 x s8 kernels add pairs of products into int16 and
    saturate; weights then use 7 bits (``reduce_range``), as ONNX Runtime advises. Measured on a small CNN on an AVX2
    CPU: logits off by up to 12.9 with 8 bits (half the out-of-distribution decisions changed), 0.48 with 7."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.pending, None)
            return None if batch is None else {"images": np.ascontiguousarray(batch, dtype=np.uint8)}

    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                        reduce_range=not int8_dot_product())
    names = onnx.load(str(fp32), load_external_data=False).metadata_props
    graph = onnx.load(str(dst))
    for prop in names:
        if prop.key == FEATURES_KEY:
            graph.metadata_props.add(key=FEATURES_KEY, value=prop.value)
    onnx.save(graph, str(dst))
    return dst


def _scores(probs: np.ndarray, targets: Sequence[Any], pred: np.ndarray, positive_index: int | None,
            multilabel: bool) -> tuple[float, float]:
    """Accuracy and AUC as evaluation reports them (multi-label: per-label accuracy, macro AUC)."""
    from sklearn.metrics import roc_auc_score

    from cadx.engine.metrics import headline_scores

    if multilabel:
        y = np.asarray(targets, dtype=int)
        return float(np.mean(y == pred)), float(roc_auc_score(y, probs, average="macro"))
    scores = headline_scores(np.asarray(targets, dtype=int), probs, np.asarray(pred), positive_index)
    return scores["accuracy"], scores["auc"]


def own_threshold(ood: OodModel, copy_scores: np.ndarray) -> float:
    """The copy's out-of-distribution threshold by the checkpoint's own rule (:func:`keep_threshold`), on the copy's
    validation scores. Rounding (int8 above all) moves every image's score a little the same way; one threshold for
    both declined more of the copy's images than torch's (the chest model's Kermany test images on an AVX2 CPU: 17
    against 12)."""
    return keep_threshold(copy_scores, ood.keep) if len(copy_scores) else float(ood.threshold)


def verify(predictor: Predictor, network: ScoringNetwork, backend: str, images: np.ndarray, targets: Sequence[Any],
           *, batch_size: int = 64) -> Verification:
    """Compare the copy (or the bf16 predictor) with the torch model on prepared validation images: decisions at
    the checkpoint's threshold, AUC, the largest probability difference, and agreement on which images are assessed."""
    meta = predictor.meta
    torch_probs, torch_scores = predictor.predict_arrays_scored(images, batch_size)
    parts = [network.logits_and_features(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    logits = np.concatenate([p[0] for p in parts])
    probs = predictor._probabilities(torch.from_numpy(logits))
    agreement = copy_threshold = None
    if predictor.ood is not None and torch_scores is not None:
        features = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
        copy_scores = predictor.ood.score(logits, features)
        copy_threshold = own_threshold(predictor.ood, copy_scores)
        agreement = float(np.mean((torch_scores > predictor.ood.threshold) == (copy_scores > copy_threshold)))

    def rule(p: np.ndarray) -> np.ndarray:
        return decision_indices(p, positive_index=meta.positive_index, threshold=meta.decision_threshold,
                                multilabel=meta.multilabel)

    acc_torch, auc_torch = _scores(torch_probs, targets, rule(torch_probs), meta.positive_index, meta.multilabel)
    acc, auc = _scores(probs, targets, rule(probs), meta.positive_index, meta.multilabel)
    passed = bool(acc_torch - acc <= MAX_ACCURACY_DROP + 1e-12 and
                  (not np.isfinite(auc_torch) or auc_torch - auc <= MAX_AUC_DROP + 1e-12) and
                  (agreement is None or agreement >= MIN_ASSESSED_AGREEMENT))
    return Verification(backend=backend, images=len(images), accuracy_torch=acc_torch, accuracy=acc,
                        auc_torch=auc_torch, auc=auc,
                        max_probability_difference=float(np.abs(probs - torch_probs).max()) if len(probs) else 0.0,
                        assessed_agreement=agreement, passed=passed, cpu=cpu_kind(),
                        onnxruntime=onnxruntime_version(), ood_threshold=copy_threshold)


def export_verified(predictor: Predictor, folder: str | Path, *, int8: bool, validation: DecodedImages,
                    calibration: np.ndarray | None = None, seed: int = 0) -> list[tuple[Path, Verification]]:
    """Export fp32 (and, with ``int8``, the quantised copy) into ``folder`` and verify each on the validation images.
    Each copy stands alone: one that passes gets its record written beside it; one that fails is deleted (with any
    older record of it), so it can never be used, and comes back with ``passed`` False and its figures."""
    folder = Path(folder)
    targets = [r.target for r in validation.records]
    images = validation.images
    fp32 = folder / BACKEND_FILES["onnx"]
    export_onnx(predictor.model, predictor.pre, fp32)
    copies = [("onnx", fp32)]
    if int8:
        if calibration is None or not len(calibration):
            raise ValueError("int8 export needs calibration images")
        if len(calibration) > CALIBRATION_IMAGES:
            pick = np.random.default_rng(seed).choice(len(calibration), CALIBRATION_IMAGES, replace=False)
            calibration = calibration[np.sort(pick)]
        copies.append(("onnx-int8", quantize_int8(fp32, folder / BACKEND_FILES["onnx-int8"], calibration)))
    results = []
    for backend, path in copies:
        record = verify(predictor, OnnxNetwork(path), backend, images, targets)
        results.append((path, record))
    for path, record in results:
        if record.passed:
            verification_path(path).write_text(json.dumps(record.to_dict(), indent=2))
        else:
            path.unlink(missing_ok=True)
            verification_path(path).unlink(missing_ok=True)
    return results


def export_checkpoint_copies(checkpoint: str | Path, *, int8: bool, calibration_data: str | Path | None = None,
                             seed: int = 0) -> list[tuple[Path, Verification]]:
    """``cadx export CKPT --onnx [--int8]``: the verified ONNX copies beside a checkpoint, verified on its own
    validation split; int8 ranges from a seeded sample of its training split (or of ``calibration_data``)."""
    from cadx.data.cache import decode_records
    from cadx.data.sources import DatasetError
    from cadx.engine.catalogue import resolve_checkpoint
    from cadx.engine.selection import select_records

    predictor = Predictor.from_checkpoint(resolve_checkpoint(checkpoint))
    index, records = select_records(predictor.checkpoint, None, "val")
    val = decode_records(index, records, predictor.pre, description="Decoding validation images (verification)")
    if not val.records:
        raise DatasetError(f"{index.source}: none of the {len(records)} validation images could be read")
    calibration = None
    if int8:
        index, records = select_records(predictor.checkpoint, calibration_data,
                                        "all" if calibration_data is not None else "train")
        if len(records) > CALIBRATION_IMAGES:  # decode only the sample
            pick = np.random.default_rng(seed).choice(len(records), CALIBRATION_IMAGES, replace=False)
            records = [records[i] for i in np.sort(pick)]
        calibration = decode_records(index, records, predictor.pre,
                                     description="Decoding calibration images (int8)").images
    return export_verified(predictor, predictor.checkpoint.path.parent, int8=int8, validation=val,
                           calibration=calibration, seed=seed)
