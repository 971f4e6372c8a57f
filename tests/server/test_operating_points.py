"""Issue 21 in the web system: the model's named operating points offered by the API, chosen per study, named on the
study, card and PDF; the "uncertain - review" flag stored and shown; the heatmap named by the method that drew it."""

from __future__ import annotations

import io

from pypdf import PdfReader

from cadx.engine.checkpoint import read_meta
from tests.server.conftest import Env
from tests.server.images import png_bytes
from tests.server.test_api import CHEST, upload


def chest_model(env: Env) -> dict:
    r = env.client.get("/api/v1/models", headers=env.auth())
    return next(m for c in r.json()["categories"] for m in c["models"] if m["id"] == CHEST)


def pdf_text(env: Env, study: dict) -> str:
    pdf = env.client.get(study["report_url"], headers=env.auth()).content
    return " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())


def test_the_model_list_offers_the_stored_operating_points(env: Env) -> None:
    model = chest_model(env)
    meta = read_meta(env.settings.models_dir / CHEST / "model.ckpt")
    points = {p["name"]: p for p in model["operating_points"]}
    assert set(points) == {p.name for p in meta.operating_points} == {"balanced", "high-sensitivity",
                                                                      "high-specificity"}
    assert [p["name"] for p in model["operating_points"] if p["default"]] == [meta.default_operating_point]
    for p in meta.operating_points:
        assert points[p.name]["threshold"] == p.threshold and points[p.name]["criterion"] == p.criterion
    assert points["high-sensitivity"]["threshold"] <= points["balanced"]["threshold"] \
        <= points["high-specificity"]["threshold"]


def test_a_study_decided_at_a_named_point_says_so_everywhere(env: Env) -> None:
    point = next(p for p in chest_model(env)["operating_points"] if p["name"] == "high-specificity")
    r = upload(env, [("a.png", png_bytes(1)), ("b.png", png_bytes(0, seed=3))], operating_point="high-specificity")
    assert r.status_code == 201, r.text
    study = r.json()
    assert study["operating_point"] == "high-specificity" and study["threshold"] == point["threshold"]
    for result in study["results"]:
        p = result["probabilities"]["pneumonia"]
        assert result["decision"] == ("pneumonia" if p >= point["threshold"] else "normal")
    again = env.client.get(f"/api/v1/studies/{study['id']}", headers=env.auth()).json()
    assert again["operating_point"] == "high-specificity"  # stored, not recomputed
    assert f"{point['threshold']:.3f} (high-specificity operating point)" in pdf_text(env, study)


def test_default_and_custom_thresholds(sqlite_env: Env) -> None:
    env = sqlite_env
    meta = read_meta(env.settings.models_dir / CHEST / "model.ckpt")
    default = upload(env, [("a.png", png_bytes(1))]).json()
    assert default["operating_point"] == meta.default_operating_point
    assert default["threshold"] == meta.decision_threshold
    custom = upload(env, [("a.png", png_bytes(1))], threshold=0.37).json()
    assert custom["operating_point"] is None and custom["threshold"] == 0.37
    assert "0.370 (" not in pdf_text(env, custom)  # a custom threshold is a number, no point's name


def test_bad_operating_point_requests_are_refused_before_anything_is_stored(sqlite_env: Env) -> None:
    env = sqlite_env
    before = env.client.get("/api/v1/studies", headers=env.auth()).json()["total"]
    both = upload(env, [("a.png", png_bytes(1))], threshold=0.5, operating_point="balanced")
    assert both.status_code == 422 and "not both" in both.json()["detail"]
    unknown = upload(env, [("a.png", png_bytes(1))], operating_point="aggressive")
    assert unknown.status_code == 422
    assert "aggressive" in unknown.json()["detail"] and "high-sensitivity" in unknown.json()["detail"]
    multiclass = upload(env, [("a.png", png_bytes(1))], model_id="brain_mri_tiny", operating_point="balanced")
    assert multiclass.status_code == 422 and "unknown operating point" in multiclass.json()["detail"]
    assert env.client.get("/api/v1/studies", headers=env.auth()).json()["total"] == before


def test_an_answer_at_the_threshold_is_uncertain_on_card_api_and_pdf(sqlite_env: Env) -> None:
    env = sqlite_env
    image = png_bytes(1, seed=5)
    p = upload(env, [("x.png", image)], threshold=0.5).json()["results"][0]["probabilities"]["pneumonia"]
    near = upload(env, [("x.png", image)], threshold=round(p, 3)).json()  # p within 0.001 of the threshold
    result = near["results"][0]
    assert result["assessed"] is True and result["uncertain"] is True
    assert "within 0.1 of the threshold" in result["uncertain_reason"]
    assert "Uncertain — review" in pdf_text(env, near)
    far = upload(env, [("x.png", image)], threshold=min(1.0, p + 0.5) if p < 0.5 else max(0.0, p - 0.5)).json()
    assert far["results"][0]["uncertain"] is False or "mirrored" in far["results"][0]["uncertain_reason"]


def test_the_heatmap_is_named_by_the_method_that_drew_it(sqlite_env: Env) -> None:
    from cadx.engine.explain import Explainer
    from cadx.engine.inference import Predictor

    env = sqlite_env
    expected = Explainer(Predictor.from_checkpoint(env.settings.models_dir / CHEST / "model.ckpt")).describe()
    study = upload(env, [("a.png", png_bytes(1))]).json()
    assert study["results"][0]["explanation"] == expected
    assert f"{expected} for '" in pdf_text(env, study)
