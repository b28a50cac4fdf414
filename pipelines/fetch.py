"""`python -m pipelines fetch NAME --to DIR`: download a dataset as its publisher serves it, into the layout its
conversion job reads, resuming interrupted files and checking the publisher's checksums where it publishes them.

    python -m pipelines fetch mnist --to raw/mnist && python -m pipelines mnist --input raw/mnist --output out

A file is downloaded to `<name>.part` and renamed when complete; a run that was interrupted asks for the rest
(an HTTP Range request) instead of starting again. A finished file is checked against the publisher's md5 or sha1
(MNIST and CIFAR-10 as torchvision records them, FMA's sha1s from its README, YouTube-8M's per-file md5s from its
download plans); where the publisher gives none (COCO, Open Images), its size is checked against the server's
and its sha256 recorded in `<DIR>/SHA256SUMS`, so that a later copy can be checked. `--base-url` serves every
file from another host with the same paths (a mirror; the tests' loopback server). ImageNet needs an account:
`fetch imagenet` says where to register and which files to place where.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from pipelines.common.downloads import Dataset, FetchError, Remote, rebased

__all__ = ["FetchError", "Remote", "catalogue", "fetch", "main", "where_to_get"]


def catalogue() -> dict[str, Dataset]:
    """{dataset: where it is published and its parts}: the registered jobs that declare a `download`."""
    from pipelines import _jobs

    return {name: job.download for name, job in sorted(_jobs().items()) if job.download is not None}


def __getattr__(attr: str):
    if attr == "CATALOGUE":  # the catalogue as the registry has it when asked
        return catalogue()
    raise AttributeError(f"module 'pipelines.fetch' has no attribute {attr!r}")


def where_to_get(name: str, d: Dataset | None = None) -> str:
    """The lines a job's --help ends with: where the data is published, what to download, how."""
    d = d or catalogue()[name]
    how = f"python -m pipelines fetch {name} --to DIR" if d.parts else d.note
    return f"getting the data: {d.page}\n  {how}\n  then --input DIR holds {d.layout}"


def _digest_of(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: str, timeout: float) -> None:
    """`url` into `dest`, resuming `dest.part`; the size is checked against the server's."""
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if have and r.status != 206:  # the server ignored the range: start again
                have = 0
            total = (
                r.headers.get("Content-Range", "").rsplit("/", 1)[-1]
                if r.status == 206
                else r.headers.get("Content-Length")
            )
            with open(part, "ab" if have else "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # asked past the end: the part is whole
            os.replace(part, dest)
            return
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(
            f"{url}: {getattr(e, 'reason', e)}; run again to resume from {os.path.getsize(part) if os.path.exists(part) else 0} bytes"
        ) from None
    got = os.path.getsize(part)
    if total and total.isdigit() and got != int(total):
        raise FetchError(f"{url}: the connection ended after {got} of {total} bytes; run again to resume")
    os.replace(part, dest)


def _one(remote: Remote, to: str, base: str | None, timeout: float, say) -> None:
    dest = os.path.join(to, remote.name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    algorithm, _, want = (remote.digest or "sha256:").partition(":")
    if os.path.exists(dest) and (not want or _digest_of(dest, algorithm) == want):
        say(f"have {remote.name}")
        return
    url = rebased(remote.url, base)
    say(f"fetching {url} -> {dest}")
    _download(url, dest, timeout)
    got = _digest_of(dest, algorithm)
    if want and got != want:
        os.replace(dest, dest + ".bad")
        raise FetchError(f"{dest}: {algorithm} {got} is not the publisher's {want}; kept as {dest}.bad, run again")
    if not want:
        with open(os.path.join(to, "SHA256SUMS"), "a") as f:
            f.write(f"{got}  {remote.name}\n")


def fetch(
    name: str,
    to: str,
    *,
    parts: list[str] | None = None,
    base_url: str | None = None,
    mirror: str = "us",
    timeout: float = 60.0,
    say=print,
) -> list[str]:
    """Download the parts of a dataset into `to`; returns the files there. FetchError on the first failure."""
    d = catalogue()[name]
    files: list[Remote] = []
    for part in parts or d.default:
        planned = d.planned(part, to, base_url, mirror, timeout) if d.planned and part not in d.parts else None
        if planned is not None:
            files += planned
        elif part in d.parts:
            files += d.parts[part]
        else:
            raise FetchError(
                f"{name} has no part {part!r}; parts: {', '.join(d.parts) or 'none'}"
                + (f", or {d.planned_hint}" if d.planned_hint else "")
            )
    os.makedirs(to, exist_ok=True)
    for remote in files:
        _one(remote, to, base_url, timeout, say)
    return [r.name for r in files]


def main(argv: list[str] | None = None) -> int:
    from shards.cli import OneLineParser

    p = OneLineParser(prog="python -m pipelines fetch", description=__doc__.split("\n\n")[0].replace("\n", " "))
    known = catalogue()
    p.add_argument("name", choices=sorted(known))
    p.add_argument("--to", required=True, help="folder to download into (then the job's --input)")
    p.add_argument("--parts", help="comma-separated parts (see --list; default: the dataset's smallest useful set)")
    p.add_argument("--list", action="store_true", help="say what would be fetched, and from where, and stop")
    p.add_argument("--base-url", help="fetch the same paths from this host instead (a mirror)")
    p.add_argument("--mirror", choices=["us", "eu", "asia"], default="us", help="YouTube-8M's mirror (default us)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    d = known[args.name]
    if args.list or not d.parts:
        print(f"{args.name}: {d.page}\n  layout under --to: {d.layout}")
        if d.note:
            print(f"  {d.note}")
        for part, remotes in d.parts.items():
            print(
                f"  part {part}{' (default)' if part in d.default else ''}: "
                + ", ".join(f"{r.url}" + (f" [{r.digest}]" if r.digest else "") for r in remotes)
            )
        if not d.parts:
            return 2
        return 0
    parts = [x for x in args.parts.split(",") if x] if args.parts else None
    try:
        got = fetch(args.name, args.to, parts=parts, base_url=args.base_url, mirror=args.mirror)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.name}: {len(got)} files in {args.to}; convert with: python -m pipelines {args.name} --input "
        f"{args.to} --output OUT"
    )
    return 0
