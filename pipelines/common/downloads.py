"""Where a dataset is published and how to download it, as its job declares it (`DatasetJob.download`); what
`python -m pipelines fetch` reads. No network here: the downloading is pipelines/fetch.py's."""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable

__all__ = ["Dataset", "FetchError", "Remote", "files", "rebased"]


class FetchError(RuntimeError):
    """A download that cannot complete: one line naming the URL (or file) and why."""


@dataclasses.dataclass(frozen=True)
class Remote:
    url: str
    name: str  # the path under --to
    digest: str | None = None  # "md5:..." or "sha1:..." as the publisher gives it


@dataclasses.dataclass(frozen=True)
class Dataset:
    page: str
    layout: str  # what `--to` holds afterwards, as the job reads it
    parts: dict[str, list[Remote]]  # part name -> files
    default: tuple[str, ...]
    note: str = ""
    # parts named by pattern rather than listed (YouTube-8M's partitions): (part, to, base_url, mirror, timeout)
    # -> its files, or None when the part is not of that kind; `planned_hint` says what such a part looks like
    planned: Callable[[str, str, str | None, str, float], list[Remote] | None] | None = None
    planned_hint: str = ""


def files(base: str, names: dict[str, str | None], folder: str = "") -> list[Remote]:
    """Remotes under one base URL: {path under base: digest or None}, each saved under `folder` by its name."""
    return [Remote(base + n, f"{folder}{n.rsplit('/', 1)[-1]}", d) for n, d in names.items()]


def rebased(url: str, base: str | None) -> str:
    """`url`'s path on another host (`--base-url`: a mirror, the tests' loopback server)."""
    if not base:
        return url
    return base.rstrip("/") + urllib.parse.urlsplit(url).path
