"""Stored PNG, JPEG and TIFF originals lose their metadata (EXIF, XMP, IPTC, text chunks, comments): a phone
photograph of a film or a screenshot can carry a name, a date, a place or a device serial number there.

PNG and JPEG are filtered at the byte level (chunks and segments outside an allow-list are dropped; the pixel data
is copied as it is, so the stored image decodes to exactly the pixels that were analysed, with no re-encoding
loss). TIFF, whose tags are interleaved with the image layout, is rewritten losslessly by Pillow from its decoded
frames. BMP carries no metadata. Text burned into the pixels stays (docs/privacy.md).
"""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image, ImageSequence

# Critical chunks and the ancillary ones that change how the pixels look; tEXt, zTXt, iTXt, eXIf, tIME and any
# private chunk are dropped.
PNG_KEEP = frozenset((b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
                      b"bKGD", b"pHYs"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG: APP0 (JFIF), APP2 only for an ICC profile, APP14 (Adobe: tells the colour transform). APP1 (EXIF, XMP),
# APP13 (IPTC), the other APPn and COM are dropped.
_APP0, _APP2, _APP14, _COM, _SOS = 0xE0, 0xE2, 0xEE, 0xFE, 0xDA
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RSTn: markers without a length


class MetadataError(ValueError):
    """The file's structure could not be followed, so its metadata could not be removed."""


def strip_png(data: bytes) -> bytes:
    if not data.startswith(PNG_SIGNATURE):
        raise MetadataError("not a PNG stream")
    out, pos = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise MetadataError("truncated PNG chunk")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise MetadataError("truncated PNG chunk")
        if kind in PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out)


def strip_jpeg(data: bytes) -> bytes:
    if not data.startswith(b"\xff\xd8"):
        raise MetadataError("not a JPEG stream")
    out, pos = [b"\xff\xd8"], 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise MetadataError("bad JPEG marker")
        marker = data[pos + 1] if pos + 1 < len(data) else None
        if marker is None:
            raise MetadataError("truncated JPEG")
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            out.append(data[pos:pos + 2])
            pos += 2
            continue
        if marker == 0xD9:  # EOI with no scan
            out.append(data[pos:pos + 2])
            break
        if pos + 4 > len(data):
            raise MetadataError("truncated JPEG segment")
        end = pos + 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if end > len(data):
            raise MetadataError("truncated JPEG segment")
        if marker == _SOS:  # the scan and whatever follows (more tables and scans, EOI) are kept as they are
            out.append(data[pos:])
            break
        if _keep_jpeg_segment(marker, data[pos + 4:end]):
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == _COM:
        return False
    if 0xE0 <= marker <= 0xEF:
        return marker in (_APP0, _APP14) or (marker == _APP2 and payload.startswith(b"ICC_PROFILE\x00"))
    return True  # tables, frame headers, DRI


def rewrite_tiff(source: Path, dest: Path) -> None:
    """Every frame, decoded and written again without the source's tags (lossless: no compression)."""
    with Image.open(source) as im:
        frames = [frame.copy() for frame in ImageSequence.Iterator(im)]  # a copy carries no TIFF tags
    frames[0].save(dest, format="TIFF", save_all=len(frames) > 1, append_images=frames[1:])


def store_without_metadata(source: Path, kind: str, dest: Path) -> None:
    """Write ``source`` (of ``kind``: png, jpeg, tiff, bmp) to ``dest`` without its metadata; MetadataError if
    that is not possible (the caller does not store the file then)."""
    try:
        if kind == "tiff":
            try:
                rewrite_tiff(source, dest)
            except (OSError, ValueError) as exc:  # Pillow's decode errors
                raise MetadataError(f"cannot rewrite this TIFF file ({type(exc).__name__})") from None
            return
        data = source.read_bytes()
        dest.write_bytes(strip_png(data) if kind == "png" else strip_jpeg(data) if kind == "jpeg" else data)
    except MetadataError:
        dest.unlink(missing_ok=True)
        raise
