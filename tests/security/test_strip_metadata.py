"""Stored PNG, JPEG and TIFF originals carry no metadata (EXIF, XMP, IPTC, text chunks, comments), and decode to
the same pixels as the upload."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin, TiffImagePlugin

from cadx.server.services.strip_metadata import MetadataError, store_without_metadata, strip_jpeg, strip_png
from tests.conftest import synthetic_image
from tests.security.conftest import Env

CHEST = "chest_xray_tiny"
SECRET = "Doe^John 1961-02-03 MRN-4711"


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def grey(size: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray(synthetic_image(1, np.random.default_rng(seed), size))


def exif_with_secret() -> Image.Exif:
    exif = Image.Exif()
    exif[0x013B] = SECRET  # Artist
    exif[0x010E] = SECRET  # ImageDescription
    return exif


def png_with_metadata() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", SECRET)
    info.add_text("Comment", SECRET, zip=True)  # zTXt
    info.add_itxt("Description", SECRET, lang="en")
    buf = io.BytesIO()
    grey().save(buf, format="PNG", pnginfo=info, exif=exif_with_secret())
    data = buf.getvalue()
    # a private ancillary chunk, before IEND
    chunk = b"prVt" + SECRET.encode()
    private = len(SECRET).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
    return data[:-12] + private + data[-12:]


def jpeg_with_metadata(progressive: bool = False) -> bytes:
    buf = io.BytesIO()
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>{SECRET}</dc:creator></x:xmpmeta>'.encode()
    grey().convert("RGB").save(buf, format="JPEG", exif=exif_with_secret(), comment=SECRET.encode(), xmp=xmp,
                               progressive=progressive, icc_profile=b"")
    return buf.getvalue()


def test_png_text_exif_and_private_chunks_go_and_pixels_stay() -> None:
    data = png_with_metadata()
    assert data.count(b"Doe^John") >= 2  # tEXt, eXIf (zTXt and iTXt may be compressed)
    clean = strip_png(data)
    assert b"Doe^John" not in clean and b"prVt" not in clean
    for kind in (b"tEXt", b"zTXt", b"iTXt", b"eXIf"):
        assert kind in data and kind not in clean
    assert np.array_equal(pixels(clean), pixels(data))
    with Image.open(io.BytesIO(clean)) as im:
        assert not im.text and not im.getexif()


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_exif_xmp_and_comment_go_and_pixels_stay(progressive: bool) -> None:
    data = jpeg_with_metadata(progressive)
    assert data.count(SECRET.encode()) >= 3  # EXIF (twice), XMP, COM
    clean = strip_jpeg(data)
    assert SECRET.encode() not in clean and b"Exif" not in clean and b"adobe:ns:meta" not in clean
    assert np.array_equal(pixels(clean), pixels(data))  # the scan is copied, not re-encoded
    with Image.open(io.BytesIO(clean)) as im:
        assert not im.getexif() and "comment" not in im.info


def test_jpeg_keeps_the_icc_profile_and_adobe_segment() -> None:
    buf = io.BytesIO()
    grey().convert("CMYK").save(buf, format="JPEG", icc_profile=b"\x00" * 128)
    data = buf.getvalue()
    clean = strip_jpeg(data)
    assert b"ICC_PROFILE" in clean and b"Adobe" in clean
    assert np.array_equal(pixels(clean), pixels(data))


def test_tiff_tags_go_and_every_frame_stays(tmp_path: Path) -> None:
    source, dest = tmp_path / "in.tif", tmp_path / "out.tif"
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[315] = SECRET  # Artist
    tags[270] = SECRET  # ImageDescription
    tags[316] = "host-of-doe"  # HostComputer
    frames = [grey(seed=0), grey(seed=1)]
    frames[0].save(source, format="TIFF", tiffinfo=tags, save_all=True, append_images=frames[1:])
    assert SECRET.encode() in source.read_bytes()
    store_without_metadata(source, "tiff", dest)
    assert SECRET.encode() not in dest.read_bytes() and b"host-of-doe" not in dest.read_bytes()
    with Image.open(source) as a, Image.open(dest) as b:
        assert b.n_frames == a.n_frames == 2
        for i in range(2):
            a.seek(i)
            b.seek(i)
            assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(("kind", "data"), [("png", b"\x89PNG\r\n\x1a\n\x00\x00\x01\x00IHDR"),
                                             ("jpeg", b"\xff\xd8\xff\xe1\xff\xff"), ("jpeg", b"\xff\xd8\x00"),
                                             ("png", b"GIF89a")])
def test_a_structure_that_cannot_be_followed_is_refused(tmp_path: Path, kind: str, data: bytes) -> None:
    source, dest = tmp_path / "in", tmp_path / "out"
    source.write_bytes(data)
    with pytest.raises(MetadataError):
        store_without_metadata(source, kind, dest)
    assert not dest.exists()


@pytest.mark.parametrize(("name", "make"), [("photo.jpg", jpeg_with_metadata), ("scan.png", png_with_metadata)])
def test_the_stored_original_has_no_metadata(model_env: Env, name: str, make) -> None:  # noqa: ANN001
    data = make()
    r = model_env.client.post("/api/v1/studies", headers=model_env.auth(), data={"model_id": CHEST},
                              files=[("files", (name, data, "application/octet-stream"))])
    assert r.status_code == 201, r.text
    original = model_env.client.get(f"/api/v1/studies/{r.json()['id']}/images/0/original", headers=model_env.auth())
    assert original.status_code == 200
    assert b"Doe^John" not in original.content and SECRET.encode() not in original.content
    assert np.array_equal(pixels(original.content), pixels(data))
