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

import re
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
# Consecutive file numbers ("case (12).jpg", "case (13).jpg") are a hint that two images are neighbouring slices of
# one scan, not a rule: two such files are joined only when their thumbnails also correlate at least this much, and
# more than all but 0.5 % of pairs of the same numbered run lying far apart (FAR_NUMBERS) do, so a set whose
# unrelated images look alike (brain MRI: 7 % of far pairs reach 0.85) gets a stricter bar. On the shared lung CT set
# 74 % of the neighbouring-number pairs reach 0.85 (the rest mostly scan boundaries) against 0.5 % of far pairs
# (benchmarks/near_duplicates/README.md).
NUMBERED_NEIGHBOUR_MIN_CORRELATION = 0.85
FAR_NUMBERS = 30  # numbers further apart than this are taken as different scans, to set the bar
_FAR_QUANTILE, _FAR_SAMPLE, _FAR_MIN = 0.995, 4000, 200
_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)(?P<suffix>[^0-9A-Za-z]*)$")  # a trailing number
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


def numbered_neighbour_pairs(keys: list[str], vectors: np.ndarray, valid: np.ndarray | None = None,
                             min_correlation: float = NUMBERED_NEIGHBOUR_MIN_CORRELATION,
                             ) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, correlation)`` of files whose names differ only by consecutive numbers (same folder, prefix
    and extension) and whose thumbnails correlate at least ``min_correlation``: neighbouring slices of a scan."""
    valid = np.ones(len(keys), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    runs: dict[tuple[str, str], dict[int, int]] = {}
    for i, key in enumerate(keys):
        stem, dot, ext = key.rpartition(".")
        m = _NUMBERED.match(stem if dot else key)
        if m is not None:
            runs.setdefault((m["prefix"], m["suffix"] + dot + ext), {})[int(m["number"])] = i
    bar = max(min_correlation, _far_pair_bar(list(runs.values()), vectors, valid))
    pairs = []
    for numbers in runs.values():
        for n, i in numbers.items():
            j = numbers.get(n + 1)
            if j is not None and valid[i] and valid[j]:
                r = float(vectors[i] @ vectors[j])
                if r >= bar:
                    pairs.append((min(i, j), max(i, j), r))
    return pairs


def _far_pair_bar(runs: list[dict[int, int]], vectors: np.ndarray, valid: np.ndarray) -> float:
    """The correlation only 0.5 % of far-apart pairs within numbered runs reach (a fixed-seed sample); -1 when the
    runs are too short to tell."""
    rng = np.random.default_rng(0)
    members = [sorted(run.items()) for run in runs if len(run) > FAR_NUMBERS + 1]
    if not members:
        return -1.0
    sizes = np.array([len(m) for m in members], dtype=float)
    far = []
    for pick in rng.choice(len(members), size=_FAR_SAMPLE, p=sizes / sizes.sum()):
        run = members[pick]
        (na, a), (nb, b) = (run[k] for k in rng.choice(len(run), size=2, replace=False))
        if abs(na - nb) > FAR_NUMBERS and valid[a] and valid[b]:
            far.append(float(vectors[a] @ vectors[b]))
    return float(np.quantile(far, _FAR_QUANTILE)) if len(far) >= _FAR_MIN else -1.0


def find_near_duplicates(index: DatasetIndex, records: list[Record],
                         min_correlation: float = DEFAULT_MIN_CORRELATION, *,
                         numbered_neighbours: float | None = NUMBERED_NEIGHBOUR_MIN_CORRELATION,
                         ) -> list[tuple[int, int, float]]:
    """Near-duplicate pairs among ``records`` (positions into it), from one thumbnail pass: every pair correlating
    at least ``min_correlation``, and consecutively numbered files correlating at least ``numbered_neighbours``
    (None: that hint is not used)."""
    vectors, ok = thumbnail_vectors(index, records)
    pairs = near_duplicate_pairs(vectors, min_correlation, ok)
    if numbered_neighbours is not None:
        seen = {(a, b) for a, b, _ in pairs}
        pairs += [p for p in numbered_neighbour_pairs([r.key for r in records], vectors, ok, numbered_neighbours)
                  if (p[0], p[1]) not in seen]
    return pairs


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
