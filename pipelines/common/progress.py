"""A live progress line for a running job, read from the progress records the shard writers commit.

It watches the output store, not the runner, so it works the same on the local runner, a portable runner and
Dataflow (when run next to the launcher).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator

from shards import storage
from shards.units import counted

__all__ = ["ProgressLine", "counter_summary", "reason_counts", "run_and_report"]


class ProgressLine:
    """A progress line on stderr, read from what the writers leave (so it works with any runner): shards
    committed (their progress records), samples, quarantined, and the shards being written with their bytes
    so far (their temporaries), so that it moves before the first shard commits. Redrawn every second on a
    terminal; in a log, a line every 5 s (`SHARDKIT_PROGRESS_SECONDS` overrides)."""

    def __init__(self, dataset: str, split_urls: dict[str, str], progress_dir: str, *, interval: float = 1.0):
        import os

        self._dataset = dataset
        self._splits = dict(split_urls)
        self._urls = {s: storage.join(u, progress_dir) for s, u in split_urls.items()}
        self._interval = interval
        self._log_every = float(os.environ.get("SHARDKIT_PROGRESS_SECONDS", 5))
        self._interval = min(interval, self._log_every)
        self._seen: dict[str, dict[str, tuple[int, int]]] = {s: {} for s in split_urls}
        self._writing: dict[str, tuple[int, int]] = {s: (0, 0) for s in split_urls}  # temporaries, bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._t0 = time.monotonic()
        self._tty = sys.stderr.isatty()
        self._last_print = 0.0 if self._tty else time.monotonic()  # in logs: the first line after _log_every

    def __enter__(self) -> ProgressLine:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._tty and self._last_print:  # only if a live line was drawn
            print(file=sys.stderr)  # end the live line; the job prints its summary from the manifests

    def _poll(self) -> None:
        import re

        for split, url in self._splits.items():
            try:
                files = storage.list_files(url)
            except OSError:
                continue
            temps = [size for name, size in files if size is not None and re.match(storage.TEMPORARY_NAME, name)]
            self._writing[split] = (len(temps), sum(temps))
        for split, url in self._urls.items():
            try:
                names = storage.listdir(url)
            except OSError:
                continue
            for name in names:
                if name in self._seen[split] or not name.endswith(".json"):
                    continue
                try:
                    record = json.loads(storage.read_bytes(storage.join(url, name)))
                except (OSError, ValueError):
                    continue
                entry = record.get("entry") or {}
                self._seen[split][name] = (entry.get("num_samples", 0), len(record.get("quarantine", [])))

    def _print(self) -> None:
        elapsed = max(1e-6, time.monotonic() - self._t0)
        parts = []
        total = 0
        for split, recs in self._seen.items():
            samples = sum(n for n, _ in recs.values())
            bad = sum(q for _, q in recs.values())
            total += samples
            n, nbytes = self._writing[split]
            writing = f" ({n} being written, {nbytes / 1e6:,.1f} MB so far)" if n else ""
            parts.append(
                f"{split}: {counted(len(recs), 'shard')} committed{writing}, {samples:,} samples, {bad} quarantined"
            )
        line = f"[{self._dataset}] " + "; ".join(parts) + f"; {total / elapsed:,.0f} samples/s, {elapsed:.1f}s"
        if self._tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
            self._last_print = time.monotonic()
        elif time.monotonic() - self._last_print >= self._log_every:
            print(line, file=sys.stderr, flush=True)
            self._last_print = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._poll()
            self._print()


def counter_summary(result) -> dict[str, dict[str, int]]:
    """Beam's committed counters by namespace ({"imagenet/train": {"samples_written": ...}}), where the runner
    reports them."""
    out: dict[str, dict[str, int]] = {}
    try:
        for c in result.metrics().query()["counters"]:
            value = c.committed if c.committed is not None else c.attempted
            out.setdefault(c.key.metric.namespace, {})[c.key.metric.name] = int(value or 0)
    except Exception:  # some runners do not report metrics
        return {}
    return out


def reason_counts(quarantine_url: str) -> str:
    """'3x filter: no boxes and no image-level labels (e.g. a.jpg); 1x annotations: 14 fields, expected 13 (e.g.
    train-bbox.csv:3)', most first: the quarantine grouped by stage and reason, with the file, line and record
    positions taken out of the reason and the first entry's source given as the example to look at."""
    import re

    from shards.quarantine import read_quarantine

    groups: dict[str, list] = {}
    for q in read_quarantine(quarantine_url):
        reason = re.sub(
            r"\(.*?\)|malformed annotation row |[\w.-]+\.csv:\d+: |([\w.-]+\.tfrecord )?record \d+( at byte \d+)?: ",
            "",
            q["reason"],
        )
        key = f"{q['stage']}: {' '.join(reason.split())}"
        groups.setdefault(key, [0, q.get("source") or q["key"]])[0] += 1
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return "; ".join(f"{n}x {k} (e.g. {example})" for k, (n, example) in ranked)


@contextlib.contextmanager
def quiet_beam(verbose: bool = False) -> Iterator[None]:
    """While a job runs, Beam's own loggers stay quiet: a failing step logged its traceback (~12 lines) before
    the job's one-line error, which says the same. SHARDKIT_BEAM_LOG=1 (or verbose) keeps them."""
    import logging
    import os

    if verbose or os.environ.get("SHARDKIT_BEAM_LOG"):
        yield
        return
    log = logging.getLogger("apache_beam")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def failure_line(e: BaseException) -> str:
    """The runner's wrapped error as the one line that says what failed: the job's own message where the runner
    quoted it (RuntimeError/ValueError raised by a step), else the error's first line."""
    text = str(e)
    for marker in ("RuntimeError: ", "ValueError: ", "JobFailed: "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    return (text.strip().splitlines() or [type(e).__name__])[0][:1000]


def run_and_report(pipeline, dataset: str, split_urls: dict[str, str], *, progress: bool) -> int:
    """Run a conversion job with its live progress line, then print one line per split (samples, shards written
    or kept, quarantined, with counts per reason); the job's exit status."""
    import contextlib

    from pipelines.common.shardwriter import PROGRESS_DIR
    from shards.manifest import read_manifest

    try:
        with quiet_beam(), ProgressLine(dataset, split_urls, PROGRESS_DIR) if progress else contextlib.nullcontext():
            result = pipeline.run()
            result.wait_until_finish()
    except Exception as e:  # the runner wraps worker errors; say what failed in one line
        print(f"error: the {dataset} job failed: {failure_line(e)}", file=sys.stderr)
        return 1
    counters = counter_summary(result)
    for split, url in split_urls.items():
        m = read_manifest(url)
        c = counters.get(f"{dataset}/{split}", {})
        print(
            f"{split}: {counted(m['num_samples'], 'sample')} in {counted(len(m['shards']), 'shard')} "
            f"({c.get('shards_committed', 0)} written, {c.get('shards_reused', 0)} kept from an earlier run), "
            f"{m['quarantine']['count']} quarantined -> {url}"
        )
        if m["quarantine"]["count"]:
            print(f"  quarantined by reason: {reason_counts(storage.join(url, m['quarantine']['path']))}")
    return 0
