"""Public image-reading API: any supported file -> display-ready ``uint8`` numpy array.

Dispatch is by content (magic bytes), never by extension: datasets in the wild contain PNGs named
``.dcm``, DICOMs without an extension and JPEGs named ``.png``. DICOM is checked first because a
DICOM preamble may itself carry a TIFF header (dual-personality files).

``read_image`` returns ``(H, W)`` for grey and ``(H, W, 3)`` for colour; see ``image_readers``
(Pillow formats, why robust percentiles, RGB-that-is-grey) and ``dicom`` (modality LUT, VOI order,
why MONOCHROME1 is inverted) for the details. Every content problem raises
:class:`UnreadableImageError` (a ``ValueError``) whose message starts with the path; a path that
does not exist raises ``FileNotFoundError``.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import numpy as np

from cadx.data.dicom import dicom_to_float, is_dicom, read_dicom, read_dicom_metadata
from cadx.data.image_readers import UnreadableImageError, read_pil_image

__all__ = [
    "IMAGE_SUFFIXES",
    "UnreadableImageError",
    "dicom_to_float",
    "is_dicom",
    "read_dicom_metadata",
    "read_header_if_dicom",
    "read_image",
    "sniff_image_kind",
]

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb threshold

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"BM", "bmp"),
)


def read_header_if_dicom(path: str | Path) -> dict[str, str]:
    """A DICOM file's header fields; {} for any other file and for a header that cannot be read, which is no
    evidence either way (the pixels, read separately, decide whether the file is usable)."""
    if sniff_image_kind(path) == "dicom":
        with suppress(UnreadableImageError, ValueError, OSError):
            return read_dicom_metadata(path)
    return {}


def sniff_image_kind(path: str | Path) -> str | None:
    """``"dicom" | "png" | "jpeg" | "bmp" | "tiff"`` from the file's magic bytes, else ``None``."""
    if is_dicom(path):
        return "dicom"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            # "BM" is only two bytes: also require a plausible BITMAPINFOHEADER size at offset 14.
            if kind == "bmp" and (len(head) < 16 or int.from_bytes(head[14:16], "little") < 12):
                continue
            return kind
    return None


def read_image(
    path: str | Path,
    *,
    window: tuple[float, float] | None = None,
    frame: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a PNG/JPEG/BMP/TIFF/DICOM file as ``(H, W)`` or ``(H, W, 3)`` uint8.

    Args:
        path: the file; its extension is ignored.
        window: DICOM grey images only: ``(center, width)`` in modality units (e.g. HU), overriding
            the file's VOI. Ignored for other formats and for colour.
        frame: 0-based frame of a multi-frame DICOM (default: middle frame) or page of a multi-page
            TIFF (default: first page).
        max_pixels: refuse images with more pixels (DICOM: Rows * Columns * frames), checked from
            the header before the pixel data is decoded.

    Raises:
        UnreadableImageError: empty, unsupported, corrupt, too large, bad frame, no pixel data...
        FileNotFoundError: ``path`` does not exist.
    """
    if window is not None and not float(window[1]) > 0:
        raise ValueError(f"window width must be > 0, got {window[1]}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such image file: {p}")
    try:
        size = p.stat().st_size if p.is_file() else -1
    except OSError as e:
        raise UnreadableImageError(p, f"cannot stat: {e}") from e
    if size < 0:
        raise UnreadableImageError(p, "not a regular file")
    if size == 0:
        raise UnreadableImageError(p, "empty file")
    kind = sniff_image_kind(p)
    if kind is None:
        try:
            p.open("rb").close()
        except OSError as e:
            raise UnreadableImageError(p, f"cannot open: {e}") from e
        raise UnreadableImageError(p, "not a PNG/JPEG/BMP/TIFF/DICOM image")
    if kind == "dicom":
        return read_dicom(p, window=window, frame=frame, max_pixels=max_pixels)
    return read_pil_image(p, frame=frame, max_pixels=max_pixels, kind=kind)
