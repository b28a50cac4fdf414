"""`python -m pipelines <dataset> --input URL --output URL [options] [-- beam options]`."""

from __future__ import annotations

import sys

from pipelines import available, load


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        names = available()
        print("usage: python -m pipelines <dataset> --input URL --output URL [options] [-- beam options]\n")
        print("datasets:", ", ".join(names) if names else "none registered yet")
        print(
            "\n`python -m pipelines <dataset> --help` lists a dataset's options; "
            "`python -m pipelines fetch <dataset> --to DIR` downloads one."
        )
        return 0
    if argv[0] == "fetch":  # not a dataset: downloads one, as its publisher serves it
        from pipelines.fetch import main as fetch

        return fetch(argv[1:])
    try:
        job = load(argv[0])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Beam leaves folders in the temp dir (a pipeline's own, and with a portable runner the stager's dependency
    # list): the job gets a temp dir of its own, removed when it ends
    import multiprocessing.util
    import signal
    import tempfile

    multiprocessing.util.get_temp_dir()  # the writer pool's sockets stay in the real temp dir (short paths)
    # SIGTERM (a `kill`, Kubernetes stopping a watcher's pod) ends the job as Ctrl-C does, through the `finally`s:
    # Python's default for it exits at once and left the job's temp dir behind
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="shardkit-job-") as scratch:
        tempfile.tempdir = scratch
        try:
            return int(job().main(argv[1:]) or 0)
        finally:
            tempfile.tempdir = None


if __name__ == "__main__":
    raise SystemExit(main())
