"""Batch-1 CPU latency of every Kermany-comparison architecture at 64 px, measured side by side in one run.

The comparison's ms/img column comes from each run's own evaluation, and its runs were made in sessions on hosts of
different speed (VGG-16 in a later one), so its numbers are not comparable across rows made on different days. This
script times all eight architectures one after another on one host, with the measurement the comparison uses
(``cadx.engine.evaluation.measure_latency``: 5 warm-up calls, then the mean of ``--repeats`` forwards, default torch
threads), and with seeded random weights: the weights' values do not change the cost. It prints each model's ms per
image and its ratio to ResNet-18. Run: ``python benchmarks/latency_side_by_side.py`` -> latency_side_by_side.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from explain_timing import predictor_for

from cadx.engine.evaluation import measure_latency
from cadx.engine.hardware import describe_hardware

HERE = Path(__file__).resolve().parent
MODELS = ("alexnet", "googlenet", "resnet18", "resnet50", "densenet121", "aernet", "simple_cnn", "vgg16_bn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE / "latency_side_by_side.json")
    args = parser.parse_args()
    results: dict = {"setup": {"image_px": args.size, "in_channels": 1, "classes": 2, "weights": "random (seed 0)",
                               "batch_size": 1, "repeats": args.repeats, "warmup": 5,
                               "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                               "load_average_at_start": list(os.getloadavg()), "hardware": describe_hardware()},
                     "ms_per_image": {}}
    for name in MODELS:
        latency = measure_latency(predictor_for(name, args.size), batch_size=1, repeats=args.repeats)["batch_1"]
        results["ms_per_image"][name] = {"mean": round(latency["mean"], 2), "p95": round(latency["p95"], 2)}
    base = results["ms_per_image"]["resnet18"]["mean"]
    for name, ms in results["ms_per_image"].items():
        ms["ratio_to_resnet18"] = round(ms["mean"] / base, 2)
        print(f"{name:12s} {ms['mean']:7.2f} ms/img (p95 {ms['p95']:.2f})  x{ms['ratio_to_resnet18']:.2f} ResNet-18")
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
