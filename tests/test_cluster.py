"""The cluster path, for real on loopback: Beam's portable runner with a worker pool, s3:// in and out, and
interrupted uploads. Every service is started and stopped here; no process is left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infra.beam_local import local_beam_cluster
from shards import storage
from shards.manifest import read_manifest
from shards.verify import verify_split
from tests.raw import imagenet as imagenet_raw

pytestmark = pytest.mark.integration

JOB = [sys.executable, "-m", "pipelines", "imagenet", "--min-shards", "3", "--max-bad-fraction", "0.2", "--no-progress"]


def run_job(inp: str, out: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([*JOB, "--input", inp, "--output", out, *extra], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def s3_tree(url: str) -> dict[str, bytes]:
    fs, path = storage.get_fs(url)
    fs.invalidate_cache()
    return {f[len(path) + 1 :]: fs.cat_file(f) for f in sorted(fs.find(path))}


def _group_members(pgids: tuple[int, ...]) -> list[tuple[int, str]]:
    """(pid, command line) of every running process in these process groups (zombies, already dead and
    waiting for their new parent to reap them, do not count)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and os.getpgid(int(d)) in pgids:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                out.append((int(d), cmd))
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return out


def _tar_keys(split: Path) -> list[str]:
    from shards.wds import iter_samples

    keys = []
    for e in read_manifest(str(split))["shards"]:
        with open(split / e["path"], "rb") as f:
            keys += [k for k, _ in iter_samples(f, url=e["path"])]
    return keys


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return imagenet_raw.write_archives(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def local_out(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    run_job(str(raw), str(out))
    return out


def test_portable_runner_with_two_workers_gives_the_local_runners_bytes(raw, local_out, tmp_path):
    out = tmp_path / "portable"
    with local_beam_cluster(workers=2) as cluster:
        workers: set[int] = set()
        done = threading.Event()

        def watch() -> None:  # the SDK worker processes the pool starts for this job
            while not done.is_set():
                workers.update(pid for pid, cmd in _group_members(cluster.pids) if "SdkHarness" in cmd)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            r = run_job(str(raw), str(out), "--", *cluster.args)
        finally:
            done.set()
            watcher.join()
        assert "validation: 12 samples" in r.stdout
    assert len(workers) >= 2, f"the job ran on {len(workers)} SDK worker process(es)"
    assert _group_members(cluster.pids) == [], "a service or worker outlived the cluster"
    local, portable = tree(local_out), tree(out)
    assert sorted(portable) == sorted(local)
    for name, data in local.items():
        assert portable[name] == data, name
    assert verify_split(str(out / "train")).ok and verify_split(str(out / "validation")).ok


def test_s3_input_and_output_match_local_bytes_and_credentials_stay_secret(raw, local_out, s3_endpoint, tmp_path):
    """The archives (a tar of tars) are read in place from s3:// and the shards written to s3://. The workers
    run without AWS credentials in their environment: they get them from --storage-options, which must never
    show up in output or logs."""
    secret = "s3cr3t-never-logged-7f3a"
    fs, _ = storage.get_fs("s3://test/")
    fs.put(str(raw) + "/", "test/raw-imagenet/", recursive=True)
    options = {
        "s3": {"key": "testing", "secret": secret, "client_kwargs": {"endpoint_url": s3_endpoint["AWS_ENDPOINT_URL"]}}
    }
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with local_beam_cluster(workers=2, env=bare) as cluster:
        r = run_job(
            "s3://test/raw-imagenet",
            "s3://test/imagenet",
            "--storage-options",
            json.dumps(options),
            "--",
            *cluster.args,
        )
    assert secret not in r.stdout + r.stderr
    remote = s3_tree("s3://test/imagenet")
    local = tree(local_out)
    assert sorted(remote) == sorted(local)
    prefix = (str(raw), "s3://test/raw-imagenet")
    for name, data in local.items():
        if name.endswith((".tar", ".idx")):
            assert remote[name] == data, name
        elif name.endswith("manifest.json"):  # records the input URL; everything else is the same
            m, lm = json.loads(remote[name]), json.loads(data)
            assert (m["source"].pop("url"), lm["source"].pop("url")) == (prefix[1], prefix[0])
            assert m == lm
        elif name.endswith("quarantine.jsonl"):  # names each input by its URL
            assert remote[name] == data.replace(prefix[0].encode(), prefix[1].encode()), name
    assert all(secret.encode() not in data for data in remote.values())
    assert verify_split("s3://test/imagenet/train").ok
    # the loader reads the job's s3:// output through its cache: every sample once, nothing fetched twice
    pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")
    from loaders import imagenet_dali

    loader = imagenet_dali(
        "s3://test/imagenet/train",
        batch_size=4,
        train=False,
        image_size=32,
        device="cpu",
        return_keys=True,
        drop_last=False,
        cache_dir=str(tmp_path / "cache"),
    )
    keys = [k for b in loader for k in b["key"]]
    m = read_manifest("s3://test/imagenet/train")
    assert sorted(keys) == sorted(_tar_keys(local_out / "train")) and len(keys) == m["num_samples"]
    index_bytes = sum(storage.size(f"s3://test/imagenet/train/{e['idx']}") for e in m["shards"])
    assert loader.cache.bytes_fetched == sum(e["num_bytes"] for e in m["shards"]) + index_bytes


def test_local_input_to_s3_output_is_byte_identical(raw, local_out, s3_endpoint):
    run_job(str(raw), "s3://test/same")
    assert s3_tree("s3://test/same") == tree(local_out)


@pytest.mark.slow
def test_killed_upload_leaves_no_partial_shard_and_a_rerun_finishes(s3_endpoint, tmp_path):
    from infra.photos import photo_jpeg

    raw = tmp_path / "raw"
    for i in range(600):
        wnid = imagenet_raw.CLASSES[i % 4]
        (raw / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (raw / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(photo_jpeg(i, size=(320, 240)))
    args = ["--splits", "train", "--min-shards", "12", "--resize-max-side", "64", "--writer-processes", "1"]
    out = "s3://test/killed"
    fs, path = storage.get_fs(out)
    cmd = [*JOB, "--input", str(raw), "--output", out, *args]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # what the killed job cannot clean up stays in the test's dir
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while len(storage.listdir(f"{out}/train/_progress")) < 2:
        assert proc.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no shard was committed in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    names = storage.listdir(f"{out}/train")
    assert "manifest.json" not in names
    # whatever is visible is whole: every shard object matches the checksum its writer recorded, or has no
    # record yet (then it is garbage of an interrupted run that no manifest names, and a re-run replaces it)
    records = {}
    for rec in storage.listdir(f"{out}/train/_progress"):
        entry = json.loads(storage.read_bytes(f"{out}/train/_progress/{rec}"))["entry"]
        records[entry["path"]] = entry
    for name, entry in records.items():
        assert name in names
        assert fs.size(f"{path}/train/{name}") == entry["num_bytes"]
    r = run_job(str(raw), out, *args)
    kept = int(re.search(r"(\d+) kept from an earlier run", r.stdout).group(1))
    assert kept >= len(records) >= 2
    assert verify_split(f"{out}/train").ok
    clean = tmp_path / "clean"
    run_job(str(raw), str(clean), *args)
    assert read_manifest(f"{out}/train") == read_manifest(str(clean / "train"))
