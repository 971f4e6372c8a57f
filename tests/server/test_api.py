"""REST API on SQLite, PostgreSQL and MariaDB: login, roles, upload -> result -> list -> PDF, bad input, audit."""

from __future__ import annotations

import io
from datetime import date, timedelta

import pytest
from PIL import Image
from pypdf import PdfReader

from tests.conftest import colour_photo
from tests.server.conftest import Env
from tests.server.images import (
    blank_png,
    corrupt_png,
    dicom_bytes,
    dicom_without_pixels,
    gif_bytes,
    huge_png,
    jpeg_bytes,
    png_bytes,
    tinted_png,
)

CHEST = "chest_xray_tiny"


def upload(env: Env, files: list[tuple[str, bytes]], model_id: str = CHEST, role: str = "clinician",
           **fields: object):
    data = {"model_id": model_id, **{k: str(v) for k, v in fields.items()}}
    return env.client.post("/api/v1/studies", headers=env.auth(role), data=data,
                           files=[("files", (name, content, "application/octet-stream")) for name, content in files])


def stored_state(env: Env) -> tuple[int, list[str], list[str]]:
    total = env.client.get("/api/v1/studies", headers=env.auth()).json()["total"]
    data = env.settings.data_dir
    return total, sorted(p.name for p in (data / "studies").iterdir()), sorted(p.name for p in (data / "tmp").iterdir())


def test_health_needs_no_login(env: Env) -> None:
    for path in ("/health", "/api/v1/health"):
        r = env.client.get(path)
        assert r.status_code == 200
        assert r.json()["database"] == "ok" and r.json()["models"] == 3


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/models"), ("GET", "/api/v1/studies"), ("GET", "/api/v1/studies/1"),
    ("GET", "/api/v1/studies/1/report.pdf"), ("GET", "/api/v1/studies/1/images/0/overlay.png"),
    ("GET", "/api/v1/auth/me"), ("GET", "/api/v1/audit"), ("GET", "/openapi.json"),
    ("POST", "/api/v1/studies"), ("DELETE", "/api/v1/studies/1"),
])
def test_login_required(env: Env, method: str, path: str) -> None:
    assert env.client.request(method, path).status_code == 401
    r = env.client.request(method, path, headers={"Authorization": "Bearer forged.token.value"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_token_flow(env: Env) -> None:
    bad = env.client.post("/api/v1/auth/token", data={"username": "admin", "password": "wrong-password"})
    assert bad.status_code == 401
    nobody = env.client.post("/api/v1/auth/token", data={"username": "nobody", "password": "whatever1"})
    assert nobody.status_code == 401
    me = env.client.get("/api/v1/auth/me", headers=env.auth("admin")).json()
    assert me["username"] == "admin" and me["role"] == "admin"
    assert env.client.get("/api/v1/auth/me", headers=env.auth()).json()["role"] == "clinician"


def test_models_grouped_with_metrics(env: Env) -> None:
    r = env.client.get("/api/v1/models", headers=env.auth())
    assert r.status_code == 200
    groups = {c["name"]: {m["id"]: m for m in c["models"]} for c in r.json()["categories"]}
    assert set(groups) == {"Brain MRI", "Chest X-ray"}  # the broken checkpoint is not offered
    assert set(groups["Chest X-ray"]) == {CHEST, "research_model"}
    chest = groups["Chest X-ray"][CHEST]
    assert chest["classes"] == ["normal", "pneumonia"] and chest["input_size"] == 32 and chest["has_card"]
    assert chest["metrics"]["split"] == "test" and 0 <= chest["metrics"]["accuracy"] <= 1
    assert chest["version"].startswith("sha256:")
    assert groups["Chest X-ray"]["research_model"]["title"] == "Research pneumonia model"
    brain = groups["Brain MRI"]["brain_mri_tiny"]
    assert brain["classes"] == ["glioma", "meningioma", "notumor"] and brain["metrics"] is None


def test_upload_result_list_report(env: Env) -> None:
    files = [("chest <b>1<b>&'x'.png", png_bytes(1)), ("scan.jpg", jpeg_bytes()), ("slice", dicom_bytes())]
    r = upload(env, files, threshold=0.4, patient_id="P-001", note="cough, fever")
    assert r.status_code == 201, r.text
    study = r.json()
    assert study["patient_id"] == "P-001" and study["threshold"] == 0.4 and study["model_id"] == CHEST
    assert [x["filename"] for x in study["results"]] == [name for name, _ in files]
    for result in study["results"]:
        assert result["error"] is None and result["warning"] is None
        assert result["predicted_class"] in ("normal", "pneumonia")  # kept for the record, assessed or not
        assert set(result["probabilities"]) == {"normal", "pneumonia"}
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
        assert result["probability"] == max(result["probabilities"].values())
        assert result["seconds"] > 0
        for key in ("thumbnail_url", "image_url"):
            img = env.client.get(result[key], headers=env.auth())
            assert img.status_code == 200 and img.content.startswith(b"\x89PNG"), key
    for result in study["results"][:2]:
        expected = "pneumonia" if result["probabilities"]["pneumonia"] >= 0.4 else "normal"
        assert result["assessed"] is True and result["reason"] is None and result["decision"] == expected
        for key in ("heatmap_url", "feature_maps_url"):
            img = env.client.get(result[key], headers=env.auth())
            assert img.status_code == 200 and img.content.startswith(b"\x89PNG"), key
    assert [x["kind"] for x in study["results"]] == ["png", "jpeg", "dicom"]
    dicom = study["results"][2]
    assert dicom["dicom"] == {"Modality": "CT"}  # identifying header values (StudyDate, PatientID) are not stored
    # the test DICOM is a CT sent to a chest X-ray model: outside its scope, so not assessed (no Chest CT model is
    # installed to suggest)
    assert dicom["assessed"] is False and dicom["decision"] is None and dicom["decision_classes"] == []
    assert "Modality CT" in dicom["reason"] and "Chest X-ray" in dicom["reason"] and "try " not in dicom["reason"]
    assert dicom["heatmap_url"] is None and dicom["feature_maps_url"] is None and dicom["explained_class"] is None
    original = env.client.get(study["results"][1]["original_url"], headers=env.auth())
    assert original.content == files[1][1] and original.headers["content-type"] == "image/jpeg"

    got = env.client.get(f"/api/v1/studies/{study['id']}", headers=env.auth())
    assert got.status_code == 200 and got.json()["results"] == study["results"]

    listed = env.client.get("/api/v1/studies", params={"patient_id": "P-001"}, headers=env.auth()).json()
    assert [s["id"] for s in listed["items"]] == [study["id"]] and listed["items"][0]["n_images"] == 3
    assert listed["items"][0]["findings"] == [study["results"][0]["decision"], study["results"][1]["decision"],
                                              "not assessed"]
    finding = study["results"][0]["decision_classes"][0]
    day = date.today()
    for params, hit in [({"finding": finding}, True), ({"model_id": CHEST}, True),
                        ({"model_id": "brain_mri_tiny"}, False),
                        ({"date_from": str(day - timedelta(days=1)), "date_to": str(day + timedelta(days=1))}, True),
                        ({"date_from": str(day + timedelta(days=2))}, False)]:
        ids = [s["id"] for s in env.client.get("/api/v1/studies", params=params, headers=env.auth()).json()["items"]]
        assert (study["id"] in ids) is hit, params

    pdf = env.client.get(study["report_url"], headers=env.auth())
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.content))
    assert len(reader.pages) == 3
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())  # undo line wrapping
    for needle in ("pneumonia", "normal", "P-001", "chest <b>1<b>&'x'.png", CHEST, "does not replace", "(uploaded)",
                   "Accuracy", "Decision at threshold 0.400", "Not assessed: outside the model's scope"):
        assert needle in text, needle
    assert "Caution" not in text and "2024-01-02" not in text  # the DICOM's StudyDate is not kept
    dicom_page = " ".join(reader.pages[2].extract_text().split())
    assert "Not assessed" in dicom_page and "Decision at threshold" not in dicom_page and "Grad-CAM" not in dicom_page
    assert CHEST in dicom_page  # the model is named on every page
    one = env.client.get(study["report_url"], params={"image": 1}, headers=env.auth())
    assert len(PdfReader(io.BytesIO(one.content)).pages) == 1


def page_texts(env: Env, url: str) -> list[str]:
    pdf = env.client.get(url, headers=env.auth())
    assert pdf.status_code == 200
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf.content)).pages]


def test_blank_and_colour_images_are_not_assessed_and_stored(env: Env) -> None:
    buf = io.BytesIO()
    Image.fromarray(colour_photo()).save(buf, format="PNG")
    files = [("blank.png", blank_png()), ("holiday.png", buf.getvalue()), ("tinted.png", tinted_png()),
             ("ok.png", png_bytes(1, seed=9))]
    r = upload(env, files, patient_id="NOT-ASSESSED-1")
    assert r.status_code == 201, r.text
    study = r.json()
    blank, holiday, tinted, ok = study["results"]
    for result in (blank, holiday, tinted):
        assert result["error"] is None and result["assessed"] is False and result["reason"], result["filename"]
        assert result["decision"] is None and result["decision_classes"] == [] and result["explained_class"] is None
        assert result["heatmap_url"] is None and result["feature_maps_url"] is None and result["warning"] is None
        assert result["predicted_class"] in ("normal", "pneumonia")  # raw, for the record
        thumb = env.client.get(result["thumbnail_url"], headers=env.auth())
        assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")
        overlay = f"/api/v1/studies/{study['id']}/images/{result['index']}/overlay.png"
        assert env.client.get(overlay, headers=env.auth()).status_code == 404  # no heatmap was made
    assert blank["reason"].startswith("blank or near-constant image")
    assert "colour image" in tinted["reason"] and "Chest X-ray" in tinted["reason"]  # the scope sentence
    assert ok["assessed"] is True and ok["reason"] is None and ok["decision"] in ("normal", "pneumonia")
    assert ok["heatmap_url"] is not None

    got = env.client.get(f"/api/v1/studies/{study['id']}", headers=env.auth())
    assert got.status_code == 200 and got.json()["results"] == study["results"]  # stored as answered
    folder = env.settings.data_dir / "studies" / str(study["id"])
    assert sorted(p.name for p in (folder / "0").iterdir()) == ["image.png", "original.png", "thumb.png"]
    listed = env.client.get("/api/v1/studies", params={"patient_id": "NOT-ASSESSED-1"}, headers=env.auth()).json()
    assert listed["items"][0]["findings"] == ["not assessed"] * 3 + [ok["decision"]]

    pages = page_texts(env, study["report_url"])
    assert len(pages) == 4
    for text, result in zip(pages[:3], study["results"][:3], strict=True):
        assert "Not assessed" in text and "Decision at threshold" not in text and "Grad-CAM" not in text
        assert result["reason"][:30] in text and CHEST in text
    assert "Decision at threshold" in pages[3] and "Not assessed" not in pages[3]


def test_a_dicom_another_model_accepts_is_not_assessed_with_a_suggestion(env: Env) -> None:
    r = upload(env, [("head.dcm", dicom_bytes(modality="MR")), ("ct.dcm", dicom_bytes())])
    assert r.status_code == 201, r.text
    mr, ct = r.json()["results"]
    assert mr["assessed"] is False and "Modality MR" in mr["reason"]
    assert mr["reason"].endswith("; it looks like a Brain MRI image: try brain_mri_tiny")
    assert ct["assessed"] is False and "try " not in ct["reason"]  # no installed model takes chest CT
    brain = upload(env, [("head.dcm", dicom_bytes(modality="MR"))], model_id="brain_mri_tiny").json()["results"][0]
    assert brain["assessed"] is True and brain["decision"] in ("glioma", "meningioma", "notumor")


def test_history_filter_skips_a_study_whose_only_image_was_not_assessed(env: Env) -> None:
    r = upload(env, [("blank.png", blank_png())], patient_id="NA-ONLY")
    assert r.status_code == 201, r.text  # stored: not assessed is a result, not a refusal
    sid = r.json()["id"]
    assert r.json()["results"][0]["predicted_class"] in ("normal", "pneumonia")
    listed = env.client.get("/api/v1/studies", params={"patient_id": "NA-ONLY"}, headers=env.auth()).json()
    assert [s["id"] for s in listed["items"]] == [sid] and listed["items"][0]["findings"] == ["not assessed"]
    for finding in ("normal", "pneumonia"):
        for key in ("finding", "predicted_class"):
            found = env.client.get("/api/v1/studies", params={key: finding, "patient_id": "NA-ONLY"},
                                   headers=env.auth()).json()
            assert found["total"] == 0, (key, finding)


def test_multiclass_model(env: Env) -> None:
    r = upload(env, [("mri.png", png_bytes(0, seed=5))], model_id="brain_mri_tiny")
    assert r.status_code == 201, r.text
    result = r.json()["results"][0]
    assert set(result["probabilities"]) == {"glioma", "meningioma", "notumor"}
    assert result["decision"] == result["predicted_class"]


def test_bad_files_do_not_stop_the_good_one(env: Env) -> None:
    before = stored_state(env)
    files = [("text.png", b"just some text, not an image"), ("ok.png", png_bytes(0)), ("anim.gif", gif_bytes()),
             ("corrupt.png", corrupt_png()), ("sr.dcm", dicom_without_pixels()), ("bomb.png", huge_png(1_000_000)),
             ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(1_100_000)), ("empty.png", b"")]
    r = upload(env, files)
    assert r.status_code == 201, r.text
    results = {x["filename"]: x for x in r.json()["results"]}
    assert results["ok.png"]["error"] is None
    errors = {name: x["error"] for name, x in results.items() if name != "ok.png"}
    assert "not a PNG, JPEG or DICOM" in errors["text.png"] and "GIF" in errors["anim.gif"]
    assert "no pixel data" in errors["sr.dcm"]
    assert "limit is 1000000" in errors["bomb.png"]
    assert "1 MB upload limit" in errors["big.png"] and errors["empty.png"] == "empty file"
    assert errors["corrupt.png"]
    assert all(results[n]["heatmap_url"] is None for n in errors)
    total, studies, tmp = stored_state(env)
    assert total == before[0] + 1 and len(studies) == len(before[1]) + 1 and tmp == []
    folder = env.settings.data_dir / "studies" / str(r.json()["id"])
    assert sorted(p.name for p in folder.iterdir()) == ["1"]  # only the analysed file has artefacts


@pytest.mark.parametrize(("name", "content", "status", "reason"), [
    ("notes.png", b"plain text", 415, "not a PNG, JPEG or DICOM image"),
    ("anim.gif", gif_bytes(), 415, "GIF"),
    ("big.dcm", b"DICM" * 300_000, 413, "upload limit"),
    ("bomb.png", huge_png(1_000_000), 413, "pixels, limit is 1000000"),
    ("corrupt.png", corrupt_png(), 422, ""),
    ("sr.dcm", dicom_without_pixels(), 422, "no pixel data"),
    ("empty.jpg", b"", 422, "empty file"),
])
def test_single_bad_file_is_a_4xx_and_stores_nothing(env: Env, name: str, content: bytes, status: int,
                                                      reason: str) -> None:
    before = stored_state(env)
    r = upload(env, [(name, content)])
    assert r.status_code == status, r.text
    body = r.json()
    assert body["detail"].startswith(f"{name}: ") and reason in body["detail"]
    assert body["errors"][0]["filename"] == name and reason in body["errors"][0]["error"]
    assert stored_state(env) == before


def test_unknown_model_and_bad_threshold(env: Env) -> None:
    before = stored_state(env)
    r = upload(env, [("a.png", png_bytes())], model_id="no_such_model")
    assert r.status_code == 404 and "unknown model id 'no_such_model'" in r.json()["detail"]
    for t in (1.5, -0.1):
        r = upload(env, [("a.png", png_bytes())], threshold=t)
        assert r.status_code == 422 and "threshold must be between 0 and 1" in r.json()["detail"]
    r = upload(env, [("a.png", png_bytes())], threshold="abc")
    assert r.status_code == 422
    assert stored_state(env) == before


def test_user_text_is_stored_verbatim(env: Env) -> None:
    evil, name = '<script>alert("x")</script>', "<img src=x onerror=alert(1)>.png"  # no '/': it splits paths
    r = upload(env, [(name, png_bytes())], patient_id="<b>P</b>", note=evil)
    assert r.status_code == 201
    got = env.client.get(f"/api/v1/studies/{r.json()['id']}", headers=env.auth()).json()
    assert got["results"][0]["filename"] == name and got["patient_id"] == "<b>P</b>" and got["note"] == evil


def test_paging(env: Env) -> None:
    for _ in range(2):
        assert upload(env, [("p.png", png_bytes())], patient_id="PAGED").status_code == 201
    first = env.client.get("/api/v1/studies", params={"patient_id": "PAGED", "page_size": 1},
                           headers=env.auth()).json()
    second = env.client.get("/api/v1/studies", params={"patient_id": "PAGED", "page_size": 1, "page": 2},
                            headers=env.auth()).json()
    assert first["total"] == second["total"] == 2
    assert first["items"][0]["id"] > second["items"][0]["id"]  # newest first
    assert env.client.get("/api/v1/studies", params={"page": 0}, headers=env.auth()).status_code == 422


def test_roles_delete_and_audit(env: Env) -> None:
    r = upload(env, [("d.png", png_bytes())], patient_id="DEL-1")
    sid = r.json()["id"]
    env.client.get(f"/api/v1/studies/{sid}", headers=env.auth())
    env.client.get(f"/api/v1/studies/{sid}/report.pdf", headers=env.auth())
    assert env.client.delete(f"/api/v1/studies/{sid}", headers=env.auth()).status_code == 403
    assert env.client.get("/api/v1/audit", headers=env.auth()).status_code == 403
    assert env.client.delete(f"/api/v1/studies/{sid}", headers=env.auth("admin")).status_code == 204
    assert env.client.get(f"/api/v1/studies/{sid}", headers=env.auth()).status_code == 404
    assert env.client.delete(f"/api/v1/studies/{sid}", headers=env.auth("admin")).status_code == 404
    assert not (env.settings.data_dir / "studies" / str(sid)).exists()
    events = env.client.get("/api/v1/audit", params={"study_id": sid}, headers=env.auth("admin")).json()
    assert [(e["action"], e["username"]) for e in reversed(events)] == [
        ("create", "clara"), ("view", "clara"), ("export", "clara"), ("delete", "admin")]


def test_history_filter_matches_the_decision_not_the_most_probable_class(env: Env) -> None:
    """One image uploaded at threshold 0 (the finding is always the positive class) and at threshold 1 (never, unless
    p is exactly 1): whatever the most probable class is, a filter on a finding returns exactly the study whose table
    shows it. Matching the most probable class, as before, fails one of the two checks for any image."""
    image = [("same.png", png_bytes(1, seed=41))]
    always = upload(env, image, threshold=0.0, patient_id="FILTER-1").json()
    never = upload(env, image, threshold=1.0, patient_id="FILTER-1").json()
    assert always["results"][0]["decision_classes"] == ["pneumonia"]
    positive_p = always["results"][0]["probabilities"]["pneumonia"]
    assert never["results"][0]["decision_classes"] == (["pneumonia"] if positive_p >= 1.0 else ["normal"])
    for finding in ("pneumonia", "normal"):
        for key in ("finding", "predicted_class"):  # the old parameter name is an alias of the finding
            listed = env.client.get("/api/v1/studies", params={key: finding, "patient_id": "FILTER-1"},
                                    headers=env.auth()).json()
            shown = {s["id"] for s in listed["items"]}
            expected = {s["id"] for s in (always, never) if finding in s["results"][0]["decision_classes"]}
            assert shown == expected, (key, finding)
            for item in listed["items"]:
                assert finding in item["findings"]  # the history table's column says the same
