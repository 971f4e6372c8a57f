"""De-identification on ingest (DICOM PS3.15 Annex E, Basic Profile), attribute by attribute, and the one patient
identity of a study (typed, or the header's PatientID when asked for) in API, history filter and PDF."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pypdf import PdfReader

from cadx.server.services.deidentify import REMOVE, StudyDeidentifier
from tests.security.conftest import Env

CHEST = "chest_xray_tiny"
STUDY_UID, SERIES_UID = generate_uid(), generate_uid()
# attribute -> a value that must not survive anywhere in the stored file (Annex E Table E.1-1, Basic Profile)
IDENTIFYING = {
    "PatientName": "Doe^John", "PatientID": "MRN-4711-XY", "PatientBirthDate": "19610203",
    "PatientAddress": "12 Elm Street, Springfield", "InstitutionName": "St Hildegard Hospital",
    "InstitutionAddress": "1 Hospital Road, Shelbyville", "ReferringPhysicianName": "House^Gregory",
    "OtherPatientNames": "Doe^Johnny", "OtherPatientIDs": "OTHER-ID-99", "PatientTelephoneNumbers": "555-0199",
    "AccessionNumber": "ACC-314159", "StudyID": "STUDY-2718", "PerformingPhysicianName": "Grey^Meredith",
    "OperatorsName": "Operator^Olga", "StationName": "CTSTATION7", "DeviceSerialNumber": "SERIAL-1234",
    "InstitutionalDepartmentName": "Dept of Secrets", "PatientComments": "lives with Jane Doe",
    "ImageComments": "John's second scan", "StudyDescription": "Chest for John Doe",
    "SeriesDescription": "series of Doe", "AdditionalPatientHistory": "history of Doe", "PatientAge": "063Y",
    "PatientWeight": "81.5", "EthnicGroup": "ethnic-x", "Occupation": "occupation-x", "ProtocolName": "Doe protocol",
    "RequestingPhysician": "Req^Ralph", "NameOfPhysiciansReadingStudy": "Reader^Rita", "StudyTime": "101112",
    "StudyDate": "20240102", "SeriesDate": "20240102", "ContentDate": "20240103", "MilitaryRank": "rank-x",
}


def identifying_dicom(sop_uid: str | None = None, **overrides: object) -> tuple[bytes, Dataset]:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "DOE_WORKSTATION"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = STUDY_UID, SERIES_UID, generate_uid()
    ds.Modality, ds.PatientSex = "DX", "M"
    for keyword, value in {**IDENTIFYING, **overrides}.items():
        setattr(ds, keyword, value)
    block = ds.private_block(0x0011, "ACME HOSPITAL", create=True)
    block.add_new(0x01, "LO", "private Doe note")
    person = Dataset()
    person.PersonName, person.PersonAddress = "Doe^Jane", "Elm Street"
    ds.ReferencedPatientSequence = Sequence([person])
    request = Dataset()
    request.RequestedProcedureID, request.ReasonForTheRequestedProcedure = "REQ-77", "cough of Doe"
    ds.RequestAttributesSequence = Sequence([request])
    ds.add_new(0x60000010, "US", 8)  # an overlay plane (may carry drawn annotations)
    ds.add_new(0x60003000, "OW", b"\x01" * 8)
    pixels = (np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) % 4096)
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), ds


def upload(env: Env, files: list[tuple[str, bytes]], **fields: object):  # noqa: ANN201 - httpx.Response
    data = {"model_id": CHEST, **{k: str(v) for k, v in fields.items()}}
    return env.client.post("/api/v1/studies", headers=env.auth(), data=data,
                           files=[("files", (name, content, "application/dicom")) for name, content in files])


def stored_originals(env: Env, study: dict) -> list[tuple[bytes, Dataset]]:
    out = []
    for result in study["results"]:
        r = env.client.get(result["original_url"], headers=env.auth())
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
        out.append((r.content, pydicom.dcmread(io.BytesIO(r.content))))
    return out


@pytest.fixture(scope="module")
def two_image_study(model_env: Env) -> tuple[dict, list[Dataset], list[tuple[bytes, Dataset]]]:
    (first, ds1), (second, ds2) = identifying_dicom(), identifying_dicom()
    r = upload(model_env, [("doe-1.dcm", first), ("doe-2.dcm", second)])
    assert r.status_code == 201, r.text
    return r.json(), [ds1, ds2], stored_originals(model_env, r.json())


def test_no_identifying_value_survives_in_the_stored_original(two_image_study) -> None:  # noqa: ANN001
    _study, _sent, stored = two_image_study
    markers = [*IDENTIFYING.values(), "DOE_WORKSTATION", "private Doe note", "Doe^Jane", "REQ-77", "cough of Doe",
               "ACME HOSPITAL", "Elm Street", "Doe"]
    for raw, _ds in stored:
        for marker in markers:
            if marker in ("19610203", "20240102", "20240103", "101112", "063Y", "81.5", "M"):
                continue  # short values are checked attribute by attribute below (they could occur by chance)
            assert marker.encode() not in raw, marker


@pytest.mark.parametrize("keyword", sorted(IDENTIFYING))
def test_each_identifying_attribute_is_removed_or_replaced(two_image_study, keyword: str) -> None:  # noqa: ANN001
    _study, sent, stored = two_image_study
    for (_raw, ds), original in zip(stored, sent, strict=True):
        if keyword in REMOVE:
            assert keyword not in ds, f"{keyword} should be removed (action X)"
        else:  # Z or D: empty or a dummy, never the original (dates are shifted: the Modified Dates option)
            assert str(ds.get(keyword, "")) != str(original.get(keyword)), keyword


def test_uids_are_remapped_consistently_within_the_study(two_image_study) -> None:  # noqa: ANN001
    _study, sent, stored = two_image_study
    (_, a), (_, b) = stored
    assert a.StudyInstanceUID == b.StudyInstanceUID != sent[0].StudyInstanceUID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != sent[0].SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    for ds, original in ((a, sent[0]), (b, sent[1])):
        assert ds.SOPInstanceUID != original.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.FrameOfReferenceUID != original.FrameOfReferenceUID
        assert ds.SOPClassUID == CTImageStorage  # class UIDs are kept


def test_private_tags_overlays_and_identifying_sequences_are_gone(two_image_study) -> None:  # noqa: ANN001
    for _raw, ds in two_image_study[2]:
        assert not [e for e in ds.iterall() if e.tag.is_private]
        assert not [e for e in ds if 0x6000 <= e.tag.group <= 0x60FF]
        assert "ReferencedPatientSequence" not in ds and "RequestAttributesSequence" not in ds
        assert "SourceApplicationEntityTitle" not in ds.file_meta
        assert ds.PatientSex == "" and ds.PatientBirthDate == ""  # emptied, not shifted: it would give the age


def test_deidentification_attributes_are_set(two_image_study) -> None:  # noqa: ANN001
    for _raw, ds in two_image_study[2]:
        assert ds.PatientIdentityRemoved == "YES"
        assert "cadx PS3.15 E Basic Profile" in list(ds.DeidentificationMethod)
        codes = {(item.CodeValue, item.CodingSchemeDesignator) for item in ds.DeidentificationMethodCodeSequence}
        assert codes == {("113100", "DCM"), ("113107", "DCM")}


def test_pixels_are_kept(two_image_study) -> None:  # noqa: ANN001
    _study, sent, stored = two_image_study
    for (_raw, ds), original in zip(stored, sent, strict=True):
        assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_no_file_in_the_data_folder_holds_the_identity(model_env: Env, two_image_study) -> None:  # noqa: ANN001
    """The uploaded file is not kept: neither the study folders, nor tmp, nor the database hold the name."""
    hits = [p for p in Path(model_env.settings.data_dir).rglob("*") if p.is_file()
            and any(m in p.read_bytes() for m in (b"Doe^John", b"MRN-4711-XY", b"St Hildegard"))]
    assert hits == []


def test_two_studies_get_unrelated_pseudonyms(model_env: Env) -> None:
    raw, _ = identifying_dicom()
    a = stored_originals(model_env, upload(model_env, [("a.dcm", raw)]).json())[0][1]
    b = stored_originals(model_env, upload(model_env, [("b.dcm", raw)]).json())[0][1]
    assert a.StudyInstanceUID != b.StudyInstanceUID and a.PatientID != b.PatientID


def test_burned_in_annotation_is_not_claimed_removed(model_env: Env) -> None:
    raw, _ = identifying_dicom(BurnedInAnnotation="YES")
    ds = stored_originals(model_env, upload(model_env, [("burned.dcm", raw)]).json())[0][1]
    assert ds.PatientIdentityRemoved == "NO" and ds.get("PatientName") != "Doe^John"


def test_malformed_dates_are_blanked_not_fatal() -> None:
    _, ds = identifying_dicom(StudyDate="2024-13-x", PatientBirthDate="yesterday")
    StudyDeidentifier().dataset(ds)
    assert ds.StudyDate == "" and ds.PatientBirthDate == "" and ds.StudyTime == ""


def test_one_deidentifier_maps_the_same_uid_the_same_way() -> None:
    one, other = StudyDeidentifier(), StudyDeidentifier()
    _, a = identifying_dicom()
    _, b = identifying_dicom()
    _, c = identifying_dicom()
    one.dataset(a)
    one.dataset(b)
    other.dataset(c)
    assert a.StudyInstanceUID == b.StudyInstanceUID != c.StudyInstanceUID
    assert a.PatientName == b.PatientName and a.PatientID == b.PatientID


# patient identity ------------------------------------------------------------------------------------------------
def pdf_text(env: Env, study: dict) -> str:
    r = env.client.get(study["report_url"], headers=env.auth())
    assert r.status_code == 200
    return " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages).split())


def history_ids(env: Env, patient_id: str) -> list[int]:
    r = env.client.get("/api/v1/studies", params={"patient_id": patient_id}, headers=env.auth())
    return [s["id"] for s in r.json()["items"]]


def test_without_a_typed_id_the_patient_is_not_given_everywhere(model_env: Env) -> None:
    raw, _ = identifying_dicom(PatientID="HDR-0001")
    study = upload(model_env, [("x.dcm", raw)]).json()
    assert study["patient_id"] is None and "PatientID" not in (study["results"][0]["dicom"] or {})
    assert "Patient ID not given" in pdf_text(model_env, study) and "HDR-0001" not in pdf_text(model_env, study)
    assert history_ids(model_env, "HDR-0001") == []


def test_the_header_patient_id_when_asked_for(model_env: Env) -> None:
    raw, _ = identifying_dicom(PatientID="HDR-0002")
    study = upload(model_env, [("x.dcm", raw)], patient_id_from_header="true").json()
    assert study["patient_id"] == "HDR-0002"
    assert "Patient ID HDR-0002" in pdf_text(model_env, study)
    assert history_ids(model_env, "HDR-0002") == [study["id"]]
    listed = model_env.client.get("/api/v1/studies", headers=model_env.auth()).json()["items"]
    assert next(s for s in listed if s["id"] == study["id"])["patient_id"] == "HDR-0002"
    raw_stored, ds = stored_originals(model_env, study)[0]
    assert b"HDR-0002" not in raw_stored and ds.PatientID != "HDR-0002"  # only the database holds it


def test_the_typed_id_wins_and_several_header_patients_are_refused(model_env: Env) -> None:
    raw, _ = identifying_dicom(PatientID="HDR-0003")
    typed = upload(model_env, [("x.dcm", raw)], patient_id="TYPED-7", patient_id_from_header="true").json()
    assert typed["patient_id"] == "TYPED-7" and history_ids(model_env, "TYPED-7") == [typed["id"]]
    other, _ = identifying_dicom(PatientID="HDR-0004")
    r = upload(model_env, [("a.dcm", raw), ("b.dcm", other)], patient_id_from_header="true")
    assert r.status_code == 422 and "2 different patients" in r.json()["detail"]
    assert "HDR-0003" not in r.text


def test_api_database_and_pdf_keep_no_identifying_header_value(model_env: Env, two_image_study) -> None:  # noqa: ANN001
    """The image row keeps only what de-identification retains (Modality, BodyPartExamined): no study date,
    description or id from the header reaches the API, the database or the report."""
    study, _sent, _stored = two_image_study
    for result in study["results"]:
        assert set(result["dicom"] or {}) <= {"Modality", "BodyPartExamined"}, result["dicom"]
    text = pdf_text(model_env, study)
    for value in ("2024-01-02", "20240102", "Chest for John Doe", "series of Doe", "MRN-4711-XY", "Doe"):
        assert value not in text, value
    database = Path(model_env.settings.db_url.removeprefix("sqlite:///"))
    files = [p for p in database.parent.glob(database.name + "*") if p.is_file()]  # with -wal / -journal
    assert files
    for path in files:
        raw = path.read_bytes()
        for value in (b"20240102", b"Chest for John Doe", b"series of Doe", b"MRN-4711-XY"):
            assert value not in raw, value


def test_times_of_day_are_always_emptied() -> None:
    """Not shifted (a shift could leave one unchanged): 50 fresh de-identifications, every time empty."""
    raw, _ = identifying_dicom(SeriesTime="101113", AcquisitionTime="101114")
    for _ in range(50):
        ds = StudyDeidentifier().dataset(pydicom.dcmread(io.BytesIO(raw)))
        assert (ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime) == ("", "", "")
