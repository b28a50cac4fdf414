"""The streaming job itself (`--watch`): killed with SIGKILL and restarted, stopped by SIGINT/SIGTERM, one per
output, on the portable runner, bad usage."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.beam_local import local_beam_cluster
from infra.photos import photo_jpeg
from shards.manifest import read_manifest
from shards.verify import verify_split
from tests.raw import imagenet as imagenet_raw
from tests.raw import youtube8m as yt8m_raw

WATCH = ["--interval", "1s", "--settle", "0.3s", "--no-progress", "--max-bad-fraction", "0.2"]


def watch_cmd(dataset: str, raw: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines", dataset, "--input", str(raw), "--output", str(out), "--watch",
            *WATCH, *extra]  # fmt: skip


def wave(raw: Path, n: int, start: int) -> set[str]:
    keys = set()
    for i in range(start, start + n):
        wnid = imagenet_raw.CLASSES[i % 3]
        (raw / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (raw / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(photo_jpeg(i, size=(320, 240)))
        keys.add(f"{wnid}_{i}")
    return keys


def wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the watcher ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s"
        time.sleep(0.01)


def test_sigkill_at_any_moment_then_restart_converts_each_input_exactly_once(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "train").mkdir(parents=True)
    split = out / "train"
    # resizing with one writer process makes an increment last long enough to be interrupted inside it
    cmd = watch_cmd("imagenet", raw, out, "--splits", "train", "--resize-max-side", "64", "--writer-processes", "1")
    expected: set[str] = set()
    rng = random.Random(16)
    moments = [  # while the intent is written and no shard yet; while shards are being committed; at random
        lambda: any(split.glob("_watch/intent-*")),
        lambda: any(split.glob("inc-*/_progress/*.json")),
        None,
    ]
    for n, moment in enumerate(moments):
        expected |= wave(raw, 120, 1000 * n)
        # a killed job cannot remove its writer pool's sockets: they go to this test's own temp dir
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "TMPDIR": str(tmp_path)})  # fmt: skip
        if moment is None:
            time.sleep(rng.uniform(2.0, 6.0))
        else:
            wait_for(moment, proc, "increment")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    expected |= wave(raw, 30, 5000)
    started = time.time()
    r = subprocess.run([*cmd, "--stop-after", "8s"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = read_manifest(str(split))
    keys: list[str] = []
    for entry in m["shards"]:
        idx = (split / entry["idx"]).read_text().splitlines()[1:]
        keys += [line.split()[3].rsplit(".", 1)[0] for line in idx]
    assert len(keys) == len(set(keys)), "a sample was published twice"
    assert set(keys) == expected
    ledger = [json.loads(x) for g in m["generations"] for x in (split / g["inputs"]).read_text().splitlines()]
    assert sorted(row["url"] for row in ledger) == sorted(str(p) for p in (raw / "train").rglob("*.JPEG"))
    assert m["source"]["inputs_seen"] == len(expected) and m["quarantine"]["count"] == 0
    assert verify_split(str(split)).ok, verify_split(str(split)).problems
    # the last run's increments: a line each, and what the run published summed up at the end
    mine = [g for g in m["generations"] if g["published_at"] >= started]
    assert mine and all(f"[imagenet train] generation {g['generation']}: " in r.stdout for g in mine)
    from shards.units import counted

    assert (f"[imagenet train] this run: {counted(len(mine), 'generation')} published, "
            f"{counted(sum(g['inputs_seen'] for g in mine), 'input')}, "
            f"{counted(sum(g['num_samples'] for g in mine), 'sample')} written") in r.stdout  # fmt: skip


def test_youtube8m_watcher_on_the_portable_runner_picks_up_a_new_file(tmp_path):
    raw = yt8m_raw.write(tmp_path / "raw", frame=False, files={"train0000": 30})
    out = tmp_path / "out"
    cmd = watch_cmd("youtube8m", raw, out, "--splits", "train", "--level", "video", "--stop-after", "14s")
    with local_beam_cluster(workers=1) as cluster:
        proc = subprocess.Popen([*cmd, "--", *cluster.args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: (out / "train" / "manifest.json").exists(), proc, "first generation", timeout=60)
        extra = tmp_path / "extra"
        yt8m_raw.write(extra, frame=False, files={"train0001": 20})
        os.replace(extra / "video" / "train0001.tfrecord", raw / "video" / "train0001.tfrecord")
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    m = read_manifest(str(out / "train"))
    assert [g["num_samples"] for g in m["generations"]] == [30, 20]
    assert m["dataset"] == "youtube8m" and m["shards"][0]["path"].endswith(".arrow")
    assert verify_split(str(out / "train")).ok


def test_watch_usage_errors_are_one_line(tmp_path):
    raw = imagenet_raw.write_archives(tmp_path / "raw")
    r = subprocess.run(watch_cmd("imagenet", raw, tmp_path / "out", "--splits", "train"), capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 2 and "archives layout cannot be watched" in r.stderr and len(r.stderr.splitlines()) == 1
    r = subprocess.run(watch_cmd("imagenet", raw, tmp_path / "out", "--interval", "soon"), capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 2 and "'soon' is not a duration" in r.stderr
    folders = imagenet_raw.write_folders(tmp_path / "folders")
    batch = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(folders), "--output", str(tmp_path / "b"),
             "--splits", "train", "--min-shards", "2", "--max-bad-fraction", "0.2", "--no-progress"]  # fmt: skip
    subprocess.run(batch, check=True, capture_output=True, timeout=300)
    r = subprocess.run(watch_cmd("imagenet", folders, tmp_path / "b", "--splits", "train"), capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "was written once by a batch job; a watcher needs an output of its own" in r.stderr


def test_a_second_watcher_on_the_same_output_refuses_in_one_line_naming_the_first(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    wave(raw, 6, 0)
    first = subprocess.Popen(watch_cmd("imagenet", raw, out, "--splits", "train"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: (out / "train" / "manifest.json").exists(), first, "first generation", timeout=60)
        r = subprocess.run(watch_cmd("imagenet", raw, out, "--splits", "train"), capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert f"pid {first.pid} on " in r.stderr and "stop it first, or watch into another --output" in r.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert not (out / "train" / "_watch_lock").exists()  # released: the next watcher may start


def test_a_stop_request_ends_the_watcher_within_10s_with_its_summary_every_time(tmp_path):
    """20 stop requests, SIGINT and SIGTERM in turn, at random moments: while idle and inside a conversion."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    wave(raw, 4, 0)
    cmd = watch_cmd("imagenet", raw, out, "--splits", "train", "--resize-max-side", "64", "--writer-processes", "1")
    rng = random.Random(7)
    for i in range(20):
        if i % 2:
            wave(raw, 3, 100 + 3 * i)  # new files: the next run is converting when the request comes
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(1.5, 4.0))
        sig = signal.SIGINT if i % 2 == 0 else signal.SIGTERM
        proc.send_signal(sig)
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
        assert took < 10, f"run {i}: {sig.name} took {took:.1f}s"
        assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
        assert "this run:" in stdout and f"stopped by {sig.name}" in stdout, stdout[-1000:]
    assert verify_split(str(out / "train")).ok
