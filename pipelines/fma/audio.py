"""One FMA track -> one sample: decode the MP3 (PyAV, FFmpeg's decoder; DALI cannot decode MP3), mix to the
configured channels, resample (soxr), check it is real audio, and encode FLAC or WAV (16-bit PCM) that DALI's
audio decoder reads."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np

from pipelines.common.archives import member_bytes
from pipelines.common.errors import BadInput
from pipelines.common.records import Pointer

__all__ = ["FIELDS", "FmaConfig", "decode_audio", "encode_sample", "fields", "resampled_length", "to_pcm16"]


def fields(codec: str, keep_original: bool) -> dict[str, str]:
    out = {
        codec: f"audio/{codec}: 16-bit PCM at the job's --sample-rate and --channels (see `params`), from the MP3",
        "cls": "top-level genre, ASCII decimal: index in `classes` (-1 where the track has several top-level genres)",
        "genres": "int32, little-endian: indexes in `genres` (manifest) of every genre of the track (genres_all)",
        "json": "{track_id, title, artist_id, artist_name, album_id, album_title, genre_top, genres, genres_all, "
        "tags, license, duration, ..., subset, split, audio: {sample_rate, channels, num_samples, source}}",
    }
    if keep_original:
        out["mp3"] = "audio/mpeg: the original file, byte for byte"
    return out


FIELDS = fields("flac", False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FmaConfig:
    subset: str
    sample_rate: int = 22050
    channels: int = 1
    codec: str = "flac"  # or "wav"
    keep_original: bool = False
    min_seconds: float = 20.0  # shorter clips are quarantined ("far shorter than the subset's 30 s")
    silence_dbfs: float = -60.0  # a clip whose peak stays below this is quarantined as silent

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resampled_length(n: int, rate: int, to_rate: int) -> int:
    """Samples after resampling n samples (soxr: n * to/from, rounded half up)."""
    return (2 * n * to_rate + rate) // (2 * rate)


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """(float32 samples x channels, sample rate) of an encoded file; BadInput when it cannot be decoded."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise BadInput("no audio stream in the file", stage="empty")
            stream = container.streams.audio[0]
            chunks = []
            for frame in container.decode(stream):
                a = frame.to_ndarray()
                if not frame.format.is_planar:  # packed: (1, samples * channels)
                    a = a.reshape(-1, len(frame.layout.channels)).T
                if a.dtype.kind in "iu":
                    a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
                chunks.append(a.astype(np.float32, copy=False))
            rate = stream.codec_context.sample_rate or stream.rate
    except av.FFmpegError as e:
        raise BadInput(f"undecodable: {getattr(e, 'strerror', None) or e}", stage="decode") from None
    if not chunks or not rate:
        raise BadInput("no audio: the file decodes to 0 samples", stage="empty")
    return np.concatenate(chunks, axis=1).T, int(rate)


def to_pcm16(x: np.ndarray, sample_rate: int, codec: str) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), sample_rate, format=codec.upper(), subtype="PCM_16")
    return buf.getvalue()


def encode_sample(p: Pointer, data: bytes, *, cfg: FmaConfig) -> dict[str, bytes]:
    """The members of one track's sample; BadInput for audio that is undecodable, empty, short or silent."""
    import soxr

    original = member_bytes(data, p.meta)
    x, rate = decode_audio(original)
    seconds = len(x) / rate
    if seconds < cfg.min_seconds:
        raise BadInput(f"{seconds:.2f} s of audio, shorter than --min-seconds {cfg.min_seconds:g}", stage="short")
    source = {"sample_rate": rate, "channels": int(x.shape[1]), "num_samples": len(x)}
    if cfg.channels == 1:
        x = x.mean(axis=1, dtype=np.float32)
    elif x.shape[1] == 1:
        x = np.repeat(x, cfg.channels, axis=1)
    else:
        x = x[:, : cfg.channels]
    if rate != cfg.sample_rate:
        x = soxr.resample(x, rate, cfg.sample_rate)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    peak_db = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_db < cfg.silence_dbfs:
        raise BadInput(f"silent: peak {peak_db:.1f} dBFS, below {cfg.silence_dbfs:g} dBFS", stage="silent")
    info = {
        **p.meta["json"],
        "audio": {"sample_rate": cfg.sample_rate, "channels": cfg.channels, "num_samples": len(x), "source": source},
    }
    out = {
        cfg.codec: to_pcm16(x, cfg.sample_rate, cfg.codec),
        "cls": b"%d" % p.meta["cls"],
        "genres": np.asarray(p.meta["genres"], "<i4").tobytes(),
        "json": json.dumps(info, sort_keys=True).encode(),
    }
    if cfg.keep_original:
        out["mp3"] = original
    return out
