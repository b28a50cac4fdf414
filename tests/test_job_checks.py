"""Checks every conversion job makes before it builds a pipeline: output and input must not overlap, the input
must be readable and the output writable; each failure is one line naming the URL and the cause, exit 2."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipelines.common.options import check_stores
from shards.procs import alive, descendants


def _fails(capsys, input_url, output_url, says):
    with pytest.raises(SystemExit) as e:
        check_stores(input_url, output_url)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and says in err[0], err
    return err[0]


def test_an_output_overlapping_the_input_is_refused(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    _fails(capsys, str(raw), str(raw), "is --input")
    _fails(capsys, str(raw), str(raw / "out"), "is inside --input")
    _fails(capsys, str(raw / "sub"), str(raw), "holds --input")
    _fails(capsys, str(raw), f"file://{raw}/shards", "is inside --input")  # the same place, spelled otherwise
    assert not (raw / "out").exists() and not (raw / "shards").exists()
    check_stores(str(raw), str(tmp_path / "raw-shards"))  # a sibling whose name starts the same is fine


def test_an_unreadable_input_and_an_unwritable_output_are_one_line(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "a-file").write_text("x")
    _fails(capsys, str(tmp_path / "missing"), str(tmp_path / "out"), f"cannot read --input {tmp_path}/missing")
    line = _fails(capsys, str(tmp_path / "raw"), str(tmp_path / "a-file" / "out"), "cannot write to --output")
    assert "a-file/out" in line and "Not a directory" in line
    assert not list((tmp_path / "raw").iterdir())  # nothing was written anywhere


def test_the_job_command_refuses_before_building_a_pipeline(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(raw), "--output", str(raw / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr  # no apitools warning either
    assert "is inside --input" in r.stderr


@pytest.mark.integration
def test_object_store_outputs_that_cannot_be_written_fail_in_seconds(tmp_path, capsys, s3_endpoint, monkeypatch):
    (tmp_path / "raw").mkdir()
    raw = str(tmp_path / "raw")
    _fails(capsys, raw, "s3://no-such-bucket/imagenet", "cannot write to --output s3://no-such-bucket/imagenet")
    check_stores(raw, "s3://test/imagenet")  # the bucket the fixture made
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    t0 = time.monotonic()
    line = _fails(capsys, raw, "s3://test/imagenet", "cannot write to --output s3://test/imagenet")
    assert time.monotonic() - t0 < 30, "an unreachable endpoint must fail in seconds"
    assert "testing" not in line  # credentials never in the message


@pytest.mark.integration
def test_missing_credentials_are_one_line(tmp_path, s3_endpoint):
    """In a fresh process (no cached filesystem) with no credentials anywhere and the instance-metadata lookup
    off (it would reach for a non-loopback address)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ENDPOINT_URL": s3_endpoint["AWS_ENDPOINT_URL"], "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}  # fmt: skip
    (tmp_path / "raw").mkdir()
    code = f"from pipelines.common.options import check_stores; check_stores({str(tmp_path / 'raw')!r}, 's3://test/x')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "cannot write to --output s3://test/x" in lines[0], r.stderr
    assert "credentials" in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def slow_raw(tmp_path_factory):
    """800 photos that the job re-encodes (--resize-max-side): a write phase long enough to interrupt."""
    from infra.photos import photo_jpeg

    raw = tmp_path_factory.mktemp("slow") / "raw"
    for i in range(800):
        wnid = ("n01440764", "n01443537")[i % 2]
        (raw / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (raw / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(photo_jpeg(i, size=(320, 240)))
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_job_process_stops_its_writers(slow_raw, tmp_path, sig):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(slow_raw), "--output", str(out),
           "--no-progress", "--splits", "train", "--min-shards", "16", "--resize-max-side", "64",
           "--writer-processes", "2"]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        progress = out / "train" / "_progress"
        deadline = time.monotonic() + 240
        while not (progress.is_dir() and any(progress.glob("*.json"))):
            assert proc.poll() is None and time.monotonic() < deadline, "no shard was committed in time"
            time.sleep(0.02)
        family = descendants(proc.pid)
        assert len(family) >= 2, family  # the forkserver and its writers at least
        proc.send_signal(sig)  # the job's own process only, not its group
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(map(alive, family)) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [p for p in family if alive(p)]
        assert not survivors, f"{len(survivors)} processes outlived the job"
        files = sorted(p.name for p in (out / "train").iterdir())
        time.sleep(2)
        assert sorted(p.name for p in (out / "train").iterdir()) == files, "something still writes shards"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_job_leaves_nothing_in_the_temp_dir(tmp_path):
    from tests.raw import imagenet as raw_imagenet

    raw = raw_imagenet.LAYOUTS["folders"](tmp_path / "raw")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(raw), "--output", str(tmp_path / "out"),
           "--no-progress", "--min-shards", "2", "--max-bad-fraction", "0.5"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp)}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list(tmp.iterdir()), [p.name for p in tmp.iterdir()]  # Beam's Prism attempt left beam-temp*


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_rerun_removes_stale_temporaries_and_verify_reports_strays(tmp_path):
    from shards import storage
    from shards.verify import verify_split
    from tests.raw import imagenet as raw_imagenet

    raw = raw_imagenet.LAYOUTS["folders"](tmp_path / "raw")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(raw), "--output", str(out), "--no-progress",
           "--min-shards", "2", "--max-bad-fraction", "0.5", "--splits", "train"]  # fmt: skip
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    split = out / "train"
    host = storage._writer_tag().rsplit("-", 1)[0]
    dead = split / f".shard-000001.tar.tmp-{host}-{_dead_pid()}-0123456789ab"  # a killed writer's
    live = split / f".shard-000002.tar.tmp-{host}-{os.getpid()}-0123456789ab"  # a running writer's (this test)
    old = split / ".shard-000003.tar.tmp-abcdef012345"  # an older version's, untouched for two hours
    stray = split / "shard-000099.tar"
    for p in (dead, live, old, stray):
        p.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    problems = "\n".join(verify_split(str(split)).problems)
    for p in (dead, live, old):
        assert f"{p.name}: stray temporary" in problems
    assert "shard-000099.tar: stray shard file" in problems
    assert sorted(storage.stale_temporaries(str(split))) == sorted([dead.name, old.name])
    assert subprocess.run(cmd, capture_output=True).returncode == 0  # the re-run
    assert not dead.exists() and not old.exists() and live.exists()  # a live writer's temporary is left alone


@pytest.mark.slow
def test_the_progress_line_moves_while_the_job_runs(slow_raw, tmp_path):
    """In a log (stderr not a terminal) a progress line every SHARDKIT_PROGRESS_SECONDS; the shards being written
    and their bytes show before the first one commits, and the counts grow."""
    import re

    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(slow_raw), "--output", str(tmp_path / "out"),
           "--splits", "train", "--min-shards", "16", "--resize-max-side", "64", "--writer-processes", "1"]  # fmt: skip
    env = {**os.environ, "SHARDKIT_PROGRESS_SECONDS": "0.2"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("[imagenet] train:")]
    assert len(lines) >= 3, r.stderr
    seconds = [float(re.search(r"([\d.]+)s$", ln).group(1)) for ln in lines]
    assert seconds == sorted(seconds) and seconds[-1] > seconds[0]
    assert any("being written" in ln for ln in lines), lines
    committed = [int(re.search(r"train: (\d+) shards? committed", ln).group(1)) for ln in lines]
    assert committed == sorted(committed) and committed[-1] > committed[0], lines


def test_help_parses_before_the_heavy_imports_and_documents_every_option():
    """--help answers without importing Beam (jobs) or torch (the benchmark), and every option has its help."""
    script = """
import contextlib, io, sys
from pipelines.__main__ import main as jobs
from infra.bench.loader import main as bench
out = {}
for name, call in (("imagenet", lambda: jobs(["imagenet", "--help"])), ("bench", lambda: bench(["--help"]))):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        call()
    out[name] = buf.getvalue()
print(repr(("apache_beam" in sys.modules, "torch" in sys.modules, out)))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    beam, torch, out = eval(r.stdout.strip().splitlines()[-1])
    assert not beam and not torch, (beam, torch)
    assert "input layouts:" in out["imagenet"] and "ILSVRC2012_img_train.tar" in out["imagenet"]
    assert "(default 0.001)" in out["imagenet"] and "(default 256MB)" in out["imagenet"]
    assert "imagenet,openimages,youtube8m,fma,reading" in out["bench"] and out["bench"].count("default") >= 8


def test_bad_usage_is_one_line_and_exit_2_for_every_command():
    for cmd in (["pipelines", "imagenet"], ["pipelines", "nosuchset", "--input", "x"], ["loaders.stream"],
                ["loaders.bench", "imagenet"], ["loaders.bench", "reading"], ["shards", "preview", "x"],
                ["infra.local_s3", "--port", "many"], ["infra.fake_coco"], ["infra.fake_coco", "x", "--images", "0"]):  # fmt: skip
        r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "error" in lines[0], (cmd, r.returncode, r.stderr)


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--shard-size", "banana"], "argument --shard-size: cannot read 'banana' as a size"),
        (["--shard-size", "0"], "argument --shard-size: size '0' must be positive"),
        (["--max-bad-fraction", "nan"], "argument --max-bad-fraction: 'nan' is not a fraction from 0 to 1"),
        (["--max-bad-fraction", "1.5"], "'1.5' is not a fraction from 0 to 1"),
        (["--min-shards", "-3"], "argument --min-shards: must be at least 1, not -3"),
        (["--writer-processes", "two"], "argument --writer-processes: 'two' is not a whole number"),
        (["--split", "train"], "unrecognized arguments: --split train"),  # no abbreviation of --splits
    ],
)
def test_every_common_option_is_checked_as_it_is_parsed(tmp_path, extra, says):
    (tmp_path / "raw" / "train").mkdir(parents=True)
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(tmp_path / "raw"), "--output",
           str(tmp_path / "out"), *extra]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and says in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_without_splits_a_job_converts_the_default_splits_its_input_has(tmp_path):
    from infra.photos import photo_jpeg
    from shards.manifest import read_manifest

    wnid = "n01440764"
    (tmp_path / "raw" / "train" / wnid).mkdir(parents=True)
    for i in range(4):
        (tmp_path / "raw" / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(photo_jpeg(i, size=(64, 48)))
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(tmp_path / "raw"), "--output",
           str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (
        read_manifest(str(tmp_path / "out" / "train"))["num_samples"] == 4
        and not (tmp_path / "out" / "validation").exists()
    )
    r = subprocess.run([*cmd, "--splits", "train,validation"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "has no ['validation']" in r.stderr  # asked by name: its absence is an error


def test_a_job_failing_over_max_bad_fraction_says_so_in_one_line(tmp_path):
    from infra.photos import photo_jpeg

    wnid = "n01440764"
    (tmp_path / "raw" / "train" / wnid).mkdir(parents=True)
    (tmp_path / "raw" / "train" / wnid / f"{wnid}_0.JPEG").write_bytes(photo_jpeg(0, size=(64, 48)))
    for i in range(1, 4):
        (tmp_path / "raw" / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(b"not a jpeg")
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(tmp_path / "raw"), "--output",
           str(tmp_path / "out"), "--no-progress", "--max-bad-fraction", "0.1"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: the imagenet job failed: ") and "3 of 4 inputs quarantined" in lines[0]


def test_a_layout_error_leaves_no_output_folder(tmp_path):
    (tmp_path / "raw" / "nothing-here").mkdir(parents=True)
    out = tmp_path / "deep" / "out"
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(tmp_path / "raw"), "--output", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "deep").exists()
