"""A Beam cluster on loopback: Beam's job service plus a worker pool, the protocol Flink and Spark clusters speak.

    python -m infra.beam_local                          # prints the Beam options to use, serves until Ctrl-C
    python -m infra.beam_local --workers 2 -- python -m pipelines imagenet --input IN --output OUT

With a command, the Beam options (`--runner=PortableRunner --job_endpoint=... --environment_type=EXTERNAL ...`)
are appended to it (after its `--`, which is added if missing), it runs, and both services are stopped with
every SDK worker they started. The job service runs the pipeline with `--direct_num_workers` SDK workers, each a
separate process the worker pool starts: the same split as a Flink task manager with a Beam worker-pool sidecar.

Beam's own services listen on every interface (`[::]`); these are started with gRPC's binding rewritten to
127.0.0.1, so nothing here is reachable from another machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from infra.local_s3 import HOST, free_port
from shards.procs import die_with_parent

__all__ = ["BeamCluster", "cluster_main", "local_beam_cluster", "with_beam_args"]


@dataclasses.dataclass(frozen=True)
class BeamCluster:
    job_endpoint: str
    worker_pool: str
    workers: int
    pids: tuple[int, ...]  # the job service's and the worker pool's (each leads its own process group)

    @property
    def args(self) -> list[str]:
        """Beam options that run a pipeline on this cluster."""
        return [
            "--runner=PortableRunner",
            f"--job_endpoint={self.job_endpoint}",
            "--environment_type=EXTERNAL",
            f"--environment_config={self.worker_pool}",
            f"--direct_num_workers={self.workers}",
            "--sdk_worker_parallelism=1",
        ]


def _loopback_only() -> None:
    """Make every gRPC server of this process bind 127.0.0.1 instead of all interfaces."""
    import grpc._server

    original = grpc._server._Server.add_insecure_port

    def add_insecure_port(self, address: str) -> int:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", "", "localhost", "[::1]"):
            address = f"{HOST}:{port}"
        return original(self, address)

    grpc._server._Server.add_insecure_port = add_insecure_port


def _honour_num_workers() -> None:
    """Beam's local job service runs every job on one SDK worker: it calls FnApiRunner.run_via_runner_api,
    which skips the place where `--direct_num_workers` is read. Read it there too, so a job runs on that many
    worker processes (each bundle's input split between them), as it would on a cluster's task slots."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    original = fn_runner.FnApiRunner.run_via_runner_api

    def run_via_runner_api(self, pipeline_proto, options):
        n = int(options.view_as(DirectOptions).direct_num_workers or 0)  # arrives as a string
        if n > 0:
            self._num_workers = n
        return original(self, pipeline_proto, options)

    fn_runner.FnApiRunner.run_via_runner_api = run_via_runner_api


def _serve_job_service(port: int) -> None:
    _loopback_only()
    _honour_num_workers()
    from apache_beam.runners.portability import local_job_service_main

    local_job_service_main.run(["--port", str(port)])


def _serve_worker_pool(port: int) -> None:
    _loopback_only()
    from apache_beam.runners.worker import worker_pool_main

    worker_pool_main.main(["worker_pool", "--service_port", str(port)])


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {proc.returncode} before listening on {HOST}:{port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the {what} did not listen on {HOST}:{port} within {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a service and everything it started (its process group: the SDK workers of the pool)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers left in the group after the leader exited
    deadline = time.monotonic() + 10  # return once the kernel has finished tearing the group down
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)


@contextlib.contextmanager
def local_beam_cluster(
    *, workers: int = 2, timeout: float = 60, log: str | None = None, env: dict[str, str] | None = None
) -> Iterator[BeamCluster]:
    """Start a job service and a worker pool on 127.0.0.1; yield their address; stop both (and their workers).

    `env` is the services' environment (default: this process's); workers inherit it, as a cluster's
    workers have their own environment and not the launcher's.
    """
    # the pool starts SDK workers as `python -c ...`: make that this interpreter, with the project importable
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # the job service stages every job under the temp dir and never removes it: give the services a temp dir of
    # their own, removed with them
    scratch = tempfile.mkdtemp(prefix="shardkit-beam-services-")
    env["TMPDIR"] = scratch
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    procs: list[subprocess.Popen] = []
    try:
        ports = {}
        for what in ("job service", "worker pool"):
            port = free_port()
            code = f"from infra.beam_local import _serve_{what.replace(' ', '_')} as s; s({port})"
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code],
                    env=env,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    cwd=root,
                    preexec_fn=die_with_parent(),
                )
            )
            ports[what] = port
        for proc, (what, port) in zip(procs, ports.items(), strict=True):
            _wait_port(port, proc, what, timeout)
        yield BeamCluster(
            job_endpoint=f"{HOST}:{ports['job service']}",
            worker_pool=f"{HOST}:{ports['worker pool']}",
            workers=workers,
            pids=tuple(p.pid for p in procs),
        )
    finally:
        for proc in procs:
            _stop(proc)
        if log:
            out.close()
        shutil.rmtree(scratch, ignore_errors=True)


def with_beam_args(command: list[str], beam_args: list[str]) -> list[str]:
    """`command` with `beam_args` after its `--` (added when it has none)."""
    if "--" in command:
        return [*command, *beam_args]
    return [*command, "--", *beam_args]


def cluster_main(argv: list[str] | None, prog: str, doc: str, start, what: str) -> int:
    """The command of a loopback cluster (`beam_local`, `dask_local`): `[--workers N] [--log F] [-- CMD ...]` runs
    CMD with the cluster's Beam options appended, or prints them and serves until Ctrl-C. `start(workers, log)` is
    the cluster's context manager."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--log", help="append the services' output to this file (default: discard)")
    args = p.parse_args(argv)
    with start(workers=args.workers, log=args.log) as cluster:
        if command:
            return subprocess.call(with_beam_args(command, cluster.args))
        print(" ".join(cluster.args))
        print(f"# {what} running; Ctrl-C stops them", file=sys.stderr)
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cluster_main(argv, "python -m infra.beam_local", __doc__, local_beam_cluster, "job service and worker pool")


if __name__ == "__main__":
    raise SystemExit(main())
