"""Which heatmap method is faithful for which architecture? Pointing game + deletion/insertion on known evidence.

Synthetic presence-vs-absence tasks, generated here (nothing read from disk): "lesion" images carry one bright blob
at a random place; "clear" images carry a decoy instead (a dimmer ring, or a dimmer smaller blob) at a random place.
Three generators vary blob radius, contrast and decoy (see ``VARIANTS``), so no method is tuned to one. Every
architecture is trained with a plain seeded Adam loop on the images as ``cadx`` prepares them, then for each held-out
lesion image and each method x candidate layer (plus occlusion, which needs no layer):

* pointing game: hit = the heatmap's peak lies inside the blob (distance to its centre <= its radius; no
  tolerance), the lesion class explained;
* deletion / insertion AUC (``cadx.engine.faithfulness``; deletion to the image's mean grey, insertion from a
  Gaussian blur, sigma = side / 10) on the first ``--faith-images`` lesion images;
* ms per heatmap (forward + backward or the occlusion batches, 1 CPU thread, no rendering).

Then deletion/insertion AUCs on the shipped models' real test images (skipped with a message when the data or
model is absent). Raw numbers go to ``results.json`` (rewritten after each setting); ``--only`` picks settings.
Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/faithfulness/run.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cadx.data.transforms import Preprocessing, prepare_image, to_model_input
from cadx.engine.checkpoint import LoadedCheckpoint
from cadx.engine.explain import GRADIENT_METHODS, Explainer
from cadx.engine.hardware import cpu_model
from cadx.engine.inference import Predictor
from cadx.engine.meta import new_meta
from cadx.models import create_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
CLASSES = ("clear", "lesion")
SEED = 0


@dataclass(frozen=True)
class Variant:
    """One generator: blob radius and contrast (fractions of the side / grey levels), and the decoy."""

    radius: tuple[float, float]  # blob radius as a fraction of the side
    contrast: tuple[float, float]  # blob brightness above the background, grey levels
    decoy: str  # "ring" (a dimmer ring) or "dimblob" (a dimmer, smaller blob)
    decoy_in_both: bool  # the decoy also appears in lesion images (so the map must prefer the blob)


VARIANTS = {
    "ring": Variant((0.07, 0.11), (70, 100), "ring", False),
    "dimblob_both": Variant((0.08, 0.12), (60, 90), "dimblob", True),
    "small_faint": Variant((0.05, 0.07), (55, 80), "ring", True),
}


def make_image(label: int, rng: np.random.Generator, side: int, v: Variant) -> tuple[np.ndarray, tuple, float]:
    """Smooth texture + noise at a random level; returns the uint8 image, the blob centre (y, x) and radius."""
    coarse = rng.normal(0, 1, (max(2, side // 8),) * 2).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse, mode="F").resize((side, side), Image.BICUBIC))
    level = rng.uniform(80, 130)
    img = level + 12 * texture + rng.normal(0, 8, (side, side))
    yy, xx = np.mgrid[:side, :side]
    r = float(rng.uniform(*v.radius)) * side
    margin = int(np.ceil(r)) + 1

    def place() -> tuple[float, float]:
        return tuple(float(c) for c in rng.uniform(margin, side - margin, 2))

    centre = place()
    if label == 0 or v.decoy_in_both:
        cy, cx = place()
        while label == 1 and np.hypot(cy - centre[0], cx - centre[1]) < 3 * r:
            cy, cx = place()
        d = np.hypot(yy - cy, xx - cx)
        if v.decoy == "ring":
            img += 0.45 * v.contrast[0] * ((d >= 0.6 * r) & (d <= r))
        else:
            img += 0.45 * v.contrast[0] * np.clip(0.7 * r - d + 0.5, 0, 1)
    if label == 1:
        d = np.hypot(yy - centre[0], xx - centre[1])
        img += float(rng.uniform(*v.contrast)) * np.clip(r - d + 0.5, 0, 1)  # a disc with a 1 px soft edge
    flat = img.reshape(-1)  # pin a few pixels so cadx's per-image min-max stretch is a no-op (no global shortcut)
    flat[rng.choice(flat.size, 8, replace=False)] = [0] * 4 + [255] * 4
    return img.clip(0, 255).astype(np.uint8), centre, r


def train_model(arch: str, side: int, v: Variant, n_train: int, epochs: int, seed: int) -> tuple[Predictor, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pre = Preprocessing(side, 1)
    labels = np.arange(n_train) % 2
    x = torch.from_numpy(np.stack([prepare_image(make_image(int(y), rng, side, v)[0], pre) for y in labels]))
    y = torch.from_numpy(labels)
    model = create_model(arch, in_channels=1, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3 if arch not in ("alexnet", "vgg16") else 1e-4)
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for i in torch.randperm(len(y)).split(32):
            loss = F.cross_entropy(model(to_model_input(x[i], pre)), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    meta = new_meta(arch, CLASSES, pre)
    predictor = Predictor(LoadedCheckpoint(model.eval(), meta, Path(f"{arch}.ckpt")), "cpu")
    return predictor, {"train_seconds": round(time.perf_counter() - started, 1)}


def candidates(model: torch.nn.Module) -> list[tuple[str, str | None]]:
    layers = list(model.stage_names)
    return [(m, layer) for m in GRADIENT_METHODS for layer in layers] + [("occlusion", None)]


def grid_of(predictor: Predictor, explainer: Explainer, layer: str, image: np.ndarray) -> str:
    """``6x6``: the spatial size of ``layer``'s output at this input size."""
    shape: list[tuple[int, ...]] = []

    def hook(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        shape.append(tuple(output.shape[2:]))

    handle = dict(predictor.model.named_modules())[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            predictor.model(explainer.model_input(image))
    finally:
        handle.remove()
    return "x".join(map(str, shape[0]))


def evaluate_synthetic(predictor: Predictor, side: int, v: Variant, n_test: int, n_faith: int, steps: int,
                       seed: int) -> dict:
    rng = np.random.default_rng(seed + 1000)
    tests = [make_image(i % 2, rng, side, v) for i in range(2 * n_test)]
    probs = predictor.predict_batch(np.stack([predictor.prepare(t[0]) for t in tests]))
    accuracy = float(np.mean(np.argmax(probs, 1) == np.arange(len(tests)) % 2))
    lesions = [t for i, t in enumerate(tests) if i % 2 == 1]
    rows = []
    for method, layer in candidates(predictor.model):
        explainer = Explainer(predictor, method=method, layer=layer)
        hits, seconds, grid, dels, ins = 0, [], None, [], []
        for k, (img, (cy, cx), r) in enumerate(lesions):
            t0 = time.perf_counter()
            result = explainer.heatmap_and_scores(img, target="lesion")
            seconds.append(time.perf_counter() - t0)
            py, px = np.unravel_index(int(np.argmax(result.heatmap)), result.heatmap.shape)
            hits += bool(result.heatmap.max() > 0 and np.hypot(py - cy, px - cx) <= r)
            if k < n_faith:
                curves = explainer.faithfulness(img, result.heatmap, 1, steps=steps)
                dels.append(curves.deletion_auc)
                ins.append(curves.insertion_auc)
        if layer is not None:
            grid = grid_of(predictor, explainer, layer, lesions[0][0])
        rows.append({"method": method, "layer": layer, "grid": grid, "hit_rate": hits / len(lesions),
                     "deletion_auc": float(np.mean(dels)), "insertion_auc": float(np.mean(ins)),
                     "ms_per_heatmap": 1000 * float(np.median(seconds))})
        print(f"    {method:10s} {str(layer):18s} {str(grid):6s} hit {hits / len(lesions):5.0%}  "
              f"del {np.mean(dels):.3f}  ins {np.mean(ins):.3f}  {rows[-1]['ms_per_heatmap']:7.1f} ms", flush=True)
    return {"accuracy": accuracy, "n_lesion_images": len(lesions), "n_faithfulness_images": min(n_faith, n_test),
            "methods": rows}


# (architecture, side, variant, epochs, training images)
SETTINGS = [
    ("simple_cnn", 48, "ring", 8, 800),
    ("simple_cnn", 48, "dimblob_both", 8, 800),
    ("simple_cnn", 48, "small_faint", 12, 800),
    ("simple_cnn", 96, "ring", 6, 800),
    ("resnet18", 96, "ring", 4, 800),
    ("resnet18", 96, "dimblob_both", 4, 800),
    ("resnet18", 128, "small_faint", 4, 800),
    ("small_cnn", 48, "ring", 8, 800),
    ("densenet121", 64, "ring", 3, 600),
    ("googlenet", 64, "ring", 3, 600),
    ("vgg16_bn", 64, "ring", 3, 600),
    ("alexnet", 64, "ring", 4, 600),
]


def real_models(n_images: int, steps: int, seed: int) -> dict:
    """Deletion/insertion AUCs on the shipped models' test images, explaining each image's decision."""
    from cadx.data.sources import load_index
    from cadx.data.splits import assign_splits
    from cadx.engine.inference import expand_inputs

    out: dict = {}
    kermany = SHARED / "chest_xray_kermany" / "test"
    brain = SHARED / "brain_mri_4class" / "train"
    for model_id, folder in (("chest_xray_pneumonia", kermany), ("brain_mri_tumor", brain)):
        ckpt = ROOT / "models" / model_id
        if not folder.is_dir() or not (ckpt / "model.ckpt").is_file():
            print(f"skipped {model_id}: {folder} or {ckpt}/model.ckpt is absent", flush=True)
            out[model_id] = {"skipped": "data or model absent"}
            continue
        if model_id == "brain_mri_tumor":  # the model card's internal test split (seeded 70/20/10, duplicates out)
            index = load_index(folder, patient_pattern="")
            splits, _ = assign_splits(index, seed=0, drop_duplicates=True)
            files = [folder / r.key for r in splits["test"]]
            subset = "internal test split (seed 0, as in the model card)"
        else:
            files = expand_inputs([folder])
            subset = "official test split"
        files = [files[i] for i in sorted(np.random.default_rng(seed).choice(len(files), n_images, replace=False))]
        predictor = Predictor.from_checkpoint(ckpt)
        methods = [(m, layer) for m in GRADIENT_METHODS for layer in predictor.model.stage_names[1:]]
        methods.append(("occlusion", None))
        images = [predictor.read(f) for f in files]
        rows = []
        print(f"  {model_id}: {len(images)} images ({subset})", flush=True)
        for method, layer in methods:
            explainer = Explainer(predictor, method=method, layer=layer)
            dels, ins, secs = [], [], []
            for img in images:
                t0 = time.perf_counter()
                result = explainer.heatmap_and_scores(img, decide=predictor.decide)
                secs.append(time.perf_counter() - t0)
                curves = explainer.faithfulness(img, result.heatmap, result.target_index, steps=steps)
                dels.append(curves.deletion_auc)
                ins.append(curves.insertion_auc)
            rows.append({"method": method, "layer": layer, "deletion_auc": float(np.mean(dels)),
                         "insertion_auc": float(np.mean(ins)), "ms_per_heatmap": 1000 * float(np.median(secs))})
            print(f"    {method:10s} {str(layer):8s} del {np.mean(dels):.3f}  ins {np.mean(ins):.3f}  "
                  f"{rows[-1]['ms_per_heatmap']:7.1f} ms", flush=True)
        out[model_id] = {"images": subset, "n": len(images), "input_px": predictor.pre.image_size, "methods": rows}
    return out


# (architecture, side, variant, epochs): trained by ``cadx.engine.training.train`` with cadx's default augmentation
ENGINE_SETTINGS = [("simple_cnn", 48, "small_faint", 10), ("resnet18", 96, "small_faint", 6)]


def engine_check(arch: str, side: int, variant: str, epochs: int, n_train: int, n_test: int, seed: int) -> dict:
    """The registry default vs occlusion vs Grad-CAM at ``cam_layer`` (the old default), on a model trained the way
    ``cadx train`` trains (its defaults: Adam, augmentation on), so the choice is not an artefact of the
    plain loop. Pointing hits only."""
    import tempfile

    from cadx.engine.config import build_config
    from cadx.engine.training import train

    v = VARIANTS[variant]
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        for split, n in (("train", n_train // 2), ("val", n_train // 8)):
            for label, name in enumerate(CLASSES):
                folder = root / split / name
                folder.mkdir(parents=True)
                for i in range(n):
                    Image.fromarray(make_image(label, rng, side, v)[0]).save(folder / f"{name}_{i:04d}.png")
        config = build_config(model=arch, image_size=side, epochs=epochs, in_channels=1, batch_size=32, lr=1e-3,
                              early_stopping=0, seed=seed, num_workers=0, precision="32-true")
        started = time.perf_counter()
        trained = train(root, config, Path(tmp) / "run")
        predictor = Predictor.from_checkpoint(trained.best_checkpoint, device="cpu")
        seconds = time.perf_counter() - started
    test_rng = np.random.default_rng(seed + 2000)
    lesions = [make_image(1, test_rng, side, v) for _ in range(n_test)]
    rows = {}
    default = Explainer(predictor)
    for label, explainer in (("default", default), ("occlusion", Explainer(predictor, method="occlusion")),
                             ("gradcam_at_cam_layer", Explainer(predictor, method="gradcam",
                                                                layer=predictor.model.cam_layer))):
        hits = 0
        for img, (cy, cx), r in lesions:
            heat = explainer.heatmap_and_scores(img, target="lesion").heatmap
            py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hits += bool(heat.max() > 0 and np.hypot(py - cy, px - cx) <= r)
        rows[label] = {"method": explainer.method, "layer": explainer.layer, "hit_rate": hits / n_test}
        print(f"    {label:22s} {explainer.describe():40s} hit {hits / n_test:5.0%}", flush=True)
    return {"architecture": arch, "input_px": side, "variant": variant, "epochs": epochs, "n_train": n_train,
            "augmentation": "cadx default", "train_seconds": round(seconds, 1), "n_lesion_images": n_test, **rows}


def write_report(results: dict, path: Path) -> None:
    """results.md: one table per synthetic setting and per shipped model, from results.json."""
    lines = ["# Faithfulness benchmark: tables (generated by `run.py` from `results.json`)", ""]
    for key, r in results.get("synthetic", {}).items():
        lines += [f"## {key}: accuracy {r['accuracy']:.1%}, {r['epochs']} epochs on {r['n_train']} images, "
                  f"trained in {r['train_seconds']} s", "",
                  "| method | layer (grid) | pointing hits | deletion AUC (lower = better) | insertion AUC | "
                  "ms / heatmap |", "|---|---|---|---|---|---|"]
        for m in r["methods"]:
            layer = "-" if m["layer"] is None else f"{m['layer']} ({m['grid']})"
            lines.append(f"| {m['method']} | {layer} | {m['hit_rate']:.0%} | {m['deletion_auc']:.3f} | "
                         f"{m['insertion_auc']:.3f} | {m['ms_per_heatmap']:.1f} |")
        lines += ["", f"{r['n_lesion_images']} lesion test images; AUCs on the first {r['n_faithfulness_images']}.", ""]
    if results.get("engine"):
        lines += ["## Trained by `cadx train` (default augmentation): pointing hits", "",
                  "| setting | epochs | registry default | occlusion | Grad-CAM at cam_layer (old default) |",
                  "|---|---|---|---|---|"]
        for key, r in results["engine"].items():
            d, o, g = r["default"], r["occlusion"], r["gradcam_at_cam_layer"]
            lines.append(f"| {key} | {r['epochs']} | {d['method']} at {d['layer']}: {d['hit_rate']:.0%} | "
                         f"{o['hit_rate']:.0%} | {g['layer']}: {g['hit_rate']:.0%} |")
        lines.append("")
    for model_id, r in results.get("real", {}).items():
        if "skipped" in r:
            lines += [f"## {model_id}: skipped ({r['skipped']})", ""]
            continue
        lines += [f"## {model_id}: {r['n']} images, {r['images']}, {r['input_px']} px", "",
                  "| method | layer | deletion AUC (lower = better) | insertion AUC | ms / heatmap |",
                  "|---|---|---|---|---|"]
        for m in r["methods"]:
            lines.append(f"| {m['method']} | {m['layer'] or '-'} | {m['deletion_auc']:.3f} | "
                         f"{m['insertion_auc']:.3f} | {m['ms_per_heatmap']:.1f} |")
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="architecture names (and/or 'real') to run; default all")
    parser.add_argument("--test-images", type=int, default=50, help="lesion (and as many clear) test images")
    parser.add_argument("--faith-images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--real-images", type=int, default=20)
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument("--report-only", action="store_true", help="only rewrite results.md from the JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    if args.report_only:
        write_report(results, args.output.with_suffix(".md"))
        return
    results["setup"] = {"seed": SEED, "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "cpu": cpu_model(), "python": platform.python_version(),
                        "variants": {k: vars(v) for k, v in VARIANTS.items()},
                        "hit": "heatmap argmax within the blob radius of its centre, lesion class explained",
                        "deletion_baseline": "image mean grey", "insertion_baseline": "Gaussian blur, sigma = side/10",
                        "steps": args.steps, "fractions": "(k / steps)^2",
                        "training": "Adam (1e-3; 1e-4 for alexnet/vgg16), batch 32, cross-entropy, no augmentation, "
                                    "seed 0"}
    synthetic = results.setdefault("synthetic", {})
    for arch, side, variant, epochs, n_train in SETTINGS:
        if args.only and arch not in args.only:
            continue
        key = f"{arch}/{side}px/{variant}"
        print(f"{key}: training {epochs} epochs on {n_train} images", flush=True)
        started = time.perf_counter()
        predictor, info = train_model(arch, side, VARIANTS[variant], n_train, epochs, SEED)
        print(f"  trained in {info['train_seconds']} s", flush=True)
        row = evaluate_synthetic(predictor, side, VARIANTS[variant], args.test_images, args.faith_images,
                                 args.steps, SEED)
        synthetic[key] = {"architecture": arch, "input_px": side, "variant": variant, "epochs": epochs,
                          "n_train": n_train, **info, **row, "total_seconds": round(time.perf_counter() - started, 1)}
        print(f"  accuracy {row['accuracy']:.1%}, {synthetic[key]['total_seconds']} s", flush=True)
        args.output.write_text(json.dumps(results, indent=1))
    for arch, side, variant, epochs in ENGINE_SETTINGS:
        if args.only and f"engine:{arch}" not in args.only:
            continue
        key = f"{arch}/{side}px/{variant}"
        print(f"engine {key}: cadx train, {epochs} epochs", flush=True)
        results.setdefault("engine", {})[key] = engine_check(arch, side, variant, epochs, 800, args.test_images, SEED)
        args.output.write_text(json.dumps(results, indent=1))
    if not args.only or "real" in args.only:
        results["real"] = real_models(args.real_images, args.steps, SEED)
        args.output.write_text(json.dumps(results, indent=1))
    write_report(results, args.output.with_suffix(".md"))


if __name__ == "__main__":
    main()
