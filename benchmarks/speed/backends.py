"""Inference backends of the shipped models, side by side in one process: torch fp32 (the path cadx used
everywhere), torch bf16 autocast + channels-last (where bf16 is native), ONNX Runtime fp32 and ONNX Runtime int8
(static QDQ); each verified on validation as ``cadx export --onnx --int8 --bf16`` verifies it.

For each shipped model (``models/chest_xray_pneumonia``, ``models/brain_mri_tumor``): the ONNX copies are made and
verified as ``cadx export --onnx --int8`` makes them (``cadx.engine.onnx_export``: int8 calibrated on 256 seeded
training images, verified on the whole validation split; a refused copy is still timed here, and reported as
refused, so the table shows what it would have bought), then every backend is timed on the same prepared test
images (decode excluded) at batch 1 and
batch 32, in interleaved rounds (each round times every backend once, so load from other processes hits all of
them alike; the median round is reported), and scored on the model's test images (chest: Kermany's official
``test/``; brain: the model's own test split) with the checkpoint's decision threshold.

Run: ``python benchmarks/speed/backends.py [--rounds 5]``; writes ``backends.json`` beside this file (copies go to
a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cadx.data.cache import decode_records
from cadx.engine.bf16 import TorchBf16Predictor
from cadx.engine.checkpoint import load_checkpoint
from cadx.engine.decision import decision_indices
from cadx.engine.hardware import describe_hardware, native_bf16
from cadx.engine.inference import Predictor
from cadx.engine.metrics import headline_scores
from cadx.engine.onnx_export import CALIBRATION_IMAGES, export_onnx, quantize_int8, verify
from cadx.engine.onnx_runtime import BACKEND_FILES, OnnxNetwork
from cadx.engine.selection import select_records

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets"
TEST_DATA = {"chest_xray_pneumonia": SHARED / "chest_xray_kermany" / "test", "brain_mri_tumor": None}
THREADS = 2


def throughput(run, images: np.ndarray, batch: int, seconds: float = 2.0) -> float:
    """Images per second of ``run`` on consecutive batches of ``batch`` images for about ``seconds``."""
    starts = list(range(0, len(images) - batch + 1, batch)) or [0]
    run(images[:batch])  # warm-up
    done, i, began = 0, 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        chunk = images[starts[i % len(starts)]:starts[i % len(starts)] + batch]
        run(chunk)
        done += len(chunk)
        i += 1
    return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    out: dict = {"hardware": describe_hardware(), "threads": THREADS, "torch": torch.__version__,
                 "cpu_capability": torch.backends.cpu.get_cpu_capability(), "models": {}}
    for model_id, test_data in TEST_DATA.items():
        path = ROOT / "models" / model_id
        predictor = Predictor.from_checkpoint(path)
        decoded = {}
        for split in ("train", "val"):
            index, records = select_records(predictor.checkpoint, None, split)
            if split == "train":  # the calibration sample cadx export draws
                pick = np.sort(np.random.default_rng(0).choice(len(records), CALIBRATION_IMAGES, replace=False))
                records = [records[i] for i in pick]
            decoded[split] = decode_records(index, records, predictor.pre, description=f"{model_id} {split}")
        index, records = select_records(predictor.checkpoint, test_data, "all" if test_data else "test")
        test = decode_records(index, records, predictor.pre, description=f"{model_id} test")
        folder = Path(tempfile.mkdtemp(prefix=f"cadx-{model_id}-"))
        started = time.perf_counter()
        fp32 = folder / BACKEND_FILES["onnx"]
        export_onnx(predictor.model, predictor.pre, fp32)
        int8 = quantize_int8(fp32, folder / BACKEND_FILES["onnx-int8"], decoded["train"].images)
        export_seconds = time.perf_counter() - started
        targets = [r.target for r in decoded["val"].records]
        made = [(p, verify(predictor, OnnxNetwork(p), b, decoded["val"].images, targets))
                for p, b in ((fp32, "onnx"), (int8, "onnx-int8"))]
        networks = {record.backend: OnnxNetwork(p, threads=THREADS) for p, record in made}
        def probabilities(network: OnnxNetwork, predictor: Predictor = predictor):
            return lambda images: predictor._probabilities(torch.from_numpy(network.logits(images)))

        runs = {"torch": predictor.predict_batch}
        verification = {backend: record.to_dict() for (_, record), backend in
                        zip(made, ("onnx", "onnx-int8"), strict=True)}
        if native_bf16(torch.device("cpu")):
            bf16 = TorchBf16Predictor(load_checkpoint(path / "model.ckpt"))  # its own copy of the network
            runs["torch-bf16"] = bf16.predict_batch
            verification["torch-bf16"] = verify(predictor, bf16, "torch-bf16", decoded["val"].images,
                                                targets).to_dict()
        runs.update({k: probabilities(v) for k, v in networks.items()})
        speed = {name: {1: [], 32: []} for name in runs}
        for _ in range(args.rounds):
            for batch in (1, 32):
                for name, run in runs.items():
                    speed[name][batch].append(throughput(run, test.images, batch))
        meta = predictor.meta
        y = np.array([r.target for r in test.records])
        backends = {}
        for name, run in runs.items():
            probs = np.concatenate([run(test.images[i:i + 64]) for i in range(0, len(test.images), 64)])
            pred = decision_indices(probs, positive_index=meta.positive_index, threshold=meta.decision_threshold)
            scores = headline_scores(y, probs, pred, meta.positive_index)
            backends[name] = {
                "img_per_s_batch1": statistics.median(speed[name][1]),
                "img_per_s_batch32": statistics.median(speed[name][32]),
                "rounds_batch32": [round(v, 1) for v in speed[name][32]],
                "test_accuracy": scores["accuracy"], "test_auc": scores["auc"]}
        base = backends["torch"]
        for values in backends.values():
            values["speedup_batch1"] = values["img_per_s_batch1"] / base["img_per_s_batch1"]
            values["speedup_batch32"] = values["img_per_s_batch32"] / base["img_per_s_batch32"]
        out["models"][model_id] = {
            "test_images": len(test.records), "validation_images": len(decoded["val"].records),
            "export_seconds": round(export_seconds, 1),
            "verification": verification,
            "file_mb": {p.name: round(p.stat().st_size / 1e6, 1) for p, _ in made},
            "backends": backends}
        print(json.dumps({model_id: {k: (round(v["speedup_batch32"], 2), round(v["test_accuracy"], 4))
                                     for k, v in backends.items()}}))
    (Path(__file__).parent / "backends.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
