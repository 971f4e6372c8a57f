"""Start-up cost of cadx commands (issue 22): wall time of whole processes, median of 5 runs each, side by side in
one run, and which heavy packages each loads.

Run from the repository root: ``.venv/bin/python benchmarks/speed/startup.py`` -> ``benchmarks/speed/startup.json``.
The image predicted is a synthetic grey PNG written to a temporary folder (no data is read or committed).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "chest_xray_pneumonia"
REPEATS = 5
HEAVY = ("torch", "lightning", "monai", "sklearn", "scipy", "pydicom", "onnxruntime")
# Runs one command in-process (as the console script does) and prints which heavy packages it imported.
PROBE = """
import sys, runpy
sys.argv = ["cadx", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("cadx.interfaces.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
print("LOADED=" + ",".join(m for m in {heavy} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed(args: list[str]) -> dict:
    seconds, loaded = [], ""
    for _ in range(REPEATS):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True,
                              text=True, cwd=ROOT)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"cadx {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        loaded = next((ln.split("=", 1)[1] for ln in done.stderr.splitlines() if ln.startswith("LOADED=")), "")
    return {"command": "cadx " + " ".join(args), "median_s": round(statistics.median(seconds), 3),
            "min_s": round(min(seconds), 3), "runs_s": [round(s, 3) for s in seconds],
            "imports": [m for m in loaded.split(",") if m]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "grey.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.normal(110, 35, (256, 256)).clip(0, 255).astype(np.uint8)).save(image)
        out = Path(tmp) / "out.csv"
        commands = [["--help"], ["models", "--models-dir", str(ROOT / "models")],
                    ["predict", str(MODEL), str(image), "--backend", "auto", "--output", str(out)],
                    ["predict", str(MODEL), str(image), "--backend", "torch", "--output", str(out)]]
        rows = []
        for command in commands:  # a failing command stops the run (SystemExit's code is the process's)
            rows.append(timed(command))
            if command[0] == "predict":  # which backend auto chose on this CPU (only verified copies are used)
                rows[-1]["backend"] = out.read_text().splitlines()[1].rsplit(",", 1)[1]
    for r in rows:
        shown = r["command"].replace(str(ROOT) + "/", "")
        print(f"{r['median_s']:6.2f} s  {shown}  imports: {', '.join(r['imports'])}")
    result = {"what": "wall time of whole cadx processes (python -c running the console entry point), median of "
                      f"{REPEATS}", "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(),
                                                 "python": platform.python_version(),
                                                 "note": "shared 2-core machine; other jobs may run"},
              "rows": [{**r, "command": r["command"].replace(str(ROOT) + "/", "")} for r in rows]}
    (Path(__file__).parent / "startup.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
