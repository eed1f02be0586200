"""The slide lab's HTTP answers (Starlette's test client, the real app on the real slide): the list,
metadata, tiles, overlays, the 404s that must never be 500s, the token, the CLI."""

from __future__ import annotations

import io
import json
import socket

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from histoflow.core.errors import ConfigError
from histoflow.viewer.server import check_port, host_warning, url_of, view
from tests.viewer.conftest import SLIDE_ID


@pytest.fixture(scope="module")
def client(lab_paths):
    from starlette.testclient import TestClient

    return TestClient(view(lab_paths, tile_cache_mb=8))


def decode(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as im:
        return np.asarray(im.convert("RGB"))


def test_list_shows_scores_and_the_unreadable_slide_with_its_error(client):
    data = client.get("/api/slides").json()
    slides = {s["id"]: s for s in data["slides"]}
    assert set(slides) == {"broken", SLIDE_ID}
    assert "broken.svs" in slides["broken"]["error"] and "unsupported or unreadable" in slides["broken"]["error"]
    good = slides[SLIDE_ID]
    assert good["error"] is None and (good["width"], good["height"]) == (2220, 2967) and good["mpp"] == 0.499
    assert {s["run"] for s in good["scores"]} == {"preds", "mitoses"}
    assert client.get("/api/slides/broken").status_code == 404
    assert "broken.svs" in client.get("/api/slides/broken/tiles/0/0_0.jpeg").text
    thumb = client.get(f"/api/slides/{SLIDE_ID}/thumbnail.jpeg")
    assert thumb.status_code == 200 and max(decode(thumb.content).shape[:2]) == 192


def test_metadata_and_every_tile_of_a_level(client):
    info = client.get(f"/api/slides/{SLIDE_ID}").json()
    assert info["vendor"] == "aperio" and info["mpp"] == 0.499 and info["objective_power"] == 20
    assert "path" not in info  # the page never learns where files are
    dzi = info["dzi"]["Image"]
    assert dzi["Size"] == {"Width": "2220", "Height": "2967"} and dzi["TileSize"] == "254"
    assert info["deepzoom_levels"] == 13
    level = 11  # half resolution: 5 x 6 tiles
    for col in range(5):
        for row in range(6):
            r = client.get(f"/{dzi['Url']}{level}/{col}_{row}.jpeg")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            img = decode(r.content)
            assert img.shape[0] in range(90, 257) and img.shape[1] in range(90, 257)
    assert decode(client.get(f"/api/slides/{SLIDE_ID}/tiles/0/0_0.jpeg").content).shape == (1, 1, 3)
    stats = client.get("/api/stats").json()
    assert stats["tiles"]["entries"] >= 30 and stats["tiles"]["bytes"] <= 8e6


@pytest.mark.parametrize(
    "url",
    [
        f"/api/slides/{SLIDE_ID}/tiles/13/0_0.jpeg",  # level off the pyramid
        f"/api/slides/{SLIDE_ID}/tiles/12/9_0.jpeg",  # column off the level (9 x 12 tiles)
        f"/api/slides/{SLIDE_ID}/tiles/12/0_12.jpeg",  # row off the level
        f"/api/slides/{SLIDE_ID}/tiles/99999999999999999999/0_0.jpeg",
        f"/api/slides/{SLIDE_ID}/tiles/-1/0_0.jpeg",
        f"/api/slides/{SLIDE_ID}/tiles/1/a_b.jpeg",
        "/api/slides/nope/tiles/0/0_0.jpeg",
        "/api/slides/..%2F..%2Fetc%2Fpasswd/tiles/0/0_0.jpeg",
        "/api/slides/%2Fetc%2Fpasswd",
        "/api/slides//etc/passwd/tiles/0/0_0.jpeg",
        "/static/../../../pyproject.toml",
        "/static/..%2F..%2F..%2Fcatalog.py",
        "/static/%2Fetc%2Fpasswd",
        "/etc/passwd",
        f"/api/slides/{SLIDE_ID}/overlays/o99.json",
        f"/api/slides/{SLIDE_ID}/overlays/..%2F..%2Fslide.json.json",
        f"/api/slides/{SLIDE_ID}/overlays/o0.png?cmap=nope",
        f"/api/slides/{SLIDE_ID}/overlays/o0.png?threshold=abc",
        f"/api/slides/{SLIDE_ID}/overlays/o0.json",  # a raster has no features
        f"/api/slides/{SLIDE_ID}/overlays/o1.png",  # a vector has no image
    ],
)
def test_bad_addresses_answer_404_never_500(client, url):
    assert client.get(url).status_code == 404


def test_overlays_are_described_and_the_malformed_one_reported(client):
    info = client.get(f"/api/slides/{SLIDE_ID}").json()
    ovs = {o["name"]: o for o in info["overlays"]}
    bad = ovs[f"{SLIDE_ID}_bad"]
    assert bad["error"] and "not valid JSON" in bad["error"] and "_bad.geojson" in bad["error"]
    assert client.get(f"/api/slides/{SLIDE_ID}/overlays/{bad['id']}.json").status_code == 404
    heat = ovs["P(tumour)"]
    assert heat["type"] == "raster" and heat["error"] is None and heat["value_range"] == [0.0, 1.0]
    full = decode(client.get(f"/api/slides/{SLIDE_ID}/overlays/{heat['id']}.png").content)
    r = client.get(f"/api/slides/{SLIDE_ID}/overlays/{heat['id']}.png?cmap=viridis&threshold=0.999")
    with Image.open(io.BytesIO(r.content)) as im:
        alpha = np.asarray(im)[..., 3]
    assert r.status_code == 200 and full.shape[:2] == alpha.shape and alpha.mean() < 255 * 0.05
    mitoses = ovs["mitoses"]
    assert mitoses["type"] == "vector" and mitoses["count"] == 3 and mitoses["value_name"] == "score"
    feats = client.get(f"/api/slides/{SLIDE_ID}/overlays/{mitoses['id']}.json").json()
    assert feats["points"]["x"] == [400.0, 1200.0, 1800.0]
    assert set(info["colour_maps"]) >= {"jet", "viridis"} and len(info["colour_maps"]["jet"]) == 11


def test_nan_in_a_report_is_null_not_a_server_error(lab, tmp_path):
    import shutil

    from starlette.testclient import TestClient

    preds = tmp_path / "preds"
    shutil.copytree(lab["preds"], preds)
    path = preds / SLIDE_ID / "slide.json"
    path.write_text(path.read_text().replace('"score": ', '"score": NaN, "was": ', 1))
    c = TestClient(view([preds]))
    assert c.get("/api/slides").status_code == 200
    assert c.get(f"/api/slides/{SLIDE_ID}").status_code == 200


def test_token_guards_every_route(lab_paths):
    from starlette.testclient import TestClient

    c = TestClient(view(lab_paths, token="s3cret"))
    assert c.get("/api/slides").status_code == 403
    assert c.get("/").status_code == 403
    assert c.get("/api/slides?token=wrong").status_code == 403
    assert c.get("/api/slides", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    page = c.get("/?token=s3cret")
    assert page.status_code == 200 and "histoflow_view_token" in page.headers["set-cookie"]
    assert "samesite=strict" in page.headers["set-cookie"].lower()
    assert c.get(f"/api/slides/{SLIDE_ID}/tiles/0/0_0.jpeg").status_code == 200  # the cookie now
    assert c.get("/static/slidelab.js").status_code == 200


def test_host_warning_and_urls():
    assert host_warning("127.0.0.1", None) is None
    assert "anyone who can reach this port" in host_warning("0.0.0.0", None)
    assert "no token" in host_warning("0.0.0.0", None) and "need the token" in host_warning("10.1.2.3", "t")
    assert url_of("0.0.0.0", 8000, "t") == "http://127.0.0.1:8000/?token=t"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="pick another --port"):
            check_port("127.0.0.1", busy.getsockname()[1])
    assert check_port("127.0.0.1", 0) > 0
    with pytest.raises(ConfigError, match="at least one"):
        view([])


def test_cli_refuses_nothing_to_show_and_a_busy_port(tmp_path, lab):
    from histoflow.cli import app

    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["view", str(empty)])
    assert res.exit_code == 2 and "nothing to show" in res.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = runner.invoke(app, ["view", str(lab["slide"]), "--port", str(port), "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "1 slides" in res.output and "warning:" in res.output
    assert "pick another --port" in " ".join(res.output.split())
    res = runner.invoke(app, ["view", "--help"])
    assert res.exit_code == 0 and "--token" in res.output


def test_python_api_is_public():
    import histoflow

    assert histoflow.view.__module__ == "histoflow.viewer.server"
    app = histoflow.view(json.__file__.replace("__init__.py", "no-such-slide.svs"))
    assert list(app.state.service.catalog.slides) == ["no-such-slide"]


def test_page_assets_are_served_and_ship_as_package_data(client):
    import fnmatch

    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    from histoflow.viewer.app import STATIC

    html = client.get("/").text
    for asset in ("static/slidelab.js", "static/slidelab.css", "static/openseadragon/openseadragon.min.js"):
        assert asset in html and client.get(f"/{asset}").status_code == 200
    assert client.get("/static/openseadragon/images/home_rest.png").headers["content-type"] == "image/png"
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["histoflow.viewer"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert len(files) > 40
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not missing, f"not in pyproject's package-data, so not in a wheel: {missing}"
