"""Pointing game: does Grad-CAM point at the evidence? Synthetic task where the evidence is known exactly.

Each 64x64 image has a textured background and one 10x10 blob at a random place: bright = class 1, dark = class 0.
Models are trained with the real cadx engine (PNG class folders -> ``cadx.engine.training.train``), then on 200
held-out images Grad-CAM is computed for the predicted class; a hit is a heatmap argmax inside the blob box,
strictly (0 px) or within half a CAM cell (the map is bilinearly upsampled from a coarse grid, so its peak sits on
a cell centre: half a cell is the quantisation error). A random-point baseline with the same tolerance gives the
chance rate. Run: ``python benchmarks/pointing_game.py`` (~3-5 min on 1 CPU thread).

Design note: the background level is random and a few single pixels are pinned to 0 and 255, so the per-image
min-max stretch in ``prepare_image`` is a no-op. Without that, the stretch shifts the whole background by class (a
bright blob darkens the rest of the image) and the networks learn that global shortcut; Grad-CAM then correctly
lights up the whole image and the pointing game fails. That was the first result of this benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cadx.engine.config import build_config
from cadx.engine.explain import Explainer
from cadx.engine.hardware import cpu_model
from cadx.engine.inference import Predictor
from cadx.engine.training import train

IMG, BLOB, SEED = 64, 10, 0
CLASSES = ("dark", "bright")
MODELS = {"simple_cnn": {"image_size": 64, "epochs": 10}, "resnet18": {"image_size": 128, "epochs": 4}}
HERE = Path(__file__).resolve().parent


def blob_image(label: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """Smooth texture + fine noise at a random level, a 10x10 blob, 8 pixels pinned to 0 and 8 to 255."""
    coarse = rng.normal(0, 1, (IMG // 8, IMG // 8)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse, mode="F").resize((IMG, IMG), Image.BICUBIC))
    img = rng.uniform(96, 160) + 14 * texture + rng.normal(0, 10, (IMG, IMG))
    y, x = (int(v) for v in rng.integers(0, IMG - BLOB + 1, 2))
    img[y:y + BLOB, x:x + BLOB] = 230 if label else 25
    flat = img.reshape(-1)
    flat[rng.choice(flat.size, 16, replace=False)] = [0] * 8 + [255] * 8
    return img.clip(0, 255).astype(np.uint8), (y, x)


def write_folders(root: Path, n_train: int, n_val: int, rng: np.random.Generator) -> Path:
    for split, n in (("train", n_train), ("val", n_val)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(blob_image(label, rng)[0]).save(folder / f"{name}_{i:04d}.png")
    return root


def hit(heatmap: np.ndarray, point: tuple[int, int] | None, corner: tuple[int, int], tol: float) -> bool:
    py, px = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape) if point is None else point
    y, x = corner
    return y - tol <= py < y + BLOB + tol and x - tol <= px < x + BLOB + tol


def chance(corners: list[tuple[int, int]], tol: float) -> float:
    """Expected hit rate of a uniformly random point: (tolerance-grown box, clipped to the image) / image area."""
    areas = []
    for y, x in corners:
        h = min(IMG, y + BLOB + tol) - max(0, y - tol)
        w = min(IMG, x + BLOB + tol) - max(0, x - tol)
        areas.append(np.ceil(h) * np.ceil(w) / IMG**2)
    return float(np.mean(areas))


def evaluate(predictor: Predictor, test: list[tuple[np.ndarray, int, tuple[int, int]]]) -> dict:
    rows = {}
    for method in ("gradcam", "gradcam++"):
        explainer = Explainer(predictor, method=method)
        stages = explainer.heatmap_and_scores(test[0][0], with_stages=True).stages
        cell = IMG / stages[explainer.layer].shape[-1]  # CAM cell size in original-image pixels
        tol = cell / 2
        strict = loose = correct = 0
        started = time.perf_counter()
        for img, label, corner in test:
            heat, index, _, _, _ = explainer.heatmap_and_scores(img, decide=predictor.decide)
            strict += hit(heat, None, corner, 0)
            loose += hit(heat, None, corner, tol)
            correct += explainer.classes[index] == CLASSES[label]  # folder classes sort: bright, dark
        ms = 1000 * (time.perf_counter() - started) / len(test)
        rows[method] = {"layer": explainer.layer, "cam_grid": list(stages[explainer.layer].shape[-2:]),
                        "cell_px": cell, "tolerance_px": tol, "accuracy": correct / len(test),
                        "hits_strict": strict / len(test), "hits_tolerance": loose / len(test),
                        "ms_per_heatmap": round(ms, 1)}
    return rows


def random_baseline(test: list, tol: float, rng: np.random.Generator) -> dict:
    corners = [c for _, _, c in test]
    points = [tuple(int(v) for v in rng.integers(0, IMG, 2)) for _ in test]
    hits = [hit(np.zeros(1), p, c, tol) for p, c in zip(points, corners, strict=True)]
    return {"tolerance_px": tol, "hits_tolerance": float(np.mean(hits)), "expected_tolerance": chance(corners, tol),
            "hits_strict": float(np.mean([hit(np.zeros(1), p, c, 0) for p, c in zip(points, corners, strict=True)])),
            "expected_strict": chance(corners, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=300, help="training images per class")
    parser.add_argument("--n-val", type=int, default=50, help="validation images per class")
    parser.add_argument("--n-test", type=int, default=200, help="held-out test images (half per class)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=None, help="override the per-model epochs")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for pointing_game.json / .md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    test_rng = np.random.default_rng(SEED + 1)
    test = [(*blob_image(i % 2, test_rng), i % 2) for i in range(args.n_test)]
    test = [(img, label, corner) for img, corner, label in test]
    results: dict = {"models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_folders(Path(tmp) / "data", args.n_train, args.n_val, rng)
        for name in args.models:
            spec = dict(MODELS.get(name, {"image_size": 64, "epochs": 4}))
            epochs = args.epochs or spec["epochs"]
            config = build_config(model=name, image_size=spec["image_size"], epochs=epochs, in_channels=1,
                                  batch_size=32, lr=1e-3, augment=False, early_stopping=0, seed=SEED,
                                  num_workers=0, precision="32-true")
            t0 = time.perf_counter()
            trained = train(data, config, Path(tmp) / f"run-{name}")
            predictor = Predictor.from_checkpoint(trained.best_checkpoint, device="cpu")
            rows = evaluate(predictor, test)
            results["models"][name] = {"image_size": spec["image_size"], "epochs": epochs,
                                       "train_seconds": round(trained.seconds, 1),
                                       "total_seconds": round(time.perf_counter() - t0, 1), **rows}
    tolerances = sorted({row["tolerance_px"] for m in results["models"].values()
                         for k, row in m.items() if isinstance(row, dict)})
    results["random"] = {str(t): random_baseline(test, t, np.random.default_rng(SEED + 2)) for t in tolerances}
    results["setup"] = {"image_px": IMG, "blob_px": BLOB, "n_train_per_class": args.n_train,
                        "n_val_per_class": args.n_val, "n_test": args.n_test, "seed": SEED,
                        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "torch": torch.__version__, "wall_seconds": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pointing_game.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.out / "pointing_game.md").write_text(table)
    print(table)


def markdown(results: dict) -> str:
    s = results["setup"]
    lines = ["# Grad-CAM pointing game (synthetic blobs)", "",
             f"{s['image_px']}x{s['image_px']} px images, one {s['blob_px']}x{s['blob_px']} px blob (bright = class "
             f"'bright', dark = class 'dark') on a textured background; {s['n_train_per_class']} train + "
             f"{s['n_val_per_class']} val images per class, trained with `cadx.engine.training.train` (Adam 1e-3, "
             f"cosine, no augmentation); {s['n_test']} held-out test images; seed {s['seed']}.",
             "Hit = argmax of the heatmap (for the predicted class) inside the blob box, strictly or within the "
             "tolerance (half a CAM cell, in original-image pixels). Random = a uniform random point per image "
             "(measured; expected value in brackets).", "",
             "| model | input px | epochs | method | CAM layer (grid) | accuracy | hits strict | tolerance px "
             "| hits within tolerance | ms / heatmap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in results["models"].items():
        for method in ("gradcam", "gradcam++"):
            r = m[method]
            grid = "x".join(map(str, r["cam_grid"]))
            lines.append(f"| {name} | {m['image_size']} | {m['epochs']} | {method} | {r['layer']} ({grid}) | "
                         f"{r['accuracy']:.1%} | {r['hits_strict']:.1%} | {r['tolerance_px']:g} | "
                         f"**{r['hits_tolerance']:.1%}** | {r['ms_per_heatmap']} |")
    for tol, r in results["random"].items():
        lines.append(f"| random point | - | - | - | - | - | {r['hits_strict']:.1%} ({r['expected_strict']:.1%}) | "
                     f"{float(tol):g} | {r['hits_tolerance']:.1%} ({r['expected_tolerance']:.1%}) | - |")
    lines += ["", f"Hardware: {s['cpu']}, {s['cpu_count']} cores, torch {s['torch']} with {s['torch_threads']} "
              f"thread(s) (a background training job shared the machine); wall time {s['wall_seconds']} s "
              f"(data generation, training, 2 x {s['n_test']} heatmaps per model).", ""]
    for name, m in results["models"].items():
        lines.append(f"- {name}: training {m['train_seconds']} s, total {m['total_seconds']} s")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
