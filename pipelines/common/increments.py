"""One split's increments, exactly once: find the raw files not yet converted, convert them with the batch job's
writers, publish them as the split's next generation (shards/generations.py). No Beam here: the streaming job
(pipelines/common/watch.py) calls `SplitWatcher.tick` on every tick of its clock.

Exactly once, across kills and restarts:
- What was converted is recorded with each generation (`<folder>/inputs.jsonl`: url, size, tag, crc32c, keys);
  the ledger of a split is the union over its live generations (a compaction carries the ledgers it replaces).
- Before writing anything, an increment writes its intent (`_watch/intent-<folder>.jsonl`: its files and every
  pointer). A watcher that finds an intent whose folder no manifest lists finishes that increment first, from the
  intent, reusing the shards already committed (the batch writers' progress records) - so a kill at any moment
  neither loses nor duplicates an input.
- A file whose size or tag changed after it was converted is hashed again; if its bytes differ it is reported in
  the next generation's quarantine (stage `changed`) and not converted again.
- A file that could not be read (removed or cut short after it was listed) is not converted: its ledger row says
  `unread`, its inputs are in that generation's quarantine (stage `read`), and it is tried again, as new, as soon
  as it lists and reads - even with the same size and tag it had.
- A file is converted only once it is stable: the same size and tag in two listings `settle` seconds apart (a
  local file last modified longer ago than that is stable at once: a backlog does not wait).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from pipelines.common.increment_report import IncrementReport
from pipelines.common.rawinputs import RawInputs, Stat, arrival, checksum, checksum_or_none, readable
from pipelines.common.records import Pointer
from pipelines.common.sharding import SplitPlan, num_shards
from pipelines.common.shardwriter import PROGRESS_DIR, Encoder, write_shard
from shards import storage
from shards.errors import ManifestError, ManifestMissing
from shards.generations import new_folder, publish_generation, split_lock
from shards.keys import shard_of
from shards.manifest import check_folder, read_manifest
from shards.quarantine import quarantine_entry

__all__ = ["IncrementReport", "RawInputs", "SplitWatcher", "WATCH_DIR"]

WATCH_DIR = "_watch"


class SplitWatcher:
    """The state of one split's watcher between ticks (the ledger, the last listing) and the tick itself."""

    def __init__(self, plan: SplitPlan, raw: RawInputs, encode: Encoder, *, settle: float = 2.0):
        self.plan = plan
        self.raw = raw
        self.encode = encode
        self.settle = settle
        self.ledger: dict[str, dict[str, Any]] = {}  # url -> {size, tag, crc32c, keys, generation|rejected}
        self.unread: dict[str, dict[str, Any]] = {}  # url -> ledger row of a file that could not be read
        self.keys: dict[str, str] = {}  # key -> the url it came from
        self.known_gens: set[int] = set()
        self.first_seen: dict[str, float] = {}
        self.same_bytes: dict[str, Stat] = {}  # rewritten in place with the same bytes: not news
        self._retried: list[str] = []  # rejected records whose files the next increment takes again
        self._check_split()

    # ------------------------------------------------------------ state

    def _manifest(self) -> dict[str, Any] | None:
        try:
            return read_manifest(self.plan.split_url)
        except ManifestMissing:
            return None

    def _check_split(self) -> None:
        m = self._manifest()
        if m is None:
            return
        if m["version"] < 2:
            raise ValueError(
                f"{self.plan.split_url} was written once by a batch job; a watcher needs an output "
                "of its own (it converts the backlog as its first generation)"
            )
        if m["params"] != self.plan.params or m["dataset"] != self.plan.dataset:
            raise ValueError(
                f"{self.plan.split_url} was converted by {m['dataset']} with {m['params']}; this watcher "
                f"has {self.plan.dataset} with {self.plan.params}: use the same options or another output"
            )

    def _refresh_ledger(self) -> dict[str, Any] | None:
        """Bring the ledger up to the published manifest (generations this process has not read yet)."""
        m = self._manifest()
        live = {g["generation"]: g for g in (m or {}).get("generations", [])}
        if not self.known_gens <= set(live):  # a compaction replaced some: read the ledgers it carries
            self.ledger, self.keys, self.known_gens, self.unread = {}, {}, set(), {}
        for n, g in sorted(live.items()):
            if n in self.known_gens:
                continue
            with contextlib.suppress(FileNotFoundError):
                for line in storage.read_bytes(storage.join(self.plan.split_url, g["inputs"])).splitlines():
                    self._remember(json.loads(line), n)
            self.known_gens.add(n)
        for name in storage.listdir(storage.join(self.plan.split_url, WATCH_DIR)):
            if name.startswith("rejected-") and name.endswith(".json"):
                record = json.loads(storage.read_bytes(storage.join(self.plan.split_url, WATCH_DIR, name)))
                for f in record["files"]:
                    self.ledger.setdefault(f["url"], {**f, "rejected": name})
        return m

    def _remember(self, row: dict[str, Any], generation: int) -> None:
        if row.get("unread") or (row.get("crc32c") is None and "was" not in row):
            if row["url"] not in self.ledger:  # never read: not converted
                self.unread[row["url"]] = {**row, "generation": generation}
            return
        self.unread.pop(row["url"], None)
        self.ledger[row["url"]] = {**row, "generation": generation}
        for k in row.get("keys", ()):
            self.keys.setdefault(k, row["url"])

    # ------------------------------------------------------------ finding what is new

    def _stable_new(self) -> tuple[dict[str, Stat], list[tuple[str, Stat, str]], int]:
        """(new stable files, converted files whose bytes changed, files still changing)."""
        now = time.time()
        listing = self.raw.inputs(self.plan.split)
        fresh = {}
        for url, stat in listing.items():
            self.first_seen.setdefault(url, now)
            known = self.ledger.get(url)
            if known is None and url in self.unread and not readable(url):
                continue  # still unreadable: tried again once it reads, with no generation per tick meanwhile
            if known is None or ((known["size"], known["tag"]) != stat and self.same_bytes.get(url) != stat):
                fresh[url] = stat
        # the same size and tag `settle` seconds later, or it is still being written; a local file last modified
        # longer ago than that has shown it already (its tag is its modification time)
        young = {u: s for u, s in fresh.items() if now - arrival(u, s, now) < self.settle}
        if young:
            time.sleep(self.settle)
            again = self.raw.inputs(self.plan.split)
            unstable = {u for u, s in young.items() if again.get(u) != s}
        else:
            unstable = set()
        stable = {u: s for u, s in fresh.items() if u not in unstable}
        changed = []
        retry = {self.ledger[u]["rejected"] for u in stable if "rejected" in self.ledger.get(u, {})}
        for url, row in self.ledger.items():  # a rejected increment is tried again, whole, once a file of it changes
            if row.get("rejected") in retry and url in listing and url not in unstable:
                stable[url] = listing[url]
        self._retried = sorted(retry)
        for url in [u for u in stable if u in self.ledger and "rejected" not in self.ledger[u]]:
            stat = stable.pop(url)
            try:
                crc = checksum(url)
            except FileNotFoundError:  # removed since the listing: nothing to report
                continue
            if crc == self.ledger[url]["crc32c"]:
                self.same_bytes[url] = stat
            else:
                changed.append((url, stat, crc))
        return stable, changed, len(unstable)

    # ------------------------------------------------------------ intents

    def _intent_url(self, folder: str) -> str:
        return storage.join(self.plan.split_url, WATCH_DIR, f"intent-{folder}.jsonl")

    def _pending(self, manifest: dict[str, Any] | None) -> tuple[str, dict[str, Any], list[Pointer]] | None:
        """An increment started and not published (its folder is in no live generation): finish it first."""
        published = {g["folder"] for g in (manifest or {}).get("generations", [])}
        published |= {r["folder"] for r in (manifest or {}).get("retired", [])}
        for name in storage.listdir(storage.join(self.plan.split_url, WATCH_DIR)):
            if name.startswith("intent-") and name.endswith(".jsonl"):
                folder = name.removeprefix("intent-").removesuffix(".jsonl")
                try:  # the folder becomes a path: only a name new_folder makes is taken
                    check_folder(folder, self._intent_url(folder), "intent's folder")
                except ManifestError:
                    continue
                lines = storage.read_bytes(self._intent_url(folder)).splitlines()
                if folder in published:  # published, the intent not yet removed
                    storage.remove(self._intent_url(folder))
                    continue
                return folder, json.loads(lines[0]), [Pointer(*json.loads(x)) for x in lines[1:]]
        return None

    def _plan_increment(self, stable: dict[str, Stat], changed: list[tuple[str, Stat, str]]):
        """Hash the new files, list their pointers, mark keys taken by earlier generations, write the intent."""
        pointers = sorted(self.raw.pointers(self.plan.split, {u: s[0] for u, s in stable.items()}), key=lambda p: p.key)
        # a file that is one pointer, whole, gets its checksum from the writer that reads it; others (a TFRecord
        # file of many records) are read once more here
        whole = {p.url for p in pointers if p.offset == 0 and p.length == stable.get(p.url, (-1,))[0]}
        rest = [u for u in stable if u not in whole]
        with cf.ThreadPoolExecutor(8) as pool:  # google_crc32c releases the GIL
            digests = dict(zip(rest, pool.map(checksum_or_none, rest), strict=True))
        out = []
        for p in pointers:
            owner = self.keys.get(p.key)
            if owner is not None and "error" not in p.meta:
                g = self.ledger[owner].get("generation")
                p = p._replace(
                    meta={
                        **p.meta,
                        "stage": "list",
                        "error": f"duplicate key: {p.key} was already converted from {owner} in generation {g}",
                    }
                )
            out.append(p)
        keys: dict[str, list[str]] = {}
        for p in out:
            if "error" not in p.meta:
                keys.setdefault(p.url, []).append(p.key)
        files = [
            {"url": u, "size": s[0], "tag": s[1], "crc32c": digests.get(u), "keys": keys.get(u, [])}
            for u, s in stable.items()
        ]
        changes = []
        for url, stat, crc in changed:
            old = self.ledger[url]
            changes.append(
                {
                    "url": url,
                    "size": stat[0],
                    "tag": stat[1],
                    "crc32c": crc,
                    "keys": [],
                    "was": {k: old[k] for k in ("size", "crc32c")},
                    "converted_in": old.get("generation"),
                }
            )
        arrivals = [
            arrival(u, s, self.first_seen.get(u, time.time())) for u, s in [*stable.items(), *(c[:2] for c in changed)]
        ]
        header = {"files": files, "changed": changes, "arrivals": [min(arrivals), max(arrivals)]}
        folder = new_folder("inc")
        body = b"".join(json.dumps(list(p)).encode() + b"\n" for p in out)
        storage.write_bytes(self._intent_url(folder), json.dumps(header).encode() + b"\n" + body)
        for name in self._retried:  # the intent holds their files now
            with contextlib.suppress(FileNotFoundError):
                storage.remove(storage.join(self.plan.split_url, WATCH_DIR, name))
        for row in header["files"]:
            if "rejected" in self.ledger.get(row["url"], {}):
                del self.ledger[row["url"]]
        return folder, header, out

    # ------------------------------------------------------------ converting and publishing

    def _convert(self, folder: str, pointers: list[Pointer], first: bool, submit: Callable) -> list[dict[str, Any]]:
        """Write the increment's shards with the batch job's writer: the same seeded assignment and order."""
        folder_url = storage.join(self.plan.split_url, folder)
        for sub in (folder_url, storage.join(folder_url, PROGRESS_DIR)):
            for name in storage.stale_temporaries(sub, max_age=0 if first else 3600):
                with contextlib.suppress(FileNotFoundError):
                    storage.remove(storage.join(sub, name))
        # the backlog (first generation) gets --min-shards like the batch job; a small increment one shard per
        # --shard-size of bytes (compaction merges them later)
        min_shards = self.plan.min_shards if first else 1
        plan = dataclasses.replace(self.plan, split_url=folder_url, min_shards=min_shards, input_checksums=True)
        n = num_shards(len(pointers), sum(p.length for p in pointers), plan.shard_size, min_shards)
        by_shard: dict[int, list[Pointer]] = {}
        for p in pointers:
            by_shard.setdefault(shard_of(p.key, plan.seed, n), []).append(p)
        futures = [submit(write_shard, plan, self.encode, (i, ps)) for i, ps in sorted(by_shard.items())]
        return [f.result()[0] for f in futures]

    def tick(self, submit: Callable) -> IncrementReport:
        """Publish at most one increment: a pending one first, else what is new and stable now."""
        manifest = self._refresh_ledger()
        report = IncrementReport(self.plan.split, None)
        pending = self._pending(manifest)
        if pending is None:
            stable, changed, report.unstable = self._stable_new()
            if not stable and not changed:
                return report
            pending = self._plan_increment(stable, changed)
        folder, header, pointers = pending
        records = self._convert(folder, pointers, manifest is None, submit)
        report.backlog = manifest is None
        return self._finish(folder, header, pointers, records, report)

    def _finish(
        self,
        folder: str,
        header: dict[str, Any],
        pointers: list[Pointer],
        records: list[dict[str, Any]],
        report: IncrementReport,
    ) -> IncrementReport:
        plan = self.plan
        entries = [r["entry"] for r in sorted(records, key=lambda r: r["index"]) if r["entry"] is not None]
        quarantine = [q for r in records for q in r["quarantine"]]
        for c in header["changed"]:
            quarantine.append(
                quarantine_entry(
                    key=os.path.basename(c["url"]).split(".")[0].replace(" ", "_") or "file",
                    source=c["url"],
                    stage="changed",
                    reason=f"changed after it was converted in generation {c['converted_in']} (size "
                    f"{c['was']['size']} -> {c['size']}, crc32c {c['was']['crc32c']} -> {c['crc32c']}); not "
                    "converted again: publish changed data under a new name",
                )
            )
        seen = sum(r["seen"] for r in records) + len(header["changed"])
        written = sum(e["num_samples"] for e in entries)
        if seen != len(pointers) + len(header["changed"]) or seen != written + len(quarantine):
            raise RuntimeError(
                f"{plan.split_url}/{folder}: counts do not add up: {len(pointers)} inputs listed, "
                f"{written} written + {len(quarantine)} quarantined; not published"
            )
        # a changed file is reported, not bad input of this increment: it does not count against --max-bad-fraction
        bad = [q for q in quarantine if q["stage"] not in (*plan.benign_stages, "changed")]
        report.files, report.inputs, report.changed = len(header["files"]), seen, len(header["changed"])
        if seen and len(bad) > plan.max_bad_fraction * seen:
            return self._reject(folder, header, quarantine, bad, seen, report)
        folder_url = storage.join(plan.split_url, folder)
        read = {u: c for r in records for u, c in r.get("crc32c", {}).items()}
        unread = {u for r in records for u in r.get("unread", ())}
        for f in header["files"]:  # checksums the writers computed; a file no writer read whole is read here
            f["crc32c"] = None if f["url"] in unread else f["crc32c"] or read.get(f["url"])
            if f["crc32c"] is None and f["url"] not in unread:
                f["crc32c"] = checksum_or_none(f["url"])
            if f["crc32c"] is None:  # never read: not converted; tried again when it reads (its entry says why)
                f["unread"] = True
        storage.write_bytes(
            storage.join(folder_url, "inputs.jsonl"),
            b"".join(json.dumps(f, sort_keys=True).encode() + b"\n" for f in header["files"] + header["changed"]),
        )
        template = {
            "dataset": plan.dataset,
            "split": plan.split,
            "fields": plan.fields,
            "classes": plan.classes,
            "params": plan.params,
            "source": dict(plan.source),
            **plan.extra,
        }
        with split_lock(plan.split_url, f"watcher of {plan.split_url}"):
            m = publish_generation(
                plan.split_url,
                folder=folder,
                kind="increment",
                shards=entries,
                quarantine=quarantine,
                inputs_seen=seen,
                template=template,
                extra={"input_files": len(header["files"]), "newest_input_at": header["arrivals"][1]},
            )
        storage.remove(self._intent_url(folder))
        now = m["generations"][-1]["published_at"]
        report.generation, report.samples, report.shards = m["generation"], written, len(entries)
        report.quarantined = len(quarantine)
        report.latency, report.waited = now - header["arrivals"][1], now - header["arrivals"][0]
        return report

    def _reject(self, folder, header, quarantine, bad, seen, report) -> IncrementReport:
        """Too much bad input: the shards are removed, nothing is published, and the files are recorded as
        rejected (in `_watch/rejected-<folder>.json`, with every quarantine entry) so that they are not tried
        again until they change."""
        name = f"rejected-{folder}.json"
        record = {"files": header["files"] + header["changed"], "quarantine": quarantine, "inputs_seen": seen}
        storage.write_bytes(storage.join(self.plan.split_url, WATCH_DIR, name), json.dumps(record).encode())
        storage.remove_tree(storage.join(self.plan.split_url, folder))
        storage.remove(self._intent_url(folder))
        reasons: dict[str, int] = {}
        for q in bad:
            reasons[q["reason"]] = reasons.get(q["reason"], 0) + 1
        top = "; ".join(f"{n}x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
        report.rejected = (
            f"{len(bad)} of {seen} inputs quarantined, more than --max-bad-fraction "
            f"{self.plan.max_bad_fraction} allows ({top}); its files are listed in "
            f"{storage.join(self.plan.split_url, WATCH_DIR, name)} and wait until they change"
        )
        report.quarantined = len(quarantine)
        return report
