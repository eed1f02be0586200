"""`histoflow view PATH...`: the slide lab, a local web viewer for slides and histoflow's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histoflow.cli.common import console, fail, run_verb


def register(app: typer.Typer) -> None:
    @app.command()
    def view(
        paths: list[Path] = typer.Argument(
            ...,
            help="Slides, folders of slides, and output folders (predict-slide, detect-mitoses, tile, study) "
            "or GeoJSON / detections.csv files.",
        ),
        port: int = typer.Option(8000, help="Port to listen on (0: any free port)."),
        host: str = typer.Option(
            "127.0.0.1", help="Address to listen on. Anything but 127.0.0.1 shows the slides to the network."
        ),
        token: Optional[str] = typer.Option(
            None, help="Require this token in the URL (?token=...); 'auto' makes one up. Advised with --host."
        ),
        tile_cache_mb: float = typer.Option(128, help="Memory for encoded tiles kept between requests (MB)."),
        jpeg_quality: int = typer.Option(85, help="JPEG quality of the slide tiles (10-100)."),
    ) -> None:
        """Pan and zoom slides at full resolution with heatmaps, masks, tile grids, GeoJSON and mitoses on top.

        Prints the URL to open; Ctrl-C stops the server. Serves only the files it was given."""
        from histoflow.viewer.server import check_port, host_warning, new_token, serve, url_of, view

        tok = new_token() if token == "auto" else token
        app_ = run_verb(view, paths, token=tok, tile_cache_mb=tile_cache_mb, jpeg_quality=jpeg_quality)
        catalog = app_.state.service.catalog
        n_overlays = sum(len(e.overlays) for e in catalog.slides.values())
        console.print(f"{len(catalog.slides)} slides, {n_overlays} overlays", highlight=False)
        for problem in catalog.problems:
            console.print(f"[yellow]skipped:[/] {problem}", highlight=False, soft_wrap=True)
        if not catalog.slides:
            raise fail("nothing to show: no slide and no output naming one among the paths given")
        warning = host_warning(host, tok)
        if warning:
            console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        port = run_verb(check_port, host, port)
        console.print(
            f"histoflow slide lab: {url_of(host, port, tok)}  (Ctrl-C to stop)", highlight=False, soft_wrap=True
        )
        serve(app_, host=host, port=port)
