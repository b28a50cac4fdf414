"""The loaders' reading path: integrity checks (local and fetched shards), concurrent and ranged fetches through a
throttled S3 endpoint, retries, eviction that spares what is about to be read, clear errors, and a main thread
whose work per batch does not grow with the batch."""

from __future__ import annotations

import os
import shutil
import sys
import threading

import numpy as np
import pytest

from infra.gpu import splits
from shards.errors import ShardFormatError

pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")

N = 48


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    url = tmp_path_factory.mktemp("reading") / "train"
    splits.write_imagenet(str(url), N, shards=8)
    return url


def _loader(url, **kw):
    from loaders import imagenet_dali

    kw = {"batch_size": 4, "train": False, "image_size": 32, "device": "cpu", "return_keys": True, **kw}
    return imagenet_dali(str(url), **kw)


def _epoch(loader):
    return [(b["key"], b["image"].clone()) for b in loader]


def _upload(split, url):
    from shards import storage

    for p in split.iterdir():
        if p.is_file():
            storage.write_bytes(f"{url}/{p.name}", p.read_bytes())


def _flip_inside_a_jpeg(path):
    """Flip one byte in the middle of the first JPEG's entropy-coded data; the tar stays well formed."""
    data = bytearray(path.read_bytes())
    start = data.index(b"\xff\xda")  # start of scan of the first image
    data[start + 4000] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_local_shard_is_refused_naming_the_shard(split, tmp_path):
    bad = tmp_path / "train"
    shutil.copytree(split, bad)
    _flip_inside_a_jpeg(bad / "shard-000005.tar")
    with pytest.raises(ShardFormatError, match=r"shard-000005\.tar: bytes hash to sha256"):
        _epoch(_loader(bad))
    # what the check prevents: unchecked, the damaged image decodes and reaches the caller
    assert len(_epoch(_loader(bad, verify=False))) == N // 4


def test_a_shard_whose_index_points_outside_the_tar_is_refused(split, tmp_path):
    bad = tmp_path / "train"
    shutil.copytree(split, bad)
    idx = bad / "shard-000002.idx"
    lines = idx.read_text().splitlines()
    first = lines[1].split()
    first[2] = str(10**9)  # the first member's size
    idx.write_text("\n".join([lines[0], " ".join(first), *lines[2:]]) + "\n")
    with pytest.raises(ShardFormatError, match=r"shard-000002\.tar \(member .*\): index span \d+\+1000000000"):
        _epoch(_loader(bad, verify=False))


def test_host_fields_of_different_shapes_in_different_shards(tmp_path):
    """Boxes parsed once per shard: one shard whose images all have 1 box, one whose images all have 2, and one
    of mixed counts; batches mixing them carry each image's own boxes."""
    from infra.photos import photo_jpeg
    from loaders import openimages_dali
    from shards.manifest import build_manifest, write_manifest
    from shards.publish import write_tar_shard

    url, entries, want = str(tmp_path / "train"), [], {}
    for s, counts in enumerate([[1] * 4, [2] * 4, [0, 3, 1, 2]]):
        samples = []
        for i, c in enumerate(counts):
            key = f"s{s}i{i}"
            boxes = np.array([[0.1 * j, 0.1, 0.1 * j + 0.2, 0.5] for j in range(c)], "<f4").reshape(-1, 4)
            want[key] = boxes
            fields = {"jpg": photo_jpeg(10 * s + i, size=(64, 48)), "boxes": boxes.tobytes()}
            samples.append((key, fields | {"labels": np.arange(c, dtype="<i4").tobytes()}))
        entries.append(write_tar_shard(url, s, samples))
    m = build_manifest(dataset="openimages", split="train", fields={"jpg": "image/jpeg", "boxes": "<f4", "labels": "<i4"},
                       shards=entries, source={"url": "test", "inputs_seen": 12}, classes=["a", "b", "c"])  # fmt: skip
    write_manifest(url, m)
    loader = openimages_dali(url, batch_size=6, train=False, image_size=32, device="cpu", return_keys=True)
    seen = 0
    for batch in loader:
        for j, key in enumerate(batch["key"]):
            n = int(batch["num_boxes"][j])
            assert np.array_equal(batch["boxes"][j][:n].numpy(), want[key]), key
            seen += 1
    assert seen == 12


def test_a_cache_dir_that_is_a_file_is_a_clear_error(split, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        _loader(split, cache_dir=str(tmp_path / "cache"))


def test_main_thread_work_per_batch_does_not_grow_with_the_batch(split):
    """Counted on the main thread for one batch of a warm epoch (not its last): Python and C calls are the same
    for 4 and 16 samples, and none of them reads a shard or runs the reading code."""
    calls, reading = {}, {}
    for bs in (4, 16):
        loader = _loader(split, batch_size=bs, return_keys=False)
        list(loader)  # shards opened and checked, pipeline warm
        it = iter(loader)
        next(it)
        seen: list[str] = []

        def count(frame, event, arg, seen=seen):
            if event == "call":
                seen.append(frame.f_code.co_filename)
            elif event == "c_call":
                seen.append(getattr(arg, "__name__", ""))

        sys.setprofile(count)
        try:
            next(it)
        finally:
            sys.setprofile(None)
        list(it)
        calls[bs] = len(seen)
        reading[bs] = [
            c
            for c in seen
            if c.endswith(("/loaders/reading.py", "/loaders/cache.py")) or c in ("pread", "read", "mmap")
        ]
    assert calls[16] <= calls[4] + 20, calls  # a call per sample would add 12 or more
    assert reading == {4: [], 16: []}, reading


@pytest.mark.integration
def test_concurrent_ranged_fetches_through_a_throttled_endpoint(split, tmp_path, s3_endpoint, monkeypatch):
    """4 streams against 20 ms first-byte latency and 4 MB/s per connection: several connections open at once,
    the large shards fetched as ranges, every byte once, the same pixels as from local disk."""
    import loaders.cache
    from infra.throttle import Throttle

    url = "s3://test/throttled/train"
    _upload(split, url)
    monkeypatch.setattr(loaders.cache, "RANGE_BYTES", 160 << 10)  # shards of ~700 KB come in ranges
    port = int(s3_endpoint["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with Throttle(port, latency=0.02, bandwidth=4e6) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        remote = _loader(url, cache_dir=str(tmp_path / "cache"), fetch_streams=4)
        got = _epoch(remote)
    total = sum(e["num_bytes"] + (split / e["idx"]).stat().st_size for e in remote.manifest["shards"])
    assert remote.cache.bytes_fetched == total
    assert proxy.max_open >= 3, proxy.max_open
    local = _epoch(_loader(split))
    assert [k for k, _ in got] == [k for k, _ in local]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, local, strict=True))


@pytest.mark.integration
def test_dropped_connections_are_retried_and_a_dead_endpoint_is_a_clear_error(split, tmp_path, s3_endpoint, monkeypatch):  # fmt: skip
    from infra.throttle import Throttle

    url = "s3://test/dropping/train"
    _upload(split, url)
    port = int(s3_endpoint["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with Throttle(port, latency=0, bandwidth=1e9, drop=2, drop_after=100_000) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        got = _epoch(_loader(url, cache_dir=str(tmp_path / "c1")))
    assert proxy.dropped == 2 and [k for k, _ in got] == [k for k, _ in _epoch(_loader(split))]
    with Throttle(port, latency=0, bandwidth=1e9, drop=10**6, drop_after=100_000) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result: list = []
        t = threading.Thread(target=lambda: result.append(_raises(lambda: _epoch(_loader(url, cache_dir=str(tmp_path / "c2"))))))  # fmt: skip
        t.start()
        t.join(180)
    assert not t.is_alive(), "a dead endpoint made the loader hang"
    assert isinstance(result[0], ShardFormatError) and "fetch failed" in str(result[0]), result
    assert "s3://test/dropping/train/shard-" in str(result[0])


def _raises(fn):
    try:
        fn()
    except Exception as e:
        return e
    return None


@pytest.mark.integration
def test_a_corrupt_download_is_fetched_again_then_refused_naming_the_shard(split, tmp_path, s3_endpoint):
    from shards import storage

    url = "s3://test/corrupt/train"
    _upload(split, url)
    data = bytearray(storage.read_bytes(f"{url}/shard-000001.tar"))
    data[len(data) // 2] ^= 0x01
    storage.write_bytes(f"{url}/shard-000001.tar", bytes(data))  # the manifest's sha256 is the old one
    loader = _loader(url, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ShardFormatError, match=r"corrupt/train/shard-000001\.tar: downloaded bytes .*fetched twice"):
        _epoch(loader)
    assert not [n for n in os.listdir(tmp_path / "cache") if n.endswith("-shard-000001.tar")], "a bad copy was kept"


@pytest.mark.integration
def test_a_small_cache_never_evicts_a_shard_the_epoch_is_about_to_read(split, tmp_path, s3_endpoint):
    url = "s3://test/small-cache/train"
    _upload(split, url)
    entries = _loader(split).manifest["shards"]
    sizes = [e["num_bytes"] for e in entries]
    index_bytes = sum((split / e["idx"]).stat().st_size for e in entries)
    # 2 shards read at once (4 where the read-ahead, ~6 batches of 2, crosses into the next pair), room for 4
    # of the 8: the prefetch must wait for the epoch to finish with shards before it fetches more
    kw = dict(cache_dir=str(tmp_path / "cache"), cache_bytes=4 * max(sizes), fetch_streams=4, open_shards=2)
    kw["batch_size"] = 2
    loader = _loader(url, **kw)
    got = _epoch(loader)
    assert loader.cache.bytes_fetched == sum(sizes) + index_bytes, (
        "a shard was evicted before it was read and fetched again"
    )
    assert [k for k, _ in got] == [k for k, _ in _epoch(_loader(split, open_shards=2, batch_size=2))]
    on_disk = sum(os.path.getsize(tmp_path / "cache" / n) for n in os.listdir(tmp_path / "cache") if n.endswith(".tar"))
    # the limit, give or take what the reader's read-ahead (~6 batches) had open; far from all 8 shards
    assert on_disk <= 6 * max(sizes) < sum(sizes), (on_disk, sizes)


@pytest.mark.integration
def test_a_full_cache_disk_is_a_clear_error_naming_the_cache_and_the_shard(split, tmp_path, s3_endpoint, monkeypatch):
    import errno

    import loaders.cache

    url = "s3://test/full/train"
    _upload(split, url)

    def full(self, job, tmp):
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    monkeypatch.setattr(loaders.cache.ShardCache, "_download_into", full)
    with pytest.raises(OSError, match=r"cache .*/cache is full while fetching s3://test/full/train/shard-00000\d\.tar"):
        _epoch(_loader(url, cache_dir=str(tmp_path / "cache")))


@pytest.mark.integration
def test_a_warm_epoch_makes_no_request_and_survives_the_store_going_away(split, tmp_path, s3_endpoint, monkeypatch):
    """Epoch 1 fetches every shard and its .idx once (bytes_fetched counts both); then the endpoint goes away
    and epoch 2 reads everything from the cache. The .idx files were read past the cache, every epoch."""
    from infra.throttle import Throttle

    url = "s3://test/warm/train"
    _upload(split, url)
    port = int(s3_endpoint["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with Throttle(port, latency=0, bandwidth=1e9) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        loader = _loader(url, cache_dir=str(tmp_path / "cache"), train=True)
        first = _epoch(loader)
        fetched = loader.cache.bytes_fetched
    expected = sum(e["num_bytes"] for e in loader.manifest["shards"])
    expected += sum((split / e["idx"]).stat().st_size for e in loader.manifest["shards"])
    assert fetched == expected
    second = _epoch(loader)  # the proxy is closed: any request would fail after retries
    assert loader.cache.bytes_fetched == fetched
    assert sorted(k for b, _ in second for k in b) == sorted(k for b, _ in first for k in b)
