"""Which engine runs a checkpoint's forward pass: torch fp32 (always), torch bf16 autocast where bf16 is native,
or a verified ONNX Runtime copy beside the checkpoint.

``auto`` takes the first verified of int8 ONNX (on this kind of CPU), torch-bf16 (verified here, bf16 native), fp32
ONNX, else torch: the order measured on the shipped models (``benchmarks/speed/``). An ONNX copy without a passing
verification record is never used, not even when asked for by name; torch-bf16 asked for by name runs wherever bf16
is native, verified or not (it is the checkpoint itself, rounded). The heatmap methods (Grad-CAM and its kin,
occlusion) always run on torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from cadx.engine import bf16
from cadx.engine.checkpoint import LoadedCheckpoint, load_checkpoint
from cadx.engine.hardware import cpu_kind, native_bf16
from cadx.engine.inference import Predictor, pick_device
from cadx.engine.onnx_runtime import (
    BACKEND_FILES,
    OnnxNetwork,
    Verification,
    read_bf16_record,
    read_verification,
    usable_here,
)

BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")
AUTO_ORDER = ("onnx-int8", "torch-bf16", "onnx")  # fastest first, as measured in benchmarks/speed/backends.json


class BackendError(ValueError):
    """A backend that cannot be used for this checkpoint (missing or unverified copy, unknown name)."""


class OnnxPredictor(Predictor):
    """A :class:`Predictor` whose probabilities and out-of-distribution features come from ONNX Runtime; the torch
    network stays loaded for the heatmap."""

    def __init__(self, checkpoint: LoadedCheckpoint, network: OnnxNetwork, backend: str,
                 device: str | None = None) -> None:
        super().__init__(checkpoint, device)
        self.network = network
        self.backend = backend

    def logits(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.network.logits(_uint8(batch))

    def predict_batch(self, batch: np.ndarray | torch.Tensor, calibrated: bool = True) -> np.ndarray:
        return self._probabilities(torch.from_numpy(self.logits(batch)), calibrated)

    def logits_and_features(self, batch: np.ndarray | torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.network.logits_and_features(_uint8(batch))


def _uint8(batch: np.ndarray | torch.Tensor) -> np.ndarray:
    array = batch.cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
    if array.dtype != np.uint8:
        raise ValueError(f"the ONNX backend takes prepared uint8 images, got {array.dtype}")
    return array


def verified_copies(checkpoint: LoadedCheckpoint) -> dict[str, Path]:
    """The ONNX copies beside ``checkpoint`` that passed their verification (an int8 copy: on this kind of CPU), by
    backend name."""
    folder = checkpoint.path.parent
    found = {}
    for backend, name in BACKEND_FILES.items():
        path = folder / name
        record = read_verification(path) if path.is_file() else None
        if record is not None and usable_here(record) and record.backend == backend:
            found[backend] = path
    return found


def choose_backend(checkpoint: LoadedCheckpoint, requested: str = "auto",
                   device: str | None = None) -> tuple[str, Path | None]:
    """The backend to run and its file (None for the torch backends); :class:`BackendError` naming why a requested
    one can't."""
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested == "torch":
        return "torch", None
    here = pick_device(device)
    if requested == bf16.BACKEND:
        if not native_bf16(here):
            raise BackendError(f"torch-bf16: bf16 is not native on this {here.type} (needs AVX512-BF16 or AMX, or a "
                               "GPU with bf16); use torch or an ONNX backend")
        return bf16.BACKEND, None
    copies: dict[str, Path | None] = dict(verified_copies(checkpoint))
    if bf16.usable_here(read_bf16_record(checkpoint.path), here):
        copies[bf16.BACKEND] = None
    if requested == "auto":
        return next(((b, copies[b]) for b in AUTO_ORDER if b in copies), ("torch", None))
    if requested not in copies:
        record = read_verification(checkpoint.path.parent / BACKEND_FILES[requested])
        if record is not None and record.passed and not usable_here(record):
            raise BackendError(f"{checkpoint.path.parent.name}: {BACKEND_FILES[requested]} was verified on a "
                               f"{record.cpu} CPU, this one is {cpu_kind()}; verify it here with `cadx export "
                               f"{checkpoint.path} --onnx --int8`")
        raise BackendError(f"{checkpoint.path.parent.name}: no verified {BACKEND_FILES[requested]} beside the "
                           f"checkpoint; make one with `cadx export {checkpoint.path} --onnx"
                           f"{' --int8' if requested == 'onnx-int8' else ''}`")
    return requested, copies[requested]


def load_predictor(path: str | Path, backend: str = "auto", device: str | None = None) -> Predictor:
    """A checkpoint's predictor on ``backend`` (``auto``: the fastest verified one), with the copy's own
    out-of-distribution threshold from its verification record. The predictor's ``backend`` attribute says which
    one it runs."""
    checkpoint = load_checkpoint(path)
    chosen, file = choose_backend(checkpoint, backend, device)
    if chosen == bf16.BACKEND:
        return _own_threshold(bf16.TorchBf16Predictor(checkpoint, device), read_bf16_record(checkpoint.path))
    if file is None:
        return Predictor(checkpoint, device)
    predictor = OnnxPredictor(checkpoint, OnnxNetwork(file, threads=torch.get_num_threads()), chosen, device)
    return _own_threshold(predictor, read_verification(file))


def _own_threshold(predictor: Predictor, record: Verification | None) -> Predictor:
    """Score "not assessed" against the threshold fitted on the copy's own validation scores, where its record has
    one (``cadx.engine.onnx_export.own_threshold``)."""
    if predictor.ood is not None and record is not None and record.ood_threshold is not None:
        predictor.ood = dataclasses.replace(predictor.ood, threshold=record.ood_threshold)
    return predictor
