"""Upload payloads for the server tests: valid PNG/JPEG/DICOM and every kind of bad input, as bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.conftest import synthetic_image


def png_bytes(label: int = 1, size: int = 48, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(label, np.random.default_rng(seed), size)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(label: int = 0, size: int = 48, seed: int = 1) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(label, np.random.default_rng(seed), size)).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def blank_png(size: int = 256, grey: int = 128) -> bytes:
    """A constant grey frame: no model can judge it (the input quality check says blank)."""
    buf = io.BytesIO()
    Image.new("L", (size, size), grey).save(buf, format="PNG")
    return buf.getvalue()


def tinted_png(size: int = 48, seed: int = 2) -> bytes:
    """A textured colour image (a synthetic image with a strong red cast): passes the quality checks, but no X-ray,
    CT or MRI scanner writes colour."""
    grey = synthetic_image(0, np.random.default_rng(seed), size).astype(np.int16)
    rgb = np.stack([grey + 70, grey, grey - 50], axis=2).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _dicom_dataset(pixels: np.ndarray | None, modality: str = "CT") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyDate = modality, "DCM-042", "20240102"
    if pixels is not None:
        ds.set_pixel_data(pixels, "MONOCHROME2", 16)
    else:
        ds.Modality = "SR"
    return ds


def dicom_bytes(size: int = 40, modality: str = "CT") -> bytes:
    pixels = (synthetic_image(1, np.random.default_rng(3), size).astype(np.uint16) * 8)
    buf = io.BytesIO()
    _dicom_dataset(pixels, modality).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_without_pixels() -> bytes:
    buf = io.BytesIO()
    _dicom_dataset(None).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def corrupt_png() -> bytes:
    return png_bytes()[:60] + b"\x00garbage" * 20


def huge_png(pixels: int) -> bytes:
    """A tiny file that decodes to more than ``pixels`` pixels (a decompression bomb in miniature)."""
    side = int(pixels**0.5) + 10
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()
