"""`histoflow info SLIDE` and `histoflow tile SLIDES... --out DIR`: the whole-slide verbs.

Exit codes: 0 all slides complete; 1 some slides failed (each has a report.json saying why);
2 a usage or input error that stopped everything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from histoflow.cli.common import (
    config_option,
    console,
    expand_slides,
    run_verb,
    set_option,
    slide_mpp_option,
    state,
    verb_config,
)
from histoflow.cli.scale_options import spark_master_option


def register(app: typer.Typer) -> None:
    @app.command()
    def info(
        slide: Path = typer.Argument(
            ..., help="Slide file (svs, ndpi, mrxs, scn, tiff, png, jpeg...) or DICOM series folder."
        ),
        backend: str = typer.Option("auto", help="auto, openslide, tifffile or image."),
        slide_mpp: Optional[float] = slide_mpp_option(),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Levels, mpp, magnification, vendor and associated images of a slide."""
        from histoflow.slide.open import open_slide

        def work():
            with open_slide(slide, backend=backend, mpp=slide_mpp) as s:
                return s.info()

        meta = run_verb(work)
        if as_json:
            print(json.dumps(meta, indent=2))
            return
        mpp_txt = (
            "unknown (pass --slide-mpp)" if meta["mpp"] is None else f"{meta['mpp']:g} um/px ({meta['mpp_source']})"
        )
        console.print(
            f"[bold]{meta['slide_id']}[/]  backend={meta['backend']}  vendor={meta['vendor']}  mpp={mpp_txt}  "
            f"objective={meta['objective_power'] or 'unknown'}",
            highlight=False,
        )
        table = Table()
        for col in ("level", "width", "height", "downsample", "mpp", "magnification"):
            table.add_column(col, justify="right")
        for lv in meta["levels"]:
            table.add_row(
                *(
                    "-" if lv[c] is None else f"{lv[c]:g}" if isinstance(lv[c], float) else str(lv[c])
                    for c in ("level", "width", "height", "downsample", "mpp", "magnification")
                )
            )
        console.print(table)
        console.print(f"associated images: {', '.join(meta['associated_images']) or 'none'}", highlight=False)

    @app.command()
    def tile(
        slides: list[Path] = typer.Argument(..., help="Slide files, DICOM series folders, or folders of them."),
        out: Path = typer.Option(..., help="Output folder (shards/, slides/<id>/report.json, manifest.parquet)."),
        config: Optional[Path] = config_option("Tiling config (the keys of TileConfig)"),
        set_: Optional[list[str]] = set_option("tissue_threshold=0.3"),
        tile_px: int = typer.Option(256, help="Output tile side in pixels."),
        mpp: Optional[float] = typer.Option(
            None, help="Output microns per pixel [default: 0.5 unless --tile-um/--magnification]."
        ),
        tile_um: Optional[float] = typer.Option(None, help="Physical tile side in microns (mpp = tile_um / tile_px)."),
        magnification: Optional[float] = typer.Option(
            None, help="Output magnification, e.g. 20 (needs objective power)."
        ),
        overlap_px: int = typer.Option(0, help="Output pixels shared by neighbouring tiles."),
        tissue_threshold: float = typer.Option(0.5, help="Keep tiles with at least this tissue fraction."),
        tissue_method: str = typer.Option("saturation", help="saturation or od (optical density)."),
        whitespace_max: Optional[float] = typer.Option(
            0.8, help="Reject tiles with more glass than this fraction (QC)."
        ),
        blur_min: Optional[float] = typer.Option(
            None, help="Reject tiles whose Laplacian variance is below this (QC)."
        ),
        image_format: str = typer.Option("jpeg", "--image-format", help="Tile codec: jpeg or png."),
        jpeg_quality: int = typer.Option(90, help="JPEG quality (1-100)."),
        tiles_per_shard: int = typer.Option(256, help="Tiles per Parquet shard."),
        slide_mpp: Optional[float] = slide_mpp_option(),
        backend: str = typer.Option("auto", help="Slide reader: auto, openslide, tifffile or image."),
        on_tile_error: str = typer.Option(
            "fail", help="fail: an unreadable tile fails its slide; skip: count it and go on."
        ),
        engine: str = typer.Option("local", help="local (process pool) or spark."),
        processes: Optional[int] = typer.Option(
            None, "--processes", help="Local engine: worker processes [default: all cores]."
        ),
        spark_master: str = spark_master_option(),
        pool_min_tiles: Optional[int] = typer.Option(
            None, hidden=True, help="Local engine: use the process pool from this many tiles (tests force it with 0)."
        ),
    ) -> None:
        """Tissue-detect and tile slides into Parquet shards (resumable; failed slides are reported)."""
        from histoflow.config.tiling import TileConfig
        from histoflow.tiling.extract import extract_tiles

        def work():
            cfg = verb_config(TileConfig, config, set_)
            return extract_tiles(
                expand_slides(slides),
                out,
                cfg,
                engine=engine,
                workers=processes,
                spark_master=spark_master,
                progress=not state.quiet,
                pool_min_tiles=pool_min_tiles,
            )

        summary = run_verb(work)
        table = Table(title=f"tiles -> {summary['out']} ({summary['engine']}, {summary['seconds']:.1f} s)")
        for col in ("slide", "status", "kept", "rejected", "seconds", "note"):
            table.add_column(col)
        for sid in summary["skipped"]:
            table.add_row(sid, "skipped", "-", "-", "-", "already complete")
        for sid, r in summary["reports"].items():
            rejected = ", ".join(f"{k} {v}" for k, v in r["rejected"].items() if v)
            status = "[green]complete[/]" if r["status"] == "complete" else "[red]failed[/]"
            note = r.get("error") or r.get("warning") or ""
            table.add_row(
                sid,
                status,
                str(r["kept"]),
                rejected,
                f"{sum(r['seconds'].values()):.1f}",
                note if len(note) < 40 else note[:37] + "...",
            )
        console.print(table)
        for sid, r in summary["reports"].items():  # whole messages, unwrapped: they name the file and the fix
            if r.get("error") or r.get("warning"):
                kind = "[red]failed[/]" if r["status"] != "complete" else "[yellow]warning[/]"
                console.print(f"{kind} {sid}: {r.get('error') or r.get('warning')}", soft_wrap=True, highlight=False)
        console.print(
            f"{summary['tiles_kept']} tiles kept, {summary['tiles_per_s'] or 0:.0f} tiles/s; "
            f"{summary['complete']}/{summary['slides']} slides complete",
            highlight=False,
        )
        if summary["failed"]:
            raise typer.Exit(1)
