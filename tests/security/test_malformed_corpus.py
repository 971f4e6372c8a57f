"""A generated corpus of malformed input (≥ 300 cases): truncated and corrupt images, pixel bombs, wrong types,
hostile names, bad multipart, bad numbers. Every answer is below 500, an error has the one JSON shape, and no
answer contains a server path."""

from __future__ import annotations

import io
import random
import re
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.security.conftest import Env
from tests.server.images import dicom_bytes, gif_bytes, huge_png, jpeg_bytes, png_bytes

CHEST = "chest_xray_tiny"
PNG, JPEG, DCM = png_bytes(1), jpeg_bytes(), dicom_bytes()


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` × ``height`` with almost no data (a bomb that is cheap to send)."""
    head = b"\x89PNG\r\n\x1a\n"
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    chunk = b"IHDR" + ihdr
    data = zlib.compress(b"\x00" * 64)
    idat = b"IDAT" + data
    return (head + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
            + len(data).to_bytes(4, "big") + idat + zlib.crc32(idat).to_bytes(4, "big"))


def _flipped(data: bytes, seed: int, n: int = 12) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(n):
        pos = rng.randrange(8, len(out))
        out[pos] = rng.randrange(256)
    return bytes(out)


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="WEBP")
    return buf.getvalue()


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims ``width`` x ``height``, followed by almost nothing."""
    data = bytearray(JPEG)
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data[:sof + 200])


def _dicom_variants() -> list[tuple[str, bytes]]:
    """DICOM files whose header lies about the pixels: wrong sizes, depths, frame counts, transfer syntaxes."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, RLELossless

    def variant(**changes: object) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(DCM))
        for key, value in changes.items():
            if key == "TransferSyntaxUID":  # a compressed syntax around bytes that are not that codec's
                ds.file_meta.TransferSyntaxUID = value
                ds.PixelData = encapsulate([bytes(ds.PixelData[:200])])
            elif value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        return buf.getvalue()

    return [("rows-too-many", variant(Rows=4000)), ("columns-too-many", variant(Columns=65535)),
            ("rows-zero", variant(Rows=0)), ("bits-1", variant(BitsAllocated=1)),
            ("bits-64", variant(BitsAllocated=64, BitsStored=64, HighBit=63)),
            ("samples-3", variant(SamplesPerPixel=3)), ("frames-huge", variant(NumberOfFrames=1_000_000)),
            ("no-pixel-data", variant(PixelData=None)), ("empty-pixel-data", variant(PixelData=b"")),
            ("photometric-odd", variant(PhotometricInterpretation="YBR_ICT")),
            ("jpeg-syntax-raw-data", variant(TransferSyntaxUID=JPEGBaseline8Bit)),
            ("rle-syntax-raw-data", variant(TransferSyntaxUID=RLELossless))]


def file_cases() -> list[tuple[str, str, bytes]]:
    cases = []
    for kind, data in (("png", PNG), ("jpg", JPEG), ("dcm", DCM)):
        for cut in (1, 4, 8, 16, 33, 64, 100, 128, 132, 200, 300, len(data) // 3, len(data) // 2, len(data) - 10,
                    len(data) - 1):
            cases.append((f"truncated-{kind}-{cut}", f"t.{kind}", data[:cut]))
        for seed in range(20):
            cases.append((f"corrupt-{kind}-{seed}", f"c.{kind}", _flipped(data, seed)))
    for w, h in ((7000, 7000), (100_000, 1), (1, 100_000), (50_000, 50_000), (2**31 - 1, 2**31 - 1), (0, 10),
                 (10, 0), (65535, 65535)):
        cases.append((f"bomb-{w}x{h}", "bomb.png", _png_declaring(w, h)))
    cases.append(("bomb-real", "bomb.png", huge_png(2_000_000)))
    for w, h in ((65500, 65500), (7000, 7000), (0, 0), (1, 65535)):
        cases.append((f"jpeg-bomb-{w}x{h}", "bomb.jpg", _jpeg_declaring(w, h)))
    for label, data in _dicom_variants():
        cases.append((f"dicom-{label}", "lie.dcm", data))
    for label, data in (("gif", gif_bytes()), ("pdf", b"%PDF-1.4\n%\xe2\xe3\n1 0 obj<<>>endobj\n"),
                        ("zip", b"PK\x03\x04" + b"\0" * 40), ("gzip", b"\x1f\x8b\x08" + b"\0" * 20),
                        ("text", b"hello, this is not an image"), ("html", b"<html><script>alert(1)</script>"),
                        ("webp", _webp()), ("nul", b"\0" * 1000), ("dicm-only", b"\0" * 128 + b"DICM"),
                        ("png-magic-only", b"\x89PNG\r\n\x1a\n"), ("jpeg-magic-only", b"\xff\xd8\xff"),
                        ("svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"), ("exe", b"MZ" + b"\0" * 100),
                        ("bmp", b"BM" + b"\0" * 60), ("tiff", b"II*\0" + b"\0" * 60)):
        cases.append((f"type-{label}", f"{label}.png", data))
    return cases


HOSTILE_NAMES = [
    "scan\u202egnp.exe", "\u202dreversed.png", "\u2066isolate\u2069.png", "rtl\u200f.png", "a/b/c.png",
    "../../etc/passwd", "..\\..\\windows\\win.ini", "/absolute/path.png", "x" * 1000 + ".png", "nul\x00byte.png",
    "crlf\r\nSet-Cookie: x=1.png", "<script>alert(1)</script>.png", "\"quoted\".png", "emoji-\U0001f480.png",
    "tab\tname.png", "%2e%2e%2fescaped.png", "CON", "name with spaces .png", ".hidden", "\u0000", " ", "",
    "ünïcödé.png", "中文.png", "a;b|c&d$(e).png", "\u200b\u200bzero-width.png", "\x7fdel.png", "\x85nel.png",
    "trailing-dot.", "pipe|name.png",
]


def clean(name: str) -> str:
    kept = re.sub(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", "", name).strip()[:255]
    return kept or "file-1"


MULTIPART = [
    ("no-boundary", {"Content-Type": "multipart/form-data"}, b"--x\r\n"),
    ("wrong-boundary", {"Content-Type": "multipart/form-data; boundary=abc"}, b"--xyz\r\n\r\n--xyz--"),
    ("garbage", {"Content-Type": "multipart/form-data; boundary=b"}, b"\x00\xff" * 100),
    ("unterminated", {"Content-Type": "multipart/form-data; boundary=b"},
     b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n" + PNG[:50]),
    ("no-disposition", {"Content-Type": "multipart/form-data; boundary=b"}, b"--b\r\n\r\nabc\r\n--b--\r\n"),
    ("json", {"Content-Type": "application/json"}, b'{"files": []}'),
    ("urlencoded", {"Content-Type": "application/x-www-form-urlencoded"}, b"model_id=x&files=y"),
    ("text", {"Content-Type": "text/plain"}, b"hello"),
    ("empty", {"Content-Type": "multipart/form-data; boundary=b"}, b""),
    ("only-close", {"Content-Type": "multipart/form-data; boundary=b"}, b"--b--\r\n"),
    ("huge-header", {"Content-Type": "multipart/form-data; boundary=b"},
     b"--b\r\nContent-Disposition: form-data; name=\"" + b"n" * 20000 + b"\"\r\n\r\nv\r\n--b--\r\n"),
    ("field-no-file", {"Content-Type": "multipart/form-data; boundary=b"},
     b"--b\r\nContent-Disposition: form-data; name=\"files\"\r\n\r\nnot a file\r\n--b--\r\n"),
    ("boundary-in-quotes", {"Content-Type": 'multipart/form-data; boundary="b"'}, b"--b--\r\n"),
    ("bad-charset", {"Content-Type": "multipart/form-data; boundary=b; charset=klingon"}, b"--b--\r\n"),
    ("no-content-type", {}, b"--b--\r\n"),
]
for n in range(15):  # random binary bodies under a multipart content type
    MULTIPART.append((f"random-{n}", {"Content-Type": "multipart/form-data; boundary=b"},
                      random.Random(n).randbytes(200 + 50 * n)))

BAD_FIELDS = [{"threshold": v} for v in ("nan", "inf", "-inf", "-1", "2", "1e309", "abc", "0x1", " ", "1,5",
                                         "∞", "0.5.5", "1/2", "true")]
BAD_FIELDS += [{"model_id": v} for v in ("", "../models/x", "x" * 5000, "\u202e", "broken", "chest_xray_tiny\x00")]
BAD_FIELDS += [{"patient_id": "p" * 65}, {"note": "n" * 2001}, {"patient_id_from_header": "maybe"},
               {"patient_id_from_header": "2"}]
BAD_URLS = [f"/api/v1/studies/{v}" for v in ("0", "-1", "abc", "1.5", "99999999999999999999999", "9223372036854775808",
                                             "%00", "1e3", " 1", "0x10", "１")]
BAD_URLS += [f"/api/v1/studies/1/images/{v}/original" for v in ("-1", "2147483648", "x", "1.0", "99999999999")]
BAD_URLS += [f"/api/v1/studies/1/images/0/{v}.png" for v in ("secret", "../../cadx.db", "original", "")]
BAD_URLS += [f"/api/v1/studies?{q}" for q in ("page=0", "page=-1", "page=99999999999999999999", "page=x",
                                              "page_size=0", "page_size=101", "page_size=x", "date_from=2024-13-01",
                                              "date_to=yesterday", "date_from=99999-01-01", "patient_id=%00",
                                              "finding=" + "f" * 5000)]
BAD_URLS += [f"/api/v1/studies/1/report.pdf?image={v}" for v in ("-1", "x", "2147483648", "1e9")]
BAD_URLS += [f"/api/v1/studies/{v}{tail}" for v in ("0", "-5", "x", "18446744073709551616", "1" * 40, "1%2F2")
             for tail in ("/report.pdf", "/images/0/original", "/images/0/overlay.png", "/images/0/thumbnail.png",
                          "/images/0/features.png")]
BAD_URLS += [f"/api/v1/audit/export.csv?{q}" for q in ("date_from=x", "date_to=2024-02-30", "date_from=-1")]
BAD_URLS += [f"/api/v1/audit?{q}" for q in ("study_id=0", "study_id=x", "limit=0", "limit=1001", "action=nope")]


def assert_safe(env: Env, r) -> None:  # noqa: ANN001 - httpx.Response
    assert r.status_code < 500, (r.status_code, r.text[:300])
    data_dir = str(Path(env.settings.data_dir).resolve())
    for leak in (data_dir, "/tmp/", ".upload", "Traceback", str(Path(env.settings.models_dir).resolve())):
        assert leak not in r.text, leak
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str)


def post(env: Env, files: list[tuple[str, bytes]], **fields: str):  # noqa: ANN201 - httpx.Response
    return env.client.post("/api/v1/studies", headers=env.auth(), data={"model_id": CHEST, **fields},
                           files=[("files", (name, data, "application/octet-stream")) for name, data in files])


FILES = file_cases()


@pytest.mark.parametrize(("label", "name", "data"), FILES, ids=[c[0] for c in FILES])
def test_malformed_file(model_env: Env, label: str, name: str, data: bytes) -> None:
    r = post(model_env, [(name, data)])
    assert_safe(model_env, r)
    if r.status_code == 201:
        for result in r.json()["results"]:
            assert result["filename"] == name


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[f"name-{n}" for n in range(len(HOSTILE_NAMES))])
def test_hostile_name(model_env: Env, name: str) -> None:
    r = post(model_env, [(name, PNG)])
    assert_safe(model_env, r)
    if r.status_code == 201:  # names are displayed whole ("/" kept), without control or bidi characters
        shown = r.json()["results"][0]["filename"]
        assert clean(shown) == shown
        if not re.search(r'[\x00-\x1f"]', name):  # the test client percent-encodes these itself
            assert shown == clean(name)


@pytest.mark.parametrize(("label", "headers", "body"), MULTIPART, ids=[m[0] for m in MULTIPART])
def test_bad_multipart(model_env: Env, label: str, headers: dict, body: bytes) -> None:
    r = model_env.client.post("/api/v1/studies", headers={**model_env.auth(), **headers}, content=body)
    assert_safe(model_env, r)
    assert r.status_code >= 400


@pytest.mark.parametrize("fields", BAD_FIELDS, ids=[f"field-{n}" for n in range(len(BAD_FIELDS))])
def test_bad_field(model_env: Env, fields: dict) -> None:
    r = post(model_env, [("a.png", PNG)], **fields)
    assert_safe(model_env, r)
    assert r.status_code >= 400


@pytest.mark.parametrize("url", BAD_URLS, ids=[f"url-{n}" for n in range(len(BAD_URLS))])
def test_bad_number_or_path(model_env: Env, url: str) -> None:
    r = model_env.client.get(url, headers=model_env.auth("admin"))
    assert_safe(model_env, r)


def test_the_corpus_is_large_enough() -> None:
    assert len(FILES) + len(HOSTILE_NAMES) + len(MULTIPART) + len(BAD_FIELDS) + len(BAD_URLS) >= 300
