"""Requests/s of the web server with 1 and 2 worker processes (issue 22), 8 clients, side by side in one run.

Each setting is a real ``cadx serve --workers N`` process on the shipped models (``models/``), SQLite in WAL mode in a
temporary data folder. 8 client threads each upload one study after another (one image: a Kermany official-test
chest X-ray, 224 x 224 JPEG, to ``chest_xray_pneumonia``; the server analyses it, draws the Grad-CAM heatmap and
feature maps, and stores everything). Before timing, 16 warm-up uploads let every worker load the model. The
settings alternate over the rounds (1, 2, 1, 2, ...) so that load on the machine hits both alike; the median round
is reported, with the latency percentiles of every request.

Run from the repository root: ``.venv/bin/python benchmarks/speed/serve_workers.py`` -> ``serve_workers.json``
(about 5 minutes on 2 cores). Needs ``../shared/datasets`` (skipped without it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT.parent / "shared" / "datasets" / "chest_xray_kermany" / "test" / "PNEUMONIA"
CADX = Path(sys.executable).with_name("cadx")
MODEL = "chest_xray_pneumonia"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``cadx serve --workers N`` on a fresh SQLite database, with one clinician."""

    def __init__(self, workers: int, folder: Path) -> None:
        self.workers, self.folder, self.port = workers, folder, free_port()
        db = f"sqlite:///{folder / 'cadx.db'}"
        added = subprocess.run([str(CADX), "users", "add", "bench", "--password", "bench-pass-1", "--db", db],
                               capture_output=True, text=True, timeout=300)
        if added.returncode:
            raise RuntimeError(added.stderr)
        self.proc = subprocess.Popen([str(CADX), "serve", "--port", str(self.port), "--db", db, "--data-dir",
                                      str(folder), "--models", str(ROOT / "models"), "--workers", str(workers)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"cadx serve --workers {workers} did not come up")
            time.sleep(0.5)
        token = httpx.post(f"{self.base}/api/v1/auth/token", data={"username": "bench", "password": "bench-pass-1"},
                           timeout=60).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def upload(self, image: bytes) -> float:
        start = time.perf_counter()
        r = httpx.post(f"{self.base}/api/v1/studies", headers=self.headers, timeout=300, data={"model_id": MODEL},
                       files=[("files", ("xray.jpeg", image, "image/jpeg"))])
        if r.status_code != 201:
            raise RuntimeError(f"upload failed: {r.status_code} {r.text[:200]}")
        return time.perf_counter() - start

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def load(server: Server, images: list[bytes], clients: int, per_client: int) -> dict:
    """``clients`` threads, each ``per_client`` uploads in a row; requests/s over the whole wall time."""
    def client(c: int) -> list[float]:
        return [server.upload(images[(c * per_client + i) % len(images)]) for i in range(per_client)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for times in pool.map(client, range(clients)) for t in times]
    wall = time.perf_counter() - start
    return {"requests": len(latencies), "seconds": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 3),
            "latencies": [round(t, 3) for t in latencies]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("serve_workers.json"))
    args = parser.parse_args()
    if not IMAGES.is_dir():
        print(f"skipped: {IMAGES} is absent")
        return 0
    from cadx.engine.hardware import describe_hardware

    images = [p.read_bytes() for p in sorted(IMAGES.glob("*.jpeg"))[:16]]
    settings = (1, 2)
    runs: dict[int, list[dict]] = {n: [] for n in settings}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {n: Server(n, Path(tmp) / f"w{n}") for n in settings}
        try:
            for server in servers.values():  # every worker loads the model before timing
                load(server, images, args.clients, 2)
            for r in range(args.rounds):
                for n in settings:
                    row = load(servers[n], images, args.clients, args.per_client)
                    runs[n].append(row)
                    print(f"round {r + 1} workers {n}: {row['requests_per_s']} requests/s", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    summary = {}
    for n, rows in runs.items():
        median = sorted(rows, key=lambda x: x["requests_per_s"])[len(rows) // 2]
        every = sorted(t for row in rows for t in row["latencies"])
        summary[n] = {"requests_per_s": median["requests_per_s"],
                      "latency_p50_s": round(statistics.median(every), 3),
                      "latency_p95_s": round(every[int(0.95 * (len(every) - 1))], 3)}
    ratio = round(summary[2]["requests_per_s"] / summary[1]["requests_per_s"], 2)
    result = {"setup": {"clients": args.clients, "per_client": args.per_client, "rounds": args.rounds,
                        "model": MODEL, "image": "Kermany official test PNEUMONIA, first 16 files, 224 px JPEG",
                        "database": "SQLite (WAL)", "hardware": describe_hardware(),
                        "cpu_count": os.cpu_count()},
              "summary": {f"workers_{n}": v for n, v in summary.items()}, "ratio_2_over_1": ratio,
              "runs": {f"workers_{n}": rows for n, rows in runs.items()}}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2), f"\n2 workers / 1 worker: x{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
