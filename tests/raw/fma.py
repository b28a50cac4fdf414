"""Raw FMA: `fma_metadata/` (tracks.csv with pandas' two-level header, i.e. three header lines, list columns as
Python literals and multi-line quoted text; genres.csv) and `fma_small/NNN/NNNNNN.mp3`, as folders or as the
official zips. Audio: the real corpus clip (tests/data/fma/000002.mp3, AWOL "Food") and clips synthesized here
(notes with overtones, noise, silence) encoded to MP3 by a real encoder (LAME through PyAV), plus bad input: a
silent clip, a 3 s clip, a file cut after 15% of its bytes, bytes that are not audio, a track with no file, a file
with no tracks.csv row, a file whose row says another subset.
"""

from __future__ import annotations

import csv
import functools
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data" / "fma"
REAL_TID, REAL_SAMPLES, REAL_RATE = "000002", 1_321_967, 44_100  # decoded length of the real clip (usage.ipynb)

TOP = [  # FMA's 16 top-level genres
    (2, "International"), (3, "Blues"), (4, "Jazz"), (5, "Classical"), (8, "Old-Time / Historic"), (9, "Country"),
    (10, "Pop"), (12, "Rock"), (13, "Easy Listening"), (14, "Soul-RnB"), (15, "Electronic"), (17, "Folk"),
    (20, "Spoken"), (21, "Hip-Hop"), (38, "Experimental"), (1235, "Instrumental"),
]  # fmt: skip
SUB = [(1, "Avant-Garde", 38), (25, "Punk", 12), (76, "Experimental Pop", 10), (236, "Ambient Electronic", 15)]

COLUMNS = (
    [("album", c) for c in str.split("comments date_created date_released engineer favorites id information listens "
     "producer tags title tracks type")]
    + [("artist", c) for c in str.split("active_year_begin active_year_end associated_labels bio comments date_created "
       "favorites id latitude location longitude members name related_projects tags website wikipedia_page")]
    + [("set", "split"), ("set", "subset")]
    + [("track", c) for c in str.split("bit_rate comments composer date_created date_recorded duration favorites genre_top "
       "genres genres_all information interest language_code license listens lyricist number publisher tags "
       "title")]
)  # fmt: skip

# tid -> (split, subset, genre_top, genres, genres_all, audio); audio: what fma_small/ holds for it
TRACKS = {
    "000002": ("training", "small", "Hip-Hop", [21], [21], "real"),
    "000005": ("training", "small", "Hip-Hop", [21], [21], "music"),
    "000010": ("training", "small", "Pop", [10], [10], "stereo"),
    "000140": ("training", "small", "Folk", [17], [17], "music"),
    "000141": ("training", "small", "Folk", [17], [17], "noise"),
    "000148": ("training", "small", "Experimental", [1], [1, 38], "music"),
    "000182": ("training", "small", "Rock", [25], [12, 25], "music"),
    "000211": ("training", "small", "Electronic", [236], [15, 236], "music"),
    "000212": ("training", "small", "Jazz", [4], [4], "music"),
    "000213": ("training", "small", "Classical", [5], [5], "music"),
    "000190": ("validation", "small", "Folk", [17], [17], "music"),
    "000193": ("validation", "small", "Electronic", [15], [15], "music"),
    "000194": ("test", "small", "Instrumental", [1235], [1235], "music"),
    "000197": ("test", "small", "International", [2], [2], "music"),
    "000207": ("test", "small", "", [12, 15], [12, 15], "music"),  # two top-level genres: cls -1
    # bad input, each with the reason the job must give
    "000200": ("training", "small", "Rock", [12], [12], "silence"),
    "000201": ("training", "small", "Rock", [12], [12], "short"),
    "000202": ("training", "small", "Pop", [10], [10], "truncated"),
    "000203": ("training", "small", "Pop", [10], [10], "garbage"),
    "000204": ("training", "small", "Pop", [10], [10], None),  # listed, no file
    "000206": ("training", "medium", "Pop", [10], [10], "music"),  # a medium track's file inside fma_small
    "000300": ("training", "large", "Pop", [10], [10], None),  # large only: not an input of the small subset
}
UNLISTED = ["000205"]  # a file with no tracks.csv row
BAD = {  # tid -> quarantine stage
    "000200": "silent", "000201": "short", "000202": "short", "000203": "decode", "000204": "missing",
    "000205": "metadata", "000206": "metadata",
}  # fmt: skip
GOOD = {tid: t for tid, t in TRACKS.items() if tid not in BAD and t[5] is not None}
SPLIT_OF = {"training": "train", "validation": "validation", "test": "test"}


def _synth(tid: str, kind: str, seconds: float = 30.0) -> tuple[np.ndarray, int]:
    """Music-like audio (notes with overtones and decay, a little noise), noise, or silence: (samples x ch, rate)."""
    rate = 44_100 if kind == "stereo" else 22_050
    n = int(seconds * rate)
    rng = np.random.default_rng(int(tid))
    if kind == "silence":
        return np.zeros((n, 1), np.float32), rate
    if kind == "noise":
        return (0.2 * rng.standard_normal((n, 1))).astype(np.float32), rate
    t = np.arange(n) / rate
    x = np.zeros(n)
    step = rate // 4
    for start in range(0, n, step):
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        seg = t[: min(step * 2, n - start)]
        note = sum(np.sin(2 * np.pi * f0 * k * seg) / k for k in (1, 2, 3)) * np.exp(-3 * seg)
        x[start : start + len(seg)] += 0.2 * note
    x += 0.01 * rng.standard_normal(n)
    x = x.astype(np.float32)
    if kind == "stereo":
        return np.stack([x, np.roll(x, 441)], axis=1), rate
    return x[:, None], rate


def mp3(x: np.ndarray, rate: int, bit_rate: int = 64_000) -> bytes:
    import av

    buf = io.BytesIO()
    layout = "stereo" if x.shape[1] == 2 else "mono"
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout=layout)
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


@functools.cache
def audio_bytes(tid: str) -> bytes:
    kind = TRACKS[tid][5] if tid in TRACKS else "music"
    if kind == "real":
        return (DATA / f"{REAL_TID}.mp3").read_bytes()
    if kind == "garbage":
        return bytes(np.random.default_rng(3).integers(0, 256, 20_000, dtype=np.uint8))
    if kind == "short":
        return mp3(*_synth(tid, "music", seconds=3.0))
    data = mp3(*_synth(tid, kind))
    return data[: len(data) * 15 // 100] if kind == "truncated" else data


def _row(tid: str, track: tuple) -> list[str]:
    split, subset, top, genres, genres_all, _ = track
    n = int(tid)
    values = {
        ("album", "id"): str(n // 3),
        ("album", "title"): f"Album {n // 3}",
        ("album", "type"): "Album",
        ("album", "tags"): "[]",
        ("album", "date_created"): "2008-11-26 01:44:45",
        ("album", "information"): '<p>Recorded live, "mostly"; with, commas\nand a second line</p>',
        ("artist", "id"): str(n // 5),
        ("artist", "name"): f"Artist {n // 5}",
        ("artist", "bio"): "Born somewhere.\nMoved, later, elsewhere.",
        ("artist", "tags"): "['awol']" if tid == REAL_TID else "[]",
        ("artist", "latitude"): "40.0583238" if n % 2 else "",
        ("set", "split"): split,
        ("set", "subset"): subset,
        ("track", "bit_rate"): "256000",
        ("track", "duration"): "168" if tid == REAL_TID else "30",
        ("track", "genre_top"): top,
        ("track", "genres"): repr(genres),
        ("track", "genres_all"): repr(genres_all),
        ("track", "interest"): str(4000 + n),
        ("track", "language_code"): "en",
        ("track", "license"): "Attribution-NonCommercial-ShareAlike 3.0 International",
        ("track", "listens"): str(1000 + n),
        ("track", "favorites"): "2",
        ("track", "tags"): "[]",
        ("track", "title"): "Food" if tid == REAL_TID else f"Track {n}",
        ("track", "date_created"): "2008-11-26 01:48:12",
        ("track", "number"): "3",
    }
    return [str(n), *(values.get(c, "") for c in COLUMNS)]


def write_metadata(root: Path, tracks: dict[str, tuple] = TRACKS) -> None:
    meta = root / "fma_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    with open(meta / "tracks.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["", *(a for a, _ in COLUMNS)])
        w.writerow(["", *(b for _, b in COLUMNS)])
        w.writerow(["track_id", *([""] * len(COLUMNS))])
        for tid in sorted(tracks):
            w.writerow(_row(tid, tracks[tid]))
    with open(meta / "genres.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
        for g, title, parent, top in sorted([(g, t, 0, g) for g, t in TOP] + [(g, t, p, p) for g, t, p in SUB]):
            w.writerow([g, 100 + g, parent, title, top])


def write_folders(root: Path) -> Path:
    write_metadata(root)
    for tid in [*(t for t in TRACKS if TRACKS[t][5] is not None), *UNLISTED]:
        path = root / "fma_small" / tid[:3] / f"{tid}.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(audio_bytes(tid))
    (root / "fma_small" / "README.txt").write_text("not a track\n")
    return root


def write_zips(root: Path) -> Path:
    """The official zips: fma_metadata.zip and fma_small.zip (audio stored, metadata deflated)."""
    tmp = root / "_unzipped"
    write_folders(tmp)
    root.mkdir(parents=True, exist_ok=True)
    for name, method in (("fma_metadata", zipfile.ZIP_DEFLATED), ("fma_small", zipfile.ZIP_STORED)):
        with zipfile.ZipFile(root / f"{name}.zip", "w", compression=method) as z:
            for path in sorted((tmp / name).rglob("*")):
                if path.name != "000213.mp3":
                    z.write(path, path.relative_to(tmp).as_posix())
    with zipfile.ZipFile(root / "fma_small.zip", "a", compression=zipfile.ZIP_DEFLATED) as z:  # one member deflated
        z.writestr("fma_small/000/000213.mp3", audio_bytes("000213"))
    shutil.rmtree(tmp)
    return root


def write_many(root: Path, n: int) -> Path:
    """n synthetic 30 s training tracks (for benchmarks): metadata and MP3s in the folder layout."""
    tracks = {f"{1000 + i:06d}": ("training", "small", "Pop", [10], [10, 76], "music") for i in range(n)}
    write_metadata(root, tracks)
    for tid in tracks:
        path = root / "fma_small" / tid[:3] / f"{tid}.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mp3(*_synth(tid, "music")))
    return root


LAYOUTS = {"folders": write_folders, "zips": write_zips}
EXTRA_ARGS = ["--min-seconds", "20"]
LOADER = {
    "kwargs": {"clip_seconds": 4.0, "n_mels": 64},
    # dB of the log-mel spectrogram, DALI (float32 FFT and filters) vs NumPy (float64): mean and 99th percentile of
    # the absolute difference; measured here: mean < 0.0001, p99 <= 0.0002, max 0.001 dB
    "tolerance": {"mel": (0.005, 0.01)},
}
