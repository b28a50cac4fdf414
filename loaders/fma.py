"""`fma_dali`: FMA shards -> log-mel spectrograms (or waveforms) with genre labels; audio decoded on the CPU by
DALI, spectrogram -> mel filter bank -> decibels on the GPU (or the CPU).

    from loaders import fma_dali
    loader = fma_dali("s3://bucket/fma/train", batch_size=64, clip_seconds=10, n_mels=128, device="gpu")
    for batch in loader:   # mel N x n_mels x T (dB), label int64 N (top-level genre), genres N x G (multi-hot)
        ...

Training takes a random `clip_seconds` crop of each clip, evaluation the centred one (clips shorter than that are
zero-padded at the end). The spectrogram is a `n_fft`-point STFT with a periodic Hann window every `hop_length`
samples, centred with reflected edges, power 2; the mel filters are Slaney's (area-normalized), and decibels are
relative to each clip's maximum, floored at -`top_db` (librosa's `power_to_db(ref=np.max, top_db=80)`).
`reference_eval` computes the same in NumPy.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from loaders.core import DaliLoader, class_label, multi_hot
from loaders.generic import Graph, generic_dali
from loaders.graphs import label, on_device
from loaders.reading import Ragged
from loaders.registry import register
from loaders.spec import ReadSpec

if TYPE_CHECKING:
    from loaders.mixture import Mixture

__all__ = ["fma_dali", "hann", "mel_filters", "reference_eval"]


def hann(n: int) -> np.ndarray:
    """The periodic Hann window (scipy's `get_window("hann", n)`, torch's and librosa's default)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def _graph(
    *,
    train: bool,
    codec: str,
    rate: int,
    clip: int,
    features: str,
    n_fft: int,
    hop: int,
    n_mels: int,
    top_db: float,
    channels: int,
):
    def graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        from nvidia.dali import fn, types
        from nvidia.dali import math as dmath

        mono = features == "mel" or channels == 1
        audio, _ = fn.decoders.audio(encoded[codec], dtype=types.FLOAT, downmix=mono)
        length = fn.cast(audio.shape(dtype=types.INT32)[0], dtype=types.FLOAT)
        room = dmath.max(length - float(clip), 0.0)
        if train:
            start = dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (room + 1.0))
            start = dmath.min(start, room)
        else:
            start = dmath.floor(room * 0.5)
        audio = fn.slice(
            audio, start=fn.cast(start, dtype=types.INT32), shape=[clip], axes=[0], out_of_bounds_policy="pad"
        )
        audio = on_device(audio, device)
        labels = label(encoded["cls"], device)
        if features == "waveform":
            return {"waveform": audio, "label": labels}
        spec = fn.spectrogram(
            audio, nfft=n_fft, window_length=n_fft, window_step=hop, window_fn=hann(n_fft).tolist(), power=2
        )
        mel = fn.mel_filter_bank(spec, sample_rate=float(rate), nfilter=n_mels, freq_high=rate / 2.0)
        return {"mel": fn.to_decibels(mel, multiplier=10.0, cutoff_db=-top_db), "label": labels}

    return graph


@register
def fma_dali(
    url: str | Mixture,
    batch_size: int = 64,
    *,
    clip_seconds: float = 10.0,
    features: str = "mel",
    n_mels: int = 128,
    n_fft: int = 2048,
    hop_length: int = 512,
    top_db: float = 80.0,
    train: bool = True,
    device: str = "gpu",
    **options: Any,
) -> DaliLoader:
    """A loader over an FMA split written by `python -m pipelines fma` (its folder or manifest URL); `options`:
    seed, rank, world_size, cache_dir, ... (`loaders.spec.LoaderOptions`).

    Outputs: `mel` (float32 N x n_mels x frames, frames = 1 + clip // hop_length) or `waveform` (float32 N x clip,
    or N x clip x 2 for stereo shards), `label` (int64 top-level genre; -1 for tracks with several) and `genres`
    (float32 N x len(manifest["genres"]), multi-hot over every genre of the track)."""
    if features not in ("mel", "waveform"):
        raise ValueError(f"features must be 'mel' or 'waveform', not {features!r}")
    from loaders.mixture import first_url
    from shards.manifest import read_manifest, split_url_of

    manifest = read_manifest(split_url_of(first_url(url)))
    audio = manifest.get("audio")
    if manifest.get("dataset") != "fma" or not audio:
        raise ValueError(f"{url} is not an FMA split written by `python -m pipelines fma`")
    rate, codec = int(audio["sample_rate"]), audio["codec"]
    clip = round(clip_seconds * rate)
    if clip < n_fft and features == "mel":
        raise ValueError(f"clip_seconds={clip_seconds} gives {clip} samples, fewer than n_fft={n_fft}")
    num_genres = len(manifest["genres"])
    graph = _graph(
        train=train,
        codec=codec,
        rate=rate,
        clip=clip,
        features=features,
        n_fft=n_fft,
        hop=hop_length,
        n_mels=n_mels,
        top_db=top_db,
        channels=int(audio["channels"]),
    )
    read = ReadSpec(
        fields=(codec, "cls", "genres"),
        host_fields={"cls": class_label},
        tensor_fields={
            "genres": ("genres", lambda col, dev: multi_hot(Ragged.of_buffers(col, "<i4"), num_genres, dev))
        },
    )
    return generic_dali(url, batch_size, graph=Graph(graph, read), device=device, **options)


def mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-style mel filters (n_mels x n_fft//2+1), area-normalized: librosa's `filters.mel` defaults."""

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))

    fft_hz = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2))
    lower = (fft_hz[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - fft_hz[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]


def log_mel(x: np.ndarray, rate: int, *, n_fft: int, hop: int, n_mels: int, top_db: float) -> np.ndarray:
    """The loader's features for one mono clip, in NumPy (float64)."""
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(padded[idx] * hann(n_fft), axis=1)) ** 2  # frames x bins
    mel = mel_filters(rate, n_fft, n_mels) @ power.T
    return 10.0 * np.log10(np.maximum(mel / mel.max(), 10 ** (-top_db / 10))) if mel.max() > 0 else mel


def reference_eval(
    sample: dict[str, bytes],
    *,
    clip_seconds: float = 10.0,
    n_mels: int = 128,
    n_fft: int = 2048,
    hop_length: int = 512,
    top_db: float = 80.0,
    features: str = "mel",
) -> dict[str, Any]:
    """What the eval loader gives for one sample (its tar members), in NumPy: the conformance suite's reference."""
    import soundfile as sf

    codec = "flac" if "flac" in sample else "wav"
    x, rate = sf.read(io.BytesIO(sample[codec]), dtype="float32", always_2d=True)
    x = x.mean(axis=1) if features == "mel" or x.shape[1] == 1 else x
    clip = round(clip_seconds * rate)
    start = max(0, len(x) - clip) // 2
    x = x[start : start + clip]
    x = np.concatenate([x, np.zeros((clip - len(x), *x.shape[1:]), x.dtype)]) if len(x) < clip else x
    out: dict[str, Any] = {"label": int(sample["cls"])}
    out[features] = (
        x if features == "waveform" else log_mel(x, rate, n_fft=n_fft, hop=hop_length, n_mels=n_mels, top_db=top_db)
    )
    return out
