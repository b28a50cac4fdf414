"""Open Images CSV rows as plain records (no Beam): boxes, image-level labels, image metadata; and box rotation."""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from pipelines.openimages.layout import LayoutError

__all__ = ["FLAGS", "parse_csv", "rotate_boxes"]

FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
# the columns each CSV kind needs (others are kept in `json` where useful, or ignored)
BOX_REQUIRED = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
LABEL_REQUIRED = ("ImageID", "LabelName", "Confidence")
HEADER_FIXES = {"Condidence": "Confidence"}  # TFDS's V4 label files


def _float(v: str, what: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"{what} is not a number: {v!r}") from None


def parse_csv(
    kind: str, text: Iterable[str], file: str, known: set[str] | None, *, lines: bool = False
) -> Iterator[tuple[Any, ...]]:
    """(ImageID, tag, payload) per row: tag "box" / "label" / "machine" / "meta" with a dict, or "bad" with the
    reason, which names the file and line. `known` is the set of MIDs the input describes (None: any). With
    `lines`, each tuple ends with the row's `file:line` too."""
    for out in _parse_csv(kind, text, file, known):
        yield out if lines else out[:3]


def _parse_csv(kind: str, text: Iterable[str], file: str, known: set[str] | None) -> Iterator[tuple[Any, ...]]:
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    header = [HEADER_FIXES.get(h.strip(), h.strip()) for h in header]
    need = {"boxes": BOX_REQUIRED, "labels": LABEL_REQUIRED, "machine": LABEL_REQUIRED, "meta": ("ImageID",)}[kind]
    lacking = [c for c in need if c not in header]
    if lacking:
        raise LayoutError(f"{file}: header {header} lacks {lacking}")
    width = len(header)
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        image_id = row[0].strip()
        where = f"{posixpath.basename(file)}:{line}"
        if len(row) != width:
            if kind == "meta" and len(row) >= 2:
                # ImageID and Subset lead, Rotation ends the row: those stay unambiguous; the free-text middle
                # (author, title, URLs) does not, so it is dropped and the row is marked
                rec = {"ImageID": image_id, "Subset": row[1].strip(), "Rotation": row[-1].strip()}
                rec["malformed"] = f"{where}: {len(row)} fields, expected {width}; only ImageID, Subset, Rotation read"
                yield image_id, "meta", rec, where
            else:
                yield image_id, "bad", f"{where}: {len(row)} fields, expected {width} ({','.join(header)})", where
            continue
        rec = dict(zip(header, (c.strip() for c in row), strict=True))
        if kind == "meta":
            yield image_id, "meta", rec, where
            continue
        try:
            mid = rec["LabelName"]
            if known is not None and mid not in known:
                raise ValueError(f"unknown class {mid!r}")
            if kind == "boxes":
                box = {k: _float(rec[k], k) for k in ("XMin", "XMax", "YMin", "YMax")}
                if not all(0.0 <= v <= 1.0 for v in box.values()):
                    raise ValueError(f"coordinates outside [0, 1]: {box}")
                if box["XMin"] > box["XMax"] or box["YMin"] > box["YMax"]:
                    raise ValueError(f"min > max: {box}")
                box["mid"] = mid
                box["flags"] = {f: int(rec[f]) for f in FLAGS if rec.get(f, "") not in ("", None)}
                box["source"] = rec.get("Source")
                box["confidence"] = _float(rec.get("Confidence") or "1", "Confidence")
                yield image_id, "box", box, where
            else:
                conf = _float(rec["Confidence"], "Confidence")
                yield (
                    image_id,
                    "label" if kind == "labels" else "machine",
                    {
                        "mid": mid,
                        "source": rec.get("Source"),
                        "confidence": conf,
                    },
                    where,
                )
        except ValueError as e:
            yield image_id, "bad", f"{where}: {e}", where


def rotate_boxes(boxes: np.ndarray, rotation: int) -> np.ndarray:
    """Normalized [xmin, ymin, xmax, ymax] boxes after rotating their image `rotation` degrees counter-clockwise."""
    x0, y0, x1, y1 = boxes.T if len(boxes) else (np.zeros(0),) * 4
    if rotation == 90:
        out = (y0, 1 - x1, y1, 1 - x0)
    elif rotation == 180:
        out = (1 - x1, 1 - y1, 1 - x0, 1 - y0)
    elif rotation == 270:
        out = (1 - y1, x0, 1 - y0, x1)
    else:
        return boxes.astype(np.float32)
    return np.stack(out, axis=1).astype(np.float32) if len(boxes) else boxes.astype(np.float32)
