"""Readers that go straight to an `.idx` span (`shards inspect`, every loader) refuse what the reference reader
refuses: names that climb out or are absolute, links, a header whose checksum is bad, an index that claims
another size than the tar header. The shard's sha256 in the manifest matches (whoever wrote the hostile shard
wrote its manifest too), so only the index check stands between it and the caller."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import tarfile

import pytest

from infra.photos import photo_jpeg
from shards.errors import ShardFormatError
from shards.idx import format_index
from shards.manifest import build_manifest, write_manifest
from shards.tario import TarMember

pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.mtime = len(data), kind, 0
    if kind == tarfile.SYMTYPE:
        ti.linkname = "/etc/shadow"
    return ti, data


def _hostile_split(root, members, edit=None) -> tuple[str, str]:
    """A split of one shard holding `members` (a good sample first), its index listing every member as a reader
    would see it, `edit(tar bytes, index members)` applied, and an honest manifest of the result."""
    good = [_member("k0.jpg", photo_jpeg(1, size=(48, 40))), _member("k0.cls", b"3")]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for ti, data in good + members:
            tf.addfile(ti, io.BytesIO(data) if data else None)
        infos = tf.getmembers()
    tar = bytearray(buf.getvalue())
    listed, at = [], 0
    for ti in infos:  # one 512-byte header each (names under 100 bytes), data padded to 512
        listed.append(TarMember(ti.name, at + 512, ti.size))
        at += 512 + -(-ti.size // 512) * 512
    if edit:
        edit(tar, listed)
    samples = [listed[i : i + 2] for i in range(0, len(listed), 2)]
    split = root / "train"
    split.mkdir()
    (split / "shard-000000.tar").write_bytes(tar)
    (split / "shard-000000.idx").write_bytes(format_index(samples))
    entry = {"path": "shard-000000.tar", "idx": "shard-000000.idx", "num_samples": len(samples),
             "num_bytes": len(tar), "sha256": hashlib.sha256(tar).hexdigest()}  # fmt: skip
    m = build_manifest(dataset="imagenet", split="train", fields={"jpg": "image/jpeg", "cls": "label"},
                       shards=[entry], source={"url": "test", "inputs_seen": len(samples)}, classes=[f"c{i}" for i in range(10)])  # fmt: skip
    write_manifest(str(split), m)
    return str(split), listed[-2].name if len(listed) > 2 else listed[0].name


def _flip_header_byte(tar, listed):
    tar[listed[2].offset - 512 + 101] ^= 0x01  # the mode field of the second sample's jpg header


def _claim_more(tar, listed):
    listed[2] = listed[2]._replace(size=listed[2].size + 100)


JPG = photo_jpeg(2, size=(48, 40))
CASES = {
    "dotdot": ([_member("../evil.jpg", JPG), _member("../evil.cls", b"1")], None, "invalid key|climbs out"),
    "absolute": ([_member("/tmp/evil.jpg", JPG), _member("/tmp/evil.cls", b"1")], None, "invalid key|absolute"),
    "bad checksum": ([_member("k1.jpg", JPG), _member("k1.cls", b"1")], _flip_header_byte, "checksum mismatch"),
    "oversized": ([_member("k1.jpg", JPG), _member("k1.cls", b"1")], _claim_more, "index says \\d+ bytes"),
    "symlink": ([_member("k1.jpg", kind=tarfile.SYMTYPE), _member("k1.cls", b"1")], None, "symbolic link"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_inspect_and_loaders_refuse_a_hostile_index_naming_shard_and_member(case, tmp_path):
    from loaders import imagenet_dali

    members, edit, message = CASES[case]
    split, _ = _hostile_split(tmp_path, members, edit)
    bad_key = members[0][0].name.rsplit(".", 1)[0]
    r = subprocess.run([sys.executable, "-m", "shards", "inspect", split, bad_key], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "shard-000000.tar" in lines[0] and members[0][0].name.split("/")[-1] in lines[0], lines[0]
    assert re.search(message, lines[0]), lines[0]
    loader = imagenet_dali(split, batch_size=1, train=False, image_size=16, device="cpu", return_keys=True)
    with pytest.raises(ShardFormatError, match=rf"shard-000000\.tar \(member '.*'\): .*({message})"):
        list(loader)


def test_a_member_s_header_is_checked_when_a_batch_reads_it_not_when_its_shard_opens(tmp_path):
    """Opening a shard checks no header (at 3,200 samples a shard, checking them all cost a first batch ~2 s):
    the first batches come out, and the batch that reads the hostile member (the last of the epoch) is refused
    naming it."""
    from loaders import imagenet_dali
    from loaders.plan import plan_epoch

    members = [m for i in (1, 2, 3, 4) for m in (_member(f"k{i}.jpg", JPG), _member(f"k{i}.cls", b"1"))]

    def flip_last_jpg_header(tar, listed):
        tar[listed[-2].offset - 512 + 101] ^= 0x01

    split, _ = _hostile_split(tmp_path, members, flip_last_jpg_header)
    seed = next(s for s in range(100) if plan_epoch([5], seed=s, epoch=0, world_size=1, rank=0).sample[-1] == 4)
    loader = imagenet_dali(split, batch_size=1, train=False, image_size=16, device="cpu", return_keys=True, seed=seed)
    batches = iter(loader)
    assert list(next(batches)["key"]) != ["k4"]
    with pytest.raises(ShardFormatError, match=r"shard-000000\.tar \(member 'k4\.jpg'\): .*checksum mismatch"):
        list(batches)
