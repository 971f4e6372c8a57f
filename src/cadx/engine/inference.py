"""Load a checkpoint once, then turn images into calibrated class probabilities (``cadx.engine.calibration``): used
by predict, evaluate, the explainer and the server."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cadx.data.readers import IMAGE_SUFFIXES
from cadx.data.transforms import to_model_input
from cadx.engine.calibration import probabilities as calibrated_probabilities
from cadx.engine.checkpoint import LoadedCheckpoint, load_checkpoint
from cadx.engine.decision import Decision, decide, decide_all
from cadx.engine.decoding import DecodedFile, ImageDecoder, decoded_batches
from cadx.engine.meta import CheckpointMeta
from cadx.engine.ood import OodModel, logits_and_features


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class FilePrediction:
    file: str
    probabilities: np.ndarray | None  # one value per class
    decision: Decision | None = None  # None exactly when the file could not be read
    error: str | None = None


class Predictor:
    backend = "torch"  # which engine runs the forward pass (``cadx.engine.backends``); outputs name it

    def __init__(self, checkpoint: LoadedCheckpoint, device: str | None = None) -> None:
        self.device = pick_device(device)
        self.checkpoint = checkpoint
        self.meta: CheckpointMeta = checkpoint.meta
        self.model = checkpoint.model.to(self.device).eval()
        self.pre = checkpoint.preprocessing
        self.classes = checkpoint.classes
        self.ood = OodModel.from_dict(self.meta.ood) if self.meta.ood else None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> Predictor:
        return cls(load_checkpoint(path), device)

    def decoder(self, frame: int | None = None) -> ImageDecoder:
        """Files to this model's prepared inputs (``cadx.engine.decoding``), picklable for decode workers."""
        return ImageDecoder(self.pre, self.checkpoint.category, frame)

    def read(self, path: str | Path, frame: int | None = None, max_pixels: int | None = None) -> np.ndarray:
        """Decode a file the way this model was trained (``ImageDecoder.read``)."""
        return self.decoder(frame).read(path, max_pixels)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return self.decoder().prepare(image)

    def input_problem(self, path: str | Path | None, image: np.ndarray,
                      header: Mapping[str, object] | None = None) -> str | None:
        """Why this decoded image cannot be judged before the network runs, else None (``ImageDecoder``)."""
        return self.decoder().input_problem(path, image, header)

    def _tensor(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        # Memory-mapped or broadcast arrays are read-only; torch wants a writable buffer.
        return torch.as_tensor(batch if isinstance(batch, torch.Tensor) or batch.flags.writeable
                               else np.array(batch)).to(self.device)

    def _probabilities(self, logits: torch.Tensor, calibrated: bool = True) -> np.ndarray:
        return calibrated_probabilities(logits, self.meta, calibrated=calibrated).cpu().numpy()

    @torch.inference_mode()
    def logits(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 (B, C, S, S) -> the network's raw outputs (B, outputs): what calibration is fitted on."""
        return self.model(to_model_input(self._tensor(batch), self.pre)).float().cpu().numpy()

    def logits_arrays(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = [self.logits(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.meta.model.num_classes), dtype=np.float32)

    @torch.inference_mode()
    def predict_batch(self, batch: np.ndarray | torch.Tensor, calibrated: bool = True) -> np.ndarray:
        """uint8 (B, C, S, S) -> probabilities (B, K), after the checkpoint's calibration unless ``calibrated`` is
        False."""
        return self._probabilities(self.model(to_model_input(self._tensor(batch), self.pre)), calibrated)

    def predict_arrays(self, images: np.ndarray, batch_size: int = 64, calibrated: bool = True) -> np.ndarray:
        out = [self.predict_batch(images[i:i + batch_size], calibrated) for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict_flipped(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated probabilities of the horizontally mirrored images (the flip check: a second forward pass)."""
        return self.predict_batch(mirror(batch))

    def predict_arrays_flipped(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self.predict_arrays(mirror(images), batch_size)

    @torch.inference_mode()
    def logits_and_features(self, batch: np.ndarray | torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """uint8 (B, C, S, S) -> logits (B, K) and each stage's pooled output (B, C_s): what the
        out-of-distribution score is fitted on and computed from."""
        logits, features = logits_and_features(self.model, to_model_input(self._tensor(batch), self.pre))
        return logits.float().cpu().numpy(), {k: v.cpu().numpy() for k, v in features.items()}

    def predict_arrays_scored(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and out-of-distribution scores (None without a fitted score) of prepared images."""
        parts = [self.predict_scored(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        if not parts:
            return np.zeros((0, len(self.classes)), dtype=np.float32), None
        probs = np.concatenate([p for p, _ in parts])
        return probs, None if parts[0][1] is None else np.concatenate([sc for _, sc in parts])

    def predict_scored(self, batch: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (B, C, S, S) -> probabilities (B, K) and out-of-distribution scores (B,), or None when the
        checkpoint has no fitted score."""
        if self.ood is None:
            return self.predict_batch(batch), None
        logits, features = self.logits_and_features(batch)
        return self._probabilities(torch.from_numpy(logits)), self.ood.score(logits, features)

    def ood_reasons(self, scores: np.ndarray | None, count: int) -> list[str | None]:
        if scores is None or self.ood is None:
            return [None] * count
        return [self.ood.reason(float(v)) for v in scores]

    def assess(self, prepared: np.ndarray, problem: str | None = None) -> str | None:
        """Why one prepared image is not assessed: the ``problem`` found before the network, else its
        out-of-distribution score (one forward pass), else None."""
        if problem or self.ood is None:
            return problem
        _, scores = self.predict_scored(prepared[None])
        return self.ood_reasons(scores, 1)[0]

    def predict_files(self, files: Sequence[str | Path], batch_size: int = 32, frame: int | None = None,
                      threshold: float | None = None, *, operating_point: str | None = None,
                      flip_check: bool = False, workers: int = 0) -> Iterator[FilePrediction]:
        """Each file's probabilities and decision, in order (at ``threshold``, else the named ``operating_point``'s,
        else the model's; not assessed, with the reason, when the image cannot be judged; ``flip_check``: a second
        forward pass on the mirrored images, whose disagreement makes the answer uncertain); unreadable files come
        back with their error and the others still run. ``workers``: decode processes running ahead of the
        network (``cadx.engine.decoding``)."""
        for batch in decoded_batches(files, self.decoder(frame), batch_size, workers):
            predicted = iter(self._flush([d for d in batch if d.error is None], threshold,
                                         operating_point=operating_point, flip_check=flip_check))
            for decoded in batch:
                yield FilePrediction(decoded.file, None, error=decoded.error) if decoded.error else next(predicted)

    def _flush(self, pending: list[DecodedFile], threshold: float | None, *,
               operating_point: str | None, flip_check: bool) -> list[FilePrediction]:
        if not pending:
            return []
        batch = np.stack([d.image for d in pending])
        probs, scores = self.predict_scored(batch)
        reasons = [d.problem or ood for d, ood in zip(pending, self.ood_reasons(scores, len(pending)), strict=True)]
        flipped = self.predict_flipped(batch) if flip_check else None
        decisions = decide_all(probs, self.meta, threshold, reasons=reasons, operating_point=operating_point,
                               flipped=flipped)
        return [FilePrediction(f.file, p, d) for f, p, d in zip(pending, probs, decisions, strict=True)]

    def decide(self, probabilities: np.ndarray, threshold: float | None = None,
               reason: str | None = None, *, operating_point: str | None = None,
               flipped: np.ndarray | None = None) -> Decision:
        """This model's decision for one image's probabilities (``cadx.engine.decision``); ``reason``: why the
        image is not assessed (``assess``), if it is not; ``flipped``: the mirrored image's probabilities
        (``predict_flipped``), when the flip check ran."""
        return decide(probabilities, self.meta, threshold, reason=reason, operating_point=operating_point,
                      flipped=flipped)


class EnsemblePredictor(Predictor):
    """Mean class probabilities of several checkpoints of one task (an ensemble) and, with ``flip``, of every
    image and its horizontal mirror (test-time augmentation). The first member supplies classes, preprocessing
    and device; a decision threshold must be chosen for the averaged output (``cadx.engine.evaluation`` does)."""

    def __init__(self, members: list[Predictor], *, flip: bool = False) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one checkpoint")
        first = members[0]
        super().__init__(first.checkpoint, str(first.device))
        for other in members[1:]:
            ck, ref = other.checkpoint.meta, first.meta
            if (ck.classes, ck.task, ck.preprocessing, ck.positive_index) != (ref.classes, ref.task,
                                                                              ref.preprocessing, ref.positive_index):
                raise ValueError(f"{other.checkpoint.path}: classes, task or preprocessing differ from "
                                 f"{first.checkpoint.path}; "
                                 "only checkpoints of one task can be averaged")
        self.members = members
        self.flip = flip

    @torch.inference_mode()
    def predict_batch(self, batch: np.ndarray | torch.Tensor, calibrated: bool = True) -> np.ndarray:
        """The mean of the members' (each calibrated unless ``calibrated`` is False) probabilities."""
        views = [batch, mirror(batch)] if self.flip else [batch]
        return np.mean([member.predict_batch(v, calibrated) for member in self.members for v in views], axis=0)

    def predict_scored(self, batch: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """The averaged probabilities; the out-of-distribution score of the first member (it sees the same image)."""
        _, scores = self.members[0].predict_scored(batch)
        return self.predict_batch(batch), scores


def mirror(batch: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Images (..., H, W) mirrored left-right (the flip of flip-TTA and of the flip check)."""
    return batch.flip(-1) if isinstance(batch, torch.Tensor) else np.ascontiguousarray(batch[..., ::-1])


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for files with an image suffix (or none, for DICOM)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                                and (f.suffix.lower() in IMAGE_SUFFIXES or f.suffix == "")))
        else:
            found.append(p)
    return found
