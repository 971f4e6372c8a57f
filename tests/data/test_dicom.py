"""DICOM pixel semantics at the function level: modality rescale, the linear VOI window of PS3.3 C.11.2.1.2."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cadx.data.dicom import _linear_window, dicom_to_float, is_dicom, read_dicom
from tests.conftest import write_dicom


def test_linear_window_follows_the_standard() -> None:
    x = np.array([-1000.0, 39.5, 40.0, 240.0, 3000.0])
    out = _linear_window(x, center=40.0, width=400.0)
    assert out[0] == 0 and out[-1] == 255 and 120 <= out[2] <= 135 and out[1] <= out[2] <= out[3]


def test_rescale_then_window(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    path = tmp_path / "ct.dcm"
    write_dicom(path, pixels, window=(1000, 2000), modality="CT")
    assert is_dicom(path)
    import pydicom

    ds = pydicom.dcmread(path)
    assert np.array_equal(dicom_to_float(ds), pixels.astype(float))  # no rescale tags: slope 1, intercept 0
    image = read_dicom(path)
    assert image.dtype == np.uint8 and image[0, 0] == 0 and image[-1, -1] == 255
    forced = read_dicom(path, window=(3000, 2000))  # an explicit window beats the file's
    assert forced[0, -1] == 0 and forced[-1, -1] > 0
