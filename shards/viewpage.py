"""The HTML of `shards view`: one self-contained file (images and audio inlined as data: URLs, CSS inline, no
script, nothing fetched where it is opened). Each sample's fields are drawn the way a person checks them: images
with their label names; boxes as outlines in their label's colour (crowd boxes dashed) and polygons as translucent
fills, both from the stored normalized coordinates exactly as the loaders read them; keypoints as the COCO
skeleton; captions under the image; audio as a player; arrays that are pictures (MNIST, CIFAR) as pictures; any
other field as its type, shape and a short repr. A sample's `<details>` holds every field in full.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from typing import Any

import numpy as np

from shards.units import format_size
from shards.view import Sample, View, field_value

__all__ = ["render"]

IMAGES = ("jpg", "jpeg", "png", "webp")
AUDIO = {"flac": "audio/flac", "mp3": "audio/mpeg", "wav": "audio/wav", "ogg": "audio/ogg"}
THUMB = 256  # longest side of a gallery picture
SKELETON = (
    (16, 14),
    (14, 12),
    (17, 15),
    (15, 13),
    (12, 13),
    (6, 12),
    (7, 13),
    (6, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (9, 11),
    (2, 3),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
)  # fmt: skip  (COCO's, 1-based)
CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.sample{width:272px;border:1px solid #ddd;padding:6px}
.pic{position:relative;display:inline-block;line-height:0}.pic img{max-width:256px;max-height:256px}
.pic svg{position:absolute;left:0;top:0;width:100%;height:100%}
.pixelated{image-rendering:pixelated;width:128px}.key{font-family:monospace;font-size:12px;color:#555}
.label{font-weight:600}.error{color:#b00020;white-space:pre-wrap}.caption{font-style:italic}
.swatch{display:inline-block;width:10px;height:10px;margin-right:3px}pre{white-space:pre-wrap;word-break:break-all}
"""


def _colour(label: int) -> str:
    return f"hsl({(label * 137.508) % 360:.0f},90%,45%)"


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _thumbnail(data: bytes) -> str:
    """A JPEG of at most THUMB px a side (PNG for images with alpha or palettes), as a data: URL."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        keep = im.mode in ("RGBA", "LA", "P")
        im = im.convert("RGBA" if keep else "RGB")
        im.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        im.save(out, format="PNG" if keep else "JPEG", quality=85)
    return _data_url(out.getvalue(), "image/png" if keep else "image/jpeg")


def _array_picture(value: np.ndarray) -> str | None:
    """An array that is a picture (H x W, or H x W x 1|3|4, uint8) as a PNG data: URL."""
    from PIL import Image

    a = np.asarray(value)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        return None
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    out = io.BytesIO()
    Image.fromarray(a).save(out, format="PNG")
    return _data_url(out.getvalue(), "image/png")


def _npy(data: Any) -> np.ndarray | None:
    try:
        return np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except Exception:
        return None


def _short(ext: str, value: Any) -> str:
    """A field's type, shape and a short repr."""
    if isinstance(value, bytes | bytearray):
        if ext in ("json", "txt", "cls", "id"):
            return bytes(value[:300]).decode("utf-8", "replace") + (" ..." if len(value) > 300 else "")
        array = _npy(value) if ext.endswith("npy") else None
        if array is not None:
            value = array
        else:
            return f"{len(value)} bytes"
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {'x'.join(map(str, value.shape))}: {np.array2string(value.ravel()[:8], precision=3)}"
    text = repr(value)
    return f"{type(value).__name__}: {text[:300]}{' ...' if len(text) > 300 else ''}"


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
                f'<polygon class="mask" data-label="{label}" points="{points}" fill="{_colour(label)}" '
                'fill-opacity="0.45" stroke="none"/>'
            )
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        label = int(labels[i]) if i < len(labels) else 0
        name = classes[label] if classes and 0 <= label < len(classes) else str(label)
        dash = ' stroke-dasharray="4 3"' if i < len(crowd) and crowd[i] else ""
        parts.append(
            f'<rect class="box" data-label="{label}" x="{x0:.5f}" y="{y0:.5f}" width="{x1 - x0:.5f}" '
            f'height="{y1 - y0:.5f}" fill="none" stroke="{_colour(label)}" stroke-width="3" '
            f'vector-effect="non-scaling-stroke"{dash}><title>{html.escape(name)}</title></rect>'
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


def _card(sample: Sample, classes: list[str] | None) -> str:
    out = [f'<div class="sample" data-key="{html.escape(sample.key)}">']
    if sample.error:
        out.append(
            f'<div class="key">{html.escape(sample.key)}</div><div class="error">{html.escape(sample.error)}'
            "</div></div>"
        )
        return "".join(out)
    fields = sample.fields
    image = next((e for e in fields if e.lower() in IMAGES and isinstance(fields[e], bytes | bytearray)), None)
    drawn: list[tuple[int, str]] = []
    if image is not None:
        try:
            svg, drawn = _overlay(fields, classes)
            out.append(
                f'<div class="pic"><img alt="{html.escape(sample.key)}" src="{_thumbnail(fields[image])}">{svg}</div>'
            )
        except Exception as e:
            out.append(f'<div class="error">{image}: does not decode ({html.escape(str(e))})</div>')
    else:
        for ext, value in fields.items():
            array = _npy(value) if ext.endswith("npy") and isinstance(value, bytes | bytearray) else None
            picture = _array_picture(array) if array is not None else None
            if picture:
                out.append(f'<div class="pic"><img class="pixelated" alt="{html.escape(ext)}" src="{picture}"></div>')
                break
    for ext, mime in AUDIO.items():
        if isinstance(fields.get(ext), bytes | bytearray):
            out.append(f'<audio controls preload="none" src="{_data_url(bytes(fields[ext]), mime)}"></audio>')
    out.append(f'<div class="key">{html.escape(sample.key)}</div>')
    if "cls" in fields:
        text = bytes(fields["cls"]).decode("ascii", "replace").strip()
        name = classes[int(text)] if classes and text.isdigit() and int(text) < len(classes) else text
        out.append(f'<div class="label" data-label="{html.escape(text)}">{html.escape(name)}</div>')
    if drawn:
        seen = dict(drawn)
        out.append(
            '<div class="boxes">'
            + " ".join(
                f'<span class="swatch" style="background:{_colour(k)}"></span><span class="box-label">'
                f"{html.escape(v)}</span>"
                for k, v in seen.items()
            )
            + "</div>"
        )
    caption = _caption(fields)
    if caption:
        out.append(f'<div class="caption">{html.escape(caption)}</div>')
    rows = "".join(
        f"<tr><th>{html.escape(e)}</th><td><pre>{html.escape(_short(e, v))}</pre></td></tr>"
        for e, v in fields.items()
        if e != "__key__"
    )
    out.append(f"<details><summary>every field</summary><table>{rows}</table></details></div>")
    return "".join(out)


def _caption(fields: dict[str, Any]) -> str:
    if isinstance(fields.get("txt"), bytes | bytearray):
        return bytes(fields["txt"]).decode("utf-8", "replace")[:300]
    if isinstance(fields.get("json"), bytes | bytearray):
        try:
            captions = json.loads(fields["json"]).get("captions")
        except (ValueError, AttributeError):
            return ""
        if captions:
            return " / ".join(c.get("caption", "") if isinstance(c, dict) else str(c) for c in captions[:2])
    return ""


def _summary(view: View) -> str:
    m = view.manifest
    shards = m["shards"]
    nbytes = sum(int(e["num_bytes"]) for e in shards)
    rows = [
        ("dataset / split", f"{m['dataset']} / {m['split']}"),
        ("samples", f"{m['num_samples']:,}"),
        ("shards", f"{len(shards):,} ({format_size(nbytes)})"),
        ("quarantined", f"{m['quarantine']['count']:,}"),
        ("format version", str(m["version"])),
        ("created by", m.get("created_by", "")),
        ("source", json.dumps(m.get("source", {}))),
        ("params", json.dumps(m.get("params", {}))),
    ]
    fields = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in m["fields"].items()
    )
    classes = m.get("classes") or []
    head = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    names = ", ".join(classes[:60]) + (f", ... ({len(classes)} in all)" if len(classes) > 60 else "")
    return f'<table id="summary">{head}</table><h2>Fields</h2><table id="fields">{fields}</table>' + (
        f'<h2>Classes</h2><p id="classes">{html.escape(names)}</p>' if classes else ""
    )


def _quarantine(view: View) -> str:
    if not view.quarantine:
        return "<p>nothing quarantined</p>"
    rows = "".join(
        f'<tr class="quarantine-group"><td>{q["count"]}</td><td>{html.escape(q["stage"])}</td><td>'
        f"{html.escape(q['reason'])}</td><td>{'<br>'.join(html.escape(e) for e in q['examples'])}</td></tr>"
        for q in view.quarantine
    )
    return f'<table id="quarantine"><tr><th>count</th><th>stage</th><th>reason</th><th>examples</th></tr>{rows}</table>'


def _generations(view: View) -> str:
    gens = view.manifest.get("generations")
    if not gens:
        return ""
    rows = "".join(
        f'<tr class="generation"><td>{g["generation"]}</td><td>{html.escape(g.get("kind", ""))}</td><td>'
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(g['published_at']))} UTC</td><td>{g['inputs_seen']}</td>"
        f"<td>{g['num_samples']}</td><td>{g['quarantine_count']}</td><td>{g['shards']}</td>"
        f"<td>{html.escape(', '.join(map(str, g.get('replaces', []))))}</td></tr>"
        for g in gens
    )
    retired = "".join(
        f"<li>generation {r['generation']} ({html.escape(r['folder'])}), compacted into {r['by']}"
        f"{' and collected' if r.get('collected') else ''}</li>"
        for r in view.manifest.get("retired", [])
    )
    return (
        '<h2>Generations</h2><table id="generations"><tr><th>generation</th><th>kind</th><th>published</th>'
        "<th>inputs</th><th>samples</th><th>quarantined</th><th>shards</th><th>replaces</th></tr>"
        f"{rows}</table>" + (f"<ul>{retired}</ul>" if retired else "")
    )


def render(view: View) -> str:
    m = view.manifest
    classes = m.get("classes")
    title = f"{m['dataset']} / {m['split']} - {view.url}"
    cards = "".join(_card(s, classes) for s in view.samples)
    problems = "".join(f'<p class="error">{html.escape(p)}</p>' for p in view.problems)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        f"media-src data:; style-src 'unsafe-inline'\"><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{problems}{_summary(view)}"
        f'<h2>Samples ({len(view.samples)})</h2><div class="gallery" id="gallery">{cards}</div>'
        f"<h2>Quarantine</h2>{_quarantine(view)}{_generations(view)}</body></html>"
    )
