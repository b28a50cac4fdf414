"""FMA: tracks.csv as published, the conversion (real clip, labels, every bad input quarantined with its reason,
folders and zips giving the same bytes, WAV/stereo/--keep-original) and `fma_dali` (crops, labels, resume)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from pipelines.fma import parse_tracks, resampled_length
from shards.manifest import read_manifest
from shards.verify import verify_split
from shards.wds import iter_samples
from tests.raw import fma as raw

pytest.importorskip("av", reason="PyAV is not installed (pip install '.[audio]')")


def _convert(inp, out, *extra):
    cmd = [sys.executable, "-m", "pipelines", "fma", "--input", str(inp), "--output", str(out), "--no-progress"]
    r = subprocess.run([*cmd, "--min-shards", "2", "--max-bad-fraction", "0.5", *extra], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _samples(split_dir) -> dict[str, dict[str, bytes]]:
    out = {}
    for entry in read_manifest(str(split_dir))["shards"]:
        with open(split_dir / entry["path"], "rb") as f:
            out.update(iter_samples(io.BytesIO(f.read())))
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fma")
    return _convert(raw.write_folders(root / "raw"), root / "out")


def test_tracks_csv_reads_as_pandas_reads_it(tmp_path):
    """Our reader and FMA's own (`pd.read_csv(index_col=0, header=[0, 1])` + literal_eval of list columns) agree on
    the fixture, which is written in the published three-header-line layout."""
    import ast

    pd = pytest.importorskip("pandas")
    raw.write_metadata(tmp_path)
    frame = pd.read_csv(tmp_path / "fma_metadata" / "tracks.csv", index_col=0, header=[0, 1], keep_default_na=False)
    assert frame.shape == (len(raw.TRACKS), 52)
    with open(tmp_path / "fma_metadata" / "tracks.csv", newline="") as f:
        ours = dict(parse_tracks(f))
    assert sorted(ours) == [f"{i:06d}" for i in frame.index]
    for tid, track in ours.items():
        row = frame.loc[int(tid)]
        assert track[("track", "genres_all")] == ast.literal_eval(row[("track", "genres_all")])
        assert track[("album", "information")] == str(row[("album", "information")])  # multi-line, quoted
        assert track[("set", "split")] == row[("set", "split")]


def test_conversion_accounts_for_every_input_and_labels_come_from_tracks_csv(folders):
    train = folders / "train"
    m = read_manifest(str(train))
    assert verify_split(str(train)).ok
    assert m["classes"] == [t for _, t in raw.TOP]
    genres = [g["id"] for g in m["genres"]]
    quarantine = [json.loads(line) for line in (train / "quarantine.jsonl").read_text().splitlines()]
    assert {q["key"]: q["stage"] for q in quarantine} == raw.BAD  # each bad input, with its reason, nothing else
    assert m["source"]["inputs_seen"] == m["num_samples"] + m["quarantine"]["count"]
    samples = {}
    for split in ("train", "validation", "test"):
        samples.update(_samples(folders / split))
    assert set(samples) == set(raw.GOOD)  # 000300 (large only) is no input of the small subset
    for tid, (split, _, top, _, genres_all, _) in raw.GOOD.items():
        s = samples[tid]
        info = json.loads(s["json"])
        assert int(s["cls"]) == (m["classes"].index(top) if top else -1)
        assert [genres[i] for i in np.frombuffer(s["genres"], "<i4")] == sorted(genres_all)
        assert info["split"] == split and info["track_id"] == int(tid) and info["license"].startswith("Attribution")
    # the real clip: 1,321,967 samples at 44.1 kHz stereo, mixed to mono and resampled to 22,050 Hz
    import soundfile as sf

    x, rate = sf.read(io.BytesIO(samples[raw.REAL_TID]["flac"]))
    assert rate == 22_050 and x.ndim == 1
    assert len(x) == resampled_length(raw.REAL_SAMPLES, raw.REAL_RATE, 22_050) == 660_984
    assert json.loads(samples[raw.REAL_TID]["json"])["audio"]["source"]["num_samples"] == raw.REAL_SAMPLES
    assert json.loads(samples[raw.REAL_TID]["json"])["title"] == "Food"


def test_the_official_zips_give_the_same_shards(folders, tmp_path):
    out = _convert(raw.write_zips(tmp_path / "raw"), tmp_path / "out")
    for split in ("train", "validation", "test"):
        a, b = read_manifest(str(folders / split)), read_manifest(str(out / split))
        assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
        assert a["quarantine"]["count"] == b["quarantine"]["count"]


def test_wav_stereo_other_rate_and_original_bytes(tmp_path):
    import soundfile as sf

    out = _convert(
        raw.write_folders(tmp_path / "raw"),
        tmp_path / "out",
        *("--codec", "wav", "--channels", "2", "--sample-rate", "16000", "--keep-original", "--splits", "test"),
    )
    samples = _samples(out / "test")
    assert set(samples) == {t for t, v in raw.GOOD.items() if v[0] == "test"}
    for tid, s in samples.items():
        x, rate = sf.read(io.BytesIO(s["wav"]))
        assert rate == 16_000 and x.shape[1] == 2 and s["mp3"] == raw.audio_bytes(tid)
        assert abs(len(x) - 30 * 16_000) <= 1
    from loaders import fma_dali

    loader = fma_dali(str(out / "test"), batch_size=3, features="waveform", clip_seconds=2.0, device="cpu")
    batch = next(iter(loader))
    assert tuple(batch["waveform"].shape) == (3, 32_000, 2) and batch["waveform"].abs().max() > 0.01


def test_train_crops_are_windows_of_the_clip_and_resume_exactly(folders):
    import soundfile as sf

    from loaders import fma_dali

    full = {k: sf.read(io.BytesIO(s["flac"]), dtype="float32")[0] for k, s in _samples(folders / "train").items()}
    kw = dict(batch_size=2, features="waveform", clip_seconds=3.0, device="cpu", return_keys=True, seed=5)
    loader = fma_dali(str(folders / "train"), **kw)
    starts = set()
    for batch in loader:
        for j, key in enumerate(batch["key"]):
            w, x = batch["waveform"][j].numpy(), full[key]
            hits = [s for s in range(0, len(x) - len(w) + 1) if np.array_equal(x[s : s + 64], w[:64])]
            assert any(np.array_equal(x[s : s + len(w)], w) for s in hits), key
            starts.add(hits[0])
    assert len(starts) > 3  # random windows, not one fixed offset
    it = iter(loader)  # next epoch: stop after 2 batches, resume in a fresh loader
    for _ in range(2):
        next(it)
    state = loader.state_dict()
    rest = [b["waveform"].clone() for b in it]
    again = fma_dali(str(folders / "train"), **kw)
    again.load_state_dict(state)
    assert all(np.array_equal(a, b["waveform"]) for a, b in zip(rest, again, strict=True))


def test_missing_metadata_and_a_bad_header_are_clear_errors(tmp_path):
    raw.write_folders(tmp_path / "raw")
    cmd = [sys.executable, "-m", "pipelines", "fma", "--output", str(tmp_path / "out"), "--no-progress"]
    r = subprocess.run([*cmd, "--input", str(tmp_path / "raw" / "fma_small")], capture_output=True, text=True)
    assert r.returncode == 2 and "fma_metadata" in r.stderr
    tracks = tmp_path / "raw" / "fma_metadata" / "tracks.csv"
    tracks.write_text("\n".join(tracks.read_text().splitlines()[2:]))  # a CSV saved without the two-level header
    r = subprocess.run([*cmd, "--input", str(tmp_path / "raw")], capture_output=True, text=True)
    assert r.returncode != 0 and "three header lines" in r.stderr


@pytest.mark.parametrize("which", ["fma_metadata.zip", "fma_small.zip"])
def test_an_empty_zip_is_one_line_naming_it(tmp_path, which):
    root = raw.write_zips(tmp_path / "raw")
    (root / which).write_bytes(b"")
    cmd = [sys.executable, "-m", "pipelines", "fma", "--input", str(root), "--output", str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert (
        r.returncode == 2 and len(lines) == 1 and f"{root / which}: not a readable zip archive (0 bytes" in lines[0]
    ), r.stderr
