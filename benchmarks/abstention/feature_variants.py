"""Which features should the Mahalanobis out-of-distribution score use? Variants compared on the shipped models.

For each shipped model, the features of every image set of ``ood_benchmark.py`` are extracted once from the shipped
checkpoint (per ResNet stage: the channels' spatial means, their spatial standard deviations, the means over a 2 x 2
grid; and an 8 x 8 thumbnail of the model's input), then each variant is fitted as ``cadx.engine.ood`` fits its
score (class means and a shared Ledoit-Wolf covariance on at most 4,000 seeded training images; each distance
standardised on validation; the limit at ``keep`` of the validation images) and reported as the share of each set not
assessed (the limit, or cadx's input quality and scope checks) and the score's AUROC against the model's own test
images. Variants: which feature sets, sum or maximum of the standardised distances, log distances, the relative
Mahalanobis distance (Ren et al. 2021), and a 98.5 % limit.

Run: ``python benchmarks/abstention/feature_variants.py`` (2 CPU cores: about 4 minutes); writes
``feature_variants.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from ood_benchmark import MODELS, ROOT, SHARED, file_sets, read_files, synthetic_sets
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from cadx.data.cache import decode_records
from cadx.data.transforms import to_model_input
from cadx.engine.hardware import describe_hardware
from cadx.engine.inference import Predictor
from cadx.engine.ood import MAX_FIT_IMAGES
from cadx.engine.selection import select_records

OWN = ("train", "val", "test")


@torch.inference_mode()
def extract(predictor: Predictor, images: np.ndarray) -> dict[str, np.ndarray]:
    model, stages = predictor.model, predictor.model.stage_names
    modules = dict(model.named_modules())
    out: dict[str, list[np.ndarray]] = {}
    captured: dict[str, torch.Tensor] = {}
    for i in range(0, len(images), 64):
        captured.clear()
        handles = [modules[s].register_forward_hook(
            lambda _m, _i, o, s=s: captured.__setitem__(s, o.detach().float())) for s in stages]
        x = to_model_input(predictor._tensor(images[i:i + 64]), predictor.pre)
        model(x)
        for h in handles:
            h.remove()
        parts = {"input": torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)}
        for s in stages:
            parts[f"{s}:mean"] = captured[s].mean((2, 3))
            parts[f"{s}:std"] = captured[s].flatten(2).std(2)
            parts[f"{s}:grid"] = torch.nn.functional.adaptive_avg_pool2d(captured[s], 2).flatten(1)
        for k, v in parts.items():
            out.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def features_of(model_id: str, other: str) -> tuple[dict, list[str]]:
    predictor = Predictor.from_checkpoint(ROOT / "models" / model_id / "model.ckpt", device="cpu")
    sets: dict[str, dict] = {}
    for split in OWN:
        index, records = select_records(predictor.checkpoint, None, split)
        if split == "train" and len(records) > MAX_FIT_IMAGES:
            pick = np.random.default_rng(0).choice(len(records), MAX_FIT_IMAGES, replace=False)
            records = [records[i] for i in sorted(pick)]
        decoded = decode_records(index, records, predictor.pre, description=f"{model_id} {split}")
        sets[split] = extract(predictor, decoded.images) | {"y": np.array([r.target for r in decoded.records])}
    foreign = {name: read_files(predictor, files) for name, files in file_sets(other).items()}
    foreign |= {name: [(im, None) for im in images] for name, images in synthetic_sets().items()}
    for name, images in foreign.items():
        prepared = np.stack([predictor.prepare(im) for im, _ in images])
        checks = np.array([bool(predictor.input_problem(path, im)) for im, path in images])
        sets[name] = extract(predictor, prepared) | {"checks": checks}
    return sets, list(predictor.model.stage_names)


def _fit(f: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(labels)
    means = np.stack([f[labels == c].mean(0) for c in classes])
    return means, LedoitWolf(assume_centered=True).fit(f - means[np.searchsorted(classes, labels)]).precision_


def _distance(fit: tuple[np.ndarray, np.ndarray], f: np.ndarray) -> np.ndarray:
    means, precision = fit
    d = f[:, None, :] - means[None]
    return np.einsum("nkd,de,nke->nk", d, precision, d).min(1)


def variant(sets: dict, keys: list[str], *, combine: str = "sum", relative: bool = False, log: bool = False,
            keep: float = 0.99) -> dict:
    y = sets["train"]["y"].astype(int)
    parts = []
    for k in keys:
        train = sets["train"][k].astype(np.float64)
        fit, background = _fit(train, y), (_fit(train, np.zeros(len(y), int)) if relative else None)

        def distance(name: str, k: str = k, fit: tuple = fit, background: tuple | None = background) -> np.ndarray:
            d = _distance(fit, sets[name][k])
            if background is not None:
                d = d - _distance(background, sets[name][k])
            return np.log(np.maximum(d, 1e-6)) if log else d
        val = distance("val")
        parts.append((distance, val.mean(), max(val.std(), 1e-9)))

    def score(name: str) -> np.ndarray:
        z = np.stack([(distance(name) - c) / s for distance, c, s in parts])
        return z.sum(0) if combine == "sum" else z.max(0)
    limit = float(np.quantile(score("val"), keep))
    own = score("test")
    rows = {"own_test": {"n": len(own), "not_assessed": float(np.mean(own > limit))}}
    for name in sets:
        if name in OWN:
            continue
        s = score(name)
        auroc = roc_auc_score(np.r_[np.zeros(len(own)), np.ones(len(s))], np.r_[own, s])
        rows[name] = {"n": len(s), "not_assessed": float(np.mean((s > limit) | sets[name]["checks"])),
                      "auroc": float(auroc)}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("feature_variants.json"))
    args = parser.parse_args()
    if not SHARED.exists():
        print(f"skipped: {SHARED} is absent")
        return 0
    torch.set_num_threads(args.threads)
    result: dict = {"setup": {"seed": 0, "hardware": describe_hardware(), "torch_threads": args.threads,
                              "max_fit_images": MAX_FIT_IMAGES}, "models": {}}
    for model_id, other in MODELS.items():
        sets, stages = features_of(model_id, other)
        mean = [f"{s}:mean" for s in stages]
        std = [f"{s}:std" for s in stages]
        grid = [f"{s}:grid" for s in stages]
        variants = {
            "means (second version)": dict(keys=mean),
            "means + standard deviations (shipped)": dict(keys=mean + std),
            "standard deviations": dict(keys=std),
            "means of a 2 x 2 grid": dict(keys=grid),
            "means + input thumbnail": dict(keys=[*mean, "input"]),
            "means, maximum instead of sum": dict(keys=mean, combine="max"),
            "means, log distances": dict(keys=mean, log=True),
            "means, relative Mahalanobis": dict(keys=mean, relative=True),
            "means + standard deviations, 98.5 % kept": dict(keys=mean + std, keep=0.985),
        }
        result["models"][model_id] = {}
        for name, kwargs in variants.items():
            rows = variant(sets, **kwargs)
            result["models"][model_id][name] = rows
            print(model_id, name, {k: round(v["not_assessed"], 3) for k, v in rows.items()}, flush=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
