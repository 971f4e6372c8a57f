"""Grad-CAM contact sheet on real chest X-rays: 4 PNEUMONIA + 4 NORMAL Kermany test images, 2 rows x 4.

Each tile is the overlay with the true label, the predicted class and its probability. Images are picked with a
seeded RNG from the sorted file lists, so reruns show the same patients. Skips (exit 0, one clear line) when the
checkpoint or the data folder is absent. Run after training:
``python benchmarks/kermany_contact_sheet.py [--checkpoint models/chest_xray_pneumonia/model.ckpt] [--data ...]``
(the shipped model: seed 2 of the recorded recipe, ``models/train.sh chest_xray_pneumonia``).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cadx.engine.explain import METHODS, Explainer
from cadx.engine.feature_maps import render_overlay
from cadx.engine.inference import Predictor, expand_inputs

ROOT = Path(__file__).resolve().parents[1]
KERMANY_TEST = ROOT.parent / "shared" / "datasets" / "chest_xray_kermany" / "test"
CLASSES = ("PNEUMONIA", "NORMAL")  # row order


def pick(folder: Path, n: int, seed: int) -> list[Path]:
    files = expand_inputs([folder])
    if len(files) < n:
        raise SystemExit(f"skipped: {folder} holds {len(files)} image(s), {n} needed")
    rng = np.random.default_rng(seed)
    return [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "chest_xray_pneumonia" / "model.ckpt")
    parser.add_argument("--data", type=Path, default=KERMANY_TEST)
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--method", default="gradcam", help="gradcam or gradcam++")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "kermany_gradcam_contact_sheet.png")
    args = parser.parse_args()
    missing = [p for p in (args.checkpoint, *(args.data / c for c in CLASSES)) if not p.exists()]
    if missing:
        print(f"skipped: {', '.join(map(str, missing))} not found (train the Kermany model / mount ../shared first)")
        return 0
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu")
    explainer = Explainer(predictor, method=args.method)
    tiles: list[list[tuple[Path, bytes]]] = []
    for row, true in enumerate(CLASSES):
        tiles.append([])
        for path in pick(args.data / true, args.per_class, args.seed + row):
            image = predictor.read(path)
            # the predicted class at the model's threshold, as cadx explain shows it
            heatmap, _, _, _, decision = explainer.heatmap_and_scores(image, decide=predictor.decide)
            predicted, p = decision.label, decision.probability
            mark = "" if predicted.lower() == true.lower() else "  (wrong)"
            title = f"{path.name}\ntrue {true} | predicted {predicted} (p = {p:.3f}){mark}"
            if not heatmap.any():
                title += "\n(empty map: no positive evidence)"
            tiles[-1].append((path, render_overlay(image, heatmap, title, METHODS[explainer.method])))
            print(f"{path.name}: true {true}, predicted {predicted} p={p:.3f}")
    shown = args.checkpoint.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    sheet(tiles, args.out, f"{args.method} at {explainer.layer}, {shown}")
    print(f"written {args.out}")
    return 0


def sheet(tiles: list[list[tuple[Path, bytes]]], out: Path, caption: str) -> None:
    """Paste the overlay PNGs on a grid under a one-line caption; saved at 1400 px wide with a 128-colour palette
    so the committed file stays small (< 200 kB)."""
    images = [[Image.open(io.BytesIO(png)).convert("RGB") for _, png in row] for row in tiles]
    w = max(im.width for row in images for im in row)
    h = max(im.height for row in images for im in row)
    top = 30
    canvas = Image.new("RGB", (w * max(len(r) for r in images), top + h * len(images)), "white")
    for r, row in enumerate(images):
        for c, im in enumerate(row):
            canvas.paste(im, (c * w, top + r * h))
    ImageDraw.Draw(canvas).text((10, 8), caption, fill="black", font=ImageFont.load_default(size=16))
    out.parent.mkdir(parents=True, exist_ok=True)
    width = min(canvas.width, 1400)
    small = canvas.resize((width, round(canvas.height * width / canvas.width)), Image.LANCZOS)
    small.quantize(128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
