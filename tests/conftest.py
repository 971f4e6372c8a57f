"""Synthetic datasets shared by the tests: small, made on the fly, never copied from ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from torch import nn

from cadx.data.transforms import Preprocessing
from cadx.engine.checkpoint import LoadedCheckpoint
from cadx.engine.inference import Predictor
from cadx.engine.meta import new_meta

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# Test models are tiny: one intra-op thread avoids oversubscribing the 2 shared cores of CI and keeps runs stable.
torch.set_num_threads(1)


def memory_predictor(model: nn.Module, classes: tuple[str, ...] = ("normal", "pneumonia"), *, size: int = 32,
                     channels: int = 1, task: str = "multiclass", name: str = "memory", outputs: int | None = None,
                     **meta: object) -> Predictor:
    """A predictor over an in-memory network, described by a real ``CheckpointMeta`` (``outputs``: the network's
    output count when it is not one per class, e.g. a single logit; ``meta``: fields to set, e.g.
    ``decision_threshold`` or ``positive_index``)."""
    described = new_meta(name, classes, Preprocessing(size, channels), task=task, num_classes=outputs, **meta)
    return Predictor(LoadedCheckpoint(model.eval(), described, Path(f"{name}.ckpt")), "cpu")


def synthetic_image(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """Noise texture; class 1 carries a bright square at a random place (learnable in an epoch or two)."""
    img = rng.normal(90, 20, (size, size)).clip(0, 255)
    if label == 1:
        s = size // 4
        y, x = rng.integers(0, size - s, 2)
        img[y:y + s, x:x + s] = 230
    return img.astype(np.uint8)


def colour_photo(size: int = 48) -> np.ndarray:
    """Red-to-blue gradient (H, W, 3): nothing an X-ray, CT or MRI scanner writes."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)[None, :].repeat(size, 0)
    return np.stack([ramp, np.full_like(ramp, 90), 255 - ramp], axis=2).astype(np.uint8)


def make_class_folders(root: Path, n_per_class: int = 30, *, classes: tuple[str, ...] = ("normal", "pneumonia"),
                       splits: tuple[str, ...] | None = None, seed: int = 0, size: int = 48) -> Path:
    """root/<class>/*.png, or root/<split>/<class>/*.png; file names carry a patient id (two images each)."""
    rng = np.random.default_rng(seed)
    for split in splits or (None,):
        base = root / split if split else root
        for label, name in enumerate(classes):
            folder = base / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                patient = f"person{label}{i // 2:03d}{split or ''}"
                Image.fromarray(synthetic_image(label % 2, rng, size)).save(folder / f"{patient}_img{i}.png")
    return root


def make_multilabel_manifest(root: Path, n_per_class: int = 12) -> Path:
    """A CSV manifest over synthetic images whose rows carry one or two of three labels (paths relative to root)."""
    files = sorted(make_class_folders(root / "imgs", n_per_class).rglob("*.png"))
    manifest = root / "labels.csv"
    manifest.write_text("path,label\n" + "".join(
        f"{f.relative_to(root)},{'effusion|mass' if i % 3 == 0 else ('mass' if i % 3 == 1 else 'nodule')}\n"
        for i, f in enumerate(files)))
    return manifest


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "data")


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED.exists():
        pytest.skip(f"real data folder {SHARED} is absent")
    return SHARED


def write_dicom(path: Path, pixels: np.ndarray, window: tuple[int, int] | None = None, modality: str = "CR",
                body_part: str | None = None) -> None:
    """A MONOCHROME2 image (CR unless told) with 12 bits stored in uint16 (and a VOI window the reader must
    apply, if given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = modality, "P1"
    if body_part:
        ds.BodyPartExamined = body_part
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
