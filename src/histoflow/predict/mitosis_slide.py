"""Mitoses on whole slides: detection over tissue tiles, density, hotspot, Nottingham mitotic score.

Tiles come from tiling's planner at the detector's resolution (tissue mask + grid, via
predict.tiles.plan_tiles), read by predict.pipeline's reader threads, with an overlap of one
window: a tile's windows cover centres [w/2, tile - w/2), so neighbouring tiles' areas meet
edge to edge and every place of the tissue is proposed once. Windows of several tiles are
scored in one batch; a final non-maximum suppression in level-0 pixels removes duplicates where
tiles meet.

    OUT/<slide_id>/detections.csv      slide,x,y (level-0 px),score,p_atypical (empty without an
                                       atypia checkpoint)
    OUT/<slide_id>/detections.geojson  QuPath points
    OUT/<slide_id>/density.npy         mitoses per heatmap cell (rows, cols), cell side `heatmap_um`
    OUT/<slide_id>/heatmap.png         thumbnail, density overlay, detections, the hotspot square
    OUT/<slide_id>/top_detections.png  the highest-scoring detections, enlarged
    OUT/<slide_id>/slide.json          count, hotspot (level-0 box, area, count), score 1/2/3, timings

slide.json is written last, with a fingerprint of the detector and settings: a slide whose
slide.json matches is skipped on a re-run, so an interrupted batch resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Generator
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.config.mitosis import DetectConfig, GradingConfig
from histoflow.config.slides import SlidePredictConfig
from histoflow.core.io import atomic_path, atomic_write_bytes, atomic_write_json
from histoflow.core.progress import progress_bar
from histoflow.predict.mitosis import MitosisDetector, nms
from histoflow.predict.mitosis_outputs import AtypiaScorer, point_feature
from histoflow.predict.outputs import write_npy
from histoflow.predict.pipeline import SlideTileSource, reader_threads, stream_batches
from histoflow.predict.scale import ScaleOut, SlideJob, each_slide, run_slides
from histoflow.predict.slide import SPEED_ONLY, is_complete
from histoflow.predict.tiles import open_reader_factory, plan_tiles, slide_reader
from histoflow.tiling.read import PIXELS_VERSION
from histoflow.tiling.readers import slide_id_for

log = logging.getLogger(__name__)


def nottingham_score(count: int, cuts: tuple[int, int]) -> int:
    """1, 2 or 3: score 2 from `cuts[0]` mitoses, score 3 from `cuts[1]`."""
    return 1 if count < cuts[0] else 2 if count < cuts[1] else 3


def hotspot(xy_um: np.ndarray, side_um: float, cell_um: float = 25.0) -> dict:
    """The axis-aligned square of side `side_um` holding the most points, found on a `cell_um`
    grid with a summed-area table (OpenCV integral), then counted exactly. Coordinates in um."""
    import cv2

    if not len(xy_um):
        return {"x_um": 0.0, "y_um": 0.0, "side_um": side_um, "count": 0}
    origin = xy_um.min(axis=0)
    cells = np.floor((xy_um - origin) / cell_um).astype(int)
    shape = cells.max(axis=0)[::-1] + 1
    grid = np.zeros(shape, np.float64)
    np.add.at(grid, (cells[:, 1], cells[:, 0]), 1.0)
    k = max(1, int(round(side_um / cell_um)))
    integral = cv2.integral(grid)  # (rows + 1, cols + 1)
    rows, cols = max(1, grid.shape[0] - k + 1), max(1, grid.shape[1] - k + 1)
    r1, c1 = np.minimum(np.arange(rows) + k, grid.shape[0]), np.minimum(np.arange(cols) + k, grid.shape[1])
    sums = (
        integral[r1][:, c1]
        - integral[np.arange(rows)][:, c1]
        - integral[r1][:, np.arange(cols)]
        + integral[np.arange(rows)][:, np.arange(cols)]
    )
    r, c = np.unravel_index(int(np.argmax(sums)), sums.shape)
    x0, y0 = origin[0] + c * cell_um, origin[1] + r * cell_um
    inside = (xy_um[:, 0] >= x0) & (xy_um[:, 0] < x0 + side_um) & (xy_um[:, 1] >= y0) & (xy_um[:, 1] < y0 + side_um)
    return {"x_um": float(x0), "y_um": float(y0), "side_um": float(side_um), "count": int(inside.sum())}


def density_grid(xy_px0: np.ndarray, width: int, height: int, cell_px0: float) -> np.ndarray:
    rows, cols = max(1, int(np.ceil(height / cell_px0))), max(1, int(np.ceil(width / cell_px0)))
    grid = np.zeros((rows, cols), np.float32)
    if len(xy_px0):
        idx = np.minimum((xy_px0 / cell_px0).astype(int), [cols - 1, rows - 1])
        np.add.at(grid, (idx[:, 1], idx[:, 0]), 1.0)
    return grid


def heatmap_picture(
    slide, grid: np.ndarray, spot: dict, slide_mpp: float, path: Path, xy_px0: np.ndarray, max_px: int = 1200
) -> None:
    """The slide thumbnail under the density (OpenCV inferno colour map where cells hold any
    mitosis), every detection as a small cyan ring, the hotspot square outlined in orange."""
    import cv2

    thumb = slide.thumbnail(max_px)
    h, w = thumb.shape[:2]
    width0 = slide.dimensions[0]
    colours = cv2.applyColorMap((255 * grid / max(grid.max(), 1)).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
    colours = cv2.resize(colours, (w, h), interpolation=cv2.INTER_NEAREST)
    present = cv2.resize((grid > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = thumb.copy()
    out[present] = (0.4 * thumb[present] + 0.6 * colours[present]).astype(np.uint8)
    scale = w / width0 / slide_mpp  # thumbnail pixels per micron
    x0, y0, side = spot["x_um"] * scale, spot["y_um"] * scale, spot["side_um"] * scale
    cv2.rectangle(out, (int(x0), int(y0)), (int(x0 + side), int(y0 + side)), (255, 140, 0), 2)
    for x, y in xy_px0 * (w / width0):
        cv2.circle(out, (int(x), int(y)), 3, (0, 220, 255), 1)
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), out[:, :, ::-1])


def top_detections_picture(slide, table: pd.DataFrame, slide_mpp: float, path: Path, n: int = 24) -> None:
    """The `n` highest-scoring detections, 16 um around each, enlarged to 96 px: what the detector
    fires on, for a pathologist to judge at a glance."""
    import cv2

    size0 = int(round(16.0 / slide_mpp))
    tiles = []
    for r in table.sort_values("score", ascending=False).head(n).itertuples(index=False):
        region = slide.read_region((int(r.x) - size0 // 2, int(r.y) - size0 // 2), 0, (size0, size0))
        tiles.append(cv2.resize(region, (96, 96), interpolation=cv2.INTER_LINEAR))
    if not tiles:
        return
    while len(tiles) % 8:
        tiles.append(np.full_like(tiles[0], 255))
    grid = np.concatenate([np.concatenate(tiles[i : i + 8], axis=1) for i in range(0, len(tiles), 8)], axis=0)
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), grid[:, :, ::-1])


def prepared_batches(batches, detector: MitosisDetector, box) -> Generator[tuple, None, None]:
    """(batch, [(proposals, windows) per tile]) with the next batch's proposals found in a
    worker thread while the caller scores this one: candidate finding (scikit-image, scipy) and
    the model (torch) release the GIL, so on two cores they overlap."""
    from concurrent.futures import ThreadPoolExecutor

    def prepare(batch) -> list:
        return [detector.prepare(img, detector.mpp, box) for img in batch.images]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mitosis-proposals") as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.submit(prepare, batch)))
            if len(pending) > 1:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def detection_windows(slide, xy: np.ndarray, window_px: int, scale: float) -> np.ndarray:
    """(n, 3, window_px, window_px) uint8 windows centred on level-0 points, at the detector's
    resolution (`scale` level-0 px per window px). A window that would leave the slide is
    shifted inside it, so a detection within half a window of the edge is seen off centre."""
    import cv2

    side = max(1, round(window_px * scale))
    width, height = slide.dimensions
    out = np.empty((len(xy), 3, window_px, window_px), np.uint8)
    for i, (x, y) in enumerate(xy):
        x0 = int(min(max(round(x - side / 2), 0), max(width - side, 0)))
        y0 = int(min(max(round(y - side / 2), 0), max(height - side, 0)))
        region = slide.read_region((x0, y0), 0, (side, side))
        if side != window_px:
            interp = cv2.INTER_AREA if side > window_px else cv2.INTER_CUBIC
            region = cv2.resize(region, (window_px, window_px), interpolation=interp)
        out[i] = region.transpose(2, 0, 1)
    return out


def fingerprint(detector: MitosisDetector, cfg: SlidePredictConfig, grading: GradingConfig, atypia: str | None) -> str:
    blob = json.dumps(
        {
            "detector": detector.ckpt.fingerprint,
            "threshold": detector.threshold,
            "detect": detector.cfg.model_dump(mode="json"),
            "tiles": {k: v for k, v in cfg.to_dict().items() if k not in SPEED_ONLY},
            "grading": grading.model_dump(mode="json"),
            "atypia": atypia,
            "pixels": PIXELS_VERSION,  # how tiles were resampled (tiling.read): another version redoes the slide
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def detect_slide(
    detector: MitosisDetector,
    slide_path: str | Path,
    out: str | Path,
    cfg: SlidePredictConfig,
    grading: GradingConfig | None = None,
    atypia=None,
    tile_px: int = 512,
    progress: bool = False,
    tiles_per_batch: int = 8,
) -> dict:
    """Detect mitoses over a slide's tissue and grade its hotspot; returns slide.json's content."""
    grading = grading or GradingConfig()
    started = time.perf_counter()
    slide_path = str(slide_path)
    slide_id = slide_id_for(slide_path)
    out_dir = Path(out) / slide_id
    fp = fingerprint(detector, cfg, grading, None if atypia is None else atypia.ckpt.fingerprint)
    done = is_complete(out_dir, fp)
    if done:
        return {**done, "resumed": True}
    window = detector.window_px
    cfg = SlidePredictConfig(**{**cfg.to_dict(), "mpp": detector.mpp, "overlap_px": window})
    with slide_reader(slide_path, cfg) as slide:
        plan = plan_tiles(slide, tile_px, detector.mpp, cfg)
        source = SlideTileSource(slide_path, plan.specs, open_reader_factory(slide_path, cfg))
        rows, windows_scored, model_s = [], 0, 0.0
        box = (0, 0, tile_px, tile_px)
        loop_started = time.perf_counter()
        threads = reader_threads(cfg.workers, detector.device)
        batches = stream_batches(source, tile_px, tiles_per_batch, threads, cfg.prefetch)
        prepared = prepared_batches(batches, detector, box)
        try:
            with progress_bar(len(plan.specs), slide_id, quiet=not progress, unit="tiles") as bar:
                for batch, found_windows in prepared:
                    windows = [w for _, w in found_windows]
                    tm = time.perf_counter()
                    scores = detector.score_windows(np.concatenate(windows)) if windows else np.zeros(0)
                    model_s += time.perf_counter() - tm
                    windows_scored += len(scores)
                    offsets = np.cumsum([0] + [len(w) for w in windows])
                    for i, (found, _) in enumerate(found_windows):
                        spec = plan.specs[batch.indices[i]]
                        frame = detector.finish(found, scores[offsets[i] : offsets[i + 1]], detector.mpp)
                        frame = frame[frame["score"] >= detector.threshold]
                        factor = spec.size_px0 / tile_px
                        for x, y, s in zip(frame["x"], frame["y"], frame["score"]):
                            rows.append((spec.x + x * factor, spec.y + y * factor, float(s)))
                    bar.advance(len(batch.indices) + len(batch.errors))
        finally:  # stop and join the reader threads, then close their slides, even on an error
            prepared.close()
            batches.close()
            source.close()
        detect_s = time.perf_counter() - loop_started
        slide_mpp = slide.mpp or cfg.slide_mpp
        if not slide_mpp:
            from histoflow.core.errors import DataError

            raise DataError(f"{slide_path}: the slide does not record its microns per pixel; pass --slide-mpp")
        table = pd.DataFrame(rows, columns=["x", "y", "score"])
        keep = nms(table[["x", "y"]].to_numpy(float), table["score"].to_numpy(), detector.cfg.nms_um / slide_mpp)
        table = table.iloc[np.sort(keep)].reset_index(drop=True)
        table.insert(0, "slide", slide_id)
        table["p_atypical"] = np.nan
        if atypia is not None and len(table):
            around = detection_windows(
                slide, table[["x", "y"]].to_numpy(float), atypia.window_px, detector.mpp / slide_mpp
            )
            table["p_atypical"] = atypia.score_windows(around)
        width, height = slide.dimensions
        xy_um = table[["x", "y"]].to_numpy(float) * slide_mpp
        spot = hotspot(xy_um, float(np.sqrt(grading.area_mm2) * 1000.0))
        grid = density_grid(table[["x", "y"]].to_numpy(float), width, height, grading.heatmap_um / slide_mpp)
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "detections.csv") as tmp:
            table.to_csv(tmp, index=False)
        features = [
            point_feature(r.x, r.y, slide_id, r.score, None if np.isnan(r.p_atypical) else r.p_atypical)
            for r in table.itertuples(index=False)
        ]
        atomic_write_bytes(
            out_dir / "detections.geojson", json.dumps({"type": "FeatureCollection", "features": features}).encode()
        )
        write_npy(out_dir / "density.npy", grid)
        heatmap_picture(slide, grid, spot, slide_mpp, out_dir / "heatmap.png", table[["x", "y"]].to_numpy(float))
        top_detections_picture(slide, table, slide_mpp, out_dir / "top_detections.png")
    total = time.perf_counter() - started
    tissue_mm2 = len(plan.specs) * ((tile_px - window) * detector.mpp / 1000.0) ** 2
    report = {
        "slide_id": slide_id,
        "path": slide_path,
        "status": "complete",
        "mitoses": int(len(table)),
        "hotspot": {
            **spot,
            "area_mm2": grading.area_mm2,
            "x0": spot["x_um"] / slide_mpp,
            "y0": spot["y_um"] / slide_mpp,
        },
        "score": nottingham_score(spot["count"], grading.cuts),
        "grading": grading.model_dump(mode="json"),
        "threshold": detector.threshold,
        "tiles": len(plan.specs),
        "resampled": plan.resampled,
        "windows": windows_scored,
        # detection: tiles read, proposals, windows, model, NMS (planning and pictures excluded)
        "seconds": {"total": round(total, 3), "detection": round(detect_s, 3), "model": round(model_s, 3)},
        "mm2_per_s": round(tissue_mm2 / detect_s, 4) if detect_s else None,
        "windows_per_s": round(windows_scored / detect_s, 1) if detect_s else None,
        "fingerprint": fp,
    }
    atomic_write_json(out_dir / "slide.json", report)
    return report


def load_detector(
    path: str, cfg: DetectConfig, threshold: float | None, atypia_checkpoint: str | Path | None, device: str
) -> tuple[MitosisDetector, AtypiaScorer | None]:
    """A worker's detector (and atypia model): what detect_slides' caller loaded, on `device`."""
    detector = MitosisDetector.from_checkpoint(path, cfg, device=device)
    detector.threshold = threshold
    return detector, AtypiaScorer(atypia_checkpoint, detector.mpp) if atypia_checkpoint else None


def detect_loaded(loaded: tuple, slide_path: str | Path, out: str, **kwargs) -> dict:
    detector, atypia = loaded
    return detect_slide(detector, slide_path, out, atypia=atypia, **kwargs)


def detect_slides(
    detector: MitosisDetector,
    slides: list[Path],
    out: str | Path,
    cfg: SlidePredictConfig,
    grading: GradingConfig | None = None,
    tile_px: int = 512,
    progress: bool = True,
    atypia_checkpoint: str | Path | None = None,
    scale: ScaleOut | None = None,
) -> dict:
    """Every slide in turn (finished ones skipped); a slide that fails is reported, not fatal.
    Writes OUT/summary.json and OUT/detections.csv (all slides). With `atypia_checkpoint` (a
    normal-vs-atypical model) each detection gets P(atypical) from a window around it.
    `scale`: one worker process per device or one Spark task per slide (predict.scale); each
    worker loads the detector from `detector`'s checkpoint, with its settings and threshold."""
    from histoflow.core.errors import ConfigError

    if detector.threshold is None:
        raise ConfigError(
            f"{detector.ckpt.path}: no detection threshold; use detector.pt from `histoflow mitosis evaluate`"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if scale is not None and scale.spread:
        load = partial(load_detector, str(detector.ckpt.path), detector.cfg, detector.threshold, atypia_checkpoint)
        run_kwargs = {"out": str(out.resolve()), "cfg": cfg, "grading": grading, "tile_px": tile_px}
        job = SlideJob(load, detect_loaded, run_kwargs, device=cfg.device)  # as asked, resolved by each worker
        reports, failed = run_slides(job, slides, scale, progress=progress)
    else:
        atypia = AtypiaScorer(atypia_checkpoint, detector.mpp) if atypia_checkpoint else None
        reports, failed = each_slide(
            slides, lambda path: detect_slide(detector, path, out, cfg, grading, atypia, tile_px, progress)
        )
    tables = [pd.read_csv(out / sid / "detections.csv") for sid in reports if (out / sid / "detections.csv").is_file()]
    with atomic_path(out / "detections.csv") as tmp:
        (pd.concat(tables) if tables else pd.DataFrame(columns=["slide", "x", "y", "score", "p_atypical"])).to_csv(
            tmp, index=False
        )
    summary = {
        "slides": len(slides),
        "mitoses": int(sum(r.get("mitoses", 0) for r in reports.values())),
        "threshold": detector.threshold,
        "scores": {
            s: {"score": r.get("score"), "hotspot_count": r.get("hotspot", {}).get("count")} for s, r in reports.items()
        },
        "failed": failed,
        "resumed": [s for s, r in reports.items() if r.get("resumed")],
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
