"""`shards verify` passes on good splits and names the shard (and key) for every kind of corruption."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shards.verify import verify_split
from tests.splits import make_split, samples


@pytest.fixture
def split(tmp_path) -> Path:
    url = tmp_path / "train"
    make_split(
        str(url),
        [samples("a", 5), samples("b", 4)],
        quarantine=[{"key": "z", "source": "s", "stage": "decode", "reason": "r"}],
    )
    return url


def _problems(url: Path) -> str:
    report = verify_split(str(url))
    assert not report.ok, "verify passed on a corrupt split"
    return "\n".join(report.problems)


def test_good_split_verifies(split):
    report = verify_split(str(split))
    assert report.ok, report.problems
    assert (report.num_shards, report.num_samples) == (2, 9)


def _edit_manifest(split: Path, fn) -> None:
    m = json.loads((split / "manifest.json").read_text())
    fn(m)
    (split / "manifest.json").write_text(json.dumps(m))


def test_truncated_tar(split):
    tar = split / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:1500])
    assert "shard-000001.tar: is 1500 bytes but the manifest says" in _problems(split)


def test_flipped_data_byte(split):
    tar = split / "shard-000000.tar"
    data = bytearray(tar.read_bytes())
    data[512 + 10] ^= 1  # inside the first member's data
    tar.write_bytes(bytes(data))
    assert "shard-000000.tar: sha256 mismatch" in _problems(split)


def test_flipped_header_byte_names_the_member(split):
    tar = split / "shard-000000.tar"
    data = bytearray(tar.read_bytes())
    data[3] ^= 1  # inside the first header's name
    tar.write_bytes(bytes(data))
    text = _problems(split)
    assert "shard-000000.tar" in text and "checksum mismatch" in text and "member" in text


def test_missing_shard(split):
    (split / "shard-000001.tar").unlink()
    assert "shard-000001.tar: shard is missing" in _problems(split)


def test_idx_disagrees_with_tar(split):
    idx = split / "shard-000000.idx"
    lines = idx.read_text().splitlines()
    parts = lines[2].split()
    parts[1] = str(int(parts[1]) + 512)
    lines[2] = " ".join(parts)
    idx.write_text("\n".join(lines) + "\n")
    text = _problems(split)
    assert "shard-000000.idx" in text and "index disagrees with the tar at sample" in text


def test_missing_idx(split):
    (split / "shard-000001.idx").unlink()
    assert "shard-000001.idx: index file is missing" in _problems(split)


def test_counts_do_not_add_up(split):
    _edit_manifest(split, lambda m: m.update(num_samples=10))
    assert "shards hold 9 samples but 'num_samples' says 10" in _problems(split)
    _edit_manifest(split, lambda m: (m.update(num_samples=9), m["source"].update(inputs_seen=12)))
    assert "counts do not add up" in _problems(split)


def test_shard_sample_count_wrong(split):
    def fn(m):
        m["shards"][0]["num_samples"] = 4
        m["shards"][1]["num_samples"] = 5

    _edit_manifest(split, fn)
    assert "shard-000000.tar: holds 5 samples but the manifest says 4" in _problems(split)


def test_quarantine_count_mismatch(split):
    (split / "quarantine.jsonl").write_text("")
    assert "quarantine.jsonl: holds 0 entries but the manifest says 1" in _problems(split)


def test_missing_declared_field_names_the_key(tmp_path):
    bad = samples("a", 3)
    del bad[1][1]["cls"]
    make_split(str(tmp_path / "s"), [bad])
    assert "sample 'a1' lacks declared field(s) ['cls']" in _problems(tmp_path / "s")


def test_undeclared_field_and_duplicate_key_across_shards(tmp_path):
    extra = samples("a", 2)
    extra[0][1]["b.jpg"] = b"x"  # what a dotted key 'a0.b' would look like once written
    make_split(str(tmp_path / "u"), [extra])
    assert "sample 'a0' has undeclared field(s) ['b.jpg']" in _problems(tmp_path / "u")
    make_split(str(tmp_path / "d"), [samples("a", 3), samples("a", 2)])
    assert "shard-000001.tar: sample key 'a0' also appears in another shard" in _problems(tmp_path / "d")


def test_cli_exit_codes(split):
    ok = subprocess.run([sys.executable, "-m", "shards", "verify", str(split)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stderr
    (split / "shard-000000.tar").write_bytes(b"")
    bad = subprocess.run([sys.executable, "-m", "shards", "verify", str(split)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "FAIL" in bad.stderr and "shard-000000.tar" in bad.stderr
    assert "Traceback" not in bad.stderr
