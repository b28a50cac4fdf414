"""A throttling TCP proxy on loopback: an object store as one node sees it, in front of the local S3 endpoint.

Each response waits `latency` seconds before its first byte (a request is what the client sends after the last
response), and each connection receives at most `bandwidth` bytes/s, as one stream from S3 or GCS does (~50-100
MB/s, 20-50 ms to first byte). Many connections at once get many times the bandwidth, which is what a loader with
concurrent fetches should show. `drop` makes it cut that many connections after `drop_after` response bytes, to
test retries. Used by the cold-epoch benchmark (`python -m loaders.bench reading`) and the tests.

    with local_s3(buckets=("b",)) as env, Throttle(port_of(env), latency=0.03, bandwidth=50e6) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
"""

from __future__ import annotations

import asyncio
import threading
import time

__all__ = ["Throttle"]

CHUNK = 256 << 10


class Throttle:
    """The proxy (see the module docstring); counts connections, the most open at once, and bytes sent back."""

    def __init__(
        self,
        upstream_port: int,
        *,
        latency: float = 0.03,
        bandwidth: float = 50e6,
        drop: int = 0,
        drop_after: int = 1 << 20,
        host: str = "127.0.0.1",
    ):
        self.upstream = (host, upstream_port)
        self.latency, self.bandwidth = latency, bandwidth
        self.drop, self.drop_after = drop, drop_after
        self.connections = self.open = self.max_open = self.dropped = 0
        self.bytes_down = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="throttle", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Throttle:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the throttling proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        doomed = self.dropped < self.drop
        if doomed:
            self.dropped += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            self.open -= 1
            return
        waiting = asyncio.Event()  # a request went up; its response has not started yet

        async def upstream() -> None:
            while data := await client_r.read(CHUNK):
                waiting.set()
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def downstream() -> None:
            sent = 0
            while data := await up_r.read(CHUNK):
                if waiting.is_set():
                    waiting.clear()
                    await asyncio.sleep(self.latency)
                t0 = time.monotonic()
                if doomed and sent + len(data) > self.drop_after:
                    client_w.write(data[: max(0, self.drop_after - sent)])
                    client_w.transport.abort()  # a connection reset mid-response
                    return
                client_w.write(data)
                await client_w.drain()
                sent += len(data)
                self.bytes_down += len(data)
                await asyncio.sleep(max(0.0, len(data) / self.bandwidth - (time.monotonic() - t0)))
            client_w.close()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in (up_w, client_w):
                w.close()
            self.open -= 1
