"""The slide lab in a real browser: Debian's headless Chromium driven by Playwright, against the
real server on the real slide. The page loads, every tile it asks for answers 200 and decodes,
the canvas shows the slide, overlays change the pixels, zooming asks for deeper levels, a shared
link restores the view, and side-by-side panes follow each other. Screenshots go to tmp_path.

Playwright's own browsers are never downloaded: Chromium is the system's (`apt-get install
chromium`, as .ci/run does); without it these tests skip and say why.
"""

from __future__ import annotations

import io
import re
import shutil
import urllib.request

import numpy as np
import pytest
from PIL import Image

from histoflow.viewer.server import serve_in_thread, view
from tests.viewer.conftest import SLIDE_ID

TOKEN = "browser-test-token"
TILE = re.compile(r"/api/slides/[^/]+/tiles/(\d+)/(\d+)_(\d+)\.jpeg")
SETTLED = """() => {
  const lab = window.slideLab;
  if (!lab || !lab.ready) return false;
  return lab.panes.every(p => p.root.hidden || !p.base ||
    [...Array(p.viewer.world.getItemCount()).keys()].every(i => p.viewer.world.getItemAt(i).getFullyLoaded()));
}"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("chromium not installed (Debian: apt-get install -y chromium): cannot drive the slide lab")


@pytest.fixture(scope="module")
def server(lab_paths):
    with serve_in_thread(view(lab_paths, token=TOKEN)) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    binary = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Page:
    """A page with every tile response recorded and page errors kept."""

    def __init__(self, browser, server, fragment: str = ""):
        self.page = browser.new_page(viewport={"width": 1280, "height": 800})
        self.tiles: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self.page.on("response", lambda r: TILE.search(r.url) and self.tiles.append((r.url, r.status)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(f"{server.url}?token={TOKEN}{fragment}")
        self.settle()

    def settle(self, timeout_ms: int = 30000) -> None:
        self.page.wait_for_function(SETTLED, timeout=timeout_ms)
        self.page.wait_for_timeout(300)  # the last frame drawn after the last tile arrived

    def pixels(self, path, selector: str = "#pane-0") -> np.ndarray:
        self.page.locator(selector).screenshot(path=str(path))
        return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)

    def levels(self) -> list[int]:
        return [int(TILE.search(u).group(1)) for u, _ in self.tiles]

    def overlay_checkbox(self, name: str, pane: int = 0):
        return self.overlay(name, pane).locator("input[type=checkbox]")

    def overlay(self, name: str, pane: int = 0):
        return self.page.locator(f".overlay[data-pane='{pane}'][data-name='{name}']")


def test_page_loads_every_tile_decodes_and_the_slide_is_drawn(browser, server, tmp_path):
    p = Page(browser, server)
    assert not p.errors
    assert p.tiles and all(status == 200 for _, status in p.tiles), [t for t in p.tiles if t[1] != 200]
    assert p.page.evaluate("slideLab.panes[0].stats.failed") == 0
    opener = urllib.request.build_opener()
    opener.addheaders = [("Authorization", f"Bearer {TOKEN}")]
    for url, _ in p.tiles:  # the bytes behind every tile the page drew are a real JPEG
        with opener.open(url) as r, Image.open(io.BytesIO(r.read())) as im:
            assert im.format == "JPEG" and min(im.size) >= 1
    shot = p.pixels(tmp_path / "loaded.png")
    ink = (np.abs(shot - 255).sum(2) > 60).mean()  # stained tissue, not white glass or grey backdrop
    assert ink > 0.15 and shot.std() > 20, f"canvas looks blank ({ink:.0%} inked)"
    # the side panel: slides with scores, the unreadable one with its error, metadata, a scale bar
    broken = p.page.locator("li[data-slide='broken'] .error").inner_text()
    assert "broken.svs" in broken and "unreadable" in broken
    assert "attention_mil" in p.page.locator(f"li[data-slide='{SLIDE_ID}']").inner_text()
    assert "aperio" in p.page.locator("table.meta").inner_text()
    assert re.fullmatch(r"\d+(\.\d+)? (µm|mm)", p.page.locator("#pane-0 .scalebar span").inner_text())
    bad = p.page.locator(".overlay.failed", has_text="_bad").inner_text()
    assert "not valid JSON" in bad
    assert p.page.locator(".overlay.failed", has_text="_bad").locator("input").is_disabled()
    p.page.close()


def test_toggling_overlays_changes_the_pixels(browser, server, tmp_path):
    p = Page(browser, server)
    before = p.pixels(tmp_path / "plain.png")
    p.overlay_checkbox("P(tumour)").check()
    p.page.wait_for_function("Object.values(slideLab.panes[0].overlays).some(o => o.on && o.item)")
    p.settle()
    heat = p.pixels(tmp_path / "heatmap.png")
    changed = (np.abs(heat - before).sum(2) > 30).mean()
    assert changed > 0.1, f"the heatmap changed {changed:.1%} of the pane"
    p.overlay_checkbox("mitoses").check()
    p.page.wait_for_function("Object.values(slideLab.panes[0].overlays).some(o => o.on && o.features)")
    p.page.wait_for_timeout(300)
    dots = p.pixels(tmp_path / "mitoses.png")
    reds = ((dots[..., 0] > 180) & (dots[..., 1] < 80) & (dots[..., 2] < 80)).sum()
    assert 20 < (np.abs(dots - heat).sum(2) > 30).sum() and reds > 20  # three red dots, small
    # hovering a detection shows its measurements
    t = p.page.evaluate("slideLab.panes[0].transform")
    box = p.page.locator("#pane-0").bounding_box()
    p.page.mouse.move(box["x"] + t["x"] + 400 * t["s"] + 2, box["y"] + t["y"] + 500 * t["s"] + 1)
    tip = p.page.locator("#tooltip")
    tip.wait_for(state="visible")
    assert "score: 0.95" in tip.inner_text() and "p_atypical: 0.1" in tip.inner_text()
    p.page.mouse.move(box["x"] + 5, box["y"] + box["height"] - 5)
    opacity = p.overlay("P(tumour)").locator("input[aria-label=opacity]")
    opacity.evaluate("e => { e.value = 1; e.dispatchEvent(new Event('input')); }")
    p.settle()
    opaque = p.pixels(tmp_path / "opaque.png")
    assert (np.abs(opaque - dots).sum(2) > 30).mean() > 0.05
    p.overlay_checkbox("P(tumour)").uncheck()
    p.overlay_checkbox("mitoses").uncheck()
    p.settle()
    after = p.pixels(tmp_path / "plain-again.png")
    assert (np.abs(after - before).sum(2) > 30).mean() < 0.01, "switching overlays off did not restore the slide"
    assert not p.errors
    p.page.close()


def test_zooming_in_asks_for_deeper_levels_and_the_link_restores_the_view(browser, server, tmp_path):
    p = Page(browser, server)
    first = max(p.levels())
    box = p.page.locator("#pane-0").bounding_box()
    p.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(6):
        p.page.mouse.wheel(0, -400)
        p.page.wait_for_timeout(150)
    p.settle()
    assert max(p.levels()) > first, f"still level {first} after zooming in"
    assert max(p.levels()) == 12  # full resolution reached
    assert all(status == 200 for _, status in p.tiles)
    p.pixels(tmp_path / "zoomed.png")
    view = p.page.evaluate("slideLab.panes[0].getView()")
    p.page.wait_for_timeout(400)  # the hash follows the view after a short debounce
    fragment = p.page.evaluate("location.hash")
    assert f"slide={SLIDE_ID}" in fragment and "ds=" in fragment
    q = Page(browser, server, fragment)
    again = q.page.evaluate("slideLab.panes[0].getView()")
    assert abs(again["x"] - view["x"]) <= 2 and abs(again["y"] - view["y"]) <= 2
    assert again["ds"] == pytest.approx(view["ds"], rel=0.01)
    p.page.close()
    q.page.close()


def test_side_by_side_panes_follow_each_other(browser, server, tmp_path):
    p = Page(browser, server)
    p.page.locator("#compare").click()
    p.page.wait_for_function("slideLab.panes[1].base !== null")
    p.settle()
    p.overlay_checkbox("P(tumour)", pane=1).check()
    start = p.page.evaluate("slideLab.panes[0].getView()")
    box = p.page.locator("#pane-0").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    p.page.mouse.move(cx, cy)
    p.page.mouse.wheel(0, -500)
    p.page.mouse.down()
    p.page.mouse.move(cx - 120, cy - 60, steps=8)
    p.page.mouse.up()
    p.settle()
    left, right = (p.page.evaluate(f"slideLab.panes[{i}].getView()") for i in (0, 1))
    assert abs(left["x"] - right["x"]) <= 2 and abs(left["y"] - right["y"]) <= 2
    assert left["ds"] == pytest.approx(right["ds"], rel=0.01)
    assert left["ds"] < start["ds"] * 0.9 and (left["x"], left["y"]) != (start["x"], start["y"])  # it did move
    assert "right=" in p.page.evaluate("location.hash")
    p.page.screenshot(path=str(tmp_path / "side-by-side.png"))
    assert Image.open(tmp_path / "side-by-side.png").size == (1280, 800)
    assert not p.errors
    p.page.close()
