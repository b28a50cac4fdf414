"""Headless Chromium (Debian's package) driven through the DevTools protocol with aiohttp's websocket client: open
a page from a file:// URL, evaluate expressions in it, take screenshots, and record every network request and
console message. Every host name resolves to nothing (`--host-resolver-rules`), so a page that tried to fetch
anything would show it in `requests` and fail to get it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from infra.local_s3 import HOST, free_port
from shards.procs import die_with_parent, stop

__all__ = ["CHROMIUM", "Visit", "chromium"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Visit:
    """One page, open: `evaluate(js)`, `screenshot()`; `requests` and `console` as the page made them."""

    def __init__(self, ws: Any, loop: asyncio.AbstractEventLoop):
        self._ws, self._loop, self._ids = ws, loop, itertools.count(1)
        self.requests: list[str] = []
        self.console: list[tuple[str, str]] = []
        self._events: list[dict] = []

    async def _call(self, method: str, **params: Any) -> dict:
        n = next(self._ids)
        await self._ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads((await self._ws.receive()).data)
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method", ""), msg.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(p["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            self.console.append((p["type"], " ".join(str(a.get("value", a.get("description"))) for a in p["args"])))
        elif method == "Runtime.exceptionThrown":
            self.console.append(("exception", p["exceptionDetails"].get("text", "")))
        elif method == "Log.entryAdded":
            self.console.append((p["entry"]["level"], p["entry"]["text"]))
        elif method == "Page.loadEventFired":
            self._events.append(msg)

    def call(self, method: str, **params: Any) -> dict:
        return self._loop.run_until_complete(self._call(method, **params))

    def evaluate(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def open(self, url: str, *, width: int, height: int) -> None:
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self._events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while not self._events and time.monotonic() < deadline:  # the load event: every inlined image decoded
            self._loop.run_until_complete(self._pump())
        full = self.evaluate("document.documentElement.scrollHeight")  # the whole page in one screen: shots and
        self.call(  # coordinates are of the document, without scrolling
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=max(height, full),
            deviceScaleFactor=1,
            mobile=False,
        )
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # painted

    async def _pump(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            msg = await asyncio.wait_for(self._ws.receive(), timeout=0.5)
            self._event(json.loads(msg.data))


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium on 127.0.0.1; yields `visit(url, width, height) -> Visit` (one tab per visit)."""

    profile = tempfile.mkdtemp(prefix="shardkit-chromium-")
    port = free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
         f"--remote-debugging-port={port}", f"--remote-debugging-address={HOST}", f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent(),
        env={**os.environ, "TMPDIR": profile},  # its own temporaries go with the profile
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    session = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/json/version", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start (exit {proc.poll()})") from None
                time.sleep(0.1)
        session = loop.run_until_complete(_session())
        sockets = []

        def visit(url: str, *, width: int = 1400, height: int = 900) -> Visit:
            req = urllib.request.Request(f"http://{HOST}:{port}/json/new?about:blank", method="PUT")
            with urllib.request.urlopen(req, timeout=10) as r:
                target = json.load(r)
            ws = loop.run_until_complete(session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0))
            sockets.append(ws)
            v = Visit(ws, loop)
            v.open(url, width=width, height=height)
            return v

        yield visit
        for ws in sockets:
            loop.run_until_complete(ws.close())
    finally:
        if session is not None:
            loop.run_until_complete(session.close())
        loop.close()
        stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


async def _session():
    import aiohttp

    return aiohttp.ClientSession()
