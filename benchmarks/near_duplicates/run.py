"""Near-duplicate grouping on the shared sets: groups per threshold, synthetic near-copies, the split leak it closes.

    nice -n 10 .venv/bin/python benchmarks/near_duplicates/run.py   # writes results.json beside this file

Needs ../shared/datasets; writes only counts and timings (no images, no file names).
Negatives with known truth: images of different classes (different cases) and, for Kermany, different patients.
Positives with known truth: synthetic copies of 100 sampled images per set (shifted, noised, JPEG, brightness).
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from cadx.data.near_duplicates import (
    DEFAULT_MIN_CORRELATION,
    NUMBERED_NEIGHBOUR_MIN_CORRELATION,
    connected_groups,
    near_duplicate_pairs,
    numbered_neighbour_pairs,
    thumbnail_vector,
    thumbnail_vectors,
)
from cadx.data.sources import DatasetIndex, Record, load_index
from cadx.data.splits import assign_splits, content_groups, grouped_stratified_split

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
THRESHOLDS = [0.98, DEFAULT_MIN_CORRELATION, 0.99]
AUDIT_THRESHOLDS = [0.95, 0.97, DEFAULT_MIN_CORRELATION]  # looser views of "near-duplicate" for the leak
SETS = {"chest_xray_kermany": "chest_xray_kermany", "brain_mri_4class/train": "brain_mri_4class/train",
        "lung_ct_iqothnccd/train": "lung_ct_iqothnccd/train"}
SIZE_BINS = [(2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, 10**9)]


def perturb(a: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    f = a.astype(np.float32)
    if kind.startswith("shift"):  # down by k px, edge-filled (a re-crop)
        k = int(kind[-1])
        f = np.pad(f, k, mode="edge")[:a.shape[0], k:k + a.shape[1]]
    elif kind == "noise":
        f = f + rng.normal(0, 5, f.shape)
    elif kind in ("bright+5%", "bright-5%"):
        f = f * (1.05 if kind == "bright+5%" else 0.95)
    elif kind == "jpeg75":
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=75)
        f = np.asarray(Image.open(buf), dtype=np.float32)
    return f.clip(0, 255).astype(np.uint8)


KINDS = ["shift1", "shift2", "shift3", "noise", "jpeg75", "bright+5%", "bright-5%"]


def phash64(image: np.ndarray) -> int:
    """The classic pHash (32x32 grey, 8x8 lowest DCT frequencies against their median), for comparison."""
    im = Image.fromarray(image).convert("L").resize((32, 32), Image.Resampling.BOX)
    n = 32
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * np.arange(n)[:, None] / (2 * n))[:8]
    low = (m @ np.asarray(im, dtype=np.float64) @ m.T).ravel()
    return int.from_bytes(np.packbits(low > np.median(low)).tobytes(), "big")


def size_histogram(roots: list[int]) -> dict[str, int]:
    sizes = [s for s in Counter(roots).values() if s > 1]
    return {(f"{lo}" if lo == hi else f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}"):
            sum(lo <= s <= hi for s in sizes) for lo, hi in SIZE_BINS}


def test_leak(names: list[str], pairs: list[tuple[int, int, float]], threshold: float) -> float:
    """Share of test images with a near-duplicate (correlation >= threshold) in train or val."""
    hit = {i for a, b, r in pairs if r >= threshold and (names[a] == "test") != (names[b] == "test")
           for i in (a, b) if names[i] == "test"}
    return len(hit) / max(1, names.count("test"))


def run_set(name: str, rng: np.random.Generator) -> dict:
    index = load_index(SHARED / SETS[name])
    records = index.records
    start = time.perf_counter()
    vectors, ok = thumbnail_vectors(index, records)
    thumb_s = time.perf_counter() - start
    start = time.perf_counter()
    pairs = near_duplicate_pairs(vectors, min(AUDIT_THRESHOLDS + THRESHOLDS), ok)
    pair_s = time.perf_counter() - start
    dup = content_groups(index, records)
    byte_links = [(m[0], o) for m in dup.values() for o in m[1:]]
    classes = np.array([r.target for r in records])
    out: dict = {"images": len(records), "unreadable": int((~ok).sum()),
                 "byte_identical_groups": sum(len(m) > 1 for m in dup.values()),
                 "images_in_byte_identical_groups": sum(len(m) for m in dup.values() if len(m) > 1),
                 "seconds_thumbnails": round(thumb_s, 2),
                 "seconds_per_1000_images_thumbnails": round(1000 * thumb_s / len(records), 2),
                 "seconds_all_pairs": round(pair_s, 2), "thresholds": {}}
    for t in THRESHOLDS:
        chosen = [(a, b) for a, b, r in pairs if r >= t]
        roots = connected_groups(len(records), chosen + byte_links)
        sizes = [s for s in Counter(roots).values() if s > 1]
        entry = {"pairs": len(chosen), "cross_class_pairs": int(sum(classes[a] != classes[b] for a, b in chosen)),
                 "groups": len(sizes), "images_in_groups": sum(sizes), "largest_group": max(sizes, default=1),
                 "group_sizes": size_histogram(roots)}
        if name == "chest_xray_kermany":
            pat = [r.patient for r in records]
            entry["cross_patient_pairs"] = sum(pat[a] != pat[b] for a, b in chosen)
            test = {i for i, r in enumerate(records) if r.split == "test"}
            hit = {i for a, b in chosen for i in (a, b) if i in test and ({a, b} - test)}
            entry["official_test_images_with_near_duplicate_in_train"] = len(hit)
            entry["official_test_images"] = len(test)
        if name.startswith("lung_ct"):
            entry["consecutive_number_pairs_grouped"] = consecutive_share(records, roots)
        if t == DEFAULT_MIN_CORRELATION:  # with the default numbering hint, as cadx splits
            hinted = numbered_neighbour_pairs([r.key for r in records], vectors, ok)
            roots = connected_groups(len(records), chosen + byte_links + [(a, b) for a, b, _ in hinted])
            sizes = [s for s in Counter(roots).values() if s > 1]
            entry["with_numbered_neighbours"] = {
                "hint_pairs": len(hinted), "cross_class_hint_pairs": int(sum(classes[a] != classes[b]
                                                                             for a, b, _ in hinted)),
                "groups": len(sizes), "images_in_groups": sum(sizes), "largest_group": max(sizes, default=1)}
        out["thresholds"][str(t)] = entry
    out["synthetic_near_copies"] = synthetic(index, vectors, rng)
    if not index.has_explicit_splits():
        out["split_leak"] = split_leak(index, pairs)
    return out


def consecutive_share(records: list[Record], roots: list[int]) -> dict:
    """The numbering hint, used only to report: how many same-class neighbours (n, n+1) share a group."""
    number = {}
    for i, r in enumerate(records):
        m = re.search(r"\((\d+)\)", r.key)
        if m:
            number[(r.target, int(m.group(1)))] = i
    neighbours = [(i, number[(t, n + 1)]) for (t, n), i in number.items() if (t, n + 1) in number]
    joined = sum(roots[a] == roots[b] for a, b in neighbours)
    return {"neighbour_pairs": len(neighbours), "grouped": joined, "share": round(joined / len(neighbours), 3)}


def synthetic(index: DatasetIndex, vectors: np.ndarray, rng: np.random.Generator) -> dict:
    """Correlation of 100 sampled images with their own near-copies, against their nearest other-class image;
    the same comparison for a 64-bit pHash (Hamming distance)."""
    sample = rng.choice(len(index.records), 100, replace=False)
    classes = np.array([r.target for r in index.records])
    corr = {k: [] for k in KINDS}
    nearest_other = []
    ph_closer = {k: 0 for k in KINDS}
    corr_closer = {k: 0 for k in KINDS}
    all_ph = None
    for i in sample:
        image = index.load(index.records[i])
        grey = np.asarray(Image.fromarray(image).convert("L"))
        other = classes != classes[i]
        best_other = float((vectors[other] @ vectors[i]).max())
        nearest_other.append(best_other)
        if all_ph is None:
            all_ph = np.array([phash64(np.asarray(Image.fromarray(index.load(r)).convert("L")))
                               for r in index.records], dtype=np.uint64)
        ph_other = int(np.bitwise_count(all_ph[other] ^ all_ph[i]).min())
        for k in KINDS:
            copy = perturb(grey, k, rng)
            c = float(thumbnail_vector(copy) @ vectors[i])
            corr[k].append(c)
            corr_closer[k] += best_other >= c
            ph_closer[k] += ph_other <= int(np.bitwise_count(np.uint64(phash64(copy)) ^ all_ph[i]))
    return {
        "sampled_images": len(sample),
        "share_grouped_at_threshold": {str(t): {k: round(float(np.mean(np.array(v) >= t)), 3)
                                                for k, v in corr.items()} for t in THRESHOLDS},
        "min_correlation_with_copy": {k: round(min(v), 4) for k, v in corr.items()},
        "nearest_other_class_correlation_median": round(float(np.median(nearest_other)), 4),
        "share_with_other_class_image_as_close_as_copy": {
            "thumbnail_correlation_16x16": {k: v / len(sample) for k, v in corr_closer.items()},
            "phash_64bit": {k: v / len(sample) for k, v in ph_closer.items()}},
    }


def split_leak(index: DatasetIndex, pairs: list[tuple[int, int, float]], seeds: int = 5) -> dict:
    """Share of test images with a near-duplicate in train/val: random split vs the grouped default."""
    records = index.records
    result: dict = {"seeds": seeds, "fractions": "70/20/10 stratified", "random": {}, "grouped": {}}
    random_names = [grouped_stratified_split(records, [f"r{i}" for i in range(len(records))],
                                             {"train": .7, "val": .2, "test": .1}, s) for s in range(seeds)]
    result["grouped_correlation_only"] = {}
    grouped_names, correlation_only = [], []
    for s in range(seeds):
        for hint, out in ((NUMBERED_NEIGHBOUR_MIN_CORRELATION, grouped_names), (None, correlation_only)):
            splits, _ = assign_splits(index, seed=s, numbered_neighbours=hint)
            where = {r.key: n for n, recs in splits.items() for r in recs}
            out.append([where[r.key] for r in records])
    for label, runs in (("random", random_names), ("grouped", grouped_names),
                        ("grouped_correlation_only", correlation_only)):
        for t in AUDIT_THRESHOLDS:
            result[label][str(t)] = round(float(np.mean([test_leak(n, pairs, t) for n in runs])), 3)
    result["grouped_test_share"] = round(float(np.mean([n.count("test") / len(n) for n in grouped_names])), 3)
    return result


def main() -> None:
    rng = np.random.default_rng(0)
    results = {"descriptor": "Pearson correlation of 16x16 grey thumbnails (area-averaged; JPEGs decoded at "
                             "reduced DCT scale)", "default_min_correlation": DEFAULT_MIN_CORRELATION,
               "numbered_neighbour_min_correlation": NUMBERED_NEIGHBOUR_MIN_CORRELATION,
               "hardware": {"cpu_cores": os.cpu_count(), "machine": platform.machine(),
                            "python": platform.python_version(), "note": "2 cores shared with other jobs, nice 10"},
               "sets": {}}
    for name in SETS:
        start = time.perf_counter()
        results["sets"][name] = run_set(name, rng)
        results["sets"][name]["seconds_total_benchmark"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(results["sets"][name]["thresholds"][str(DEFAULT_MIN_CORRELATION)]), flush=True)
    (Path(__file__).parent / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
