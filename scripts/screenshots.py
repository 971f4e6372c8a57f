"""Take the two README screenshots of the cadx page: docs/screenshot_upload.png and docs/screenshot_result.png.

    .venv/bin/python scripts/screenshots.py [--models DIR] [--out docs]

Serves the app on a temporary data dir, logs in with Debian's Chromium through Playwright (headless, never
downloaded), selects two Kermany test X-rays (synthetic images when ../shared is absent) and recognises them.
Without shipped models (``models/<name>/model.ckpt``) it first trains a small demo model on PneumoniaMNIST.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def has_models(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*/model.ckpt"))


def demo_models(work: Path) -> Path:
    """A small chest X-ray model: PneumoniaMNIST when present, else synthetic class folders."""
    cadx = str(Path(sys.executable).with_name("cadx"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = work / "run"
    npz = SHARED / "pneumoniamnist" / "pneumoniamnist_28.npz"
    if npz.exists():
        data, extra = str(npz), ["--class-names", "normal,pneumonia", "--epochs", "3"]
    else:
        sys.path.insert(0, str(REPO))
        from tests.conftest import make_class_folders

        data, extra = str(make_class_folders(work / "synthetic", 40)), ["--epochs", "2", "--image-size", "32"]
    subprocess.run([cadx, "train", data, "--recipe", "small-cnn", "--output", str(run), "--num-workers", "0",
                    "--folds", "1", *extra],
                   check=True, env=env)
    models = work / "models"
    target = models / "chest_xray_pneumoniamnist_demo"
    subprocess.run([cadx, "evaluate", str(run), "--output", str(target), "--bootstrap", "200"], check=True, env=env)
    from cadx.engine.checkpoint import export_checkpoint, update_meta

    export_checkpoint(run / "best.ckpt", target / "model.ckpt")
    update_meta(target / "model.ckpt", title="PneumoniaMNIST demo (small CNN, 28 px)")
    return models


def sample_images(work: Path, checkpoint: Path) -> list[Path]:
    """The Kermany test X-rays (among the first 24 of each class) that the model finds most typical of their class,
    so the screenshot shows a heatmap with evidence; synthetic images when ../shared is absent."""
    kermany = SHARED / "chest_xray_kermany" / "test"
    if (kermany / "PNEUMONIA").is_dir() and (kermany / "NORMAL").is_dir():
        from cadx.engine.inference import Predictor

        predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
        picks = []
        for folder in ("PNEUMONIA", "NORMAL"):
            files = sorted((kermany / folder).glob("*.jpeg"))[:24]
            want = folder.lower()
            best = max(files, key=lambda f: float(predictor.predict_batch(
                predictor.prepare(predictor.read(f))[None].copy())[0][predictor.classes.index(want)])
                if want in predictor.classes else 0.0)
            picks.append(best)
        return picks
    sys.path.insert(0, str(REPO))
    from tests.conftest import make_class_folders

    folders = make_class_folders(work / "samples", 1, size=224)
    return sorted(folders.rglob("*.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()

    import torch
    import uvicorn
    from playwright.sync_api import sync_playwright

    from cadx.server.app import create_app
    from cadx.server.settings import Settings

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cadx-shots-") as tmp:
        work = Path(tmp)
        models = args.models if has_models(args.models) else demo_models(work)
        from cadx.server.model_store import ModelStore

        entries = ModelStore(models).entries()
        model = next((e for e in entries if e.category == "Chest X-ray"), entries[0])
        web = create_app(Settings(data_dir=work / "data", models_dir=models, secret_key="screenshots"),
                         log_first_admin=False)
        password = web.state.first_admin_password
        server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
                page.goto(f"{url}/login")
                page.fill("#username", "admin")
                page.fill("#password", password)
                page.click("button[type=submit]")
                page.wait_for_selector("#model-select option", state="attached")
                page.select_option("#model-select", model.id)
                page.set_input_files("#file-input", [str(p) for p in sample_images(work, model.path)])
                page.fill("#patient-id", "DEMO-001")
                page.screenshot(path=str(args.out / "screenshot_upload.png"))
                page.click("#recognise")
                page.wait_for_selector(".card .class-name", timeout=120_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.card .thumb, .card .overlay img')].every((i) => i.complete)")
                page.screenshot(path=str(args.out / "screenshot_result.png"), full_page=True)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=15)
    print(f"written {args.out / 'screenshot_upload.png'} and {args.out / 'screenshot_result.png'}")


if __name__ == "__main__":
    main()
