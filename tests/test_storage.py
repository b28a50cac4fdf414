"""shards.storage on local paths, file://, memory:// and (integration) a real S3 endpoint on loopback."""

from __future__ import annotations

import os
import uuid

import pytest

from shards import storage


def _roots(tmp_path):
    return [str(tmp_path / "plain"), f"file://{tmp_path}/fileurl", f"memory://t-{uuid.uuid4().hex}"]


def _check_store(root: str) -> None:
    url = storage.join(root, "a", "f.bin")
    data = bytes(range(256)) * 1000
    storage.write_bytes(url, data)
    assert storage.exists(url) and storage.size(url) == len(data)
    assert storage.read_bytes(url) == data
    assert storage.read_range(url, 1000, 300) == data[1000:1300]
    with storage.open_read(url) as f:
        f.seek(255)
        assert f.read(2) == bytes([255, 0])
    # a write that fails leaves nothing visible: neither the target nor a temporary file
    target = storage.join(root, "a", "g.bin")
    with pytest.raises(RuntimeError), storage.atomic_write(target) as f:
        f.write(b"partial" * 100000)
        raise RuntimeError("interrupted")
    assert not storage.exists(target)
    assert storage.listdir(storage.join(root, "a")) == ["f.bin"]
    # overwriting publishes the new bytes whole
    storage.write_bytes(url, b"new")
    assert storage.read_bytes(url) == b"new"
    storage.remove(url)
    assert not storage.exists(url)
    assert storage.listdir(storage.join(root, "missing")) == []


def test_local_file_and_memory_stores(tmp_path):
    for root in _roots(tmp_path):
        _check_store(root)


@pytest.mark.integration
def test_s3_store(s3_endpoint):
    _check_store(f"s3://test/storage-{uuid.uuid4().hex}")


@pytest.mark.integration
def test_s3_interrupted_multipart_upload_leaves_nothing(s3_endpoint):
    url = f"s3://test/mpu-{uuid.uuid4().hex}/big.tar"
    chunk = os.urandom(1 << 20)
    with pytest.raises(RuntimeError), storage.atomic_write(url, block_size=5 << 20) as f:
        for _ in range(12):  # > the 5 MiB part size: a multipart upload is under way
            f.write(chunk)
        assert getattr(f, "mpu", None), "expected a multipart upload in progress"
        raise RuntimeError("killed mid-upload")
    assert not storage.exists(url)
    fs, path = storage.get_fs(url)
    bucket = path.split("/", 1)[0]
    uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    assert not [u for u in uploads if u["Key"] == path.split("/", 1)[1]], "the multipart upload was not aborted"


_UPLOADER = """
import os, sys, time
from shards import storage
with storage.atomic_write(sys.argv[1], block_size=5 << 20) as f:
    for _ in range(12):
        f.write(os.urandom(1 << 20))
    print("parts uploaded", flush=True)
    time.sleep(600)  # killed here, mid-upload
"""


@pytest.mark.integration
def test_s3_upload_killed_with_its_process_leaves_nothing_visible(s3_endpoint):
    """SIGKILL gives no chance to abort: the multipart upload stays incomplete on the store, and S3 shows no
    object until an upload is completed, so no reader can see half a shard."""
    import signal
    import subprocess
    import sys

    url = f"s3://test/killed-{uuid.uuid4().hex}/shard-000000.tar"
    proc = subprocess.Popen([sys.executable, "-c", _UPLOADER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "parts uploaded"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    fs, path = storage.get_fs(url)
    bucket, key = path.split("/", 1)
    uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == key], "expected the killed upload to be left incomplete"
    assert not storage.exists(url)
    assert storage.listdir(url.rsplit("/", 1)[0]) == []


def test_storage_options_from_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SHARDS_STORAGE_OPTIONS", '{"s3": {"anon": true}}')
    opts = storage._options("s3")
    assert opts == {"use_listings_cache": False, "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}, "anon": True}
    monkeypatch.setenv("SHARDS_STORAGE_OPTIONS", "[1]")
    with pytest.raises(ValueError, match="JSON object keyed by protocol"):
        storage._options("s3")


def test_gs_urls_take_the_same_path_through_gcsfs(monkeypatch):
    """No GCS endpoint runs on loopback here, so this checks the wiring only (README: gs:// untested against
    GCS): a gs:// URL gets gcsfs with the options from the environment and configure(), no listing cache."""
    gcsfs = pytest.importorskip("gcsfs", reason="the gcs extra is not installed (pip install '.[gcs]')")
    monkeypatch.setenv("SHARDS_STORAGE_OPTIONS", '{"gs": {"token": "anon", "project": "from-env"}}')
    fs, path = storage.get_fs("gs://bucket/imagenet/train/manifest.json")
    assert isinstance(fs, gcsfs.GCSFileSystem) and path == "bucket/imagenet/train/manifest.json"
    assert fs.project == "from-env" and not fs.dircache.use_listings_cache
    storage.configure("gs", token="anon", project="from-configure")
    try:
        assert storage.get_fs("gs://bucket/x")[0].project == "from-configure"
    finally:
        storage._configured.pop("gs", None)
    assert storage.protocol_of("gs://b/x") in storage._OBJECT_STORES  # atomic writes: single upload, aborted on error
