"""How many images of ``../shared/datasets`` each input quality check (``cadx.data.quality``) rejects, and the
distribution of the measured quantities: the evidence for the floors in that module.

Every image of every set is read as a model would read it (DICOM windowing included), at the input size of the model
that would see it (128 px for the shipped models; 28 px for PneumoniaMNIST). Run:
``python benchmarks/abstention/quality_on_shared.py`` (about two minutes on 2 CPU cores); writes
``quality_on_shared.json`` beside this file.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from cadx.data import quality
from cadx.data.quality import QualityReport, quality_problem
from cadx.data.readers import UnreadableImageError, read_image
from cadx.engine.inference import expand_inputs

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets"
SETS = {"chest_xray_kermany": 128, "brain_mri_4class": 128, "lung_ct_iqothnccd": 128, "dicom": 128}


def summarise(reports: list[QualityReport], problems: list[str | None]) -> dict:
    values = {k: np.array([getattr(r, k) for r in reports]) for k in ("std", "entropy_bits", "levels", "short_side",
                                                                       "aspect", "white", "black")}
    kinds = Counter(p.split(" (")[0] for p in problems if p)
    return {"images": len(reports), "rejected": int(sum(p is not None for p in problems)), "by_check": dict(kinds),
            "min": {k: float(v.min()) for k, v in values.items()},
            "max": {k: float(v.max()) for k, v in values.items()},
            "p01": {k: float(np.percentile(v, 1)) for k, v in values.items()}}


def main() -> int:
    if not SHARED.exists():
        print(f"skipped: {SHARED} is absent")
        return 0
    started = time.perf_counter()
    out: dict = {"floors": {k: getattr(quality, k) for k in ("MIN_STD", "MIN_ENTROPY_BITS", "MIN_LEVELS",
                                                            "MIN_SIDE_SHARE", "MIN_SIDE_PX", "MAX_ASPECT", "MAX_WHITE",
                                                            "MAX_BLACK")}, "sets": {}}
    for name, size in SETS.items():
        reports, problems, rejected, unreadable = [], [], [], 0
        for f in expand_inputs([SHARED / name]):
            try:
                image = read_image(f)
            except UnreadableImageError:
                unreadable += 1
                continue
            reports.append(QualityReport.of(image))
            problems.append(quality_problem(image, size))
            if problems[-1]:
                rejected.append({"file": str(f.relative_to(SHARED)), "reason": problems[-1]})
        out["sets"][name] = {"input_size": size, "unreadable": unreadable, **summarise(reports, problems),
                             "rejected_files": rejected}
        found = out["sets"][name]
        print(name, found["images"], "rejected", found["rejected"], found["by_check"])
    npz = np.load(SHARED / "pneumoniamnist" / "pneumoniamnist_28.npz")
    images = np.concatenate([npz[f"{s}_images"] for s in ("train", "val", "test")])
    reports = [QualityReport.of(im) for im in images]
    out["sets"]["pneumoniamnist_28"] = {"input_size": 28, "unreadable": 0,
                                        **summarise(reports, [quality_problem(im, 28) for im in images])}
    print("pneumoniamnist", out["sets"]["pneumoniamnist_28"]["rejected"])
    out["seconds"] = round(time.perf_counter() - started, 1)
    (Path(__file__).with_name("quality_on_shared.json")).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
