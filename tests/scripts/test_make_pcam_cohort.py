"""scripts/make_pcam_cohort.py: a small cohort built from the real PCam patches, checked end to end."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from histoflow.core.errors import DataError
from tests.conftest import REPO, need_data

GRID = 8
TINY = {"n_train": 2, "n_val": 1, "n_test": 4, "grid": GRID, "seed": 0, "min_slides": 0, "quiet": True}


def _load_script():
    spec = importlib.util.spec_from_file_location("make_pcam_cohort", REPO / "scripts" / "make_pcam_cohort.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cohort_script = _load_script()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cells(out: Path, slide: str) -> dict:
    return json.loads((out / "cells" / f"{slide}.json").read_text())


def _patch(pcam: Path, rel: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(pcam / rel)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def pcam() -> Path:
    return need_data("pcam")


@pytest.fixture(scope="module")
def cohort(pcam, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "cohort"
    record = cohort_script.build_cohort(pcam, out, **TINY)
    assert record["written"] == 7
    return out


def test_slides_open_with_mpp_levels_and_grid_size(cohort):
    from histoflow.slide import open_slide

    slides = sorted((cohort / "slides").glob("*.tif"))
    assert [p.stem for p in slides] == sorted(
        ["pcam-train-001", "pcam-train-002", "pcam-val-001"] + [f"pcam-test-{i:03d}" for i in range(1, 5)]
    )
    for path in slides:
        for backend in ("auto", "openslide"):  # tifffile through auto; OpenSlide's generic-tiff too
            with open_slide(path, backend=backend) as slide:
                assert slide.mpp == pytest.approx(0.972, abs=1e-3), (path, backend)
                assert slide.level_count >= 2
                assert slide.dimensions == (GRID * 96, GRID * 96)


def test_labels_follow_the_composition_and_its_cut_offs(cohort):
    comp = {r["slide"]: r for r in _rows(cohort / "composition.csv")}
    binary = {r["slide"]: r for r in _rows(cohort / "labels.csv")}
    score = {r["slide"]: r for r in _rows(cohort / "labels_score.csv")}
    regions = _rows(cohort / "regions.csv")
    assert set(comp) == set(binary) == set(score) == {p.stem for p in (cohort / "slides").glob("*.tif")}
    for sid, row in comp.items():
        n_tissue, n_tumour, burden = int(row["n_tissue_cells"]), int(row["n_tumour_cells"]), float(row["burden"])
        assert burden == pytest.approx(n_tumour / n_tissue, abs=1e-4)
        assert int(binary[sid]["label"]) == int(n_tumour > 0) == int(row["binary"])
        expected = 1 if burden < 0.12 else (2 if burden <= 0.40 else 3)
        assert int(score[sid]["label"]) == expected == int(row["score"])
        # a margin from every cut-off, so no label hangs on one cell
        assert burden == 0 or min(abs(burden - t) for t in (0.0, 0.12, 0.40)) >= 0.02
        assert sum(r["slide"] == sid for r in regions) == n_tumour
        assert 0 <= int(row["n_tumour_regions"]) <= 3 and (int(row["n_tumour_regions"]) > 0) == (n_tumour > 0)
        assert binary[sid]["patient"] == sid and binary[sid]["split"] == row["split"] == sid.split("-")[1]
        assert int(row["n_source_patches"]) == n_tissue
    # the tie-break of the strata gives every split of two or more slides a tumour-free and a score-3 slide
    by_split = {}
    for row in comp.values():
        by_split.setdefault(row["split"], set()).add(int(row["score"]) if int(row["binary"]) else 0)
    assert by_split["test"] == {0, 1, 2, 3} and {0, 3} <= by_split["train"]
    record = json.loads((cohort / "cohort.json").read_text())
    assert record["complete"] and record["score_cutoffs"]["1"] == "burden < 0.12"
    assert record["counts"]["test"]["slides"] == 4


def test_tumour_regions_hold_the_pcam_patch_they_came_from(cohort, pcam):
    from histoflow.slide import open_slide

    regions = _rows(cohort / "regions.csv")
    assert regions and all(r["label"] == "1" and r["width"] == r["height"] == "96" for r in regions)
    for sid in sorted({r["slide"] for r in regions}):
        cells = {(c * 96, r * 96): (label, rel) for r, c, label, rel in _cells(cohort, sid)["cells"]}
        with open_slide(cohort / "slides" / f"{sid}.tif") as slide:
            for row in (r for r in regions if r["slide"] == sid):
                x, y = int(row["x"]), int(row["y"])
                label, rel = cells[(x, y)]
                assert label == 1 and rel.split("/")[1] == "1"
                got = slide.read_region((x, y), 0, (96, 96)).astype(int)
                diff = np.abs(got - _patch(pcam, rel)).mean()
                assert diff < 6, (sid, x, y, rel, diff)  # JPEG re-encoding only
                # ...and not any patch: a neighbour's source differs by far more
                other = next(v[1] for k, v in cells.items() if k != (x, y))
                assert np.abs(got - _patch(pcam, other)).mean() > 3 * diff
            # glass outside the tissue is bright, near-white, slightly noisy
            glass = [
                (gx, gy) for gy in range(0, GRID * 96, 96) for gx in range(0, GRID * 96, 96) if (gx, gy) not in cells
            ]
            px = slide.read_region(glass[0], 0, (96, 96))
            assert px.mean() > 230 and 0 < px.std() < 6


def test_no_patch_twice_and_test_slides_only_from_pcam_valid(cohort, pcam):
    sources, digests = [], set()
    for sidecar in sorted((cohort / "cells").glob("*.json")):
        meta = json.loads(sidecar.read_text())
        expected = "valid" if meta["split"] == "test" else "train"
        for _r, _c, label, rel in meta["cells"]:
            split, folder, _ = rel.split("/")
            assert split == expected and folder == str(label), (sidecar.name, rel)
            sources.append(rel)
            digests.add(hashlib.sha256((pcam / rel).read_bytes()).hexdigest())
    assert len(sources) == len(set(sources)) == len(digests)  # no file twice, no duplicate content either


def test_a_96px_tile_grid_at_the_slide_mpp_falls_on_the_patches(cohort):
    from histoflow.config.tiling import TileConfig
    from histoflow.slide import open_slide
    from histoflow.tiling.plan import slide_grid

    sid = "pcam-test-001"
    cells = {(c * 96, r * 96) for r, c, *_ in _cells(cohort, sid)["cells"]}
    with open_slide(cohort / "slides" / f"{sid}.tif") as slide:
        _, _, grid = slide_grid(slide, TileConfig(tile_px=96, mpp=0.972))
    kept = {(s.x, s.y) for s in grid.specs}
    assert grid.level == 0 and {s.size_px0 for s in grid.specs} == {96}
    assert kept and kept <= cells  # every tissue tile is one whole patch, no glass tile


def test_rerun_is_a_no_op_with_identical_bytes(cohort, pcam):
    before = _hashes(cohort)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (cohort / "slides").iterdir()}
    record = cohort_script.build_cohort(pcam, cohort, **TINY)
    assert record["written"] == 0
    assert _hashes(cohort) == before
    assert {p.name: p.stat().st_mtime_ns for p in (cohort / "slides").iterdir()} == mtimes


def test_a_damaged_slide_is_rewritten_to_the_same_bytes(cohort, pcam, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(cohort, out)
    before = _hashes(out)
    tif = out / "slides" / "pcam-val-001.tif"
    tif.write_bytes(tif.read_bytes()[:1000])  # as if a copy was cut short
    (out / "cells" / "pcam-test-002.json").unlink()  # as if killed between the TIFF and its sidecar
    assert cohort_script.build_cohort(pcam, out, **TINY)["written"] == 2
    assert _hashes(out) == before


def test_rerun_with_other_arguments_refuses(cohort, pcam, capsys):
    with pytest.raises(DataError, match="other arguments.*seed"):
        cohort_script.build_cohort(pcam, cohort, **{**TINY, "seed": 1})
    argv = ["--out", str(cohort), "--pcam", str(pcam), "--grid", "9", "--quiet"]
    assert cohort_script.main(argv) == 2
    assert "grid" in capsys.readouterr().err


def test_a_folder_without_cohort_json_is_not_overwritten(pcam, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="holds no cohort.json"):
        cohort_script.build_cohort(pcam, tmp_path, **TINY)


def test_too_few_slides_refuse(pcam, tmp_path):
    with pytest.raises(DataError, match="fewer than the 40"):
        cohort_script.build_cohort(pcam, tmp_path / "c", **{**TINY, "min_slides": 40})


# -- planning alone (no pixels) ----------------------------------------------------------------------
def _fake_pools(n_train: int, n_valid: int) -> dict:
    return {
        (src, lab): [f"{src}/{lab}/p{i:05d}.jpg" for i in range(n)]
        for src, n in (("train", n_train), ("valid", n_valid))
        for lab in ("0", "1")
    }


def test_a_small_valid_pool_gives_fewer_test_slides_and_says_so():
    plans, notes = cohort_script.plan_cohort(_fake_pools(5000, 300), 4, 2, 10, 15, 0)
    n_test = sum(p["split"] == "test" for p in plans)
    assert 0 < n_test < 10
    assert len(notes) == 1 and f"building {n_test} test slides" in notes[0] and "pcam/valid/0" in notes[0]
    used = [c[3] for p in plans for c in p["cells"]]
    assert len(used) == len(set(used))


def test_a_small_train_pool_refuses():
    with pytest.raises(DataError, match="pcam/train/0"):
        cohort_script.plan_cohort(_fake_pools(200, 3000), 32, 10, 2, 15, 0)


def test_the_default_cohort_fits_the_real_pcam_with_every_score_in_every_split(pcam):
    pools, dedupe = cohort_script.index_pcam(pcam)
    assert all(v["distinct"] <= v["files"] for v in dedupe.values())
    plans, notes = cohort_script.plan_cohort(pools, 32, 10, 18, 15, 0)
    assert notes == [] and len(plans) == 60
    for split in ("train", "val", "test"):
        rows = [p for p in plans if p["split"] == split]
        assert {p["score"] for p in rows} == {1, 2, 3} and {p["binary"] for p in rows} == {0, 1}
        share = sum(p["binary"] == 0 for p in rows) / len(rows)
        assert 0.25 <= share <= 0.35


@pytest.mark.parametrize("n", [1, 2, 4, 10, 18, 32])
def test_strata_allocation_adds_up_and_is_proportional(n):
    strata = cohort_script.allocate_strata(n)
    assert len(strata) == n
    counts = {s: strata.count(s) for s in ("none", "low", "mid", "high")}
    assert abs(counts["none"] - 0.3 * n) < 1 and all(abs(counts[s] - 0.7 * n / 3) < 1 for s in ("low", "mid", "high"))


def test_pools_hold_each_content_once(pcam):
    pools, dedupe = cohort_script.index_pcam(pcam)
    valid = [pcam / rel for lab in ("0", "1") for rel in pools[("valid", lab)]]
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in valid}) == len(valid)
    all_valid = [p for lab in ("0", "1") for p in (pcam / "valid" / lab).glob("*.jpg")]
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in all_valid}) == len(valid)  # none lost
    assert dedupe["valid/1"]["files"] - dedupe["valid/1"]["distinct"] > 0  # the real data has copies
