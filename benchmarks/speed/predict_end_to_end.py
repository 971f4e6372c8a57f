"""``cadx predict`` end to end on the Kermany test folder (issue 22): whole processes, start-up and decoding
included, side by side in one run, alternating so that a busy machine slows every setting alike.

Settings: the path cadx used before (torch fp32, decoding in the main process: ``--backend torch --workers 0``),
torch fp32 with decode workers, and the default (``--backend auto``, decode workers) on a copy of the shipped model
whose ONNX copies were verified on this machine's CPU by ``cadx export --onnx --int8`` (the shipped int8 copy holds
only on the kind of CPU it was verified on). The flip check is on in every setting, as it is by default. Accuracy is
scored from each run's CSV against the folder names (NORMAL/PNEUMONIA), over all images and over the assessed ones.

Run from the repository root:
``.venv/bin/python benchmarks/speed/predict_end_to_end.py [--data ../shared/datasets/chest_xray_kermany/test]``
-> ``benchmarks/speed/predict_end_to_end.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CADX = str(Path(sys.executable).with_name("cadx"))
MODEL = ROOT / "models" / "chest_xray_pneumonia"
REPEATS = 3
SETTINGS = {
    "torch, decode in process (before)": ["--backend", "torch", "--workers", "0"],
    "torch, decode workers": ["--backend", "torch"],
    "default (auto backend, decode workers)": [],
}


def hardware() -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from cadx.engine.hardware import cpu_flags, cpu_kind, describe_hardware

    return {**describe_hardware(), "cpu_kind": cpu_kind(),
            "vnni": bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})}


def scored(rows_file: Path) -> dict:
    rows = list(csv.DictReader(rows_file.open()))
    truth = [Path(r["file"]).parent.name for r in rows]
    right = [r["prediction"] == t for r, t in zip(rows, truth, strict=True)]
    assessed = [ok for r, ok in zip(rows, right, strict=True) if r["assessed"] == "True"]
    return {"images": len(rows), "accuracy": sum(right) / len(rows), "not_assessed": len(rows) - len(assessed),
            "accuracy_assessed": sum(assessed) / max(len(assessed), 1), "backend": rows[0]["backend"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/chest_xray_kermany/test")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no Kermany test folder (see ../shared/datasets/README.md)")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "chest_xray_pneumonia"
        model.mkdir()
        for name in ("model.ckpt", "metrics.json", "README.md"):
            shutil.copy2(MODEL / name, model / name)
        started = time.perf_counter()
        subprocess.run([CADX, "export", str(model / "model.ckpt"), "--onnx", "--int8"], check=True, cwd=ROOT,
                       capture_output=True)
        export_s = time.perf_counter() - started
        runs: dict[str, list[float]] = {name: [] for name in SETTINGS}
        results: dict[str, dict] = {}
        for repeat in range(REPEATS):
            for name, options in SETTINGS.items():
                rows_file = Path(tmp) / f"rows-{repeat}.csv"
                start = time.perf_counter()
                done = subprocess.run([CADX, "predict", str(model / "model.ckpt"), str(args.data), "--output",
                                       str(rows_file), *options], cwd=ROOT, capture_output=True, text=True)
                runs[name].append(time.perf_counter() - start)
                if done.returncode != 0:
                    raise SystemExit(f"cadx predict {' '.join(options)} failed:\n{done.stderr[-2000:]}")
                results[name] = {**scored(rows_file), "summary": done.stdout.strip().splitlines()[-2:]}
                rows_file.unlink()
                print(f"{name}: {runs[name][-1]:.2f} s", flush=True)
    before = statistics.median(runs["torch, decode in process (before)"])
    table = {name: {**results[name], "median_s": round(statistics.median(runs[name]), 3),
                    "runs_s": [round(s, 3) for s in runs[name]],
                    "images_per_s": round(results[name]["images"] / statistics.median(runs[name]), 1),
                    "speed_up_vs_before": round(before / statistics.median(runs[name]), 2)}
             for name in SETTINGS}
    report = {"data": str(args.data.relative_to(args.data.parents[2])) if len(args.data.parents) > 2 else
              str(args.data), "model": "chest_xray_pneumonia (ResNet-18, 1 x 128 x 128; copy verified here)",
              "export_s": round(export_s, 1), "repeats": REPEATS, "hardware": hardware(), "settings": table,
              "command": "cadx predict MODEL DATA --output rows.csv OPTIONS (batch 32, flip check on)"}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in table.items():
        print(f"{name}: {row['median_s']} s, {row['images_per_s']} img/s, x{row['speed_up_vs_before']}, "
              f"accuracy {row['accuracy']:.4f} (backend {row['backend']})")


if __name__ == "__main__":
    main()
