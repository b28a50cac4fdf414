"""FMA's metadata as published in `fma_metadata/`: `tracks.csv` (a two-level column header written by pandas, so
three header lines; list columns as Python literals; multi-line quoted text) and `genres.csv` (the genre tree)."""

from __future__ import annotations

import ast
import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "SPLITS",
    "SUBSETS",
    "MetadataError",
    "in_subset",
    "parse_genres",
    "parse_tracks",
    "sample_json",
    "top_level_classes",
]

SUBSETS = ("small", "medium", "large", "full")
# ('set', 'split') value -> output split name
SPLITS = {"training": "train", "validation": "validation", "test": "test"}
# columns every conversion needs; the rest are carried into `json` when present
_REQUIRED = [("set", "subset"), ("set", "split"), ("track", "genre_top"), ("track", "genres_all")]
_LISTS = {("track", "genres"), ("track", "genres_all"), ("track", "tags"), ("album", "tags"), ("artist", "tags")}
# (json name, column) of what a user filters on
_JSON = [
    ("title", ("track", "title")),
    ("artist_id", ("artist", "id")),
    ("artist_name", ("artist", "name")),
    ("album_id", ("album", "id")),
    ("album_title", ("album", "title")),
    ("album_type", ("album", "type")),
    ("genre_top", ("track", "genre_top")),
    ("genres", ("track", "genres")),
    ("genres_all", ("track", "genres_all")),
    ("tags", ("track", "tags")),
    ("license", ("track", "license")),
    ("duration", ("track", "duration")),
    ("bit_rate", ("track", "bit_rate")),
    ("language_code", ("track", "language_code")),
    ("date_created", ("track", "date_created")),
    ("date_recorded", ("track", "date_recorded")),
    ("listens", ("track", "listens")),
    ("favorites", ("track", "favorites")),
    ("interest", ("track", "interest")),
    ("subset", ("set", "subset")),
    ("split", ("set", "split")),
]
_INTS = {"artist_id", "album_id", "duration", "bit_rate", "listens", "favorites", "interest"}


class MetadataError(ValueError):
    """tracks.csv or genres.csv is not in the published layout."""


def parse_genres(text: str) -> dict[int, dict[str, Any]]:
    """genre_id -> {title, parent, top_level} from genres.csv (`genre_id,#tracks,parent,title,top_level`)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    need = {"genre_id", "parent", "title", "top_level"}
    if not rows or not need <= set(rows[0]):
        raise MetadataError(f"genres.csv needs the columns {sorted(need)}; it has {list(rows[0]) if rows else []}")
    try:
        return {
            int(r["genre_id"]): {"title": r["title"], "parent": int(r["parent"]), "top_level": int(r["top_level"])}
            for r in rows
        }
    except ValueError as e:
        raise MetadataError(f"genres.csv: {e}") from None


def top_level_classes(genres: dict[int, dict[str, Any]]) -> list[tuple[int, str]]:
    """(genre_id, title) of the top-level genres (parent 0), by id: `cls` is the index in this list."""
    return sorted((g, v["title"]) for g, v in genres.items() if v["parent"] == 0)


def _header(lines: list[list[str]]) -> list[tuple[str, str]]:
    if len(lines) < 3 or not lines[2] or lines[2][0] != "track_id":
        raise MetadataError(
            "tracks.csv must start with its three header lines (two column levels, then `track_id`), as pandas "
            "writes it and as fma_metadata.zip ships it"
        )
    top, sub = lines[0], lines[1]
    if len(top) != len(sub):
        raise MetadataError("tracks.csv: the two header lines have different lengths")
    return [(a, b) for a, b in zip(top[1:], sub[1:], strict=True)]


def _value(column: tuple[str, str], raw: str) -> Any:
    if column in _LISTS:
        try:
            value = ast.literal_eval(raw) if raw else []
        except (ValueError, SyntaxError):
            raise ValueError(f"{column[0]}.{column[1]} is not a list literal: {raw[:40]!r}") from None
        if not isinstance(value, list):
            raise ValueError(f"{column[0]}.{column[1]} is not a list: {raw[:40]!r}")
        return value
    return raw


def parse_tracks(lines: Iterable[str]) -> Iterator[tuple[str, dict[tuple[str, str], Any] | str]]:
    """(6-digit track id, {(level 0, level 1): value}) per row of tracks.csv, list columns parsed; a row that
    cannot be read gives (id or row number, reason) instead."""
    reader = csv.reader(lines)
    columns = _header([next(reader, []) for _ in range(3)])
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise MetadataError(f"tracks.csv has no column(s) {missing}")
    for row in reader:
        if not row:
            continue
        try:
            tid = f"{int(row[0]):06d}"
        except ValueError:
            yield f"row{reader.line_num}", f"tracks.csv line {reader.line_num}: track_id {row[0][:20]!r}"
            continue
        if len(row) != len(columns) + 1:
            yield tid, f"tracks.csv line {reader.line_num}: {len(row) - 1} values for {len(columns)} columns"
            continue
        try:
            yield tid, {c: _value(c, v) for c, v in zip(columns, row[1:], strict=True)}
        except ValueError as e:
            yield tid, f"tracks.csv line {reader.line_num}: {e}"


def in_subset(track: dict[tuple[str, str], Any], subset: str) -> bool:
    """Whether a track belongs to `subset`: the subsets nest (small in medium in large), and full has every
    track. ('set', 'subset') names the smallest subset holding the track."""
    if subset == "full":
        return True
    have = track[("set", "subset")]
    return have in SUBSETS[: SUBSETS.index(subset) + 1]


def sample_json(tid: str, track: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """The fields a user filters on, typed (ids and counts as ints, genre ids as ints)."""
    out: dict[str, Any] = {"track_id": int(tid)}
    for name, column in _JSON:
        if column not in track:
            continue
        value = track[column]
        if name in _INTS:
            try:
                value = int(float(value)) if value != "" else None
            except ValueError:
                value = None
        elif name in ("genres", "genres_all"):
            value = [int(g) for g in value]
        out[name] = value
    return out
