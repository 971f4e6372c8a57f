"""DICOM decoding (pydicom 3 + pylibjpeg plugins) to display-ready ``uint8``.

Pipeline for one frame: decode (pydicom's decoder for the transfer syntax; YBR_FULL/_422 comes out
as RGB) -> modality LUT (Rescale Slope/Intercept or Modality LUT Sequence, also from the enhanced
multi-frame functional groups) -> VOI -> uint8 -> MONOCHROME1 inversion.

VOI order: an explicit ``window=(center, width)`` argument, else the file's VOI LUT Sequence, else
its first Window Center/Width pair, else robust percentile scaling (see ``image_readers``). Windows
use the DICOM PS3.3 C.11.2.1.2 functions (LINEAR by default; the file's VOI LUT Function
LINEAR_EXACT/SIGMOID is honoured for its own window), output range 0..255. The explicit window
always uses LINEAR. Window values are in modality units (e.g. HU), as in the file.

MONOCHROME1 means "minimum value is displayed white" (typical for CR/DX chest films). Inverting it
after windowing makes every grey image bright = dense, as in MONOCHROME2, so a network never sees
both polarities of the same anatomy. Windowing first is the standard's order (the VOI is defined on
stored-value semantics; the inversion is part of presentation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    convert_color_space,
    get_decoder,
)
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cadx.data.image_readers import UnreadableImageError, collapse_grey, robust_to_uint8

__all__ = ["dicom_to_float", "is_dicom", "read_dicom", "read_dicom_metadata"]

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
METADATA_KEYWORDS = (
    "PatientID", "PatientSex", "PatientAge", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID",
    "SOPInstanceUID", "SOPClassUID", "AccessionNumber", "Modality", "BodyPartExamined",
    "StudyDescription", "SeriesDescription", "ProtocolName", "ViewPosition", "ImageLaterality", "Laterality",
    "Manufacturer", "PhotometricInterpretation", "Rows", "Columns", "NumberOfFrames",
)  # deliberately no PatientName/PatientBirthDate: nothing downstream needs them


def _looks_like_raw_dicom(path: str | Path, head: bytes) -> bool:
    """A preamble-less dataset: starts with a group 0x0002/0x0008 tag and parses with force=True."""
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x08"):
        return False
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        return any(tag.group in (0x0008, 0x0028) for tag in list(ds.keys()))
    except Exception:
        return False


def is_dicom(path: str | Path) -> bool:
    """True if ``path`` holds DICOM: ``DICM`` at offset 128, or a preamble-less ``.dcm``/``.dicom`` file."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    return Path(path).suffix.lower() in DICOM_SUFFIXES and _looks_like_raw_dicom(path, head)


def _read(path: str | Path, **kwargs: Any) -> Dataset:
    try:
        return pydicom.dcmread(path, force=True, **kwargs)
    except Exception as e:
        raise UnreadableImageError(path, f"cannot parse DICOM: {e}") from e


def read_dicom_metadata(path: str | Path) -> dict[str, str]:
    """Selected header fields as strings (absent/empty ones left out); pixel data is not read."""
    ds = _read(path, stop_before_pixels=True)
    out: dict[str, str] = {}
    for kw in METADATA_KEYWORDS:
        value = ds.get(kw)
        if value is None or value == "":
            continue
        text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
        if text.strip():
            out[kw] = text.strip()
    return out


def _n_frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return UID(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian


def _describe(ds: Dataset) -> str:
    sop = ds.get("SOPClassUID")
    sop_name = UID(sop).name if sop else "unknown"
    return f"Modality={ds.get('Modality', 'unknown')}, SOP class={sop_name}"


def _decode_frame(ds: Dataset, path: str | Path, frame: int) -> tuple[np.ndarray, str]:
    """Decode one frame; returns the array and its photometric interpretation after decoding."""
    ts = _transfer_syntax(ds)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as e:
        raise UnreadableImageError(path, f"unsupported transfer syntax {ts.name} ({ts}): {e}") from e
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        raise UnreadableImageError(path, f"cannot decode transfer syntax {ts.name} ({ts}): {missing}")
    try:
        arr, meta = decoder.as_array(ds, index=frame, validate=True, as_rgb=True)
    except Exception as e:  # plugins raise RuntimeError/ValueError/... on corrupt or truncated data
        raise UnreadableImageError(path, f"cannot decode {ts.name} pixel data: {e}") from e
    pi = str(meta.get("photometric_interpretation") or ds.get("PhotometricInterpretation", "MONOCHROME2"))
    return arr, pi.strip().upper()


def _frame_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """First item of ``keyword`` in the per-frame, else shared functional groups (enhanced objects)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    for group in ([per_frame[frame]] if frame < len(per_frame) else []) + list(shared[:1]):
        seq = group.get(keyword)
        if seq:
            return seq[0]
    return None


def _modality(arr: np.ndarray, ds: Dataset, frame: int) -> np.ndarray:
    if ds.get("ModalityLUTSequence") or ("RescaleSlope" in ds and "RescaleIntercept" in ds):
        return apply_modality_lut(arr, ds)
    item = _frame_item(ds, frame, "PixelValueTransformationSequence")
    if item is not None and "RescaleSlope" in item and "RescaleIntercept" in item:
        return apply_modality_lut(arr, item)
    return arr


def dicom_to_float(ds: Dataset, frame: int | None = None) -> np.ndarray:
    """Modality values (after the modality LUT / slope+intercept) of one frame as float64.

    ``frame`` defaults to the middle frame. Colour data is returned as decoded (RGB), as float64.
    """
    path = getattr(ds, "filename", None) or "<dataset>"
    n = _n_frames(ds)
    index = n // 2 if frame is None else frame
    if not 0 <= index < n:
        raise UnreadableImageError(path, f"frame {frame} out of range: image has {n} frame(s)")
    arr, pi = _decode_frame(ds, path, index)
    if pi.startswith("MONOCHROME"):
        arr = _modality(arr, ds, index)
    return np.asarray(arr, dtype=np.float64)


def _linear_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.1 (LINEAR_EXACT), C.11.2.1.3.2 (SIGMOID) -> uint8."""
    x = np.asarray(x, dtype=np.float64)
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = (x - center) / width + 0.5
    elif width <= 1:
        y = (x > center - 0.5).astype(np.float64)
    else:
        y = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def _voi_lut_to_uint8(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the first VOI LUT Sequence item, scaling the LUT's actual output range to 0..255.

    Done here rather than with pydicom's ``apply_voi_lut``: pydicom 3.0 builds the LUT indices in the
    LUT's dtype, so an 8-bit LUT with more than 256 entries (12-bit input) wraps around. The output
    is scaled by the LUT data's real min/max, not the descriptor's bit depth, which some devices
    state wrongly (as Horos/Cornerstone do). An 8-bit LUT in an OW element may be byte-packed.
    """
    item = ds.VOILUTSequence[0]
    n_entries, first, bits = (int(v) for v in item.LUTDescriptor)
    n_entries = n_entries or 65536
    raw = item.LUTData
    if isinstance(raw, bytes):
        if bits == 8 and len(raw) < 2 * n_entries:
            lut = np.frombuffer(raw, dtype=np.uint8)
        else:
            lut = np.frombuffer(raw, dtype="<u2" if _transfer_syntax(ds).is_little_endian else ">u2")
    else:
        lut = np.asarray(list(raw) if isinstance(raw, MultiValue | list) else [raw])
    lut = lut[:n_entries].astype(np.float64)
    if first >= 32768 and float(np.min(values)) < 0:  # first value mapped written as US but meant SS
        first -= 65536
    out = lut[np.clip(np.rint(values).astype(np.int64) - first, 0, lut.size - 1)]
    lo, hi = float(lut.min()), float(lut.max())
    if hi <= lo:
        return np.zeros(out.shape, dtype=np.uint8)
    return np.rint((out - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _first_float(value: Any) -> float:
    """First value of a possibly multi-valued DS element as float."""
    return float(value[0]) if isinstance(value, MultiValue | list | tuple) else float(value)


def _file_window(ds: Dataset, frame: int) -> tuple[float, float, str] | None:
    """First Window Center/Width (+ VOI LUT Function) from the dataset or its functional groups."""
    for src in (ds, _frame_item(ds, frame, "FrameVOILUTSequence")):
        if src is None or src.get("WindowCenter") is None or src.get("WindowWidth") is None:
            continue
        try:
            c, w = _first_float(src.WindowCenter), _first_float(src.WindowWidth)
        except (TypeError, ValueError, IndexError):
            continue
        function = str(src.get("VOILUTFunction") or "LINEAR").strip().upper()
        if np.isfinite(c) and np.isfinite(w) and w > 0:
            return c, w, function if function in ("LINEAR_EXACT", "SIGMOID") else "LINEAR"
    return None


def _grey_to_uint8(values: np.ndarray, ds: Dataset, frame: int, window: tuple[float, float] | None,
                   path: str | Path) -> np.ndarray:
    if window is not None:
        return _linear_window(values, float(window[0]), float(window[1]))
    if ds.get("VOILUTSequence"):
        try:
            return _voi_lut_to_uint8(values, ds)
        except Exception as e:
            raise UnreadableImageError(path, f"invalid VOI LUT Sequence: {e}") from e
    file_window = _file_window(ds, frame)
    if file_window is not None:
        return _linear_window(values, *file_window)
    return robust_to_uint8(values)


def _colour_to_uint8(arr: np.ndarray, ds: Dataset, pi: str, path: str | Path) -> np.ndarray:
    if pi == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as e:
            raise UnreadableImageError(path, f"invalid palette colour LUT: {e}") from e
        if arr.dtype != np.uint8 and arr.max() > 255:  # 16-bit LUT entries
            return np.rint(arr / 257.0).astype(np.uint8)
        return arr.astype(np.uint8)
    if pi in ("YBR_FULL", "YBR_FULL_422"):  # normally already converted by the decoder (as_rgb=True)
        arr = convert_color_space(arr, pi, "RGB")
    elif pi not in ("RGB", "YBR_ICT", "YBR_RCT"):  # J2K decoders undo ICT/RCT themselves
        raise UnreadableImageError(path, f"unsupported photometric interpretation {pi}")
    if arr.dtype == np.uint8:
        return arr
    bits = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    return np.rint(np.clip(arr, 0, None) * (255.0 / (2**bits - 1))).clip(0, 255).astype(np.uint8)


def read_dicom(path: str | Path, *, window: tuple[float, float] | None = None, frame: int | None = None,
               max_pixels: int = 178_956_970) -> np.ndarray:
    """Read one DICOM frame (default: the middle one) as ``(H, W)`` or ``(H, W, 3)`` uint8."""
    ds = _read(path, defer_size="64 KB")  # pixel bytes stay on disk until the size check passes
    if not any(kw in ds for kw in _PIXEL_KEYWORDS):
        raise UnreadableImageError(path, f"DICOM has no pixel data ({_describe(ds)})")
    n = _n_frames(ds)
    try:
        n_pixels = int(ds.Rows) * int(ds.Columns) * n
    except (AttributeError, TypeError, ValueError) as e:
        raise UnreadableImageError(path, f"DICOM lacks valid Rows/Columns ({_describe(ds)})") from e
    if n_pixels > max_pixels:
        raise UnreadableImageError(path, f"image has {n_pixels} pixels, limit is {max_pixels}")
    index = n // 2 if frame is None else frame
    if not 0 <= index < n:
        raise UnreadableImageError(path, f"frame {frame} out of range: image has {n} frame(s)")
    arr, pi = _decode_frame(ds, path, index)
    if (arr.ndim == 3 and arr.shape[-1] == 3) or pi == "PALETTE COLOR":
        return collapse_grey(_colour_to_uint8(arr, ds, pi, path))
    try:
        values = _modality(arr, ds, index)
    except Exception as e:
        raise UnreadableImageError(path, f"invalid modality LUT: {e}") from e
    out = _grey_to_uint8(values, ds, index, window, path)
    if pi == "MONOCHROME1":
        out = 255 - out
    return out
