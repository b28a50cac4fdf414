"""A Dask cluster on loopback: a scheduler and N workers on 127.0.0.1 (dashboards too), for the Dask runner.

    python -m infra.dask_local                          # prints the Beam options to use, serves until Ctrl-C
    python -m infra.dask_local --workers 2 -- python -m pipelines imagenet --input IN --output OUT

With a command, the Beam options (`--runner=pipelines.common.daskrunner.DaskRunner --dask_client_address=...`)
are appended to it (after its `--`, which is added if missing), it runs, and the scheduler and the workers are
stopped. Each worker is its own process (`dask worker --nworkers 1 --nthreads 1`), as on a cluster's machines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from infra.beam_local import _stop, _wait_port, cluster_main
from infra.local_s3 import HOST, free_port
from shards.procs import die_with_parent

__all__ = ["DaskCluster", "local_dask_cluster"]

RUNNER = "pipelines.common.daskrunner.DaskRunner"


@dataclasses.dataclass(frozen=True)
class DaskCluster:
    scheduler: str  # tcp://127.0.0.1:PORT
    workers: tuple[int, ...]  # the workers' process ids (each leads its own process group)
    scheduler_pid: int

    @property
    def args(self) -> list[str]:
        """Beam options that run a pipeline on this cluster."""
        return [f"--runner={RUNNER}", f"--dask_client_address={self.scheduler}"]


def _dask(*args: str) -> list[str]:
    return [sys.executable, "-m", "distributed.cli." + args[0], *args[1:]]


@contextlib.contextmanager
def local_dask_cluster(*, workers: int = 2, timeout: float = 60, log: str | None = None) -> Iterator[DaskCluster]:
    """Start a scheduler and `workers` single-threaded workers on 127.0.0.1; yield the address; stop them all."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    scratch = tempfile.mkdtemp(prefix="shardkit-dask-")  # workers' spill space and locks, removed with them
    env["DASK_TEMPORARY_DIRECTORY"] = scratch  # else the scheduler leaves /tmp/dask-scratch-space behind
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True, cwd=root,
                                preexec_fn=die_with_parent())  # fmt: skip
        procs.append(proc)
        return proc

    try:
        port = free_port()
        scheduler = start(_dask("dask_scheduler", "--host", HOST, "--port", str(port), "--dashboard-address",
                                f"{HOST}:{free_port()}", "--no-show"))  # fmt: skip
        _wait_port(port, scheduler, "Dask scheduler", timeout)
        address = f"tcp://{HOST}:{port}"
        pids = []
        for i in range(workers):
            w = start(_dask("dask_worker", address, "--host", HOST, "--nworkers", "1", "--nthreads", "1",
                            "--dashboard-address", f"{HOST}:{free_port()}", "--name", f"worker-{i}",
                            "--local-directory", scratch, "--no-nanny"))  # fmt: skip
            pids.append(w.pid)
        _wait_workers(address, workers, timeout)
        yield DaskCluster(address, tuple(pids), scheduler.pid)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        if log:
            out.close()
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


def _wait_workers(address: str, n: int, timeout: float) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    return cluster_main(argv, "python -m infra.dask_local", __doc__, local_dask_cluster, "Dask scheduler and workers")


if __name__ == "__main__":
    raise SystemExit(main())
