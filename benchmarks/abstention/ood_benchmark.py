"""Does each shipped model know when not to answer? Rejection rates and out-of-distribution AUROC of both scores.

For each shipped model (``models/chest_xray_pneumonia``, ``models/brain_mri_tumor``) and each score
(``mahalanobis``, ``energy``): a copy of the checkpoint gets the score fitted on its own training split and its
limit on its own validation split (``cadx.engine.training.refit_ood``, keep = 99 %), then every image below goes
through what ``cadx predict`` does (input quality, scope, score). Reported per image set: the share not assessed (any
reason), the share flagged by the score alone, and the AUROC of the score (the model's own test images vs the set).

Image sets: the model's own test split (in distribution); the other shipped model's images (Kermany official test,
624; 600 seeded brain-MRI training images); 600 seeded lung CT slices (``lung_ct_iqothnccd``); every readable DICOM
of ``dicom/``; 40 blank images (constant grey levels 0-255, 128-2048 px); 40 noise images (uniform and Gaussian);
natural pictures shipped with matplotlib (grace_hopper.jpg, Minduka_Present_Blue_Pack.png, logo2.png, the terrain
rasters jacksboro_fault_dem and topobathy as grey images) and 40 seeded grey crops of grace_hopper.jpg (a grey
photograph passes the colour check, so only the score can catch it).

Run: ``python benchmarks/abstention/ood_benchmark.py`` (2 CPU cores: about 10 minutes); writes ``ood_benchmark.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from cadx.data.readers import UnreadableImageError
from cadx.engine.hardware import describe_hardware
from cadx.engine.inference import Predictor, expand_inputs
from cadx.engine.selection import select_records
from cadx.engine.training import refit_ood

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets"
SAMPLE_DATA = Path(matplotlib.get_data_path()) / "sample_data"
MODELS = {"chest_xray_pneumonia": "brain", "brain_mri_tumor": "chest"}


def sample(files: list[Path], n: int, seed: int) -> list[Path]:
    if len(files) <= n:
        return files
    return [files[i] for i in sorted(np.random.default_rng(seed).choice(len(files), n, replace=False))]


def synthetic_sets(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    blanks = [np.full((int(s), int(s)), int(v), np.uint8)
              for v, s in zip(np.linspace(0, 255, 40), rng.choice([128, 224, 512, 2048], 40), strict=True)]
    noise = [rng.integers(0, 256, (256, 256), dtype=np.uint8) for _ in range(20)]
    noise += [rng.normal(128, 40, (256, 256)).clip(0, 255).astype(np.uint8) for _ in range(20)]
    photos = [np.asarray(Image.open(SAMPLE_DATA / n).convert("RGB")) for n in
              ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")]
    for name in ("jacksboro_fault_dem.npz", "topobathy.npz"):
        raster = np.load(SAMPLE_DATA / name)
        arr = np.asarray(raster[raster.files[0]], dtype=np.float64)
        photos.append(((arr - arr.min()) / max(np.ptp(arr), 1e-9) * 255).astype(np.uint8))
    hopper = np.asarray(Image.open(SAMPLE_DATA / "grace_hopper.jpg").convert("L"))
    crops = []
    for _ in range(40):
        side = int(rng.integers(200, min(hopper.shape)))
        y, x = rng.integers(0, hopper.shape[0] - side + 1), rng.integers(0, hopper.shape[1] - side + 1)
        crops.append(hopper[y:y + side, x:x + side])
    return {"blank": blanks, "noise": noise, "natural_pictures": photos, "grey_photo_crops": crops}


def file_sets(other: str, seed: int = 0) -> dict[str, list[Path]]:
    """The other shipped model's images, lung CT slices and the DICOM files."""
    sets = {"chest_xray": expand_inputs([SHARED / "chest_xray_kermany" / "test"])} if other == "chest" else {
        "brain_mri": sample(expand_inputs([SHARED / "brain_mri_4class" / "train"]), 600, seed)}
    sets["lung_ct"] = sample(expand_inputs([SHARED / "lung_ct_iqothnccd" / "train"]), 600, seed)
    sets["dicom"] = expand_inputs([SHARED / "dicom"])
    return sets


def judge(predictor: Predictor, images: list[tuple[np.ndarray, str | None]]) -> dict:
    """What cadx predict does with each (decoded image, path): not assessed (any reason), by the score, scores."""
    problems = [predictor.input_problem(path, image) for image, path in images]
    prepared = np.stack([predictor.prepare(image) for image, _ in images])
    _, scores = predictor.predict_arrays_scored(prepared, 64)
    by_score = [predictor.ood.reason(float(s)) is not None for s in scores]
    declined = [bool(p) or s for p, s in zip(problems, by_score, strict=True)]
    return {"n": len(images), "not_assessed": float(np.mean(declined)), "by_score": float(np.mean(by_score)),
            "by_input_checks": float(np.mean([bool(p) for p in problems])), "scores": scores}


def read_files(predictor: Predictor, files: list[Path]) -> list[tuple[np.ndarray, str | None]]:
    out = []
    for f in files:
        try:
            out.append((predictor.read(f), str(f)))
        except UnreadableImageError:
            continue
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ood_benchmark.json"))
    args = parser.parse_args()
    if not SHARED.exists():
        print(f"skipped: {SHARED} is absent")
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result: dict = {"setup": {"keep": 0.99, "seed": 0, "hardware": describe_hardware(), "torch_threads": args.threads},
                    "models": {}}
    synthetic = synthetic_sets()
    for model_id, other in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            for method in ("mahalanobis", "energy"):
                copy = Path(tmp) / f"{method}.ckpt"
                shutil.copy(ROOT / "models" / model_id / "model.ckpt", copy)
                refit_ood(copy, method=method)
                predictor = Predictor.from_checkpoint(copy, device="cpu")
                index, records = select_records(predictor.checkpoint, None, "test")
                own = judge(predictor, read_files(predictor, [index.path_of(r) for r in records]))
                rows = {"own_test": {k: v for k, v in own.items() if k != "scores"}}
                sets = {name: read_files(predictor, files) for name, files in file_sets(other).items()}
                sets |= {name: [(im, None) for im in images] for name, images in synthetic.items()}
                for name, images in sets.items():
                    foreign = judge(predictor, images)
                    y = np.r_[np.zeros(len(own["scores"])), np.ones(len(foreign["scores"]))]
                    auroc = float(roc_auc_score(y, np.r_[own["scores"], foreign["scores"]]))
                    rows[name] = {k: v for k, v in foreign.items() if k != "scores"} | {"auroc": auroc}
                    print(f"{model_id} {method} {name}: n={foreign['n']} not assessed {foreign['not_assessed']:.3f} "
                          f"(score {foreign['by_score']:.3f}) AUROC {auroc:.4f}", flush=True)
                print(f"{model_id} {method} own test: not assessed {own['not_assessed']:.3f}", flush=True)
                fitted = predictor.ood
                result["models"].setdefault(model_id, {})[method] = {
                    "threshold": fitted.threshold, "fitted": fitted.fitted, "sets": rows}
                args.out.write_text(json.dumps(result, indent=2))  # as it goes
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
