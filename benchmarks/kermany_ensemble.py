"""Kermany: the effect of flip test-time augmentation and of a 3-seed ensemble, each measured on validation and on
the official test split, side by side with the single runs.

Members: the recorded runs of ``benchmarks/kermany_cpu.sh`` (seed 0) and ``benchmarks/kermany_seeds.sh`` (seeds 1
and 2, same recipe, same split as seed 0 via ``--split-seed 0``). They must exist under ``runs/``.

Selection rule, fixed before any test number of the ensemble was seen: the reported configuration is the one with
the lowest validation log-loss among {seed 0, seed 0 + TTA, ensemble, ensemble + TTA}; every TTA/ensemble row
gets its own Youden threshold on validation (``cadx evaluate`` does that for averaged outputs). Test numbers of
every row are written regardless, so each lever's effect is visible.

Run: ``.venv/bin/python benchmarks/kermany_ensemble.py`` (~3 min on 2 cores) -> benchmarks/kermany_ensemble/
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss

from cadx.engine.evaluation import evaluate
from cadx.engine.hardware import describe_hardware

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "runs"
OUT = HERE / "kermany_ensemble"
SEEDS = {0: "kermany_resnet18_128", 1: "kermany_resnet18_128_seed1", 2: "kermany_resnet18_128_seed2"}
KEYS = ("accuracy", "recall", "specificity", "f1", "auc", "threshold")


def rows() -> list[tuple[str, list[Path], bool]]:
    runs = {seed: RUNS / name for seed, name in SEEDS.items()}
    missing = [str(p) for p in runs.values() if not (p / "best.ckpt").exists()]
    if missing:
        raise SystemExit(f"missing runs (train them with kermany_cpu.sh / kermany_seeds.sh): {', '.join(missing)}")
    every = list(runs.values())
    return [*((f"seed {s}", [p], False) for s, p in runs.items()), ("seed 0 + flip TTA", [runs[0]], True),
            ("ensemble of 3 seeds", every, False), ("ensemble of 3 seeds + flip TTA", every, True)]


def val_log_loss(folder: Path) -> float:
    data = np.genfromtxt(folder / "predictions.csv", delimiter=",", skip_header=1, usecols=(1, 2, 3))
    return float(log_loss(data[:, 0].astype(int), data[:, 1:], labels=[0, 1]))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    started, results = time.time(), []
    for name, members, tta in rows():
        slug = name.replace(" ", "_").replace("+", "plus")
        entry: dict = {"name": name, "members": [p.name for p in members], "tta": tta}
        for split in ("val", "test"):
            folder = RUNS / "kermany_ensemble" / slug / split
            m = evaluate(members, split=split, output=folder, tta=tta, n_bootstrap=1000)
            entry[split] = {k: m[k] for k in KEYS} | {"ci": m["ci"], "n_images": m["n_images"],
                                                      "ms_per_image_batch_1": m["latency_ms"]["batch_1"]["mean"]}
            if split == "val":
                entry["val"]["log_loss"] = val_log_loss(folder)
        results.append(entry)
    candidates = [r for r in results if r["name"] in ("seed 0", "seed 0 + flip TTA", "ensemble of 3 seeds",
                                                       "ensemble of 3 seeds + flip TTA")]
    chosen = min(candidates, key=lambda r: r["val"]["log_loss"])["name"]
    record = {"data": "chest_xray_kermany (official test/; validation = patient-grouped 20 % of train/, seed 0)",
              "resolution": 128, "model": "resnet18, 1 channel, from scratch, 20 epochs max (early stop 6)",
              "selection": "lowest validation log-loss among seed 0, +TTA, ensemble, ensemble+TTA",
              "chosen": chosen, "rows": results, "wall_seconds": round(time.time() - started),
              "hardware": describe_hardware()}
    (OUT / "results.json").write_text(json.dumps(record, indent=2))
    lines = ["| configuration | val log-loss | val acc | val AUC | test acc [95 % CI] | test AUC [95 % CI] | "
             "test sens | test spec | threshold | ms/img (b=1) |", "|" + "---|" * 10]
    for r in results:
        v, t = r["val"], r["test"]
        mark = " **(chosen on validation)**" if r["name"] == chosen else ""
        lines.append(f"| {r['name']}{mark} | {v['log_loss']:.4f} | {v['accuracy']:.3f} | {v['auc']:.4f} | "
                     f"{t['accuracy']:.3f} [{t['ci']['accuracy'][0]:.3f}, {t['ci']['accuracy'][1]:.3f}] | "
                     f"{t['auc']:.3f} [{t['ci']['auc'][0]:.3f}, {t['ci']['auc'][1]:.3f}] | {t['recall']:.3f} | "
                     f"{t['specificity']:.3f} | {t['threshold']:.3f} | {t['ms_per_image_batch_1']:.1f} |")
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"chosen on validation: {chosen}; written to {OUT}")


if __name__ == "__main__":
    main()
