"""Memory over many explanations: resident set size every 100 images while Grad-CAM explains N images.

Other CAM libraries leak (hooks left on the model, graphs kept); this records that cadx stays flat.
``python benchmarks/explain_memory.py [--n 1000] [--model resnet18] [--size 128]`` → benchmarks/explain_memory.json
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from cadx.data.transforms import Preprocessing
from cadx.engine.checkpoint import LoadedCheckpoint
from cadx.engine.explain import Explainer
from cadx.engine.hardware import describe_hardware
from cadx.engine.inference import Predictor
from cadx.engine.meta import new_meta
from cadx.models import create_model


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("explain_memory.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, in_channels=1, num_classes=2).eval()
    meta = new_meta(args.model, ["normal", "pneumonia"], Preprocessing(args.size, 1))
    explainer = Explainer(Predictor(LoadedCheckpoint(model, meta, Path("random.ckpt")), "cpu"))
    rng = np.random.default_rng(0)
    samples, start = [], time.perf_counter()
    for i in range(1, args.n + 1):
        image = rng.integers(0, 256, (300, 260), dtype=np.uint8)  # non-square, resized like a real upload
        explainer.explain(image, feature_maps=8)
        if i % 100 == 0:
            gc.collect()
            samples.append({"images": i, "rss_mb": round(rss_mb(), 1)})
            print(samples[-1], flush=True)
    hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    result = {"model": args.model, "input_px": args.size, "images": args.n, "feature_maps": 8,
              "seconds": round(time.perf_counter() - start, 1), "hooks_left": hooks,
              "grads_left": sum(p.grad is not None for p in model.parameters()),
              "rss_growth_after_first_100_mb": round(samples[-1]["rss_mb"] - samples[0]["rss_mb"], 1),
              "samples": samples, "hardware": describe_hardware()}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))


if __name__ == "__main__":
    main()
