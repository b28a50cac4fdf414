"""`python -m pipelines fetch`: against a loopback HTTP server serving fixture files as the publishers do (with
Range requests): resume after a dropped connection, the publisher's checksums, sizes and SHA256SUMS where none is
published, YouTube-8M's download plans."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from pipelines.fetch import FetchError, fetch

DATA = Path(__file__).parent / "data"


class Served:
    """A loopback HTTP server: `files` maps a URL path to bytes; the first GET of a path in `drop` ends the
    connection after that many bytes. Range requests are answered with 206, as S3 and GCS answer them."""

    def __init__(self, files: dict[str, bytes], drop: dict[str, int] | None = None):
        self.files, self.drop, self.ranges = files, dict(drop or {}), []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = served.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
                    served.ranges.append((self.path, start))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = served.drop.pop(self.path, None)
                self.wfile.write(data[start:cut] if cut is not None else data[start:])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_mnist_resumes_after_a_dropped_connection_and_matches_the_publishers_md5(tmp_path):
    files = {
        f"/mnist/{n}": (DATA / "mnist" / n).read_bytes()
        for n in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    }
    with Served(files, drop={"/mnist/t10k-images-idx3-ubyte.gz": 600_000}) as s:
        with pytest.raises(FetchError, match="ended after 600000 of 1648877 bytes; run again to resume"):
            fetch("mnist", str(tmp_path), parts=["test"], base_url=s.url, say=lambda _: None)
        assert (tmp_path / "t10k-images-idx3-ubyte.gz.part").stat().st_size == 600_000
        fetch("mnist", str(tmp_path), parts=["test"], base_url=s.url, say=lambda _: None)
        assert s.ranges == [("/mnist/t10k-images-idx3-ubyte.gz", 600_000)]  # only the rest was asked for
    for n, data in files.items():
        assert (tmp_path / n.rsplit("/", 1)[1]).read_bytes() == data
    assert not list(tmp_path.glob("*.part"))


def test_bytes_that_are_not_the_publishers_are_set_aside_with_a_clear_error(tmp_path, capsys):
    from pipelines.fetch import main

    with Served({"/~kriz/cifar-10-python.tar.gz": b"not the archive"}) as s:
        assert main(["cifar10", "--to", str(tmp_path), "--base-url", s.url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not the publisher's c58f30108f718f92721af3b95e74349a" in err
    assert (tmp_path / "cifar-10-python.tar.gz.bad").exists() and not (tmp_path / "cifar-10-python.tar.gz").exists()


def test_without_a_published_checksum_the_sha256_is_recorded_and_a_missing_file_is_one_line(tmp_path):
    annotations = {
        "/annotations/annotations_trainval2017.zip": b"a" * 1000,
        "/annotations/image_info_test2017.zip": b"b" * 10,
    }
    with Served(annotations) as s:
        fetch("coco", str(tmp_path), parts=["annotations"], base_url=s.url, say=lambda _: None)
        with pytest.raises(FetchError, match=r"/zips/val2017\.zip: HTTP 404"):
            fetch("coco", str(tmp_path), parts=["val"], base_url=s.url, say=lambda _: None)
    sums = (tmp_path / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{hashlib.sha256(b'a' * 1000).hexdigest()}  annotations_trainval2017.zip",
                    f"{hashlib.sha256(b'b' * 10).hexdigest()}  image_info_test2017.zip"]  # fmt: skip
    with pytest.raises(FetchError, match="coco has no part 'everything'"):
        fetch("coco", str(tmp_path), parts=["everything"])


def test_youtube8m_files_come_from_the_publishers_download_plan_named_as_its_script_names_them(tmp_path):
    records = {"validateAa.tfrecord": b"first file", "validateAb.tfrecord": b"second file"}
    plan = {"files": {n: hashlib.md5(b).hexdigest() for n, b in records.items()}}
    served = {"/2/download_plans/video_validate.json": json.dumps(plan).encode()}
    served |= {f"/2/video/validate/{n}": b for n, b in records.items()}
    with Served(served) as s:
        got = fetch("youtube8m", str(tmp_path), parts=["2/video/validate"], base_url=s.url, say=lambda _: None)
    # the two-letter id is an index into a-z A-Z 0-9 pairs: "Aa" is 26 * 62 + 0
    assert got == ["video/validate1612.tfrecord", "video/validate1613.tfrecord"]
    assert (tmp_path / "video" / "validate1613.tfrecord").read_bytes() == b"second file"


def test_imagenet_says_where_to_register(capsys):
    from pipelines.fetch import main

    assert main(["imagenet", "--to", "x"]) == 2
    out = capsys.readouterr().out
    assert "https://image-net.org/download-images.php" in out and "ILSVRC2012_img_train.tar" in out


def test_every_jobs_help_says_where_its_data_is_published():
    import subprocess
    import sys

    from pipelines import available
    from pipelines.fetch import CATALOGUE

    for name in sorted(set(CATALOGUE) & set(available())):
        r = subprocess.run(
            [sys.executable, "-m", "pipelines", name, "--help"], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and f"getting the data: {CATALOGUE[name].page}" in r.stdout, (name, r.stdout[-500:])
