"""Per-image logic as pure functions: a fast structural JPEG check, and the fixes GPU decoding needs.

nvJPEG's hardware decoder takes baseline JPEGs in RGB/YCbCr or grayscale; ImageNet also holds CMYK JPEGs, a PNG
named `.JPEG`, progressive JPEGs, and truncated files. `prepare_image` turns any of those into a baseline RGB JPEG
(recording what it fixed) or raises BadInput with the reason, and copies good JPEGs byte for byte.
"""

from __future__ import annotations

import dataclasses
import io

from pipelines.common.errors import BadInput

__all__ = ["JpegInfo", "inspect_jpeg", "prepare_image", "PreparedImage"]


@dataclasses.dataclass(frozen=True)
class JpegInfo:
    width: int
    height: int
    components: int  # 1 grayscale, 3 YCbCr/RGB, 4 CMYK/YCCK
    progressive: bool
    adobe_transform: int | None  # APP14 transform flag, if an Adobe segment is present


_SOF_BASELINE = {0xC0, 0xC1}
_SOF_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_SOF_OTHER = {0xC3, 0xC5, 0xC7, 0xC9, 0xCB, 0xCD, 0xCF}  # lossless / arithmetic: not decodable by nvJPEG


def inspect_jpeg(data: bytes) -> JpegInfo:
    """Walk the JPEG markers up to the first scan, and check that the file ends with EOI.

    Costs microseconds, not a decode: it catches empty files, non-JPEG bytes, files cut short (no EOI, which is
    how ImageNet's truncated files look) and tells the fixes apart. Damage inside the entropy-coded data is
    only found by a full decode (`verify_decode=True`).
    """
    n = len(data)
    if n == 0:
        raise BadInput("zero-byte file")
    if data[:2] != b"\xff\xd8":
        raise BadInput("not a JPEG (no SOI marker)")
    end = data.rstrip(b"\x00")  # some encoders pad after EOI
    if not end.endswith(b"\xff\xd9"):
        raise BadInput("truncated JPEG (no EOI marker at the end)")
    pos, sof, adobe = 2, None, None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise BadInput(f"corrupt JPEG marker structure at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            raise BadInput(f"truncated JPEG (segment at byte {pos} runs past the end)")
        seg = data[pos + 4 : pos + 2 + length]
        if marker in _SOF_BASELINE | _SOF_PROGRESSIVE | _SOF_OTHER:
            if len(seg) < 6:
                raise BadInput("corrupt JPEG frame header")
            if marker in _SOF_OTHER:
                raise BadInput(f"unsupported JPEG coding (SOF marker 0x{marker:02X}: lossless or arithmetic)")
            h, w, comps = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
            sof = (w, h, comps, marker in _SOF_PROGRESSIVE)
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
        elif marker == 0xDA:  # start of scan: the rest is entropy-coded data
            break
        pos += 2 + length
    if sof is None:
        raise BadInput("JPEG without a frame header (no SOF before the scan)")
    w, h, comps, progressive = sof
    if w == 0 or h == 0:
        raise BadInput(f"JPEG with zero size {w}x{h}")
    return JpegInfo(width=w, height=h, components=comps, progressive=progressive, adobe_transform=adobe)


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    data: bytes  # a baseline RGB (or grayscale-free) JPEG
    width: int  # of `data`
    height: int
    original_width: int
    original_height: int
    fixes: tuple[str, ...]  # what was changed, e.g. ("cmyk->rgb",); empty: copied byte for byte


def _decode(data: bytes):
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # PIL raises many types for bad files
        reason = "not an image format Pillow can read" if isinstance(e, UnidentifiedImageError) else str(e)
        raise BadInput(f"undecodable image: {reason}") from None
    return im


def prepare_image(
    data: bytes, *, resize_max_side: int | None = None, quality: int = 95, verify_decode: bool = False
) -> PreparedImage:
    """Return the bytes to store for one image, fixing what the GPU decoder cannot take; BadInput if hopeless."""
    fixes: list[str] = []
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        fixes.append("png->jpeg")
        info = None
    else:
        info = inspect_jpeg(data)
        if info.components == 4:
            fixes.append("cmyk->rgb")
        elif info.components == 1:
            fixes.append("grayscale->rgb")
        elif info.components != 3:
            raise BadInput(f"JPEG with {info.components} colour components")
        if info.progressive:
            fixes.append("progressive->baseline")
    size = (info.width, info.height) if info else None
    too_big = resize_max_side is not None and size is not None and max(size) > resize_max_side
    if not fixes and not too_big:
        if verify_decode:
            _decode(data)
        return PreparedImage(data, size[0], size[1], size[0], size[1], ())
    im = _decode(data)
    original = im.size
    if im.mode != "RGB":
        im = im.convert("RGB")
    if resize_max_side is not None and max(im.size) > resize_max_side:
        from PIL import Image

        scale = resize_max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
        fixes.append(f"resized->{resize_max_side}")
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality, progressive=False, optimize=False)
    return PreparedImage(out.getvalue(), im.width, im.height, original[0], original[1], tuple(fixes))
