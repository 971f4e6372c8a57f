"""Milliseconds per explanation on this CPU of one 224 px image: AERNet and ResNet-18 at 224 px input (1 channel, 2
classes, random weights: weights do not change the cost), and the shipped chest model (ResNet-18, 128 px input) on a
224 x 224 Kermany test image when ``../shared/datasets`` is present.

Reports, per model, the plain prediction (forward in inference mode) next to the explanation stages: heatmap only
(forward + backward through the head), + overlay PNG, + 8-channel feature-map PNG: median (p50), 95th percentile and
mean of ``--repeats`` calls (default 20) after 2 warm-up calls; 1 torch thread by default (the box is shared).
Run: ``python benchmarks/explain_timing.py [--threads N]`` -> benchmarks/explain_timing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cadx.data.transforms import Preprocessing
from cadx.engine.checkpoint import LoadedCheckpoint
from cadx.engine.explain import Explainer
from cadx.engine.hardware import cpu_model
from cadx.engine.inference import Predictor
from cadx.engine.meta import new_meta
from cadx.models import create_model

SIZE = 224
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KERMANY_TEST = ROOT.parent / "shared" / "datasets" / "chest_xray_kermany" / "test" / "PNEUMONIA"


def predictor_for(name: str, size: int = SIZE) -> Predictor:
    """A 1-channel, 2-class predictor with seeded random weights (the cost of a forward does not depend on them)."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=2)
    meta = new_meta(name, ["NORMAL", "PNEUMONIA"], Preprocessing(size, 1))
    return Predictor(LoadedCheckpoint(model.eval(), meta, Path(f"{name}-random.ckpt")), "cpu")


def timed_ms(fn, repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return {"p50": round(float(np.median(times)), 1), "p95": round(float(np.percentile(times, 95)), 1),
            "mean": round(float(np.mean(times)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "explain_timing.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    setup = {"image_px": SIZE, "in_channels": 1, "classes": 2, "torch_threads": torch.get_num_threads(),
             "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "repeats": args.repeats,
             "warmup": 2, "load_average_at_start": list(os.getloadavg())}
    results: dict = {"setup": setup, "ms": {}}
    cases = [(name, predictor_for(name), noise, f"{name} at 224 px input, random weights, a noise image")
             for name in ("resnet18", "aernet")]
    shipped = ROOT / "models" / "chest_xray_pneumonia" / "model.ckpt"
    xrays = sorted(KERMANY_TEST.glob("*.jpeg"))[:1] if KERMANY_TEST.is_dir() else []
    if shipped.is_file() and xrays:
        predictor = Predictor.from_checkpoint(shipped, device="cpu")
        cases.append(("chest_xray_pneumonia", predictor, predictor.read(xrays[0]),
                      f"the shipped model (128 px input) on a {SIZE} px Kermany test JPEG"))
    for name, predictor, image, what in cases:
        explainer = Explainer(predictor)
        batch = predictor.prepare(image)[None]
        kw = {"repeats": args.repeats, "warmup": 2}
        results["ms"][name] = {
            "what": what, "layer": explainer.layer,
            "predict_only": timed_ms(lambda p=predictor, b=batch: p.predict_batch(b), **kw),
            "heatmap": timed_ms(lambda e=explainer, i=image: e.heatmap_and_scores(i), **kw),
            "explain_overlay": timed_ms(lambda e=explainer, i=image: e.explain(i, feature_maps=0), **kw),
            "explain_overlay_features8": timed_ms(lambda e=explainer, i=image: e.explain(i, feature_maps=8), **kw),
        }
        print(name, results["ms"][name], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
