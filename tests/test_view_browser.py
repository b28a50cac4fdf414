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

from tests.browser import CHROMIUM, chromium

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
  return {x: b.x + scrollX, y: b.y + scrollY, w: b.width, h: b.height, stroke: getComputedStyle(r).stroke}; })"""
MASKS = """[...document.querySelectorAll('polygon.mask')].flatMap(p => {
  const box = p.getBBox(), svg = p.ownerSVGElement.getBoundingClientRect();
  for (const [fx, fy] of [[.5, .5], [.3, .5], [.7, .5], [.5, .3], [.5, .7]]) {
    const x = box.x + fx * box.width, y = box.y + fy * box.height;
    if (p.isPointInFill(new DOMPoint(x, y)))
      return [{x: svg.x + scrollX + x * svg.width, y: svg.y + scrollY + y * svg.height,
               fill: getComputedStyle(p).fill}];
  }
  return []; })"""


@pytest.mark.parametrize("name", ["coco", "openimages"])
def test_boxes_and_masks_are_drawn_in_their_labels_colours_where_the_stored_coordinates_put_them(
    name, conversions, browser, tmp_path
):
    from PIL import Image

    visit = browser(_page(_split(conversions, name), tmp_path / "page.html", "-n", "12"), width=1400, height=900)
    boxes = visit.evaluate(BOXES)
    shot = Image.open(io.BytesIO(visit.screenshot())).convert("RGB")
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
    masks = visit.evaluate(MASKS)
    if name == "coco":  # a mask is its label's colour at 45% over the picture: with and without it, pixel by pixel
        assert masks, "COCO's polygons are drawn"
        shot, bare = (_without(visit, hide) for hide in ("rect.box, line.bone", "rect.box, line.bone, polygon.mask"))
        for m in masks:
            at = (round(m["x"]), round(m["y"]))
            fill, under = _rgb(m["fill"]), bare.getpixel(at)
            expected = tuple(0.45 * f + 0.55 * u for f, u in zip(fill, under, strict=True))
            assert _near(shot.getpixel(at), expected, 12), (m, shot.getpixel(at), expected)
    assert not [u for u in visit.requests if not u.startswith(("file://", "data:"))], visit.requests


def test_an_audio_clip_decodes_in_the_page(conversions, browser, tmp_path):
    visit = browser(_page(_split(conversions, "fma"), tmp_path / "page.html", "-n", "2"))
    duration = visit.evaluate("""new Promise(done => { const a = document.querySelector('audio');
        a.onloadedmetadata = () => done(a.duration); a.onerror = () => done(-1); a.preload = 'auto'; a.load(); })""")
    assert duration > 1, duration


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_datasets_page_opens_without_a_console_error_and_fetches_nothing(name, conversions, browser, tmp_path):
    visit = browser(_page(_split(conversions, name), tmp_path / "page.html", "-n", "8"))
    assert visit.evaluate("document.querySelectorAll('.sample').length") == 8
    assert not [c for c in visit.console if c[0] in ("error", "exception", "assert")], visit.console
    assert not [u for u in visit.requests if not u.startswith(("file://", "data:"))], visit.requests
