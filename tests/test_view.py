"""`python -m shards view`: one self-contained page of a split, read as a browser's DOM would be (the page is
parsed; the tests in a real browser are still to come, see README): the sampled samples with their label names,
boxes and masks at the stored coordinates, errors in place, nothing that could be fetched."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from shards.manifest import read_manifest
from shards.quarantine import quarantine_entry
from shards.view import field_value, gather
from tests.splits import make_split, photo_shards


class Dom(HTMLParser):
    """Every start tag as (tag, attributes), and the text inside elements of a class."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag not in ("img", "meta", "br", "rect", "polygon", "line"):
            self._open.append(a.get("class", ""))

    def handle_endtag(self, tag):
        if tag not in ("img", "meta", "br", "rect", "polygon", "line") and self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1]:
            self.text.setdefault(self._open[-1], []).append(data)

    def having(self, cls: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if cls in a.get("class", "").split()]


def _view(url: str, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, Dom | None]:
    r = subprocess.run([sys.executable, "-m", "shards", "view", url, "--out", str(out), *args], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    return r, Dom(out.read_text()) if out.exists() else None


def test_a_page_shows_the_sampled_samples_with_their_labels_and_fetches_nothing(tmp_path):
    make_split(str(tmp_path / "train"), photo_shards("p", [6, 7, 5]))
    r, dom = _view(str(tmp_path / "train"), tmp_path / "page.html", "-n", "8", "--seed", "3")
    assert r.returncode == 0, r.stderr
    cards = dom.having("sample")
    assert len(cards) == 8 and len({c["data-key"] for c in cards}) == 8
    assert [c["data-key"] for c in cards] == [s.key for s in gather(str(tmp_path / "train"), n=8, seed=3).samples]
    labels = dom.text["label"]
    by_key = {k: sample["cls"] for shard in photo_shards("p", [6, 7, 5]) for k, sample in shard}
    assert labels == [["a", "b", "c"][int(by_key[c["data-key"]])] for c in cards]
    sources = [a.get("src", "") for _, a in dom.tags if "src" in a]
    assert len(sources) == 8 and all(s.startswith("data:image/") for s in sources)
    assert not [a for _, a in dom.tags if any(v.startswith(("http", "//")) for v in a.values())]
    csp = next(a["content"] for t, a in dom.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp


def test_keys_pick_the_samples_and_an_unknown_key_says_so_in_place(tmp_path):
    make_split(str(tmp_path / "train"), photo_shards("p", [6, 7]))
    r, dom = _view(str(tmp_path / "train"), tmp_path / "page.html", "--keys", "p1k03,p0k00,nope")
    assert r.returncode == 0, r.stderr
    assert [c["data-key"] for c in dom.having("sample")] == ["p1k03", "p0k00", "nope"]
    assert dom.text["error"] == ["no sample with this key in the split"]


def test_boxes_and_masks_are_drawn_at_the_stored_coordinates(conversions, tmp_path):
    _, out = conversions.get("coco", "folders")
    split = out / "train"
    r, dom = _view(str(split), tmp_path / "page.html", "-n", "48")
    assert r.returncode == 0, r.stderr
    view = gather(str(split), n=48)
    rects = dom.having("box")
    stored = [field_value("boxes", s.fields["boxes"]) for s in view.samples if "boxes" in s.fields]
    assert len(rects) == sum(len(b) for b in stored) > 0
    drawn = np.array([[float(a["x"]), float(a["y"]), float(a["x"]) + float(a["width"]),
                       float(a["y"]) + float(a["height"])] for a in rects])  # fmt: skip
    assert np.allclose(drawn, np.concatenate(stored), atol=1e-4)
    classes = read_manifest(str(split))["classes"]
    assert set(dom.text["box-label"]) <= set(classes)
    assert dom.having("mask"), "COCO's polygons are drawn as masks"


def test_a_missing_shard_is_shown_in_place_and_a_url_that_is_no_split_is_one_line(tmp_path):
    make_split(str(tmp_path / "train"), photo_shards("p", [4, 4]))
    (tmp_path / "train" / "shard-000001.tar").unlink()
    r, dom = _view(str(tmp_path / "train"), tmp_path / "page.html", "-n", "8")
    assert r.returncode == 0, r.stderr
    assert len(dom.having("sample")) == 8 and len(dom.text["error"]) == 4
    assert all("shard-000001.tar" in e for e in dom.text["error"])
    r, dom = _view(str(tmp_path / "nothing"), tmp_path / "other.html")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no manifest" in r.stderr
    assert dom is None


def test_the_quarantine_and_the_generations_of_a_split_that_grows(tmp_path):
    from shards.generations import publish_generation
    from shards.manifest import build_manifest
    from shards.storage import write_bytes
    from tests.splits import write_tar_shard

    split = str(tmp_path / "grow")
    template = build_manifest(dataset="t", split="grow", fields={"jpg": "image/jpeg", "cls": "label"}, shards=[],
                              source={"url": "test", "inputs_seen": 0}, classes=["a", "b", "c"])  # fmt: skip
    jpeg = photo_shards("q", [1])[0][0][1]["jpg"]
    (tmp_path / "raw.bin").write_bytes(b"x" * 10 + jpeg)
    for g in (1, 2):  # the first input is a whole JPEG (a thumbnail); the second its first 100 bytes (none)
        folder = f"inc-{g}"
        write_bytes(f"{split}/{folder}/inputs.jsonl", b"")
        entry = write_tar_shard(f"{split}/{folder}", 0, photo_shards(f"g{g}", [3])[0])
        data = {"url": str(tmp_path / "raw.bin"), "offset": 10, "length": len(jpeg) if g == 1 else 100}
        bad = [quarantine_entry(key=f"bad{g}", source=f"raw/bad{g}.jpg", stage="decode", reason="truncated JPEG",
                                data=data)]  # fmt: skip
        publish_generation(split, folder=folder, kind="increment", shards=[entry], quarantine=bad, inputs_seen=4,
                           template=template, extra={"newest_input_at": time.time() - 7.5})  # fmt: skip
    r, dom = _view(split, tmp_path / "page.html")
    assert r.returncode == 0, r.stderr
    assert len(dom.having("generation")) == 2 and len(dom.having("sample")) == 6
    latencies = [float(t.split()[0]) for t in dom.text["latency"]]
    assert len(latencies) == 2 and all(7.5 <= s < 60 for s in latencies), latencies
    assert len(dom.having("quarantine-group")) == 1  # both generations' entries: one stage and reason
    assert dom.text["count"] == ["2"] and dom.text["example"] == ["raw/bad1.jpg", "raw/bad2.jpg"]
    (thumb,) = dom.having("quarantine-thumb")  # the input that decodes, drawn; the truncated one named only
    assert thumb["src"].startswith("data:image/jpeg;base64,")


def test_quarantined_inputs_that_are_images_get_their_thumbnail(conversions, tmp_path):
    """The ImageNet job's quarantine, drawn from the inputs where the entries say they are: the image with no label
    and the truncated JPEG (as far as it decodes) get a thumbnail, the file that is no image and the empty one are
    named only."""
    _, out = conversions.get("imagenet", "folders")
    for split, drawn in (("train", {"n03042490_9003.JPEG@0"}), ("validation", {"ILSVRC2012_val_00000013.JPEG@0"})):
        r, dom = _view(str(out / split), tmp_path / f"{split}.html")
        assert r.returncode == 0, r.stderr
        page = (tmp_path / f"{split}.html").read_text()
        examples = re.findall(r'<div class="example">(<img class="quarantine-thumb" alt="" src="data:image/jpeg;base64,'
                              r'[A-Za-z0-9+/=]+">)?([^<]*)</div>', page)  # fmt: skip
        assert len(examples) == len(dom.having("example")) == {"train": 3, "validation": 1}[split]
        assert {source.rsplit("/", 1)[1] for thumb, source in examples if thumb} == drawn, examples


def test_a_split_of_many_shards_is_viewed_from_its_shard_table_without_listing_every_entry(tmp_path, monkeypatch):
    """A shard table's split gets the page its list split gets, reading the table's count columns and only the
    sampled entries (never every entry as a dict: at 200,000 shards that costs a second)."""
    from shards.table import ShardTable
    from shards.viewpage import render

    shards = photo_shards("t", [5, 4, 6, 3])
    make_split(str(tmp_path / "listed"), shards)
    monkeypatch.setattr("shards.manifest.TABLE_MIN_SHARDS", 3)
    make_split(str(tmp_path / "tabled"), shards)
    assert isinstance(read_manifest(str(tmp_path / "tabled"))["shards"], ShardTable)
    monkeypatch.setattr(ShardTable, "__iter__", lambda self: pytest.fail("every entry of the table was listed"))
    listed, tabled = (gather(str(tmp_path / name), n=9, seed=5) for name in ("listed", "tabled"))
    assert [(s.key, s.fields) for s in tabled.samples] == [(s.key, s.fields) for s in listed.samples]
    assert len(tabled.samples) == 9 and not [s for s in tabled.samples if s.error]
    page = Dom(render(tabled))
    assert [c["data-key"] for c in page.having("sample")] == [s.key for s in listed.samples]


def test_audio_and_features_are_drawn_with_their_label_names(conversions, tmp_path):
    """FMA: a spectrogram and a WAV excerpt per clip with its genre; YouTube-8M: a heat map per feature with the
    video's label names, as the stored labels and the manifest's classes say."""
    _, fma = conversions.get("fma", "folders")
    r, dom = _view(str(fma / "train"), tmp_path / "fma.html", "-n", "4")
    assert r.returncode == 0, r.stderr
    classes = read_manifest(str(fma / "train"))["classes"]
    audio = [a["src"] for t, a in dom.tags if t == "audio"]
    assert len(audio) == len(dom.having("spectrogram")) == 4 and all(
        s.startswith("data:audio/wav;base64,") for s in audio
    )
    assert dom.text["label"] == [classes[int(a["data-label"])] for a in dom.having("label")]
    _, y8m = conversions.get("youtube8m", "video")
    r, dom = _view(str(y8m / "train"), tmp_path / "y8m.html", "-n", "5")
    assert r.returncode == 0, r.stderr
    view = gather(str(y8m / "train"), n=5)
    classes = read_manifest(str(y8m / "train"))["classes"]
    assert [a["data-field"] for a in dom.having("heatmap")] == ["mean_audio", "mean_rgb"] * 5  # in column order
    assert dom.text["label"] == [", ".join(classes[v] for v in s.fields["labels"]) for s in view.samples]
