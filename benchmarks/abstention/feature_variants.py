"""Which features should the Mahalanobis out-of-distribution score use? Variants compared on the shipped models.

For each shipped model, the features of every image set of ``ood_benchmark.py`` are extracted once from the shipped
checkpoint (per ResNet stage: the channels' spatial means, their spatial standard deviations, the means over a 2 x 2
grid; and an 8 x 8 thumbnail of the model's input), then each variant is fitted as ``cadx.engine.ood`` fits its
score (class means and Ledoit-Wolf covariances on at most 4,000 seeded training images; each distance standardised
on validation; the limit at ``keep`` of the validation images) and reported as the share of each set not assessed
(the limit, or cadx's input quality and scope checks) and the score's AUROC against the model's own test images.

Variants: which feature sets; one covariance shared by the classes (Lee et al.) or one per class, with or without
its log-determinant (with it: the class-conditional Gaussian likelihood); sum or maximum of the standardised
distances; log distances; the relative Mahalanobis distance (Ren et al. 2021); a 98.5 % limit; and a non-parametric
score in place of Mahalanobis: the distance to the k-th nearest training image of L2-normalised features (Sun et al.
2022; penultimate features as in the paper, and every stage's standardised means and standard deviations, each
distance standardised and summed).

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


def _fit(f: np.ndarray, labels: np.ndarray, per_class: str | None = None) -> tuple:
    """Class means and one shared precision; ``per_class``: a precision per class, with (``"logdet"``) or without
    (``"distance"``) each class's log-determinant added to its distance."""
    classes = np.unique(labels)
    means = np.stack([f[labels == c].mean(0) for c in classes])
    if per_class is None:
        return means, LedoitWolf(assume_centered=True).fit(f - means[np.searchsorted(classes, labels)]).precision_, None
    fits = [LedoitWolf(assume_centered=True).fit(f[labels == c] - m) for c, m in zip(classes, means, strict=True)]
    logdets = np.array([np.linalg.slogdet(x.covariance_)[1] for x in fits]) if per_class == "logdet" else None
    return means, np.stack([x.precision_ for x in fits]), logdets


def _distance(fit: tuple, f: np.ndarray) -> np.ndarray:
    means, precision, logdets = fit
    d = f[:, None, :] - means[None]
    if precision.ndim == 2:
        return np.einsum("nkd,de,nke->nk", d, precision, d).min(1)
    return (np.einsum("nkd,kde,nke->nk", d, precision, d) + (0 if logdets is None else logdets[None])).min(1)


def _knn_distance(bank: np.ndarray, f: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distance of each L2-normalised row of ``f`` to its k-th nearest row of ``bank`` (also normalised)."""
    kth_cosine = -np.partition(-(f @ bank.T), k - 1, axis=1)[:, k - 1]
    return np.sqrt(np.maximum(2 - 2 * kth_cosine, 0))


def _unit(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def knn_variant(sets: dict, keys: list[str], *, k: int = 50, standardise: bool = True, keep: float = 0.99) -> dict:
    """Deep nearest neighbours (Sun et al. 2022): per feature set, the k-th nearest training image's distance."""
    parts = []
    for key in keys:
        train = sets["train"][key].astype(np.float64)
        centre, spread = (train.mean(0), train.std(0) + 1e-6) if standardise else (0.0, 1.0)

        def distance(name: str, key: str = key, centre=centre, spread=spread,
                     bank: np.ndarray = _unit((train - centre) / spread)) -> np.ndarray:
            return _knn_distance(bank, _unit((sets[name][key].astype(np.float64) - centre) / spread), k)
        val = distance("val")
        parts.append((distance, val.mean(), max(val.std(), 1e-9)))
    return _rows(sets, lambda name: np.sum([(d(name) - c) / s for d, c, s in parts], axis=0), keep)


def _rows(sets: dict, score, keep: float) -> dict:
    """Share not assessed (the limit at ``keep`` of validation, or the input checks) and AUROC, per image set."""
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


def variant(sets: dict, keys: list[str], *, combine: str = "sum", relative: bool = False, log: bool = False,
            keep: float = 0.99, per_class: str | None = None) -> dict:
    y = sets["train"]["y"].astype(int)
    parts = []
    for k in keys:
        train = sets["train"][k].astype(np.float64)
        fit, background = _fit(train, y, per_class), (_fit(train, np.zeros(len(y), int)) if relative else None)

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
    return _rows(sets, score, keep)


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
            "means + standard deviations (third version)": dict(keys=mean + std),
            "means + standard deviations, a covariance per class, + log-determinant (shipped)": dict(
                keys=mean + std, per_class="logdet"),
            "means + standard deviations, a covariance per class, distance only": dict(
                keys=mean + std, per_class="distance"),
            "standard deviations": dict(keys=std),
            "means of a 2 x 2 grid": dict(keys=grid),
            "means + input thumbnail": dict(keys=[*mean, "input"]),
            "means, maximum instead of sum": dict(keys=mean, combine="max"),
            "means, log distances": dict(keys=mean, log=True),
            "means, relative Mahalanobis": dict(keys=mean, relative=True),
            "means + standard deviations, 98.5 % kept": dict(keys=mean + std, keep=0.985),
        }
        knn = {
            "k-th nearest neighbour (k = 50), penultimate features": dict(keys=mean[-1:], standardise=False),
            "k-th nearest neighbour (k = 50), means + standard deviations": dict(keys=mean + std),
        }
        result["models"][model_id] = {}
        for name, kwargs in [*variants.items(), *knn.items()]:
            rows = knn_variant(sets, **kwargs) if name in knn else variant(sets, **kwargs)
            result["models"][model_id][name] = rows
            print(model_id, name, {k: round(v["not_assessed"], 3) for k, v in rows.items()}, flush=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
