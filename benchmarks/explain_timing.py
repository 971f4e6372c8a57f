"""Milliseconds per explanation on this CPU at 224 px: AERNet and ResNet-18, 1 channel, 2 classes, random weights.

Weights do not change the cost, so no checkpoint is needed. Reports, per model, the plain prediction (forward in
inference mode) next to the explanation stages: heatmap only (forward + backward through the head), + overlay PNG,
+ 8-channel feature-map PNG. Mean of 5 after 2 warm-up calls; 1 torch thread by default (the box is shared).
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
from cadx.engine.inference import Predictor
from cadx.engine.meta import new_meta
from cadx.models import create_model

SIZE = 224
HERE = Path(__file__).resolve().parent


def predictor_for(name: str, size: int = SIZE) -> Predictor:
    """A 1-channel, 2-class predictor with seeded random weights (the cost of a forward does not depend on them)."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=2)
    meta = new_meta(name, ["NORMAL", "PNEUMONIA"], Preprocessing(size, 1))
    return Predictor(LoadedCheckpoint(model.eval(), meta, Path(f"{name}-random.ckpt")), "cpu")


def mean_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * float(np.mean(times)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "explain_timing.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    results: dict = {"setup": {"image_px": SIZE, "in_channels": 1, "classes": 2, "weights": "random",
                               "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                               "torch": torch.__version__, "repeats": args.repeats, "warmup": 2,
                               "load_average_at_start": list(os.getloadavg())}, "ms": {}}
    for name in ("resnet18", "aernet"):
        predictor = predictor_for(name)
        explainer = Explainer(predictor)
        batch = predictor.prepare(image)[None]
        kw = {"repeats": args.repeats, "warmup": 2}
        results["ms"][name] = {
            "layer": explainer.layer,
            "predict_only": mean_ms(lambda p=predictor, b=batch: p.predict_batch(b), **kw),
            "heatmap": mean_ms(lambda e=explainer: e.heatmap_and_scores(image), **kw),
            "explain_overlay": mean_ms(lambda e=explainer: e.explain(image, feature_maps=0), **kw),
            "explain_overlay_features8": mean_ms(lambda e=explainer: e.explain(image, feature_maps=8), **kw),
        }
        print(name, results["ms"][name], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
