"""The pictures and sounds of `shards view`'s page, each a data: URL: image thumbnails (EXIF orientation applied,
as DALI's decoder applies it), arrays that are pictures, heat maps of feature vectors and frame features, and for
audio a mel spectrogram of the whole clip plus a short WAV excerpt (FLAC does not play in every browser, and a
whole clip per sample would make a page of 48 of them tens of megabytes).

Audio is decoded with soundfile (libsndfile: FLAC, WAV, OGG, and MP3 from libsndfile 1.1) when it is installed
(`pip install 'shardkit[audio]'`), 16-bit WAV with the standard library otherwise; a clip that cannot be decoded
gets its reason instead of a picture.
"""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

import numpy as np

__all__ = ["EXCERPT_SECONDS", "array_picture", "audio_views", "data_url", "heat_map", "thumbnail"]

THUMB = 256  # longest side of a gallery picture
EXCERPT_SECONDS = 3.0
EXCERPT_RATE = 11025  # mono 16-bit: 66 KB of WAV for 3 s
MELS, N_FFT = 64, 1024
# a perceptually ordered dark-to-bright map (anchors of matplotlib's magma), interpolated to 256 colours
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 253, 191],
    ],
    np.float64,
)
PALETTE = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], 1
).astype(np.uint8)


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _png(a: np.ndarray) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(a).save(out, format="PNG", optimize=True)
    return data_url(out.getvalue(), "image/png")


def _jpeg(a: np.ndarray) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(a).save(out, format="JPEG", quality=85)
    return data_url(out.getvalue(), "image/jpeg")


def thumbnail(data: bytes, size: int = THUMB, *, partial: bool = False) -> str:
    """A JPEG of at most `size` px a side (PNG for images with alpha or palettes), upright as the loaders decode it;
    `partial`: a truncated image as far as it decodes (a quarantined input is shown as it is)."""
    from PIL import Image, ImageFile, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        was, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, partial
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = was
        im = ImageOps.exif_transpose(im)
        keep = im.mode in ("RGBA", "LA", "P")
        im = im.convert("RGBA" if keep else "RGB")
        im.thumbnail((size, size))
        out = io.BytesIO()
        im.save(out, format="PNG" if keep else "JPEG", quality=85)
    return data_url(out.getvalue(), "image/png" if keep else "image/jpeg")


def array_picture(value: Any) -> str | None:
    """An array that is a picture (H x W, or H x W x 1|3|4, uint8: MNIST, CIFAR) as a PNG; None otherwise."""
    a = np.asarray(value)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        return None
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return _png(a) if min(a.shape[:2]) >= 2 else None


def heat_map(values: np.ndarray, columns: int | None = None) -> str:
    """A matrix (frames x features) or a vector (wrapped into a near-square block) in the palette, each value
    scaled between the matrix's 1st and 99th percentiles; at most THUMB px wide (columns averaged)."""
    v = np.asarray(values, np.float64)
    if v.ndim == 1:
        columns = columns or int(np.ceil(np.sqrt(v.size)))
        v = np.pad(v, (0, -v.size % columns), constant_values=np.nan).reshape(-1, columns)
    v = v[:THUMB]
    if v.shape[1] > THUMB:
        step = int(np.ceil(v.shape[1] / THUMB))
        v = np.nanmean(
            np.pad(v, ((0, 0), (0, -v.shape[1] % step)), constant_values=np.nan).reshape(len(v), -1, step), 2
        )
    finite = v[np.isfinite(v)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    scaled = np.clip((v - lo) / ((hi - lo) or 1.0), 0, 1)
    return _png(PALETTE[np.nan_to_num(scaled * 255).astype(np.uint8)])


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    """(mono float32 samples in -1..1, sample rate)."""
    try:
        import soundfile
    except ImportError:
        soundfile = None
    if soundfile is not None:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return samples.mean(axis=1), int(rate)
    if data[:4] != b"RIFF":
        raise ValueError("decoding it needs soundfile (pip install 'shardkit[audio]')")
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{8 * w.getsampwidth()}-bit WAV needs soundfile (pip install 'shardkit[audio]')")
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
        return pcm.mean(axis=1).astype(np.float32) / 32768, w.getframerate()


def _mel_filters(rate: int) -> np.ndarray:
    """MELS triangular filters (HTK mel scale) over the N_FFT // 2 + 1 bins of the STFT."""
    mel = np.linspace(0, 2595 * np.log10(1 + (rate / 2) / 700), MELS + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    bins = np.fft.rfftfreq(N_FFT, 1 / rate)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    return np.maximum(0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))


def _spectrogram(x: np.ndarray, rate: int) -> str:
    """A log-mel spectrogram (high frequencies on top), at most THUMB frames wide, as a JPEG (a PNG of it is 4x)."""
    hop = max(N_FFT // 2, int(np.ceil((len(x) - N_FFT) / THUMB)) if len(x) > N_FFT else 1)
    x = np.pad(x, (0, max(0, N_FFT - len(x))))
    starts = np.arange(0, len(x) - N_FFT + 1, hop)
    frames = x[starts[:, None] + np.arange(N_FFT)] * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    db = 10 * np.log10(np.maximum(power @ _mel_filters(rate).T, 1e-10))
    db = np.clip(db, db.max() - 80, None)
    scaled = (db - db.min()) / ((db.max() - db.min()) or 1.0)
    return _jpeg(PALETTE[(scaled.T[::-1] * 255).astype(np.uint8)])


def _excerpt(x: np.ndarray, rate: int) -> bytes:
    """EXCERPT_SECONDS from the middle of the clip, mono, EXCERPT_RATE Hz (box-filtered, then interpolated), as a
    16-bit WAV."""
    n = int(EXCERPT_SECONDS * rate)
    start = max(0, (len(x) - n) // 2)
    part = x[start : start + n]
    step = max(1, rate // EXCERPT_RATE)
    if step > 1:  # a moving average over the decimation step: the aliasing that stays is inaudible in a preview
        part = np.convolve(part, np.full(step, 1 / step), mode="same")
    out_n = int(len(part) * EXCERPT_RATE / rate)
    part = np.interp(np.arange(out_n) * rate / EXCERPT_RATE, np.arange(len(part)), part)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(EXCERPT_RATE)
        w.writeframes((np.clip(part, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def audio_views(data: bytes) -> tuple[str, str, float]:
    """(spectrogram PNG, WAV excerpt, the clip's seconds) of an encoded clip, as data: URLs; ValueError (or the
    decoder's error) when it does not decode."""
    x, rate = _decode(data)
    if not len(x):
        raise ValueError("the clip holds no samples")
    return _spectrogram(x, rate), data_url(_excerpt(x, rate), "audio/wav"), len(x) / rate
