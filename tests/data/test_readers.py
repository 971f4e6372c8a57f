"""Tests for cadx.data.readers: synthetic PNG/JPEG/BMP/TIFF/DICOM files plus (slow) real DICOMs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, CTImageStorage, ExplicitVRLittleEndian

from cadx.data import dicom as dicom_mod
from cadx.data.readers import (
    IMAGE_SUFFIXES,
    UnreadableImageError,
    dicom_to_float,
    is_dicom,
    read_dicom_metadata,
    read_header_if_dicom,
    read_image,
    sniff_image_kind,
)

SHARED_DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "dicom"


def make_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", *,
               preamble: bool = True, **attrs: object) -> Path:
    """Write ``pixels`` ((H,W), (F,H,W) or (H,W,3)) as an Explicit VR Little Endian CT DICOM."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.Modality, ds.PatientID, ds.PatientName, ds.StudyDate = "CT", "P001", "Doe^Jane", "20240102"
    ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    for key, value in attrs.items():
        setattr(ds, key, value)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # bare dataset: no preamble, no file meta
        bare = Dataset()
        bare.update(ds)
        bare.save_as(path, implicit_vr=False, little_endian=True)
    return path


def make_pil(path: Path, arr: np.ndarray, fmt: str | None = None, **kwargs: object) -> Path:
    Image.fromarray(arr).save(path, format=fmt, **kwargs)
    return path


CT = np.array([[512, 312, 712, 462]], dtype=np.uint16)  # HU 0, -400, 400, -100 with slope 2, intercept -1024


def test_dicom_rescale_and_file_window(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "ct.dcm", CT, RescaleSlope=2, RescaleIntercept=-1024,
                      WindowCenter=[0, 40], WindowWidth=[400, 80])  # first pair wins
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (1, 4)
    assert out.tolist() == [[128, 0, 255, 64]]  # PS3.3 LINEAR: HU 0 -> 127.8, HU -100 -> 63.9
    np.testing.assert_allclose(dicom_to_float(pydicom.dcmread(path)), [[0, -400, 400, -100]])


def test_dicom_explicit_window_overrides(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "ct.dcm", CT, RescaleSlope=2, RescaleIntercept=-1024,
                      WindowCenter=0, WindowWidth=400)
    assert read_image(path, window=(400, 800)).tolist() == [[0, 0, 128, 0]]
    with pytest.raises(ValueError, match="width"):
        read_image(path, window=(0, 0))


def test_dicom_without_window_uses_robust_scaling(tmp_path: Path) -> None:
    pixels = np.arange(1000, 1100, dtype=np.uint16).reshape(10, 10)
    out = read_image(make_dicom(tmp_path / "mr.dcm", pixels))
    assert out[0, 0] == 0 and out[-1, -1] == 255 and 120 <= out[5, 0] <= 135


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = np.array([[100, 1000, 3000, 4000]], dtype=np.uint16)
    out = read_image(make_dicom(tmp_path / "cr.dcm", pixels, "MONOCHROME1"))
    assert out[0, 0] == 255 and out[0, -1] == 0  # low stored value = dense = bright
    windowed = read_image(make_dicom(tmp_path / "cr_w.dcm", pixels, "MONOCHROME1",
                                     WindowCenter=2000, WindowWidth=4000))
    assert windowed[0, 0] > windowed[0, 1] > windowed[0, 2] > windowed[0, 3]


def test_voi_lut_sequence_beats_window(tmp_path: Path) -> None:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 8])
    item.add_new("LUTData", "US", [255 - i for i in range(256)])  # an inverting LUT
    path = make_dicom(tmp_path / "lut.dcm", np.array([[0, 10, 255, 300]], dtype=np.uint16),
                      VOILUTSequence=[item], WindowCenter=5000, WindowWidth=10)
    assert read_image(path).tolist() == [[255, 245, 0, 0]]
    item.LUTDescriptor = [4096, 0, 8]  # 12-bit in, 8-bit out: pydicom 3.0's apply_voi wraps here
    item.LUTData = [i // 16 for i in range(4096)]
    path = make_dicom(tmp_path / "lut12.dcm", np.array([[0, 2048, 4095, 5000]], dtype=np.uint16),
                      VOILUTSequence=[item])
    assert read_image(path).tolist() == [[0, 128, 255, 255]]
    item.LUTDescriptor = [4096, 0, 12]
    item.add_new("LUTData", "OW", np.arange(4096, dtype="<u2").tobytes())
    path = make_dicom(tmp_path / "lut_ow.dcm", np.array([[0, 4095]], dtype=np.uint16), VOILUTSequence=[item])
    assert read_image(path).tolist() == [[0, 255]]


def test_functional_group_rescale(tmp_path: Path) -> None:
    pvt, shared = Dataset(), Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, -1000, "HU"
    shared.PixelValueTransformationSequence = [pvt]
    path = make_dicom(tmp_path / "enh.dcm", np.full((2, 3, 3), 1040, np.uint16),
                      SharedFunctionalGroupsSequence=[shared])
    assert np.all(dicom_to_float(pydicom.dcmread(path)) == 40)


def test_multiframe_frames(tmp_path: Path) -> None:
    frames = np.stack([np.full((4, 5), v, np.uint16) for v in (0, 100, 200, 300, 400)])
    path = make_dicom(tmp_path / "mf.dcm", frames, WindowCenter=200, WindowWidth=400)
    assert read_image(path).shape == (4, 5) and np.all(read_image(path) == 128)  # middle frame
    assert np.all(read_image(path, frame=0) == 0) and np.all(read_image(path, frame=4) == 255)
    for bad in (5, -1):
        with pytest.raises(UnreadableImageError, match="5 frame"):
            read_image(path, frame=bad)
    with pytest.raises(UnreadableImageError, match="image has 100 pixels, limit is 99"):
        read_image(path, max_pixels=99)  # Rows * Columns * frames


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    path = tmp_path / "sr.dcm"
    ds = pydicom.dcmread(make_dicom(path, CT))
    del ds.PixelData
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnreadableImageError, match="no pixel data.*Modality=SR.*CT Image Storage") as info:
        read_image(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_rgb_dicom(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    assert np.array_equal(read_image(make_dicom(tmp_path / "rgb.dcm", rgb, "RGB")), rgb)
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    assert np.array_equal(read_image(make_dicom(tmp_path / "g.dcm", grey, "RGB")), rgb[..., 0])


def test_preambleless_dicom_needs_dicom_suffix(tmp_path: Path) -> None:
    make_dicom(tmp_path / "raw.dcm", CT, preamble=False, RescaleSlope=2, RescaleIntercept=-1024,
               WindowCenter=0, WindowWidth=400)
    assert is_dicom(tmp_path / "raw.dcm") and sniff_image_kind(tmp_path / "raw.dcm") == "dicom"
    assert read_image(tmp_path / "raw.dcm").tolist() == [[128, 0, 255, 64]]
    (tmp_path / "raw.bin").write_bytes((tmp_path / "raw.dcm").read_bytes())
    assert not is_dicom(tmp_path / "raw.bin")


def test_unsupported_and_unavailable_transfer_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_dicom(tmp_path / "video.dcm", CT)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" * 4])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnreadableImageError, match="MPEG2"):
        read_image(path)
    assert read_dicom_metadata(path)["Modality"] == "CT"  # header still readable, no pixel decode

    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-rle>=2.0"]

    monkeypatch.setattr(dicom_mod, "get_decoder", lambda uid: Unavailable())
    with pytest.raises(UnreadableImageError, match="Explicit VR Little Endian.*pylibjpeg-rle"):
        read_image(make_dicom(tmp_path / "ok.dcm", CT))


def test_truncated_dicom(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "t.dcm", np.zeros((64, 64), np.uint16))
    path.write_bytes(path.read_bytes()[:-4000])
    with pytest.raises(UnreadableImageError, match=str(path)):
        read_image(path)


def test_metadata(tmp_path: Path) -> None:
    meta = read_dicom_metadata(make_dicom(tmp_path / "m.dcm", CT, BodyPartExamined="CHEST"))
    assert meta["PatientID"] == "P001" and meta["StudyDate"] == "20240102" and meta["Modality"] == "CT"
    assert meta["BodyPartExamined"] == "CHEST" and "StudyDescription" not in meta
    assert "PatientName" not in meta and all(isinstance(v, str) for v in meta.values())


def test_header_if_dicom(tmp_path: Path) -> None:
    dicom = make_dicom(tmp_path / "m.dcm", CT, BodyPartExamined="CHEST")
    assert read_header_if_dicom(dicom)["BodyPartExamined"] == "CHEST"
    png = tmp_path / "x.dcm"  # a PNG named .dcm: content decides, and a PNG has no header
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    assert read_header_if_dicom(png) == {}
    broken = tmp_path / "broken.dcm"  # DICOM magic, then garbage: no evidence, not an error
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    assert sniff_image_kind(broken) == "dicom" and read_header_if_dicom(broken) == {}


def test_pil_formats(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(read_image(make_pil(tmp_path / "g.png", grey)), grey)
    assert np.array_equal(read_image(make_pil(tmp_path / "c.png", rgb)), rgb)
    assert np.array_equal(read_image(make_pil(tmp_path / "gg.png", np.dstack([grey] * 3))), grey)
    rgba = np.dstack([rgb, np.zeros((20, 30), np.uint8)])
    assert np.array_equal(read_image(make_pil(tmp_path / "a.png", rgba)), rgb)  # alpha dropped
    assert np.array_equal(read_image(make_pil(tmp_path / "c.bmp", rgb)), rgb)
    assert np.array_equal(read_image(make_pil(tmp_path / "g.bmp", grey)), grey)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    smooth = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    jpg = read_image(make_pil(tmp_path / "g.jpg", smooth, quality=95))
    assert jpg.shape == (64, 64) and np.abs(jpg.astype(int) - smooth).max() <= 8
    kermany = read_image(make_pil(tmp_path / "k.jpeg", np.dstack([smooth] * 3), quality=90))
    assert kermany.ndim == 2  # RGB-encoded grey JPEG comes back grey


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_robust_scaling(tmp_path: Path, suffix: str) -> None:
    img = np.linspace(1000, 3000, 100 * 100).reshape(100, 100).astype(np.uint16)
    img[0, 0], img[0, 1] = 65535, 0  # hot and dead pixel must not squash the range
    out = read_image(make_pil(tmp_path / f"x{suffix}", img))
    assert out.dtype == np.uint8 and out.shape == (100, 100)
    assert out[0, 0] == 255 and out[0, 1] == 0 and 124 <= out[50, 0] <= 132
    assert out[0, 2] == 0 and out[-1, -2] == 255 and np.ptp(out[1:-1]) >= 245  # min-max would give ~8 levels


def test_float_and_multipage_tiff(tmp_path: Path) -> None:
    img = np.linspace(-1, 1, 400, dtype=np.float32).reshape(20, 20)
    img[0, 0] = np.nan
    out = read_image(make_pil(tmp_path / "f.tif", img))
    assert out[0, 0] == 0 and out[-1, -1] == 255
    pages = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (10, 20)]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    assert read_image(tmp_path / "m.tif")[0, 0] == 10 and read_image(tmp_path / "m.tif", frame=1)[0, 0] == 20
    with pytest.raises(UnreadableImageError, match="2 frame"):
        read_image(tmp_path / "m.tif", frame=2)


def test_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("definitely not an image\n")
    png = make_pil(tmp_path / "full.png", np.random.default_rng(2).integers(0, 256, (64, 64), np.uint8))
    (tmp_path / "trunc.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    cases = {"empty.png": "empty file", "text.png": "not a PNG/JPEG/BMP/TIFF/DICOM image",
             "trunc.png": "cannot decode PNG"}
    for name, reason in cases.items():
        with pytest.raises(UnreadableImageError, match=reason) as info:
            read_image(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: {info.value.reason}"
    with pytest.raises(UnreadableImageError, match="image has 4096 pixels, limit is 4095"):
        read_image(png, max_pixels=4095)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    assert sniff_image_kind(tmp_path / "text.png") is None and not is_dicom(tmp_path / "missing.dcm")


def test_content_beats_extension(tmp_path: Path) -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    lying = make_pil(tmp_path / "really_png.dcm", grey, "PNG")
    assert sniff_image_kind(lying) == "png" and not is_dicom(lying)
    assert np.array_equal(read_image(lying), grey)
    make_pil(tmp_path / "really_jpeg.png", grey, "JPEG")
    assert sniff_image_kind(tmp_path / "really_jpeg.png") == "jpeg"
    dcm = make_dicom(tmp_path / "really_dicom.png", CT, RescaleSlope=2, RescaleIntercept=-1024,
                     WindowCenter=0, WindowWidth=400)
    assert sniff_image_kind(dcm) == "dicom" and read_image(dcm).tolist() == [[128, 0, 255, 64]]
    make_pil(tmp_path / "b.tif", grey, "BMP")
    assert sniff_image_kind(tmp_path / "b.tif") == "bmp"
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"} == IMAGE_SUFFIXES


# --------------------------------------------------------------------------- real files (slow)

needs_shared = pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason=f"{SHARED_DICOM} not present")
REAL_FILES = sorted(SHARED_DICOM.rglob("*.dcm")) if SHARED_DICOM.is_dir() else []


@pytest.mark.slow
@needs_shared
def test_every_shared_dicom_reads() -> None:
    start, read = time.perf_counter(), []
    for path in REAL_FILES:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        try:
            out = read_image(path)
        except UnreadableImageError:
            assert header.Modality in ("RTDOSE", "SEG"), path  # non-images may refuse, nothing else
            continue
        assert out.dtype == np.uint8 and out.ndim in (2, 3), path
        assert out.shape[:2] == (header.Rows, header.Columns), path
        assert out.ndim == 2 or out.shape[2] == 3
        assert out.min() < out.max(), path
        read.append(path.name)
    assert len(read) >= len(REAL_FILES) - 2 and time.perf_counter() - start < 15


@pytest.mark.slow
@needs_shared
def test_real_dicom_semantics() -> None:
    data, tests = SHARED_DICOM / "pydicom_data", SHARED_DICOM / "pydicom_test_files"
    chest = read_image(data / "RG1_J2KI.dcm").astype(float)  # CR chest, MONOCHROME1, J2K lossy
    h, w = chest.shape
    lungs = (chest[int(0.4 * h), int(0.2 * w):int(0.3 * w)].mean()
             + chest[int(0.4 * h), int(0.7 * w):int(0.8 * w)].mean()) / 2
    mediastinum = chest[int(0.4 * h), int(0.47 * w):int(0.53 * w)].mean()
    assert lungs + 20 < mediastinum  # dense = bright after the MONOCHROME1 inversion
    assert (chest == 255).mean() < 0.2 and (chest[:, :20] == 255).mean() < 0.9
    lossy, lossless = read_image(data / "RG3_J2KI.dcm"), read_image(data / "RG3_J2KR.dcm")
    assert np.abs(lossy.astype(int) - lossless).mean() < 3
    mri = data / "emri_small.dcm"
    assert np.array_equal(read_image(mri), read_image(mri, frame=5))  # 10 frames -> middle is 5
    assert not np.array_equal(read_image(mri), read_image(mri, frame=0))
    with pytest.raises(UnreadableImageError, match="10 frame"):
        read_image(mri, frame=10)
    assert read_image(tests / "examples_ybr_color.dcm").shape == (240, 320, 3)
    assert read_image(tests / "examples_palette.dcm").shape == (350, 800, 3)
    soft = read_image(tests / "CT_small.dcm", window=(40, 400))
    bone = read_image(tests / "CT_small.dcm", window=(500, 2000))
    assert not np.array_equal(soft, bone)
    assert read_dicom_metadata(data / "RG1_J2KI.dcm")["BodyPartExamined"] == "CHEST"
