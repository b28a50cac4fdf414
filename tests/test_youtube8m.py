"""YouTube-8M: TFRecords written as TensorFlow writes them, read without TensorFlow, converted to Arrow shards, and
read back through `youtube8m_dali` on the CPU: features, labels and ids survive; damaged records are quarantined."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from pipelines.common.tfrecord import encode_record, iter_records
from shards.manifest import read_manifest
from shards.quarantine import read_quarantine
from shards.verify import verify_split
from tests.raw import youtube8m as raw

pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")

# A TFRecord of b"foo" as TensorFlow writes it: the test vector of Beam's tfrecordio tests
FOO_RECORD = base64.b64decode("AwAAAAAAAACwmUkOZm9vYYq+/g==")


def test_record_writer_matches_tensorflow_and_beam_reads_our_files(tmp_path):
    assert encode_record(b"foo") == FOO_RECORD
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    root = raw.write(tmp_path / "raw", frame=False)
    path = root / "video" / "train0000.tfrecord"  # an undamaged file: Beam's reader stops at the first bad CRC
    with open(path, "rb") as f:
        ours = [r.payload for r in iter_records(f)]
    with beam.Pipeline(runner="FnApiRunner") as p:  # the DirectRunner tries Prism, leaving a beam-temp dir
        assert_that(p | beam.io.ReadFromTFRecord(str(path)), equal_to(ours))


def test_damaged_records_are_named():
    good = encode_record(b"a" * 10)
    flipped = bytearray(good)
    flipped[14] ^= 1
    recs = list(iter_records(io.BytesIO(good + bytes(flipped) + good[:-3])))
    assert [(r.number, r.error) for r in recs] == [
        (0, None),
        (1, "record 1 at byte 26: data CRC mismatch"),
        (2, "record 2 at byte 52: file ends inside the record: 11 bytes left of the 14 it declares (payload and CRC)"),
    ]
    bad_length = bytearray(good)
    bad_length[0] ^= 1
    (rec,) = list(iter_records(io.BytesIO(good[:0] + bytes(bad_length) + good)))
    assert "length CRC mismatch; the 52 bytes from here on cannot be split into records" in rec.error


@pytest.fixture(scope="module", params=["video", "frame"])
def converted(request, tmp_path_factory):
    level = request.param
    root = tmp_path_factory.mktemp(level)
    raw.LAYOUTS[level](root / "raw")
    out = root / "out"
    cmd = [sys.executable, "-m", "pipelines", "youtube8m", "--input", str(root / "raw"), "--output", str(out)]
    r = subprocess.run(
        [*cmd, "--min-shards", "2", "--max-bad-fraction", "0.1", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return level, out


def _expected(split: str, frame: bool) -> dict[str, dict]:
    out = {}
    for file, n in raw.FILES.items():
        if not file.startswith(split):
            continue
        for i in range(n):
            if raw.DAMAGED.get(file, {}).get(i) is None:
                f = raw.features(file, i, frame)
                out[f["id"]] = f
    return out


def test_conversion_accounts_for_every_record_and_shuffles(converted):
    level, out = converted
    m = read_manifest(str(out / "train"))
    assert m["level"] == level and len(m["classes"]) == 3862 and m["classes"][7] == "Class 7"
    assert m["num_samples"] == 77 and m["quarantine"]["count"] == 3 and m["source"]["inputs_seen"] == 80
    reasons = {q["key"]: (q["stage"], q["reason"]) for q in read_quarantine(str(out / "train" / "quarantine.jsonl"))}
    stage, reason = reasons["train0001-record000005"]
    assert stage == "read" and re.fullmatch(r"record 5 at byte \d+: data CRC mismatch", reason)
    assert (
        reasons["train0001-record000009"][0] == "parse" and "undecodable record" in reasons["train0001-record000009"][1]
    )
    # the file and record number of the record with id t113, found by walking the raw files
    where = [(f.name, r.number) for f in sorted((out.parent / "raw").rglob("*.tfrecord")) for r in iter_records(f.open("rb"))
             if r.payload is not None and b"t113" in r.payload]  # fmt: skip
    assert reasons["t113"] == ("labels", f"{where[0][0]} record {where[0][1]}: labels [3867] outside the 3862 classes")
    (q,) = read_quarantine(str(out / "validate" / "quarantine.jsonl"))
    assert re.search(r"file ends inside the record: \d+ bytes left of the \d+ it declares", q["reason"]), q["reason"]
    for split in ("train", "validate", "test"):
        assert verify_split(str(out / split)).ok
    # records of one input file end up in several shards (the seeded shuffle, not the file order)
    shards = [
        set(pa.ipc.open_file(pa.memory_map(str(out / "train" / e["path"]))).read_all().column("id").to_pylist())
        for e in m["shards"]
    ]
    assert len(shards) >= 2 and all(any(k.startswith("t0") for k in s) for s in shards)


def test_loader_round_trip_equals_the_tfrecord_values(converted):
    from loaders import youtube8m_dali
    from loaders.youtube8m import dequantize

    level, out = converted
    frame = level == "frame"
    want = _expected("train", frame)
    loader = youtube8m_dali(
        str(out / "train"), batch_size=8, device="cpu", return_keys=True, drop_last=False, max_frames=300
    )
    seen = set()
    # every batch is held until the epoch ends: the tensors share DALI's output buffers (no copy), and a batch
    # the user keeps must not change while later ones are made
    for batch in list(loader):
        for j, key in enumerate(batch["key"]):
            f = want[key]
            hot = np.zeros(3862, np.float32)
            hot[f["labels"]] = 1
            assert np.array_equal(batch["labels"][j].numpy(), hot)
            if not frame:
                assert np.array_equal(batch["rgb"][j].numpy(), f["mean_rgb"])
                assert np.array_equal(batch["audio"][j].numpy(), f["mean_audio"])
            else:
                n = min(len(f["rgb"]), 300)
                assert int(batch["num_frames"][j]) == n
                got = batch["rgb"][j].numpy()
                assert np.allclose(got[:n], dequantize(f["rgb"][:n]), atol=1e-6) and not got[n:].any()
                assert np.allclose(batch["audio"][j].numpy()[:n], dequantize(f["audio"][:n]), atol=1e-6)
            seen.add(key)
    assert seen == set(want)


@pytest.mark.parametrize("converted", ["frame"], indirect=True)
def test_random_frame_windows_are_contiguous_and_resume_exactly(converted):
    from loaders import youtube8m_dali
    from loaders.youtube8m import dequantize

    _, out = converted
    want = _expected("train", True)
    long_id = next(k for k, f in want.items() if len(f["rgb"]) > 300)
    kwargs = dict(
        batch_size=8, device="cpu", return_keys=True, drop_last=False, max_frames=300, frame_sampling="random"
    )
    loader = youtube8m_dali(str(out / "train"), **kwargs)
    starts = []
    for _ in range(3):
        for batch in loader:
            if long_id in batch["key"]:
                j = batch["key"].index(long_id)
                got = batch["rgb"][j].numpy()
                full = dequantize(want[long_id]["rgb"])
                matches = [s for s in range(len(full) - 299) if np.allclose(full[s : s + 300], got, atol=1e-6)]
                assert matches, "the window is not 300 consecutive frames of the video"
                starts.append(matches[0])
    assert len(starts) == 3 and len(set(starts)) > 1  # a new window each epoch
    # a saved state resumes with exactly the batches (and random windows) that would have come next
    a = youtube8m_dali(str(out / "train"), **kwargs)
    it = iter(a)
    next(it)
    state = a.state_dict()
    rest = [b["rgb"].numpy() for b in it]
    b = youtube8m_dali(str(out / "train"), **kwargs)
    b.load_state_dict(state)
    again = [x["rgb"].numpy() for x in b]
    assert len(again) == len(rest) and all(np.array_equal(x, y) for x, y in zip(rest, again, strict=True))


def test_level_mismatch_is_a_clear_error(converted):
    from loaders import youtube8m_dali

    level, out = converted
    other = "video" if level == "frame" else "frame"
    with pytest.raises(ValueError, match=f"holds {level}-level features, not {other}-level"):
        youtube8m_dali(str(out / "train"), level=other, device="cpu")


def test_missing_split_files_say_what_is_expected(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train0000.tfrecord").write_bytes(encode_record(b"x"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "youtube8m",
            "--input",
            str(tmp_path / "raw"),
            "--output",
            str(tmp_path / "o"),
            "--splits",
            "train,validate,test",  # asked for by name (without --splits: the splits the input has)
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "no <split>NNNN.tfrecord files for ['validate', 'test']" in r.stderr
