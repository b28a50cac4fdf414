"""`python -m shards` end to end: pack, verify, ls, inspect, preview, on a local folder and on S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards.quarantine import read_quarantine


def shards_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "shards", *args], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _pack_and_verify(src: Path, url: str) -> dict:
    out = shards_cli("pack", str(src), url, "--shard-size", "100KB", "--seed", "7", "--split", "train").stdout
    assert "packed 60 samples" in out and "quarantined 0" in out
    assert shards_cli("verify", url).stdout.startswith("OK")
    listing = shards_cli("ls", url).stdout
    assert "60 samples" in listing and "shard-000000.tar" in listing
    inspect = shards_cli("inspect", url, "img0007").stdout
    assert "key img0007" in inspect and "JPEG image 160x120 RGB" in inspect and ".cls        2" in inspect
    import shards.storage as storage

    return json.loads(storage.read_bytes(storage.join(url, "manifest.json")))


def test_pack_verify_local(photo_folder, tmp_path):
    m = _pack_and_verify(photo_folder, str(tmp_path / "train"))
    assert len(m["shards"]) >= 5 and m["num_samples"] == 60
    assert set(m["fields"]) == {"jpg", "cls"} and set(m["optional_fields"]) == {"txt"}
    # samples of one shard are a shuffle, not a run of consecutive files
    first = [line.split()[3] for line in (tmp_path / "train" / "shard-000000.idx").read_text().splitlines()[1:]]
    assert first != sorted(first)
    # packing again gives byte-identical shards and manifest
    _pack_and_verify(photo_folder, str(tmp_path / "again"))
    for name in ["manifest.json"] + [s["path"] for s in m["shards"]] + [s["idx"] for s in m["shards"]]:
        assert (tmp_path / "train" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    shards_cli("preview", str(tmp_path / "train"), "--out", str(tmp_path / "grid.png"), "-n", "8")
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (4 * 160, 2 * 190)
        assert (
            len(np.unique(np.asarray(grid.convert("RGB")).reshape(-1, 3), axis=0)) > 1000
        )  # real pictures, not a blank canvas


@pytest.mark.integration
def test_pack_verify_s3_matches_local(photo_folder, tmp_path, s3_endpoint):
    local = _pack_and_verify(photo_folder, str(tmp_path / "train"))
    remote = _pack_and_verify(photo_folder, "s3://test/cli/train")
    assert remote == local  # same shards, same hashes, same manifest, whatever the store


def test_pack_quarantines_what_cannot_be_a_sample(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"s{i}.jpg").write_bytes(b"jpeg%d" % i)
        (src / f"s{i}.cls").write_text("1")
    (src / "s4.jpg").write_bytes(b"no label")  # lacks a required field
    (src / ".DS_Store").write_bytes(b"junk")  # hidden file: no stem
    (src / "with space.jpg").write_bytes(b"x")  # whitespace in the key
    os.mkfifo(src / "pipe.jpg")  # would block a naive open()
    (src / "gone.jpg").symlink_to(src / "nowhere")  # broken link
    r = shards_cli("pack", str(src), str(tmp_path / "out"), "--fields", "jpg,cls")
    assert "packed 4 samples" in r.stdout and "quarantined 5" in r.stdout
    q = {e["key"]: e["reason"] for e in read_quarantine(str(tmp_path / "out" / "quarantine.jsonl"))}
    assert "lacks required field(s) ['cls']" in q["s4"]
    assert "hidden file" in q[""] and "contains ' '" in q["with space"]
    assert "not a regular file" in q["pipe"] and "not a regular file" in q["gone"]
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["source"]["inputs_seen"] == 9 == m["num_samples"] + m["quarantine"]["count"]
    assert shards_cli("verify", str(tmp_path / "out")).returncode == 0


def test_file_vanishing_between_scan_and_read_is_quarantined(tmp_path):
    from shards.pack import _read_samples, _Sample

    (tmp_path / "a.jpg").write_bytes(b"a" * 10)
    batch = [_Sample("a", {"jpg": str(tmp_path / "a.jpg")}, 10), _Sample("b", {"jpg": str(tmp_path / "b.jpg")}, 10)]
    quarantine: list = []
    got = [(k, {e: bytes(v) for e, v in s.items()}) for k, s in _read_samples(batch, quarantine)]
    assert got == [("a", {"jpg": b"a" * 10})]
    assert quarantine[0]["key"] == "b" and "unreadable" in quarantine[0]["reason"]


def test_cli_errors_are_one_clear_line(tmp_path):
    r = shards_cli("ls", str(tmp_path / "nothing"), check=False)
    assert r.returncode == 2 and "no manifest" in r.stderr and "Traceback" not in r.stderr
    r = shards_cli("pack", str(tmp_path), str(tmp_path / "o"), "--shard-size", "lots", check=False)
    assert r.returncode == 2 and "cannot read 'lots' as a size" in r.stderr


def test_every_command_answers_bad_usage_with_one_line_and_exit_2(photo_folder, tmp_path):
    """Bad JSON options, a regular file where a split should be, an output under a file, -n 0: one line each."""
    url = str(tmp_path / "train")
    shards_cli("pack", str(photo_folder), url, "--shard-size", "100KB")
    a_file = tmp_path / "train" / "shard-000000.tar"
    cases = [
        (("--storage-options", "{bad", "ls", url), "--storage-options must be JSON"),
        (("--storage-options", "[1]", "ls", url), "--storage-options must be JSON"),
        (("verify", str(a_file)), "Not a directory"),
        (("ls", str(a_file)), "Not a directory"),
        (("preview", url, "--out", str(a_file / "grid.png")), str(a_file)),
        (("preview", url, "--out", str(tmp_path / "g.png"), "-n", "0"), "must be at least 1"),
        (("inspect", url, "no_such_key"), "no sample with key 'no_such_key'"),
    ]
    for args, says in cases:
        r = shards_cli(*args, check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and says in lines[0], (args, r.returncode, r.stderr)
    assert not (tmp_path / "g.png").exists()


def test_pack_refuses_an_output_that_is_inside_or_is_its_folder(photo_folder, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(photo_folder, src)
    for out in (src, src / "x", tmp_path):
        r = shards_cli("pack", str(src), str(out), check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "choose a URL outside it" in lines[0], r.stderr
    assert not (src / "x").exists() and not (src / "manifest.json").exists()


def test_verify_of_a_split_that_does_not_exist_is_a_usage_error(tmp_path):
    r = shards_cli("verify", str(tmp_path / "nothing"), check=False)
    assert r.returncode == 2 and "no manifest" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_an_unreachable_store_is_one_line_for_every_command(photo_folder):
    """Nothing listens on the port: botocore's own exception type becomes one line naming the URL, exit 2."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and closed again below: connections are refused
    options = json.dumps({"s3": {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
                                 "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}})  # fmt: skip
    for cmd in (["ls", "s3://b/split"], ["verify", "s3://b/split"], ["inspect", "s3://b/split"],
                ["pack", str(photo_folder), "s3://b/split"]):  # fmt: skip
        r = shards_cli("--storage-options", options, *cmd, check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (cmd, r.stderr[-1500:])
        assert "s3://b/split" in lines[0] and "the store failed: EndpointConnectionError" in lines[0], lines


@pytest.mark.integration
def test_a_missing_bucket_says_so(s3_endpoint):
    from loaders import imagenet_dali
    from shards.errors import ManifestMissing

    r = shards_cli("ls", "s3://no-such-bucket/imagenet/train", check=False)
    assert r.returncode == 2 and "the bucket 'no-such-bucket' does not exist" in r.stderr
    with pytest.raises(ManifestMissing, match="the bucket 'no-such-bucket' does not exist"):
        imagenet_dali("s3://no-such-bucket/imagenet/train", batch_size=2, device="cpu")
