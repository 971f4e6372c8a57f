"""PNG/JPEG/BMP/TIFF decoding via Pillow, plus helpers shared with the DICOM reader.

Everything here returns display-ready ``uint8`` arrays: ``(H, W)`` for grey, ``(H, W, 3)`` for colour.

* 16-bit grey and float images are scaled per image between the 0.5th and 99.5th percentiles.
  Raw detector data rarely spans its container (12-bit values in 16 bits would come out nearly black
  if divided by 257), and a plain min-max is hijacked by a handful of dead/hot pixels or burned-in
  labels at full scale, which squashes the anatomy into a few grey levels. Percentiles ignore those
  outliers. The price is that absolute intensities are not comparable across images, which is fine
  for a CNN that is fed per-image normalised inputs anyway.
* Colour images whose channels are identical everywhere are returned as grey: many public datasets
  (e.g. the Kermany OCT/chest JPEGs) store grey images RGB-encoded, and grey is the truth.
* EXIF orientation is applied, so phone/scanner JPEGs come out the way a viewer shows them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cadx.data.errors import UnreadableImageError

__all__ = ["UnreadableImageError", "collapse_grey", "read_pil_image", "robust_to_uint8"]

# Percentile sampling above this many values uses a strided subsample (deterministic, plenty accurate).
_PERCENTILE_SAMPLE = 4_000_000


def robust_to_uint8(arr: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Scale ``arr`` linearly so its ``lower``..``upper`` percentiles map to 0..255 (clipped).

    Falls back to the true min/max when the percentiles coincide (e.g. a sparse binary mask) and
    returns zeros for a constant image. Non-finite values map to 0.
    """
    a = np.asarray(arr, dtype=np.float32)
    finite = np.isfinite(a)
    all_finite = bool(finite.all())
    vals = a.ravel() if all_finite else a[finite]
    if vals.size == 0:
        return np.zeros(a.shape, dtype=np.uint8)
    sample = vals[:: -(-vals.size // _PERCENTILE_SAMPLE)] if vals.size > _PERCENTILE_SAMPLE else vals
    lo, hi = (float(v) for v in np.percentile(sample, [lower, upper]))
    if hi <= lo:
        lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    out = (a - lo) * (255.0 / (hi - lo))
    if not all_finite:
        out[~finite] = 0.0
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out).astype(np.uint8)


def collapse_grey(arr: np.ndarray) -> np.ndarray:
    """Return ``(H, W)`` if an ``(H, W, 3)`` array has R == G == B everywhere, else ``arr`` unchanged."""
    if (
        arr.ndim == 3
        and arr.shape[-1] == 3
        and np.array_equal(arr[..., 0], arr[..., 1])
        and np.array_equal(arr[..., 1], arr[..., 2])
    ):
        return np.ascontiguousarray(arr[..., 0])
    return arr


def _pil_to_uint8(im: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any mode to ``(H, W)`` or ``(H, W, 3)`` uint8."""
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("1", "LA", "La"):
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16S, I (32-bit int), F (float32)
        return robust_to_uint8(np.asarray(im))
    if mode == "RGB":
        return collapse_grey(np.asarray(im, dtype=np.uint8).copy())
    if mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL wants RGBA for palette transparency; alpha dropped below
    return collapse_grey(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())


def read_pil_image(path: str | Path, *, frame: int | None, max_pixels: int, kind: str) -> np.ndarray:
    """Decode a PNG/JPEG/BMP/TIFF with Pillow; ``frame`` picks a page of a multi-page TIFF (default 0)."""
    label = kind.upper()
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise UnreadableImageError(path, f"image too large for Pillow: {e}") from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, struct.error, ... for corrupt headers
        raise UnreadableImageError(path, f"cannot decode {label}: {e}") from e
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise UnreadableImageError(path, f"image has {width * height} pixels, limit is {max_pixels}")
        n_frames = int(getattr(im, "n_frames", 1))
        if frame is not None and not 0 <= frame < n_frames:
            raise UnreadableImageError(path, f"frame {frame} out of range: image has {n_frames} frame(s)")
        try:
            if frame:
                im.seek(frame)
            im.load()
            oriented = ImageOps.exif_transpose(im)
            return _pil_to_uint8(oriented)
        except Exception as e:  # truncated data, bad compression stream, ...
            raise UnreadableImageError(path, f"cannot decode {label}: {e}") from e
