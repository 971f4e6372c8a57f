"""The page in a real browser: log in, choose a model (never preselected among several; remembered), drop an X-ray,
see the card (class, bars, Grad-CAM; "Not assessed" for images the model cannot judge), export the PDF, history.

Playwright drives Debian's Chromium (``/usr/bin/chromium``) headless; browsers are never downloaded. Skipped with
the reason when Playwright or Chromium is missing.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader

from cadx.engine.checkpoint import read_meta
from cadx.server.app import create_app
from cadx.server.settings import Settings
from tests.server.images import blank_png, dicom_bytes, png_bytes
from tests.server.live import CHROMIUM_ARGS, chromium_path, real_xray, serve

sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright is not installed")

DROP = """([name, b64, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const zone = document.getElementById("dropzone");
  for (const kind of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(kind, { dataTransfer: data, bubbles: true, cancelable: true }));
  }
}"""
EVIL_NAME = "<img src=x onerror=window.__xss=1>.png"
# A stored result whose most probable class (pneumonia, 0.568) lies below the study's threshold (0.620), rendered by
# the page's own card code: the headline must be the decision, not the argmax.
RENDER_BELOW_THRESHOLD = """() => {
  const box = document.createElement("div");
  document.body.append(box);
  const result = { index: 0, filename: "ct_small.dcm", kind: "dicom", width: 128, height: 128, seconds: 0.1,
    predicted_class: "pneumonia", probability: 0.568, probabilities: { normal: 0.432, pneumonia: 0.568 },
    decision: "normal", decision_classes: ["normal"], explained_class: "normal", thumbnail_url: "", image_url: "",
    heatmap_url: "x.png", feature_maps_url: null, original_url: "", dicom: null, warning: null, error: null,
    uncertain: true, uncertain_reason: "p(pneumonia) 0.568 within 0.1 of the threshold 0.620",
    explanation: "Layer-CAM at layer2" };
  window.cadx.renderStudy({ id: 0, created_at: new Date().toISOString(), model_title: "m", model_category: "c",
    threshold: 0.62, operating_point: "balanced", report_url: "", results: [result] }, box);
  const out = { headline: box.querySelector(".prediction").textContent,
    decision: box.querySelector(".decision").textContent,
    uncertain: box.querySelector(".uncertain").textContent,
    caption: box.querySelector(".overlay figcaption").textContent,
    top: box.querySelector(".bar-row.top .bar-label").textContent };
  box.remove();
  return out;
}"""


@pytest.fixture(scope="module")
def live(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("browser")
    web = create_app(Settings(data_dir=tmp / "data", models_dir=models_dir, secret_key="browser-test", feature_maps=4))
    with serve(web) as url:
        yield url, web.state.first_admin_password, str(models_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian package chromium; scripts/install_system_deps.sh)")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        except sync_api.Error as exc:
            pytest.skip(f"Chromium does not start under Playwright: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


def test_upload_drop_result_and_report(live: tuple[str, str, str], browser, tmp_path: Path) -> None:  # noqa: ANN001
    url, password, _models = live
    page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    keys: list[str | None] = []  # the Idempotency-Key of each upload the page sends
    page.on("request", lambda r: keys.append(r.headers.get("idempotency-key"))
            if r.method == "POST" and r.url.endswith("/api/v1/studies") else None)
    page.goto(f"{url}/")
    assert "/login" in page.url
    page.fill("#username", "admin")
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#model-select option[value=chest_xray_tiny]", state="attached")
    # several models are installed and none was used in this browser yet: none is chosen for the user
    assert page.input_value("#model-select") == "" and page.input_value("#threshold") == ""
    assert page.is_visible("#model-hint") and page.is_disabled("#recognise")
    page.select_option("#model-select", "chest_xray_tiny")
    assert page.input_value("#threshold") != "" and not page.is_visible("#model-hint")
    # the binary model's operating points are offered by name; the default one is chosen, a typed threshold is custom
    points = {p.name: p for p in read_meta(Path(_models) / "chest_xray_tiny" / "model.ckpt").operating_points}
    assert page.is_visible("#operating-point")
    options = page.eval_on_selector_all("#operating-point option", "os => os.map(o => o.value)")
    assert options == [*points, ""]  # "" is "custom threshold"
    assert page.input_value("#threshold") == f"{points[page.input_value('#operating-point')].threshold:.3f}"
    page.fill("#threshold", "0.123")
    page.dispatch_event("#threshold", "input")
    assert page.input_value("#operating-point") == ""
    page.select_option("#operating-point", "high-sensitivity")
    assert page.input_value("#threshold") == f"{points['high-sensitivity'].threshold:.3f}"

    xray = real_xray()
    name, content, mime = (xray.name, xray.read_bytes(), "image/jpeg") if xray else ("synthetic.png", png_bytes(),
                                                                                     "image/png")
    page.evaluate(DROP, [name, base64.b64encode(content).decode(), mime])
    page.set_input_files("#file-input", files=[{"name": EVIL_NAME, "mimeType": "image/png", "buffer": png_bytes(0)},
                                               {"name": "ct.dcm", "mimeType": "application/dicom",
                                                "buffer": dicom_bytes()},
                                               {"name": "blank.png", "mimeType": "image/png", "buffer": blank_png()}])
    assert page.locator("#file-list li").count() == 4
    page.fill("#patient-id", "BROWSER-1")
    page.click("#recognise")
    page.wait_for_selector(".card .class-name", timeout=60_000)

    cards = page.locator(".card")
    assert cards.count() == 4
    first = cards.nth(0)
    assert first.locator(".filename").inner_text() == name
    assert first.locator(".class-name").inner_text().lower() in ("normal", "pneumonia")
    assert first.locator(".bar-row").count() == 2
    overlay = first.locator(".overlay img")
    overlay.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle())
    assert first.locator("details.features").get_attribute("open") is None  # feature maps collapsed
    assert cards.nth(1).locator(".filename").inner_text() == EVIL_NAME  # shown as text...
    assert page.evaluate("window.__xss") is None  # ...never run as HTML
    assert first.locator(".warning").count() == 0 and first.locator(".not-assessed-reason").count() == 0
    assert first.locator(".model-name").inner_text().startswith("Model: chest_xray_tiny")  # every card names it
    assert "(high-sensitivity operating point)" in first.locator(".decision").inner_text()
    assert first.locator(".overlay figcaption").inner_text().startswith(("Grad-CAM", "Layer-CAM", "occlusion"))
    for n, says in ((2, "Not assessed — outside the model's scope"), (3, "Not assessed — blank or near-constant")):
        card = cards.nth(n)  # a CT on a chest X-ray model; a blank frame
        assert card.locator(".not-assessed-reason").inner_text().startswith(says)
        assert card.locator(".class-name").count() == 0 and card.locator(".decision").count() == 0  # no finding
        assert card.locator(".overlay").count() == 0 and card.locator("img[alt^=Heatmap]").count() == 0
        unreliable = card.locator("details.unreliable")
        assert unreliable.get_attribute("open") is None  # probabilities collapsed...
        assert "unreliable: not assessed" in unreliable.locator("summary").inner_text()  # ...and labelled so
        assert card.locator(".model-name").inner_text().startswith("Model: chest_xray_tiny")
    assert "saved" in page.inner_text("#status")
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{32}", keys[0] or ""), keys  # a retry cannot store a copy

    with page.expect_download() as download:
        first.locator(".export").click()
    pdf = tmp_path / "report.pdf"
    download.value.save_as(pdf)
    text = " ".join(PdfReader(io.BytesIO(pdf.read_bytes())).pages[0].extract_text().split())
    assert "pneumonia" in text and "BROWSER-1" in text and "does not replace" in text

    page.goto(f"{url}/history")
    row = page.locator("#studies tbody tr", has_text="BROWSER-1")
    row.wait_for()
    assert "not assessed" in row.inner_text()  # the Findings column
    row.locator("a", has_text="Open").click()
    page.wait_for_selector(".card .class-name")
    assert page.locator(".card").count() == 4
    assert page.locator(".card.not-assessed").count() == 2

    card = page.evaluate(RENDER_BELOW_THRESHOLD)
    assert card["headline"] == "normal 43.2 %" and card["top"] == "normal"
    assert "most probable class, pneumonia (56.8 %), is not asserted" in card["decision"]
    assert card["uncertain"] == "Uncertain — review — p(pneumonia) 0.568 within 0.1 of the threshold 0.620"
    assert card["caption"] == "Layer-CAM at layer2 for “normal”" and "(balanced operating point)" in card["decision"]

    page.goto(f"{url}/")  # the choice is remembered in this browser
    page.wait_for_selector("#model-select option[value=chest_xray_tiny]", state="attached")
    assert page.input_value("#model-select") == "chest_xray_tiny" and not page.is_visible("#model-hint")
    assert errors == []
    page.close()
