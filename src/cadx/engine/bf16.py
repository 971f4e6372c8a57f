"""The torch-bf16 backend: the checkpoint's own network under bf16 autocast, channels-last, where bf16 is native
(``cadx.engine.hardware.native_bf16``): about 2.6x fp32 eager on an AVX512-BF16 CPU (``benchmarks/speed/``).

It is not a copy, but its answers differ from fp32 by rounding, so like an ONNX copy it is verified on the
checkpoint's validation split (``cadx export CKPT --bf16``) before ``auto`` picks it; the record
(``<ckpt stem>.bf16.verification.json``) sits beside the checkpoint. Gradients (Grad-CAM) run in fp32 as always.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from cadx.data.transforms import to_model_input
from cadx.engine.checkpoint import LoadedCheckpoint
from cadx.engine.hardware import native_bf16
from cadx.engine.inference import Predictor
from cadx.engine.onnx_runtime import BF16_BACKEND as BACKEND
from cadx.engine.onnx_runtime import Verification
from cadx.engine.onnx_runtime import bf16_record_path as record_path
from cadx.engine.onnx_runtime import usable_here as verified_here
from cadx.engine.ood import logits_and_features


class TorchBf16Predictor(Predictor):
    """A :class:`Predictor` whose forward passes run under bf16 autocast on a channels-last network."""

    backend = BACKEND

    def __init__(self, checkpoint: LoadedCheckpoint, device: str | None = None) -> None:
        super().__init__(checkpoint, device)
        if not native_bf16(self.device):
            raise ValueError(f"bf16 is not native on this {self.device.type} (needs AVX512-BF16/AMX or a GPU "
                             "with bf16)")
        self.model = self.model.to(memory_format=torch.channels_last)

    @contextlib.contextmanager
    def _bf16(self) -> Iterator[None]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16):
            yield

    def _input(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        return to_model_input(self._tensor(batch), self.pre).contiguous(memory_format=torch.channels_last)

    def logits(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        with self._bf16():
            return self.model(self._input(batch)).float().cpu().numpy()

    def predict_batch(self, batch: np.ndarray | torch.Tensor, calibrated: bool = True) -> np.ndarray:
        return self._probabilities(torch.from_numpy(self.logits(batch)), calibrated)  # softmax in fp32

    def logits_and_features(self, batch: np.ndarray | torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with self._bf16():
            logits, features = logits_and_features(self.model, self._input(batch))
            return logits.float().cpu().numpy(), {k: v.float().cpu().numpy() for k, v in features.items()}


def usable_here(record: Verification | None, device: torch.device) -> bool:
    """A passing record made on this kind of CPU, where bf16 is native now."""
    return bool(record is not None and verified_here(record) and native_bf16(device))


def verify_checkpoint(checkpoint: str | Path) -> tuple[Path, Verification]:
    """``cadx export CKPT --bf16``: compare bf16 with fp32 on the checkpoint's validation split; a passing record
    is written beside the checkpoint (its path is returned), a failing one removes any older record."""
    from cadx.data.cache import decode_records
    from cadx.data.sources import DatasetError
    from cadx.engine.catalogue import resolve_checkpoint
    from cadx.engine.onnx_export import verify
    from cadx.engine.selection import select_records

    fp32 = Predictor.from_checkpoint(resolve_checkpoint(checkpoint))
    bf16 = TorchBf16Predictor(fp32.checkpoint)  # the same network (now channels-last: fp32 results unchanged)
    index, records = select_records(fp32.checkpoint, None, "val")
    val = decode_records(index, records, fp32.pre, description="Decoding validation images (bf16 verification)")
    if not val.records:
        raise DatasetError(f"{index.source}: none of the {len(records)} validation images could be read")
    record = dataclasses.replace(verify(fp32, bf16, BACKEND, val.images, [r.target for r in val.records]),
                                 onnxruntime=None)
    path = record_path(fp32.checkpoint.path)
    if record.passed:
        path.write_text(json.dumps(record.to_dict(), indent=2))
    else:
        path.unlink(missing_ok=True)
    return path, record
