"""The effect of flip test-time augmentation and of ensembling, each measured on validation and on test, side by
side with the single runs. The members must share their split (``cadx train --split-seed``, or a dataset with its
own val/test such as MedMNIST).

Selection rule, fixed before any ensemble's test number was seen: ensemble members are the ``--top`` K runs with the
lowest validation log-loss (several K give one ensemble each); the reported configuration is the one with the
lowest validation log-loss among {each single run, the best single run + TTA, each ensemble, each ensemble + TTA}.
Every TTA/ensemble row gets its own Youden threshold on validation (``cadx evaluate`` does that for averaged
outputs). Test numbers of every row are written regardless, so each lever's effect is visible.

Usage: ``python benchmarks/ensemble_effects.py NAME RUN [RUN...] [--top K [K...]] [--note TEXT]`` -> benchmarks/NAME/
(results.json, results.md; evaluation folders under runs/NAME/).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss

from cadx.engine.evaluation import evaluate
from cadx.engine.hardware import describe_hardware

HERE = Path(__file__).resolve().parent
KEYS = ("accuracy", "recall", "specificity", "f1", "auc", "threshold")


def measure(members: list[Path], tta: bool, folder: Path) -> dict:
    entry: dict = {"members": [p.name for p in members], "tta": tta}
    threshold = None  # chosen on validation by the first call, then applied to test (no second val pass)
    for split in ("val", "test"):
        m = evaluate(members, split=split, output=folder / split, tta=tta, n_bootstrap=1000, threshold=threshold)
        threshold = m["threshold"]
        entry[split] = {k: m[k] for k in KEYS} | {"ci": m["ci"], "n_images": m["n_images"],
                                                  "ms_per_image_batch_1": m["latency_ms"]["batch_1"]["mean"]}
    with (folder / "val" / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in rows[0] if c.startswith("p_")]
    probs = np.array([[float(r[c]) for c in columns] for r in rows])
    probs /= probs.sum(axis=1, keepdims=True)  # the CSV's 6 decimals leave sums of 1 ± 1e-6
    targets = [int(r["target"]) for r in rows]
    entry["val"]["log_loss"] = float(log_loss(targets, probs, labels=list(range(probs.shape[1]))))
    return entry


def table(rows: list[dict], chosen: str) -> str:
    lines = ["| configuration | val log-loss | val acc | val AUC | test acc [95 % CI] | test AUC [95 % CI] | "
             "test sens | test spec | threshold | ms/img (b=1) |", "|" + "---|" * 10]
    for r in rows:
        v, t = r["val"], r["test"]
        mark = " **(chosen on validation)**" if r["name"] == chosen else ""
        cut = f"{t['threshold']:.3f}" if t["threshold"] is not None else "argmax"
        lines.append(f"| {r['name']}{mark} | {v['log_loss']:.4f} | {v['accuracy']:.3f} | {v['auc']:.4f} | "
                     f"{t['accuracy']:.3f} [{t['ci']['accuracy'][0]:.3f}, {t['ci']['accuracy'][1]:.3f}] | "
                     f"{t['auc']:.3f} [{t['ci']['auc'][0]:.3f}, {t['ci']['auc'][1]:.3f}] | {t['recall']:.3f} | "
                     f"{t['specificity']:.3f} | {cut} | {t['ms_per_image_batch_1']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--top", type=int, nargs="+", default=None,
                        help="ensemble the K runs with the lowest val log-loss (one ensemble per K; default: all; "
                             "0: none)")
    parser.add_argument("--note", default="", help="data, resolution, epochs, seeds: written into results.json")
    args = parser.parse_args()
    missing = [str(p) for p in args.runs if not any(p.glob("*.ckpt"))]
    if missing:
        raise SystemExit(f"no checkpoint in: {', '.join(missing)}")
    work, out = HERE.parent / "runs" / args.name, HERE / args.name
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    singles = [{"name": run.name, **measure([run], False, work / run.name)} for run in args.runs]
    ranked = sorted(zip(singles, args.runs, strict=True), key=lambda pair: pair[0]["val"]["log_loss"])
    best_name, best_run = ranked[0][0]["name"], ranked[0][1]
    averaged = [{"name": f"{best_name} + flip TTA", **measure([best_run], True, work / "best_tta")}]
    for k in sorted(k for k in set(args.top or [len(ranked)]) if k > 1):  # --top 0: single runs and TTA only
        members, tag = [run for _, run in ranked[:k]], "" if k == len(ranked) else f"_top{k}"
        averaged += [{"name": f"ensemble of {k}", **measure(members, False, work / f"ensemble{tag}")},
                     {"name": f"ensemble of {k} + flip TTA", **measure(members, True, work / f"ensemble{tag}_tta")}]
    rows = singles + averaged
    chosen = min(rows, key=lambda r: r["val"]["log_loss"])["name"]
    record = {"note": args.note, "selection": __doc__.split("\n\n")[1].replace("\n", " "), "chosen": chosen,
              "rows": rows, "wall_seconds": round(time.time() - started), "hardware": describe_hardware()}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    (out / "results.md").write_text(table(rows, chosen))
    print(table(rows, chosen) + f"chosen on validation: {chosen}; written to {out}")


if __name__ == "__main__":
    main()
