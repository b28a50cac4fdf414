"""A real S3 endpoint on loopback (moto's server in its own process) for tests, demos and local work.

    python -m infra.local_s3                       # prints `export AWS_ENDPOINT_URL=...` lines, serves until Ctrl-C
    python -m infra.local_s3 --bucket demo -- CMD  # runs CMD with the environment set, then stops the endpoint

s3fs (and so `shards.storage`), Beam's S3 filesystem and DALI's S3 reader all pick the endpoint up from
AWS_ENDPOINT_URL plus the usual AWS_* variables. Only 127.0.0.1 is ever bound or contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from shards.procs import die_with_parent, stop

__all__ = ["local_s3", "create_bucket", "free_port"]

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_ready(endpoint: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode} before serving {endpoint}")
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"moto_server did not answer on {endpoint} within {timeout}s")


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create a bucket on the endpoint (moto accepts an unsigned PUT)."""
    req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    with urllib.request.urlopen(req, timeout=10):
        pass


@contextlib.contextmanager
def local_s3(
    *, port: int | None = None, buckets: tuple[str, ...] = (), timeout: float = 30
) -> Iterator[dict[str, str]]:
    """Start moto's S3 server on 127.0.0.1, yield the environment clients need, stop it on exit."""
    port = port or free_port()
    endpoint = f"http://{HOST}:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),
    )
    try:
        _wait_ready(endpoint, proc, timeout)
        for b in buckets:
            create_bucket(endpoint, b)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
    finally:
        stop(proc)


def _bucket(name: str) -> str:
    """S3's bucket naming rules, checked before the server is asked (it answers a bad name with HTTP 400)."""
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name) or ".." in name:
        raise argparse.ArgumentTypeError(
            f"{name!r} is not an S3 bucket name: 3-63 characters, lowercase letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def main(argv: list[str] | None = None) -> int:
    from shards.cli import OneLineParser

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = OneLineParser(prog="python -m infra.local_s3", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--bucket", action="append", default=[], type=_bucket, help="bucket to create (repeatable)")
    args = p.parse_args(argv)
    with local_s3(port=args.port, buckets=tuple(args.bucket)) as env:
        if command:
            return subprocess.call(command, env={**os.environ, **env})
        for k, v in env.items():
            print(f"export {k}={v}")
        print("# S3 endpoint running; Ctrl-C stops it", file=sys.stderr)
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
