"""Running an exported copy of a checkpoint with ONNX Runtime, and the record that says it was verified.

Kept apart from :mod:`cadx.engine.onnx_export` (which needs torch and the training data): a predictor on an ONNX
backend imports only this, numpy and onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cadx.engine.hardware import cpu_kind

if TYPE_CHECKING:  # imported by the network below; reading a verification record (``cadx models``) needs no numpy
    import numpy as np

BACKEND_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
BF16_BACKEND = "torch-bf16"
VERIFICATION_SUFFIX = ".verification.json"
FEATURES_KEY = "cadx_features"  # ONNX metadata: the feature outputs' names, in output order
MAX_ACCURACY_DROP = 0.005  # 0.5 point
MAX_AUC_DROP = 0.005
# Share of validation images on which the copy and torch agree about "not assessed": quantised features move the
# out-of-distribution score, and a copy that declines other images than torch is not the same model.
MIN_ASSESSED_AGREEMENT = 0.99


def onnx_path(checkpoint: str | Path, backend: str) -> Path:
    """Where the ``backend`` copy of a checkpoint lives: beside it, ``model.onnx`` / ``model.int8.onnx``."""
    checkpoint = Path(checkpoint)
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return folder / BACKEND_FILES[backend]


class OnnxNetwork:
    """An ONNX Runtime session with the torch network's interface: uint8 batch -> logits and stage features."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.feature_names: list[str] = json.loads(meta.get(FEATURES_KEY, "[]"))

    def logits(self, images: np.ndarray) -> np.ndarray:
        import numpy as np

        return self.session.run(["logits"], {"images": np.ascontiguousarray(images, dtype=np.uint8)})[0]

    def logits_and_features(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        import numpy as np

        logits, *features = self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.uint8)})
        return logits, dict(zip(self.feature_names, features, strict=True))


@dataclass(frozen=True)
class Verification:
    """How an exported copy compares with the torch model on the same validation images."""

    backend: str
    images: int
    accuracy_torch: float
    accuracy: float
    auc_torch: float
    auc: float
    max_probability_difference: float
    assessed_agreement: float | None  # share of images both call assessed or both not assessed (None: no score)
    passed: bool
    # The CPU instruction set it was verified on: int8 kernels differ between them (without VNNI, ONNX Runtime's
    # u8s8 products can saturate), so an int8 copy counts as verified only on a CPU of the same kind.
    cpu: str | None = None
    onnxruntime: str | None = None
    # The copy's own out-of-distribution threshold: the checkpoint's rule (keep its share of the validation images)
    # applied to the copy's scores, which rounding shifts as a whole. None (older records): the checkpoint's.
    ood_threshold: float | None = None
    limits: str = (f"accuracy drop <= {100 * MAX_ACCURACY_DROP:g} points, AUC drop <= {MAX_AUC_DROP}, "
                   f"assessed agreement >= {MIN_ASSESSED_AGREEMENT}")

    @property
    def accuracy_drop(self) -> float:
        return self.accuracy_torch - self.accuracy

    @property
    def auc_drop(self) -> float:
        return self.auc_torch - self.auc

    def summary(self) -> str:
        return (f"{self.backend}: accuracy {self.accuracy:.4f} (torch {self.accuracy_torch:.4f}), AUC {self.auc:.4f} "
                f"(torch {self.auc_torch:.4f}), largest probability difference "
                f"{self.max_probability_difference:.3f}"
                + ("" if self.assessed_agreement is None else
                   f", assessed agreement {self.assessed_agreement:.3f}")
                + f" on {self.images} validation images")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop, "auc_drop": self.auc_drop}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Verification:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in names})


def onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def usable_here(record: Verification) -> bool:
    """A passing record, made on this kind of CPU for an int8 copy or bf16 (fp32 copies: anywhere). Whether bf16 is
    native here is the caller's second question (``cadx.engine.bf16.usable_here``)."""
    return record.passed and (record.backend not in ("onnx-int8", BF16_BACKEND) or record.cpu == cpu_kind())


def verification_path(model_file: str | Path) -> Path:
    return Path(str(model_file).removesuffix(".onnx") + VERIFICATION_SUFFIX)


def read_verification(model_file: str | Path) -> Verification | None:
    """The stored record of an exported copy, or None when it was never verified (then it is not used)."""
    return _read_record(verification_path(model_file))


def _read_record(path: Path) -> Verification | None:
    if not path.is_file():
        return None
    try:
        return Verification.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def bf16_record_path(checkpoint: str | Path) -> Path:
    """Where the torch-bf16 verification of a checkpoint is kept: ``<stem>.bf16.verification.json`` beside it."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.bf16{VERIFICATION_SUFFIX}")


def read_bf16_record(checkpoint: str | Path) -> Verification | None:
    record = _read_record(bf16_record_path(checkpoint))
    return record if record is not None and record.backend == BF16_BACKEND else None
