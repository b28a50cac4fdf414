"""The WebDataset tar writer, DALI's index, and the reference reader, including hostile tars."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shards.errors import SampleKeyError, ShardFormatError
from shards.idx import format_index, parse_index
from shards.tario import iter_members
from shards.wds import TarShardWriter, iter_sample_members, iter_samples

keys = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-"), min_size=1, max_size=30)
exts = st.sampled_from(["jpg", "cls", "json", "seg.png", "npy", "txt"])
samples_st = st.dictionaries(keys, st.dictionaries(exts, st.binary(max_size=3000), min_size=1, max_size=4), max_size=12)


def _write(samples: dict[str, dict[str, bytes]]) -> tuple[bytes, bytes]:
    buf = io.BytesIO()
    w = TarShardWriter(buf, url="mem://s.tar")
    for k, s in samples.items():
        w.write(k, s)
    w.close()
    return buf.getvalue(), w.idx_bytes()


@settings(max_examples=150, deadline=None)
@given(samples_st)
def test_tar_and_idx_round_trip(samples):
    data, idx = _write(samples)
    # our reference reader returns exactly what was written, in order
    assert list(iter_samples(io.BytesIO(data))) == list(samples.items())
    # the idx matches the tar as the reader sees it, and points at the right bytes
    parsed = parse_index(idx)
    assert parsed == [m for _, m in iter_sample_members(io.BytesIO(data))]
    for (_key, sample), members in zip(samples.items(), parsed, strict=True):
        for m in members:
            assert data[m.offset : m.offset + m.size] == sample[m.name.split(".", 1)[1]]
    # Python's tarfile agrees on every member's bytes
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        got = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o444 for m in tf.getmembers())
    assert got == {f"{k}.{e}": v for k, s in samples.items() for e, v in s.items()}
    assert len(data) % 10240 == 0


@settings(max_examples=50, deadline=None)
@given(samples_st)
def test_writer_is_deterministic(samples):
    reordered = {k: dict(reversed(list(s.items()))) for k, s in samples.items()}
    assert _write(samples) == _write(reordered)


@pytest.mark.skipif(shutil.which("tar") is None, reason="DALI's wds2idx needs GNU tar")
def test_idx_is_byte_identical_to_dalis_wds2idx(tmp_path):
    wds2idx = pytest.importorskip("wds2idx", reason="wds2idx ships with nvidia-dali")
    data, idx = _write({f"k{i}": {"jpg": bytes(range(i % 256)) * 7, "cls": str(i).encode()} for i in range(30)})
    (tmp_path / "s.tar").write_bytes(data)
    subprocess.run(
        [sys.executable, wds2idx.__file__, str(tmp_path / "s.tar"), str(tmp_path / "ref.idx")],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "ref.idx").read_bytes() == idx


@pytest.mark.parametrize(
    "key, message",
    [
        ("a.b", "contains '.'"),
        ("a/b", "contains '/'"),
        ("a b", "contains ' '"),
        ("", "non-empty"),
    ],
)
def test_bad_keys_are_rejected_with_the_key_named(key, message):
    w = TarShardWriter(io.BytesIO(), url="out/shard-000000.tar")
    with pytest.raises(SampleKeyError, match=message) as e:
        w.write(key, {"jpg": b"x"})
    assert "out/shard-000000.tar" in str(e.value)


def test_duplicate_key_and_missing_field_are_rejected():
    w = TarShardWriter(io.BytesIO(), url="u.tar", fields={"jpg", "cls"})
    w.write("a", {"jpg": b"1", "cls": b"0"})
    with pytest.raises(SampleKeyError, match="duplicate sample key 'a'"):
        w.write("a", {"jpg": b"2", "cls": b"0"})
    with pytest.raises(SampleKeyError, match=r"sample 'b' lacks declared field\(s\) \['cls'\]"):
        w.write("b", {"jpg": b"2"})
    with pytest.raises(SampleKeyError, match="exceeds the 100-byte"):
        w.write("k" * 98, {"jpg": b"2", "cls": b"0"})


def _tar_with(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.linkname = size, kind, link
    return ti


HOSTILE = {
    "absolute": (_tar_with((_info("/etc/passwd.txt", 3), b"abc")), "/etc/passwd.txt", "absolute"),
    "dotdot": (_tar_with((_info("../../evil.txt", 3), b"abc")), "../../evil.txt", "climbs out"),
    "symlink": (_tar_with((_info("a.jpg", kind=tarfile.SYMTYPE, link="/etc/shadow"), b"")), "a.jpg", "symbolic link"),
    "hardlink": (_tar_with((_info("a.jpg", kind=tarfile.LNKTYPE, link="b.jpg"), b"")), "a.jpg", "hard link"),
    "device": (_tar_with((_info("a.dev", kind=tarfile.CHRTYPE), b"")), "a.dev", "unsupported tar member type"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tars_fail_naming_shard_and_member(case):
    data, member, message = HOSTILE[case]
    with pytest.raises(ShardFormatError, match=message) as e:
        list(iter_samples(io.BytesIO(data), url="s3://b/evil.tar"))
    assert "s3://b/evil.tar" in str(e.value) and member in str(e.value)


def test_absurd_size_and_truncation_and_bad_checksum():
    good, _ = _write({"a": {"jpg": b"x" * 1000}, "b": {"jpg": b"y" * 1000}})
    # a header that claims 4 GiB of data in a 10 KiB file
    header = bytearray(good[:512])
    header[124:136] = b"%011o\0" % (4 << 30)
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    with pytest.raises(ShardFormatError, match=r"member 'a.jpg'.*claims 4294967296 bytes") as e:
        list(iter_samples(io.BytesIO(bytes(header) + good[512:]), url="u.tar"))
    assert "truncated" in str(e.value)
    # cut inside the second member's data
    with pytest.raises(ShardFormatError, match=r"'b.jpg'.*truncated"):
        list(iter_samples(io.BytesIO(good[:2200]), url="u.tar"))
    # cut exactly after a member: no end-of-archive marker
    with pytest.raises(ShardFormatError, match="without its end-of-archive marker"):
        list(iter_samples(io.BytesIO(good[:1536]), url="u.tar"))
    # a flipped byte in a header
    bad = bytearray(good)
    bad[1536 + 3] ^= 0x20
    with pytest.raises(ShardFormatError, match="checksum mismatch"):
        list(iter_samples(io.BytesIO(bytes(bad)), url="u.tar"))


def test_reader_rejects_non_adjacent_and_duplicate_members():
    split = _tar_with((_info("a.jpg", 1), b"1"), (_info("b.jpg", 1), b"2"), (_info("a.cls", 1), b"0"))
    with pytest.raises(ShardFormatError, match=r"'a' appears twice.*not adjacent"):
        list(iter_samples(io.BytesIO(split), url="u.tar"))
    dup = _tar_with((_info("a.jpg", 1), b"1"), (_info("a.jpg", 1), b"2"))
    with pytest.raises(ShardFormatError, match="field 'jpg' appears twice"):
        list(iter_samples(io.BytesIO(dup), url="u.tar"))
    for name, message in (("a b.jpg", "contains ' '"), ("dir/a.jpg", "contains '/'")):
        with pytest.raises(ShardFormatError, match=message):
            list(iter_samples(io.BytesIO(_tar_with((_info(name, 1), b"1"))), url="u.tar"))


def test_reader_walks_tars_written_by_other_tools():
    # GNU long names, pax headers and directories, as `tar cf` and Python write them
    long = "x" * 120
    data = _tar_with((_info("d", kind=tarfile.DIRTYPE), b""), (_info(f"d/{long}.jpg", 2), b"hi"))
    assert [(m.name, m.size) for m in iter_members(io.BytesIO(data))] == [(f"d/{long}.jpg", 2)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = _info("ünï.jpg", 3)
        tf.addfile(ti, io.BytesIO(b"abc"))
    assert list(iter_samples(io.BytesIO(buf.getvalue()))) == [("ünï", {"jpg": b"abc"})]


def test_idx_parse_errors_name_the_index():
    with pytest.raises(ShardFormatError, match="says 2 samples but lists 1"):
        parse_index(b"v1.2 2\njpg 512 3 a.jpg\n", url="x.idx")
    with pytest.raises(ShardFormatError, match=r"not 'v1\.2"):
        parse_index(b"v9 1\n", url="x.idx")
    with pytest.raises(ShardFormatError, match="4 fields per member"):
        parse_index(b"v1.2 1\njpg 512 a.jpg\n", url="x.idx")
    assert format_index([]) == b"v1.2 0\n"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=100).filter(lambda b: b"\0" not in b), st.integers(0, 8**11 - 1))
def test_header_is_what_tarfile_writes(name, size):
    from shards.tario import ustar_header

    ti = tarfile.TarInfo(name.decode("latin-1"))
    ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = size, 0, 0o444, "", ""
    assert ustar_header(name, size) == ti.tobuf(format=tarfile.USTAR_FORMAT, encoding="latin-1")
