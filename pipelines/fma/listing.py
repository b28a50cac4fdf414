"""Finding FMA's files (folders or the official zips), listing the audio in Beam workers, reading tracks.csv, and
joining the two by track id: a pointer per track to write, or a pointer carrying why it is quarantined."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterator
from typing import Any

from pipelines.common import errors
from pipelines.common.archives import ArchiveError, check_zip, open_zip, zip_members
from pipelines.common.records import Pointer
from pipelines.fma.metadata import SPLITS, MetadataError, in_subset, parse_genres, parse_tracks, sample_json
from shards import storage

__all__ = ["Layout", "LayoutError", "detect_layout", "join_track", "list_audio", "read_metadata_text", "track_rows"]

_TRACK = re.compile(r"(?:^|/)(\d{3})/(\d{6})\.mp3$")


class LayoutError(errors.LayoutError):
    """The input does not hold fma_metadata/ and fma_<subset>/ (or their zips)."""


@dataclasses.dataclass(frozen=True)
class Unit:
    """One listing unit: a folder of tracks (`fma_small/000`) or a whole zip (`fma_small.zip`)."""

    kind: str  # "dir" | "zip"
    url: str


@dataclasses.dataclass(frozen=True)
class Layout:
    metadata: tuple[str, str | None]  # (url, member): tracks.csv itself, or (zip url, member path)
    genres: tuple[str, str | None]
    units: list[Unit]
    kind: str  # "folders" | "zips" | mixed


def detect_layout(root: str, subset: str) -> Layout:
    """Where tracks.csv, genres.csv and the subset's audio are under `root`."""
    names = {n: storage.join(root, n) for n in storage.listdir(root)}
    meta_dir, meta_zip = names.get("fma_metadata"), names.get("fma_metadata.zip")
    if meta_dir and storage.exists(storage.join(meta_dir, "tracks.csv")):
        tracks, genres = (storage.join(meta_dir, "tracks.csv"), None), (storage.join(meta_dir, "genres.csv"), None)
        meta_kind = "folders"
    elif meta_zip:
        tracks, genres = (meta_zip, "fma_metadata/tracks.csv"), (meta_zip, "fma_metadata/genres.csv")
        meta_kind = "zips"
    else:
        raise LayoutError(
            f"{root}: no fma_metadata/tracks.csv or fma_metadata.zip (FMA's metadata, as published: "
            "https://os.unil.cloud.switch.ch/fma/fma_metadata.zip)"
        )
    audio_dir, audio_zip = names.get(f"fma_{subset}"), names.get(f"fma_{subset}.zip")
    for z in (meta_zip if meta_kind == "zips" else None, None if audio_dir else audio_zip):
        if z:
            try:
                check_zip(z)
            except ArchiveError as e:
                raise LayoutError(str(e)) from None
    if audio_dir:
        subdirs = [n for n, size in storage.list_files(audio_dir) if size is None]
        units = [Unit("dir", storage.join(audio_dir, d)) for d in subdirs]
        if not units:
            raise LayoutError(f"{audio_dir}: no NNN/ folders of tracks (fma_{subset}/000/000002.mp3, ...)")
        audio_kind = "folders"
    elif audio_zip:
        units, audio_kind = [Unit("zip", audio_zip)], "zips"
    else:
        raise LayoutError(f"{root}: no fma_{subset}/ folder or fma_{subset}.zip for --subset {subset}")
    return Layout(tracks, genres, units, meta_kind if meta_kind == audio_kind else f"{meta_kind}+{audio_kind}")


def read_metadata_text(where: tuple[str, str | None]) -> str:
    url, member = where
    if member is None:
        return storage.read_bytes(url).decode("utf-8")
    with storage.open_read(url, block_size=1 << 20) as f, open_zip(f, url) as z:
        try:
            return z.read(member).decode("utf-8")
        except KeyError:
            raise LayoutError(f"{url}: no {member} inside") from None


def read_genres(layout: Layout) -> dict[int, dict[str, Any]]:
    try:
        return parse_genres(read_metadata_text(layout.genres))
    except FileNotFoundError:
        raise LayoutError(f"{layout.genres[0]}: genres.csv is missing") from None


def list_audio(unit: Unit) -> Iterator[tuple[str, tuple[str, Any]]]:
    """(track id, ("audio", (url, offset, length, declared size if deflated else False))) per .mp3 of a unit; ("bad", reason) for an .mp3
    whose name is not FMA's `NNN/NNNNNN.mp3`."""
    if unit.kind == "dir":
        for name, size in storage.list_files(unit.url):
            if size is not None and name.lower().endswith(".mp3"):
                yield from _track(f"{unit.url}/{name}", (storage.join(unit.url, name), 0, size, False))
        return
    with storage.open_read(unit.url, block_size=1 << 16) as f:
        for m in zip_members(f, unit.url, lambda n: n.lower().endswith(".mp3")):
            yield from _track(f"{unit.url}/{m.name}", (unit.url, m.offset, m.length, m.size if m.deflated else False))


def _track(path: str, where: tuple[str, int, int, int | bool]) -> Iterator[tuple[str, tuple[str, Any]]]:
    m = _TRACK.search(path)
    if m is None or m.group(2)[:3] != m.group(1):
        yield path.rsplit("/", 1)[-1], ("bad", (path, "not an FMA track file (fma_<subset>/NNN/NNNNNN.mp3)"))
    else:
        yield m.group(2), ("audio", where)


def track_rows(where: tuple[str, str | None], subset: str) -> Iterator[tuple[str, tuple[str, Any]]]:
    """(track id, ("meta", track)) for every tracks.csv row in `subset`; ("bad", reason) for unreadable rows."""
    text = read_metadata_text(where)
    try:
        for tid, track in parse_tracks(io.StringIO(text, newline="")):
            if isinstance(track, str):
                yield tid, ("bad", (f"{where[0]}", track))
            elif in_subset(track, subset):
                yield tid, ("meta", track)
            else:
                yield tid, ("other-subset", track[("set", "subset")])
    except MetadataError as e:
        raise LayoutError(f"{where[0]}: {e}") from None


@dataclasses.dataclass(frozen=True)
class Labels:
    classes: dict[str, int]  # top-level genre title -> cls
    genre_index: dict[int, int]  # genre id -> index in the manifest's `genres`


def join_track(
    element: tuple[str, list[tuple[str, Any]]], labels: Labels, subset: str, first_split: str
) -> Iterator[tuple[str, Pointer]]:
    """(split, Pointer) for one track id from its audio file(s) and tracks.csv row."""
    tid, records = element
    audio = sorted(r[1] for r in records if r[0] == "audio")
    metas = [r[1] for r in records if r[0] == "meta"]
    other = [r[1] for r in records if r[0] == "other-subset"]
    for path, reason in (r[1] for r in records if r[0] == "bad"):
        yield first_split, Pointer(tid, path, 0, 0, {"error": reason, "stage": "list"})
    if not metas:
        for url, offset, _, _ in audio:
            reason = (
                f"tracks.csv puts track {tid} in subset {other[0]!r}, not in {subset!r}"
                if other
                else f"track {tid} has an audio file but no row in tracks.csv"
            )
            yield first_split, Pointer(tid, url, offset, 0, {"error": reason, "stage": "metadata"})
        return
    track = metas[0]
    split = SPLITS.get(track[("set", "split")], first_split)
    if not audio:
        reason = f"tracks.csv lists track {tid} in subset {subset!r}, but there is no fma_{subset}/{tid[:3]}/{tid}.mp3"
        yield split, Pointer(tid, f"fma_{subset}/{tid[:3]}/{tid}.mp3", 0, 0, {"error": reason, "stage": "missing"})
        return
    for url, offset, _, _ in audio[1:]:
        reason = f"a second file for track {tid} (the first is {audio[0][0]}@{audio[0][1]})"
        yield split, Pointer(tid, url, offset, 0, {"error": reason, "stage": "list"})
    url, offset, length, deflated = audio[0]
    info = sample_json(tid, track)
    top = info.get("genre_top") or ""
    unknown = [g for g in info.get("genres_all", []) if g not in labels.genre_index]
    if (top and top not in labels.classes) or unknown:
        reason = f"genre(s) {unknown or [top]} of track {tid} are not in genres.csv"
        yield split, Pointer(tid, url, offset, 0, {"error": reason, "stage": "labels"})
        return
    meta = {
        "json": info,
        "cls": labels.classes[top] if top else -1,
        "genres": sorted(labels.genre_index[g] for g in info.get("genres_all", [])),
    }
    if deflated is not False:
        meta["inflate"] = deflated  # the member's declared size
    yield split, Pointer(tid, url, offset, length, meta)
