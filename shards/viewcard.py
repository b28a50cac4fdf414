"""One sample of `shards view`'s gallery, drawn the way a person checks it: the image with its label names; boxes as
outlines in their label's colour (crowd boxes dashed) and polygons as translucent fills, both from the stored
normalized coordinates exactly as the loaders read them; keypoints as the COCO skeleton; captions under the image;
audio as a mel spectrogram and a WAV excerpt to play, with its genre and track; feature vectors and frame features
as heat maps with their label names; arrays that are pictures (MNIST, CIFAR) as pictures; any other field as its
type, shape and a short repr. The card's `<details>` holds every field in full (what `shards inspect` prints, and
more of it).
"""

from __future__ import annotations

import html
import io
import json
from typing import Any

import numpy as np

from shards.browse import describe_field
from shards.view import ANNOTATIONS, Sample, field_value
from shards.viewdraw import EXCERPT_SECONDS, array_picture, audio_views, heat_map, thumbnail

__all__ = ["card", "colour"]

IMAGES = ("jpg", "jpeg", "png", "webp")
AUDIO = ("flac", "wav", "mp3", "ogg")
FULL = 20_000  # characters of one field shown in full, at most
# COCO's person skeleton: pairs of 1-based keypoint numbers
_BONES = "16-14 14-12 17-15 15-13 12-13 6-12 7-13 6-7 6-8 7-9 8-10 9-11 2-3 1-2 1-3 2-4 3-5 4-6 5-7"
SKELETON = [tuple(map(int, bone.split("-"))) for bone in _BONES.split(" ")]


def colour(label: int) -> str:
    return f"hsl({(label * 137.508) % 360:.0f},90%,45%)"


def _e(text: Any) -> str:
    return html.escape(str(text))


def _npy(data: Any) -> np.ndarray | None:
    try:
        return np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except Exception:
        return None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" ... ({len(text):,} characters in all)"


def _short(ext: str, value: Any) -> str:
    """A field's type, shape and a short repr."""
    if isinstance(value, bytes | bytearray):
        if ext in ("json", "txt", "cls", "id"):
            return _cut(bytes(value[:300]).decode("utf-8", "replace"), 299)
        array = _npy(value) if ext.endswith("npy") else None
        if array is None:
            return f"{len(value)} bytes"
        value = array
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {'x'.join(map(str, value.shape))}: {np.array2string(value.ravel()[:8], precision=3)}"
    return f"{type(value).__name__}: {_cut(repr(value), 300)}"


def _full(ext: str, value: Any, classes: list[str] | None, genres: list[str] | None = None) -> str:
    """A field in full (up to FULL characters): JSON indented, annotation arrays row by row, labels with names."""
    if isinstance(value, bytes | bytearray):
        if ext == "json":
            try:
                return _cut(json.dumps(json.loads(value), indent=1, ensure_ascii=False), FULL)
            except ValueError:
                return f"invalid JSON, {len(value)} bytes"
        if ext in ANNOTATIONS:
            array = field_value(ext, value)
            names = genres if ext == "genres" else classes if ext in ("labels", "imagelabels") else None
            if names:
                return ", ".join(f"{v} {names[v]}" if 0 <= v < len(names) else str(v) for v in array.tolist())
            return _cut(np.array2string(array, precision=4, threshold=FULL, max_line_width=100), FULL)
        array = _npy(value) if ext.endswith("npy") else None
        if array is not None:
            return _short(ext, array) + "\n" + _cut(np.array2string(array, threshold=400), FULL)
        return describe_field(ext, bytes(value), classes)
    if ext == "labels" and isinstance(value, list) and classes:
        return ", ".join(f"{v} {classes[v]}" if isinstance(v, int) and 0 <= v < len(classes) else str(v) for v in value)
    return _cut(repr(value), FULL)


def _overlay(fields: dict[str, Any], classes: list[str] | None) -> tuple[str, list[tuple[int, str]]]:
    """SVG (viewBox 0..1, the image's normalized coordinates) of boxes, polygons and keypoints; the labels drawn."""
    boxes = field_value("boxes", fields["boxes"]) if "boxes" in fields else np.zeros((0, 4))
    labels = field_value("labels", fields["labels"]) if "labels" in fields else np.zeros(len(boxes), int)
    crowd = field_value("iscrowd", fields["iscrowd"]) if "iscrowd" in fields else np.zeros(len(boxes), int)
    parts, drawn = [], []
    if "polygons" in fields and "vertices" in fields:
        vertices = field_value("vertices", fields["vertices"])
        for obj, first, end in field_value("polygons", fields["polygons"]).tolist():
            label = int(labels[obj]) if obj < len(labels) else 0
            points = " ".join(f"{x:.5f},{y:.5f}" for x, y in vertices[first:end].tolist())
            parts.append(
                f'<polygon class="mask" data-label="{label}" points="{points}" fill="{colour(label)}" '
                'fill-opacity="0.45" stroke="none"/>'
            )
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        label = int(labels[i]) if i < len(labels) else 0
        name = classes[label] if classes and 0 <= label < len(classes) else str(label)
        dash = ' stroke-dasharray="4 3"' if i < len(crowd) and crowd[i] else ""
        parts.append(
            f'<rect class="box" data-label="{label}" x="{x0:.5f}" y="{y0:.5f}" width="{x1 - x0:.5f}" '
            f'height="{y1 - y0:.5f}" fill="none" stroke="{colour(label)}" stroke-width="3" '
            f'vector-effect="non-scaling-stroke"{dash}><title>{_e(name)}</title></rect>'
        )
        drawn.append((label, name))
    if "keypoints" in fields:
        for person in field_value("keypoints", fields["keypoints"]).reshape(-1, 17, 3):
            for a, b in SKELETON:
                if person[a - 1, 2] > 0 and person[b - 1, 2] > 0:
                    (xa, ya), (xb, yb) = person[a - 1, :2], person[b - 1, :2]
                    parts.append(
                        f'<line class="bone" x1="{xa:.5f}" y1="{ya:.5f}" x2="{xb:.5f}" y2="{yb:.5f}" '
                        'stroke="#00e5ff" stroke-width="2" vector-effect="non-scaling-stroke"/>'
                    )
    svg = ('<svg viewBox="0 0 1 1" preserveAspectRatio="none">' + "".join(parts) + "</svg>") if parts else ""
    return svg, drawn


def _picture(fields: dict[str, Any], key: str, classes: list[str] | None) -> tuple[list[str], list[tuple[int, str]]]:
    """The sample's picture: its image with the overlay, or an array that is a picture."""
    image = next((e for e in fields if e.lower() in IMAGES and isinstance(fields[e], bytes | bytearray)), None)
    if image is not None:
        try:
            svg, drawn = _overlay(fields, classes)
            return [f'<div class="pic"><img alt="{_e(key)}" src="{thumbnail(fields[image])}">{svg}</div>'], drawn
        except Exception as e:
            return [f'<div class="error">{_e(image)}: does not decode ({_e(e)})</div>'], []
    for ext, value in fields.items():
        array = _npy(value) if ext.endswith("npy") and isinstance(value, bytes | bytearray) else None
        picture = array_picture(array) if array is not None else None
        if picture:
            return [f'<div class="pic"><img class="pixelated" alt="{_e(ext)}" src="{picture}"></div>'], []
    return [], []


def _audio(fields: dict[str, Any]) -> list[str]:
    out = []
    for ext in AUDIO:
        if isinstance(fields.get(ext), bytes | bytearray):
            try:
                spectrogram, excerpt, seconds = audio_views(bytes(fields[ext]))
            except Exception as e:
                out.append(f'<div class="error">{ext}: does not decode ({_e(e)})</div>')
                continue
            out.append(
                f'<img class="spectrogram" alt="mel spectrogram of the {ext}" src="{spectrogram}">'
                f'<audio controls preload="metadata" src="{excerpt}"></audio><div class="note">{ext}: '
                f"{seconds:.1f} s; the player holds {min(seconds, EXCERPT_SECONDS):.0f} s from its middle</div>"
            )
            break  # the kept original (FMA's --keep-original mp3) is the same music
    return out


def _heat_maps(fields: dict[str, Any]) -> list[str]:
    """Feature vectors (lists of 16+ floats) and frame features (binary, num_frames rows) as heat maps."""
    out = []
    frames = fields.get("num_frames")
    for name, value in fields.items():
        matrix = None
        if isinstance(value, list) and len(value) >= 16 and all(isinstance(v, float) for v in value[:16]):
            matrix = np.asarray(value, np.float32)
        elif isinstance(value, bytes) and isinstance(frames, int) and frames > 0 and len(value) % frames == 0:
            matrix = np.frombuffer(value, np.uint8).reshape(frames, -1).astype(np.float32)
        if matrix is not None and matrix.size:
            shape = "x".join(map(str, matrix.shape))
            out.append(
                f'<div class="heat"><img class="heatmap pixelated" data-field="{_e(name)}" alt="{_e(name)}" '
                f'src="{heat_map(matrix)}"><span class="note">{_e(name)} ({shape})</span></div>'
            )
    return out


def _labels(fields: dict[str, Any], classes: list[str] | None) -> list[str]:
    if "cls" in fields:
        text = bytes(fields["cls"]).decode("ascii", "replace").strip()
        name = classes[int(text)] if classes and text.isdigit() and int(text) < len(classes) else text
        return [f'<div class="label" data-label="{_e(text)}">{_e(name)}</div>']
    value = fields.get("labels")
    if isinstance(value, list):  # an Arrow row's labels (YouTube-8M)
        names = [classes[v] if classes and isinstance(v, int) and 0 <= v < len(classes) else str(v) for v in value]
        return [
            f'<div class="label" data-label="{_e(",".join(map(str, value)))}">{_e(", ".join(names)) or "no labels"}'
            "</div>"
        ]
    return []


def _caption(fields: dict[str, Any]) -> str:
    if isinstance(fields.get("txt"), bytes | bytearray):
        return bytes(fields["txt"]).decode("utf-8", "replace")[:300]
    if isinstance(fields.get("json"), bytes | bytearray):
        try:
            info = json.loads(fields["json"])
        except ValueError:
            return ""
        if not isinstance(info, dict):
            return ""
        if info.get("captions"):
            return " / ".join(c.get("caption", "") if isinstance(c, dict) else str(c) for c in info["captions"][:2])
        if info.get("title") or info.get("artist_name"):  # a track (FMA)
            genre = f" ({info['genre_top']})" if info.get("genre_top") else ""
            return f"{info.get('artist_name', '')} - {info.get('title', '')}{genre}"
    return ""


def card(sample: Sample, manifest: dict[str, Any]) -> str:
    """The sample's gallery entry; `manifest` names its labels (`classes`, and FMA's `genres`)."""
    classes = manifest.get("classes")
    genres = [str(g.get("title", g.get("id"))) if isinstance(g, dict) else str(g) for g in manifest.get("genres") or []]
    out = [f'<div class="sample" data-key="{_e(sample.key)}">']
    if sample.error:
        out.append(f'<div class="key">{_e(sample.key)}</div><div class="error">{_e(sample.error)}</div></div>')
        return "".join(out)
    fields = sample.fields
    if sample.warning:
        out.append(f'<div class="error warning">{_e(sample.warning)}</div>')
    pictures, drawn = _picture(fields, sample.key, classes)
    out += pictures + _audio(fields) + _heat_maps(fields)
    out.append(f'<div class="key">{_e(sample.key)}</div>')
    out += _labels(fields, classes)
    if drawn:
        out.append(
            '<div class="boxes">'
            + " ".join(
                f'<span class="swatch" style="background:{colour(k)}"></span><span class="box-label">{_e(v)}</span>'
                for k, v in dict(drawn).items()
            )
            + "</div>"
        )
    caption = _caption(fields)
    if caption:
        out.append(f'<div class="caption">{_e(caption)}</div>')
    rows = "".join(
        f"<tr><th>{_e(e)}</th><td><pre>{_e(_full(e, v, classes, genres))}</pre></td></tr>"
        for e, v in fields.items()
        if e != "__key__"
    )
    out.append(f'<details><summary>every field</summary><table class="fields">{rows}</table></details></div>')
    return "".join(out)
