"""The HTML of `shards view`: one self-contained file (images and audio inlined as data: URLs, CSS inline, no
script, nothing fetched where it is opened): the split's summary (and its checksum state with --verify), the
sample gallery (`shards/viewcard.py` draws each sample), the quarantine by stage and reason with example inputs
(a thumbnail where the input is an image that decodes) and, on a split that grows, its generations as a
timeline with the latency from each one's newest input to its publication.
"""

from __future__ import annotations

import html
import json
import time

from shards.units import format_size
from shards.view import View, counts
from shards.viewcard import card
from shards.viewdraw import thumbnail

__all__ = ["render"]

CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.sample{width:272px;border:1px solid #ddd;padding:6px}
.pic{position:relative;display:inline-block;line-height:0}.pic img{max-width:256px;max-height:256px}
.pic svg{position:absolute;left:0;top:0;width:100%;height:100%}audio{width:256px}.spectrogram{width:256px;height:128px}
.pixelated{image-rendering:pixelated;width:128px}.heat{display:inline-block;margin-right:4px}.heat img{width:124px;display:block}.key{font-family:monospace;font-size:12px;color:#555}
.label{font-weight:600}.error{color:#b00020;white-space:pre-wrap}.caption{font-style:italic}.note{font-size:12px;color:#555}
.swatch{display:inline-block;width:10px;height:10px;margin-right:3px}pre{white-space:pre-wrap;word-break:break-all}
.fields pre{max-height:24em;overflow:auto;margin:0}.quarantine-thumb{max-width:96px;max-height:96px;display:block}
.ok{color:#1b7a1b;font-weight:600}
"""


def _summary(view: View) -> str:
    m = view.manifest
    shards = m["shards"]
    nbytes = int(counts(shards, "num_bytes").sum())
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
    if view.verified is None:
        checked = "not checked here (--verify reads the whole split and checks every checksum)"
    elif not view.verified:
        checked = "verified: every shard, index and member checksum matches the manifest"
    else:
        checked = f"{len(view.verified)} problem(s) found by verify: " + "; ".join(view.verified[:20])
    rows.append(("checksums", checked))
    fields = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in m["fields"].items()
    )
    classes = m.get("classes") or []
    head = "".join(
        f'<tr><th>{html.escape(k)}</th><td id="{k.replace(" / ", "-").replace(" ", "-")}">{html.escape(v)}</td></tr>'
        for k, v in rows
    )
    ids = m.get("category_ids")  # COCO: the category id of each contiguous label
    if isinstance(ids, list) and len(ids) == len(classes):
        classes = [f"{c} ({i})" for c, i in zip(classes, ids, strict=True)]
    names = ", ".join(classes[:60]) + (f", ... ({len(classes)} in all)" if len(classes) > 60 else "")
    return f'<table id="summary">{head}</table><h2>Fields</h2><table id="fields">{fields}</table>' + (
        f'<h2>Classes</h2><p id="classes">{html.escape(names)}</p>' if classes else ""
    )


def _example(example: dict) -> str:
    """One quarantined input: its source as recorded, and its thumbnail where its bytes are an image that decodes
    (a truncated one as far as it does)."""
    picture = ""
    if example.get("bytes"):
        try:
            picture = f'<img class="quarantine-thumb" alt="" src="{thumbnail(example["bytes"], 96, partial=True)}">'
        except Exception:  # not an image, or one that does not decode: its source and reason say why
            picture = ""
    return f'<div class="example">{picture}{html.escape(example["source"])}</div>'


def _quarantine(view: View) -> str:
    if not view.quarantine:
        return "<p>nothing quarantined</p>"
    rows = "".join(
        f'<tr class="quarantine-group"><td class="count">{q["count"]}</td><td>{html.escape(q["stage"])}</td><td>'
        f"{html.escape(q['reason'])}</td><td>{''.join(_example(e) for e in q['examples'])}</td></tr>"
        for q in view.quarantine
    )
    return f'<table id="quarantine"><tr><th>count</th><th>stage</th><th>reason</th><th>examples</th></tr>{rows}</table>'


def _latency(g: dict) -> str:
    """From the generation's newest input (its arrival: modification time, or when the watcher first saw it) to
    its publication; a compaction's inputs are generations, so it has none."""
    if not isinstance(g.get("newest_input_at"), int | float):
        return ""
    return f"{g['published_at'] - g['newest_input_at']:.1f} s"


def _generations(view: View) -> str:
    gens = view.manifest.get("generations")
    if not gens:
        return ""
    rows = "".join(
        f'<tr class="generation"><td>{g["generation"]}</td><td>{html.escape(g.get("kind", ""))}</td><td>'
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(g['published_at']))} UTC</td><td>{g['inputs_seen']}</td>"
        f"<td>{g['num_samples']}</td><td>{g['quarantine_count']}</td><td>{g['shards']}</td>"
        f"<td>{html.escape(', '.join(map(str, g.get('replaces', []))))}</td>"
        f'<td class="latency">{_latency(g)}</td></tr>'
        for g in gens
    )
    retired = "".join(
        f"<li>generation {r['generation']} ({html.escape(r['folder'])}), compacted into {r['by']}"
        f"{' and collected' if r.get('collected') else ''}</li>"
        for r in view.manifest.get("retired", [])
    )
    return (
        '<h2>Generations</h2><table id="generations"><tr><th>generation</th><th>kind</th><th>published</th>'
        "<th>inputs</th><th>samples</th><th>quarantined</th><th>shards</th><th>replaces</th>"
        "<th>newest input to published</th></tr>"
        f"{rows}</table>" + (f"<ul>{retired}</ul>" if retired else "")
    )


def render(view: View) -> str:
    m = view.manifest
    title = f"{m['dataset']} / {m['split']} - {view.url}"
    cards = "".join(card(s, m) for s in view.samples)
    problems = "".join(f'<p class="error">{html.escape(p)}</p>' for p in view.problems)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        f"media-src data:; style-src 'unsafe-inline'\"><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{problems}{_summary(view)}"
        f'<h2>Samples ({len(view.samples)})</h2><div class="gallery" id="gallery">{cards}</div>'
        f"<h2>Quarantine</h2>{_quarantine(view)}{_generations(view)}</body></html>"
    )
