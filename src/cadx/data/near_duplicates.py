"""Find near-identical images (neighbouring CT slices, re-encoded, re-scaled or re-saved copies) by thumbnail
correlation, so that a split can keep them together.

A byte-identical check misses a JPEG re-encode, a brightness change or the next slice of the same scan, yet they
leak just as much when they straddle train and test. Each image becomes a 16x16 grey thumbnail (area-averaged,
aspect ratio not kept), centred and scaled to unit length; two images are near-duplicates when the Pearson
correlation of their thumbnails is at least a threshold. Correlation was preferred to a 64-bit DCT hash (pHash)
because on the shared chest X-ray and brain MRI sets distinct images of different patients and classes already come
within the hash distance of a 1-pixel-shifted copy (benchmarks/near_duplicates/README.md).

Cost: one reduced-size decode per image (libjpeg decodes JPEGs at 1/2-1/8 scale), then an exact all-pairs pass,
a blockwise (N, 256) x (256, N) float32 product: about 8 GFLOP for 5,700 images.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from cadx.data.readers import sniff_image_kind
from cadx.data.sources import DatasetIndex, Record

THUMBNAIL_SIZE = 16
# The loosest correlation at which no pair of images of different classes is joined on any shared set
# (benchmarks/near_duplicates): 0.98 joins a few, 0.97 chains hundreds of chest X-rays into one group.
DEFAULT_MIN_CORRELATION = 0.985
_DECODE_SIZE = 64  # JPEGs are decoded at the smallest DCT scale that is still at least this large
_BLOCK = 1024  # rows per block of the all-pairs product


def thumbnail_vector(image: np.ndarray | Image.Image, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """The centred, unit-length ``size*size`` float32 grey thumbnail; all zeros for a constant image."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    if im.mode not in ("L", "F"):
        im = im.convert("L") if im.mode in ("RGB", "RGBA", "P", "PA", "LA", "1", "CMYK", "YCbCr") else \
            im.convert("F")
    v = np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.float64).ravel()
    v = v - v.mean()
    norm = float(np.linalg.norm(v))
    # A blank image correlates with nothing: it is left to the byte-identical check.
    return (v / norm if norm > 1e-6 * size else np.zeros_like(v)).astype(np.float32)


def _record_thumbnail(index: DatasetIndex, record: Record, size: int) -> np.ndarray:
    path = index.path_of(record)
    if path is not None and sniff_image_kind(path) in ("jpeg", "png", "bmp"):
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("L", (_DECODE_SIZE, _DECODE_SIZE))  # decode at reduced scale: 4-8x less work
            if im.mode in ("L", "RGB", "P", "RGBA", "LA", "1"):
                im.load()
                return thumbnail_vector(ImageOps.exif_transpose(im), size)
    return thumbnail_vector(index.load(record), size)  # DICOM, TIFF, 16-bit, .npz: through the full reader


def thumbnail_vectors(index: DatasetIndex, records: list[Record], *, size: int = THUMBNAIL_SIZE,
                      workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors float32 (N, size*size), ok bool (N,))``; unreadable records are ``ok=False`` (the decoder
    reports them later, with their reason)."""
    vectors = np.zeros((len(records), size * size), dtype=np.float32)
    ok = np.zeros(len(records), dtype=bool)

    def work(i: int) -> None:
        try:
            vectors[i] = _record_thumbnail(index, records[i], size)
            ok[i] = bool(vectors[i].any())
        except (OSError, ValueError, SyntaxError):
            pass

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(len(records))))
    return vectors, ok


def near_duplicate_pairs(vectors: np.ndarray, min_correlation: float = DEFAULT_MIN_CORRELATION,
                         valid: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, correlation)`` with ``i < j`` and correlation ``>= min_correlation`` (exact)."""
    n = len(vectors)
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, n, _BLOCK):
        block = vectors[start:start + _BLOCK] @ vectors.T
        ii, jj = np.nonzero(block >= min_correlation)
        keep = (jj > ii + start) & valid[ii + start] & valid[jj]
        ii, jj = ii[keep], jj[keep]
        pairs.extend(zip((ii + start).tolist(), jj.tolist(), block[ii, jj].astype(float).tolist(), strict=True))
    return pairs


def find_near_duplicates(index: DatasetIndex, records: list[Record],
                         min_correlation: float = DEFAULT_MIN_CORRELATION) -> list[tuple[int, int, float]]:
    """Near-duplicate pairs among ``records`` (positions into it), from one thumbnail pass."""
    vectors, ok = thumbnail_vectors(index, records)
    return near_duplicate_pairs(vectors, min_correlation, ok)


def connected_groups(n: int, pairs: Iterable[tuple[int, int] | tuple[int, int, float]]) -> list[int]:
    """Union-find: the smallest member's position for each item, so items chained by pairs share one."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in pairs:
        a, b = find(pair[0]), find(pair[1])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]
