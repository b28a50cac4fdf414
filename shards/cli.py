"""`python -m shards`: pack, ls, inspect, preview, view, verify and compact splits on any store."""

from __future__ import annotations

import argparse
import json
import sys
import time

from shards import storage
from shards.errors import ShardError
from shards.generations import LockedError
from shards.units import counted, format_size, parse_size

__all__ = ["OneLineParser", "main"]


def _cmd_pack(args: argparse.Namespace) -> int:
    from shards.pack import PackConfig, pack_folder

    fields = tuple(f for f in args.fields.split(",") if f) if args.fields else None
    config = PackConfig(
        shard_size=parse_size(args.shard_size),
        seed=args.seed,
        fields=fields,
        dataset=args.dataset,
        split=args.split,
        workers=args.workers,
    )
    t0 = time.perf_counter()
    m = pack_folder(args.dir, args.url, config)
    dt = time.perf_counter() - t0
    nbytes = sum(s["num_bytes"] for s in m["shards"])
    print(
        f"packed {counted(m['num_samples'], 'sample')} into {counted(len(m['shards']), 'shard')} ({format_size(nbytes)}) at {args.url} "
        f"in {dt:.1f}s ({format_size(nbytes / dt)}/s); quarantined {m['quarantine']['count']}"
    )
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from shards.manifest import read_manifest

    m = read_manifest(args.url)
    print(f"{m['dataset']}/{m['split']}: {m['num_samples']} samples, fields {', '.join(m['fields'])}")
    total = 0
    for s in m["shards"]:
        total += s["num_bytes"]
        print(f"  {s['path']:<22} {s['num_samples']:>9} samples {format_size(s['num_bytes']):>10}  {s['sha256'][:12]}")
    classes = m.get("classes")
    print(
        f"{counted(len(m['shards']), 'shard')}, {counted(m['num_samples'], 'sample')}, {format_size(total)}"
        + (f", {len(classes)} classes" if classes else "")
        + f", {m['quarantine']['count']} quarantined"
    )
    for g in m.get("generations", []):  # a split that grows: its live generations, oldest first
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(g["published_at"]))
        what = f"{g['kind']}" + (f" of {g['replaces']}" if g.get("replaces") else "")
        print(
            f"  generation {g['generation']:>5}  {when} UTC  {what:<22} {g['shards']:>5} shards "
            f"{g['num_samples']:>9} samples {g['quarantine_count']:>6} quarantined  {g['folder']}"
        )
    for r in m.get("retired", []):  # replaced by a compaction; the folder stays for readers until collected
        if not r.get("collected"):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["at"]))
            print(
                f"  generation {r['generation']:>5}  retired: compacted into {r['by']} at {when} UTC; its folder "
                f"{r['folder']} stays until the grace period after that ends (then `compact` collects it)"
            )
    if m.get("generations"):
        print(f"generation {m['generation']} (pin one with generation=N; snapshots in generations/)")
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from shards.compact import compact

    r = compact(args.url, shard_size=parse_size(args.shard_size), grace=args.grace)
    if r.generation is None:
        print(f"{r.url}: nothing to compact (no older generation with small shards)")
    else:
        print(
            f"{r.url}: generation {r.generation} replaces generations {r.replaced}: {r.samples} samples in "
            f"{r.shards_after} shards instead of {r.shards_before}"
        )
    if r.collected:
        print(f"removed {len(r.collected)} folder(s) retired more than {args.grace:g}s ago: {', '.join(r.collected)}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from shards.browse import describe_field, find_sample

    shard_url, sample, manifest = find_sample(args.url, args.key)
    key = sample.pop("__key__").decode()
    print(f"key {key} in {shard_url}")
    for ext, data in sample.items():
        print(f"  .{ext:<10} {describe_field(ext, data, manifest.get('classes'))}")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from shards.browse import draw_preview

    n = draw_preview(args.url, args.out, n=args.n)
    print(f"wrote {args.out} with {n} images")
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from shards.view import gather
    from shards.viewpage import render

    keys = [k for k in args.keys.split(",") if k] if args.keys else None
    t0 = time.perf_counter()
    page = render(gather(args.url, n=args.n, seed=args.seed, keys=keys, verify=args.verify)).encode()
    storage.write_bytes(args.out, page)
    print(f"wrote {args.out} ({format_size(len(page))}) in {time.perf_counter() - t0:.1f}s")
    if args.open:
        import webbrowser

        webbrowser.open(f"file://{storage.local_path(args.out)}" if storage.is_local(args.out) else args.out)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from shards.verify import verify_split

    report = verify_split(args.url)
    for p in report.problems:
        print(f"FAIL {p}", file=sys.stderr)
    if not report.ok:
        print(f"{report.url}: {len(report.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"OK {report.url}: {report.num_shards} shards, {report.num_samples} samples, {format_size(report.num_bytes)}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`prog: error: ...`, exit 2) without the usage dump: what every
    command of this project answers bad usage with."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--split` must not silently mean `--splits`
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m shards", description=__doc__)
    p.add_argument(
        "--storage-options",
        metavar="JSON",
        help='fsspec options per protocol, e.g. \'{"s3": {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}}\'',
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("pack", help="pack a folder (same stem = one sample, extension = field) into shards")
    s.add_argument("dir")
    s.add_argument("url", help="split folder to write, e.g. out/train or s3://bucket/data/train")
    s.add_argument("--shard-size", default="256MB")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fields", help="comma-separated required fields (default: those every sample has)")
    s.add_argument("--dataset", help="dataset name for the manifest (default: the folder's name)")
    s.add_argument("--split", help="split name for the manifest (default: the URL's last part)")
    s.add_argument("--workers", type=int, default=2, help="shards written in parallel (default 2)")
    s.set_defaults(func=_cmd_pack)
    s = sub.add_parser("ls", help="list the shards of a split with samples and bytes")
    s.add_argument("url")
    s.set_defaults(func=_cmd_ls)
    s = sub.add_parser("inspect", help="show one sample's fields (the first, or KEY)")
    s.add_argument("url")
    s.add_argument("key", nargs="?")
    s.set_defaults(func=_cmd_inspect)
    s = sub.add_parser("preview", help="draw the first N images of a split with their labels into a PNG")
    s.add_argument("url")
    s.add_argument("--out", required=True)
    s.add_argument("-n", type=_positive, default=16, help="how many images (default 16)")
    s.set_defaults(func=_cmd_preview)
    s = sub.add_parser("view", help="write one self-contained HTML page of a split: samples drawn, quarantine")
    s.add_argument("url")
    s.add_argument("--out", default="view.html", help="the page to write (default view.html)")
    s.add_argument("-n", type=_positive, default=48, help="samples drawn at random across shards (default 48)")
    s.add_argument("--seed", type=int, default=0, help="which random samples (default 0)")
    s.add_argument("--keys", help="comma-separated keys to show instead of a random choice")
    s.add_argument("--verify", action="store_true", help="also check every checksum (reads the whole split)")
    s.add_argument("--open", action="store_true", help="open the page in a browser once written")
    s.set_defaults(func=_cmd_view)
    s = sub.add_parser("compact", help="merge the small shards of older generations into a new generation")
    s.add_argument("url")
    s.add_argument("--shard-size", default="256MB", help="target bytes per shard (default 256MB)")
    s.add_argument(
        "--grace",
        type=float,
        default=24 * 3600,
        help="seconds before replaced folders are removed, so running readers finish (default 86400)",
    )
    s.set_defaults(func=_cmd_compact)
    s = sub.add_parser("verify", help="re-hash shards, check indexes and counts; exit 1 naming what is wrong")
    s.add_argument("url")
    s.set_defaults(func=_cmd_verify)
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Bad usage and bad input end with one line on stderr and exit 2 (argparse's own usage errors too)."""
    args = build_parser().parse_args(argv)
    try:
        options = json.loads(args.storage_options) if args.storage_options else {}
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise ValueError("not an object of objects")
    except ValueError as e:
        print(f'error: --storage-options must be JSON like \'{{"s3": {{"anon": true}}}}\' ({e})', file=sys.stderr)
        return 2
    for protocol, opts in options.items():
        storage.configure(protocol, **opts)
    try:
        return args.func(args)
    except (ShardError, ValueError, KeyError, OSError, LockedError) as e:  # OSError: a URL under a file, no access
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2
