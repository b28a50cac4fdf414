"""`shards view`'s pages in a real browser (headless Chromium, `tests/browser.py`): the boxes and masks in the
screenshot have their labels' colours where the stored coordinates put them, audio decodes, the page fetches
nothing, and a page of each dataset's split (and of the own-data example and a growing split) opens without a
console error."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from shards.manifest import read_manifest
from shards.view import gather
from tests.browser import CHROMIUM, chromium
from tests.splits import make_split, photo_shards

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (`.ci/run` installs Debian's chromium; apt-get install chromium)",
)

PAGES = {  # one split of each dataset: (dataset, layout of its fake raw data, split)
    "cifar10": ("cifar10", "python-folder", "train"),
    "coco": ("coco", "folders", "train"),
    "custom": ("custom", "folder", "train"),
    "fma": ("fma", "folders", "train"),
    "imagenet": ("imagenet", "folders", "train"),
    "mnist": ("mnist", "gz", "train"),
    "openimages": ("openimages", "generated", "train"),
    "youtube8m": ("youtube8m", "video", "train"),
}


@pytest.fixture(scope="module")
def browser():
    with chromium() as visit:
        yield visit


def _page(split: Path, out: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "shards", "view", str(split), "--out", str(out), *args],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return f"file://{out}"


def _split(conversions, name: str) -> Path:
    dataset, layout, split = PAGES[name]
    r, out = conversions.get(dataset, layout)
    assert r.returncode == 0, r.stderr[-2000:]
    return out / split


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(float(v)) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])


def _near(a, b, tol: int) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=False))


def _without(visit, selector: str):
    """A screenshot with the elements `selector` names hidden."""
    from PIL import Image

    visit.evaluate(f"document.querySelectorAll('{selector}').forEach(e => e.style.display = 'none')")
    visit.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return Image.open(io.BytesIO(visit.screenshot())).convert("RGB")


BOXES = """[...document.querySelectorAll('rect.box')].map(r => { const b = r.getBoundingClientRect();
  return {x: b.x + scrollX, y: b.y + scrollY, w: b.width, h: b.height, stroke: getComputedStyle(r).stroke,
          label: +r.dataset.label, crowd: r.hasAttribute('stroke-dasharray')}; })"""
MASKS = """[...document.querySelectorAll('polygon.mask')].flatMap(p => {
  const box = p.getBBox(), svg = p.ownerSVGElement.getBoundingClientRect();
  for (const [fx, fy] of [[.5, .5], [.3, .5], [.7, .5], [.5, .3], [.5, .7]]) {
    const x = box.x + fx * box.width, y = box.y + fy * box.height;
    if (p.isPointInFill(new DOMPoint(x, y)))
      return [{x: svg.x + scrollX + x * svg.width, y: svg.y + scrollY + y * svg.height,
               fill: getComputedStyle(p).fill, label: +p.dataset.label,
               w: box.width * svg.width, h: box.height * svg.height}];
  }
  return []; })"""


def _object_colour(name: str, split: Path):
    """The solid colour the generated split painted each label's objects in (tests/raw/coco.py, openimages.py)."""
    if name == "coco":
        from tests.raw.coco import COLOURS

        ids = read_manifest(str(split))["category_ids"]
        return lambda label: COLOURS[ids[label]]
    from tests.raw.openimages import RED

    return lambda label: RED


@pytest.mark.parametrize("name", ["coco", "openimages"])
def test_boxes_and_masks_are_drawn_in_their_labels_colours_on_the_solid_colour_objects(
    name, conversions, browser, tmp_path
):
    """The generated splits paint every object in a solid colour (Open Images' boxes after the images' rotation):
    with the drawing hidden, the picture inside each box and mask is its object's colour, so a box or mask the
    conversion misplaced would show here; with it, the outlines have their label's colour and a mask is that
    colour at 45% over the object."""
    from PIL import Image

    split = _split(conversions, name)
    painted = _object_colour(name, split)
    visit = browser(_page(split, tmp_path / "page.html", "-n", "12"), width=1400, height=900)
    boxes = visit.evaluate(BOXES)
    shot = Image.open(io.BytesIO(visit.screenshot())).convert("RGB")
    masks = visit.evaluate(MASKS)
    checked = 0
    for b in boxes:
        if b["w"] < 8 or b["h"] < 8:
            continue
        colour = _rgb(b["stroke"])  # along the top edge (a crowd box's is dashed) and the left one
        top = [(round(b["x"] + f * b["w"]), round(b["y"]) + dy) for f in (0.3, 0.4, 0.5, 0.6) for dy in (-1, 0, 1)]
        left = [(round(b["x"]) + dx, round(b["y"] + f * b["h"])) for f in (0.3, 0.4, 0.5, 0.6) for dx in (-1, 0, 1)]
        for edge in (top, left):
            assert any(_near(shot.getpixel(p), colour, 40) for p in edge), (b, [shot.getpixel(p) for p in edge])
        checked += 1
    assert checked >= 3, f"only {checked} boxes large enough to check"
    if name == "coco":  # a mask covers its object, and is its label's colour at 45% over it, pixel by pixel
        assert masks, "COCO's polygons are drawn"
        shot, bare = (_without(visit, hide) for hide in ("rect.box, line.bone", "rect.box, line.bone, polygon.mask"))
        for m in masks:
            at = (round(m["x"]), round(m["y"]))
            fill, under = _rgb(m["fill"]), bare.getpixel(at)
            if m["w"] >= 12 and m["h"] >= 12:  # not one of tests/raw/coco.py's few tiny unpainted awkward rows
                assert _near(under, painted(m["label"]), 45), (m, under)
            expected = tuple(0.45 * f + 0.55 * u for f, u in zip(fill, under, strict=True))
            assert _near(shot.getpixel(at), expected, 12), (m, shot.getpixel(at), expected)
    bare = _without(visit, ".pic svg")
    objects = 0
    for b in boxes:
        if b["w"] < 12 or b["h"] < 12 or b["crowd"]:  # the tiny awkward rows and a crowd region are not painted
            continue
        inside = [
            (round(b["x"] + fx * b["w"]), round(b["y"] + fy * b["h"]))
            for fx in (0.4, 0.5, 0.6)
            for fy in (0.4, 0.5, 0.6)
        ]
        pixels = [bare.getpixel(p) for p in inside]
        assert all(_near(p, painted(b["label"]), 45) for p in pixels), (b, pixels)
        objects += 1
    assert objects >= 3, f"only {objects} objects large enough to check"
    assert not [u for u in visit.requests if not u.startswith(("file://", "data:"))], visit.requests


def test_an_audio_clip_decodes_in_the_page(conversions, browser, tmp_path):
    visit = browser(_page(_split(conversions, "fma"), tmp_path / "page.html", "-n", "2"))
    duration = visit.evaluate("""new Promise(done => { const a = document.querySelector('audio');
        a.onloadedmetadata = () => done(a.duration); a.onerror = () => done(-1); a.preload = 'auto'; a.load(); })""")
    assert duration > 1, duration


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_datasets_page_opens_without_a_console_error_and_fetches_nothing(name, conversions, browser, tmp_path):
    split = _split(conversions, name)
    visit = browser(_page(split, tmp_path / "page.html", "-n", "8"))
    cards = visit.evaluate("[...document.querySelectorAll('.sample')].map(s => [s.dataset.key, "
                           "s.querySelector('.label') ? s.querySelector('.label').textContent : null])")  # fmt: skip
    assert [key for key, _ in cards] == [s.key for s in gather(str(split), n=8).samples]  # one per sampled key
    classes = read_manifest(str(split)).get("classes") or []
    for (key, label), sample in zip(cards, gather(str(split), n=8).samples, strict=True):
        if "cls" in sample.fields:  # the stored label's name
            stored = int(bytes(sample.fields["cls"]))
            assert label == (classes[stored] if 0 <= stored < len(classes) else str(stored)), (key, label, stored)
    assert not [c for c in visit.console if c[0] in ("error", "exception", "assert")], visit.console
    assert not [u for u in visit.requests if not u.startswith(("file://", "data:"))], visit.requests


def _damaged_split(root: Path) -> Path:
    """Five shards of three photos: shard 1's tar is gone, shard 2's index is hostile (a member climbing out of the
    split, sizes past the tar's end), shard 3's images are not pictures (their checksums right), shard 4's bytes
    are changed after the manifest was written."""
    split = root / "train"
    shards = photo_shards("d", [3, 3, 3, 3, 3])
    shards[3] = [(key, {**sample, "jpg": b"not a picture " * 20}) for key, sample in shards[3]]
    make_split(str(split), shards)
    (split / "shard-000001.tar").unlink()
    (split / "shard-000002.idx").write_text(
        "v1.2 3\njpg 512 99999999999 ../../../etc/passwd.jpg cls 2048 1 d2k00.cls\n"
        "jpg 3072 4096 d2k01.jpg cls 0 1 d2k01.cls\njpg 1 1 d2k02.jpg\n"
    )
    tar = bytearray((split / "shard-000004.tar").read_bytes())
    tar[1700:1760] = bytes(b ^ 0x55 for b in tar[1700:1760])  # inside the first sample's jpg
    (split / "shard-000004.tar").write_bytes(tar)
    return split


def test_a_damaged_split_and_a_growing_one_open_with_every_problem_in_place(browser, tmp_path):
    split = _damaged_split(tmp_path / "damaged")
    visit = browser(_page(split, tmp_path / "damaged.html", "-n", "15", "--verify"))
    assert visit.evaluate("document.querySelectorAll('.sample').length") == 15
    errors = visit.evaluate("[...document.querySelectorAll('.sample')].map(s => [s.dataset.key, "
                            "[...s.querySelectorAll('.error')].map(e => e.textContent).join(' ')])")  # fmt: skip
    by_shard = {s: [e for k, e in errors if k.startswith(f"d{s}k") or f"shard-00000{s}" in k] for s in range(5)}
    assert all(not e for e in by_shard[0]) and len(by_shard[0]) == 3, errors
    assert len(by_shard[1]) == 3 and all("shard-000001.tar" in e for e in by_shard[1]), errors
    assert by_shard[2] and all(e and "shard-000002" in e for e in by_shard[2]), errors
    assert len(by_shard[3]) == 3 and all(e.startswith("jpg: does not decode") for e in by_shard[3]), errors
    assert len(by_shard[4]) == 3 and all("shard-000004.tar" in e and "sha256" in e for e in by_shard[4]), errors
    checksums = visit.evaluate("document.querySelector('#checksums').textContent")
    assert checksums.startswith("3 problem(s)") and all(f"shard-00000{s}" in checksums for s in (1, 2, 4)), checksums
    assert not [c for c in visit.console if c[0] in ("error", "exception", "assert")], visit.console
    assert not [u for u in visit.requests if not u.startswith(("file://", "data:"))], visit.requests

    from tests.watching import POOL, add, add_photos, watcher

    raw, out = tmp_path / "raw", tmp_path / "out"
    add_photos(raw, 0, 4)
    w = watcher(raw, out, max_bad=0.5)
    assert w.tick(POOL.submit).generation == 1
    add_photos(raw, 4, 3)
    add(raw, "n01440764", {"n01440764_99.JPEG": b"not a jpeg"})
    assert w.tick(POOL.submit).generation == 2
    visit = browser(_page(out / "train", tmp_path / "growing.html"))
    assert visit.evaluate("document.querySelectorAll('.sample').length") == 7
    latencies = visit.evaluate("[...document.querySelectorAll('tr.generation .latency')].map(e => e.textContent)")
    assert len(latencies) == 2 and all(t.endswith(" s") and float(t[:-2]) >= 0 for t in latencies), latencies
    assert visit.evaluate("document.querySelectorAll('tr.quarantine-group').length") == 1
    assert not [c for c in visit.console if c[0] in ("error", "exception", "assert")], visit.console
