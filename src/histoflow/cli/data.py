"""`histoflow data inspect|download` and `histoflow normalize`: patch datasets and their colour."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histoflow.cli.common import batch_size_option, console, run_verb, state
from histoflow.core.io import atomic_write_json
from histoflow.workflows.display import print_summary

data_app = typer.Typer(help="Patch datasets: inspect layouts, download public data.", no_args_is_help=True)


@data_app.command("inspect")
def data_inspect(
    path: Path = typer.Argument(..., help="Folder, CSV manifest, Kaggle folder or PCam HDF5."),
    format: str = typer.Option("auto", help="class_folders, idc, kaggle, pcam_h5, csv, images or auto."),
    label_column: str = typer.Option("label", help="Label column of a CSV manifest."),
    label_pattern: Optional[str] = typer.Option(None, help="Regex with one group: label from file name."),
    on_error: str = typer.Option("raise", help="raise: stop on a bad image; skip: drop, count and list it."),
    split: bool = typer.Option(False, help="Make a stratified (patient-grouped) split when the data has none."),
    seed: int = typer.Option(42, help="Seed of the split."),
    out: Optional[Path] = typer.Option(None, help="Write manifest.csv and summary.json here."),
) -> None:
    """Read a patch dataset, check every image and print a summary."""
    from histoflow.data.manifest import read_manifest
    from histoflow.data.splits import split_manifest
    from histoflow.data.summary import summarize
    from histoflow.data.verify import verify_manifest

    def work():
        options = {"label_column": label_column}
        if label_pattern:
            options["label_pattern"] = label_pattern
        manifest = read_manifest(path, format=format, **options)
        console.print(f"format: [bold]{manifest.format}[/]")
        manifest = verify_manifest(manifest, on_error=on_error)
        if split and not manifest.splits:
            manifest = split_manifest(manifest, seed=seed)
        summary = summarize(manifest)
        print_summary(console, summary)
        if out:
            manifest.to_csv(out / "manifest.csv")
            atomic_write_json(out / "summary.json", summary)
            console.print(f"wrote {out / 'manifest.csv'} and {out / 'summary.json'}")
        return summary

    run_verb(work)


@data_app.command("download")
def data_download(
    name: str = typer.Argument("pcam", help="Dataset name (pcam)."),
    out: Path = typer.Option(None, help="Destination folder [default: $HISTOFLOW_DATA/<name>_h5]."),
    split: list[str] = typer.Option(None, help="Only these splits: train, val (or valid) or test."),
) -> None:
    """Download a public dataset and verify its checksums (resumable, never half-written)."""
    from histoflow.core.paths import data_root
    from histoflow.data.download import PCAM_MD5, download

    dest = out or data_root() / f"{name}_h5"
    files = None
    if split:
        # PCam's files call the validation split "valid"; histoflow says val elsewhere: both work
        wanted = {"valid" if s.lower() in ("val", "valid", "validation") else s.lower() for s in split}
        files = [f for f in PCAM_MD5 if any(f"_split_{s}_" in f for s in wanted)]
    paths = run_verb(download, name, dest, files=files)
    for p in paths:
        console.print(f"verified {p}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

    @app.command("normalize")
    def normalize(
        sources: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
        target: Optional[Path] = typer.Option(None, help="Target image or folder [macenko: reference H&E matrix]."),
        out: Path = typer.Option(..., help="Output folder (same file names as the sources)."),
        method: str = typer.Option("macenko", help="macenko or reinhard."),
        clahe_clip: Optional[float] = typer.Option(None, help="Also apply CLAHE (on L of LAB) with this clip limit."),
        clahe_grid: int = typer.Option(8, help="CLAHE grid (tiles per side)."),
        batch_size: int = batch_size_option(32),
        io: str = typer.Option(
            "240",
            help="Macenko: brightness of empty glass (uint8), e.g. 215 for BreakHis, "
            "or auto (estimated per image and from the target).",
        ),
        panel: Optional[Path] = typer.Option(
            None, help="Before/after picture of a few images [default: <out>_before_after.png, beside --out]."
        ),
    ) -> None:
        """Stain-normalise images to a target (Macenko or Reinhard); writes normalizer.json too."""
        from histoflow.preprocess.files import normalize_files

        summary = run_verb(
            normalize_files,
            sources,
            out,
            target,
            method,
            clahe_clip,
            clahe_grid,
            batch_size,
            quiet=state.quiet,
            io=io,
            panel=panel,
        )
        what = (
            "left unchanged (no tissue, or flat)"
            if method == "reinhard"
            else "fell back to the reference stain matrix (too little tissue, or one stain)"
        )
        console.print(
            f"normalised {summary['images']} images into {summary['out']} "
            f"({summary['fallbacks']} {what}); state: {summary['state']}; before/after: {summary['panel']}",
            highlight=False,
            soft_wrap=True,
        )
        names = summary.get("fallback_files") or []
        for name in names[:10]:
            console.print(f"  {what.split(' (')[0]}: {name}", highlight=False, soft_wrap=True)
        if len(names) > 10:
            console.print(f"  ... and {len(names) - 10} more", highlight=False)
