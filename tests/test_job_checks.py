"""Checks every conversion job makes before it builds a pipeline: output and input must not overlap, the input
must be readable and the output writable; each failure is one line naming the URL and the cause, exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from pipelines.common.options import check_stores


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
