"""The `histoflow` command line: one verb per stage, each writing its resolved config.

Verbs stay thin: they parse options, call the library function that does the work, and print.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from histoflow.core.errors import ConfigError, HistoflowError

app = typer.Typer(help="histoflow: computational pathology from patches and whole slides.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Patch datasets: inspect layouts, download public data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()


def setup_logging(quiet: bool = False) -> None:
    from rich.logging import RichHandler

    logger = logging.getLogger("histoflow")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=Console(stderr=True), show_path=False, show_time=False))
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


@app.callback()
def main(quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars.")) -> None:
    setup_logging(quiet)
    import os

    if quiet:
        os.environ["HISTOFLOW_QUIET"] = "1"


def run_verb(fn, *args, **kwargs):
    """Run a library call; a HistoflowError becomes a one-line message and exit code 2.
    On success the verb's resolved options are written beside its output (record_command)."""
    try:
        result = fn(*args, **kwargs)
    except HistoflowError as exc:
        console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    record_command()
    return result


def record_command() -> Path | None:
    """Write the running verb and every option it resolved (defaults included) as YAML into its
    `--out` folder (`command.yaml`), or beside an `--out` file (`<name>.command.yaml`): what
    produced an output stays next to it. `train` and `tune` also write their full run config."""
    import yaml

    from histoflow.core.version import __version__

    try:  # typer >= 0.20 carries its own copy of click; older typer runs on click itself
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover
        from click import get_current_context
    ctx = get_current_context(silent=True)
    out = ctx.params.get("out") if ctx is not None else None
    if out is None:
        return None
    out = Path(out)
    # an --out folder (it exists: the verb succeeded) holds it; an --out file gets a sibling
    target = out / "command.yaml" if out.is_dir() else out.with_name(out.stem + ".command.yaml")

    def plain(value):  # YAML-safe: paths as strings, lists of paths as lists of strings
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    record = {"command": ctx.command_path, "options": {k: plain(v) for k, v in ctx.params.items()},
              "histoflow": __version__}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(yaml.safe_dump(record, sort_keys=False))
    tmp.replace(target)
    return target


def print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['source']} ({summary['format']}, {summary['n_images']} images)")
    classes = summary["classes"] or ["(unlabelled)"]
    table.add_column("split")
    for c in classes:
        table.add_column(str(c), justify="right")
    table.add_column("total", justify="right")
    for split, counts in summary["counts"].items():
        values = [counts.get(c, counts.get("", 0)) for c in classes]
        table.add_row(split, *map(str, values), str(sum(counts.values())))
    console.print(table)
    for key in ("patients", "slides", "image_sizes", "converted_to_rgb", "channel_mean", "channel_std",
                "duplicate_groups", "duplicate_files", "duplicates_across_splits", "skipped"):
        if key in summary:
            console.print(f"  {key}: {summary[key]}", highlight=False)
    for line in summary.get("skipped_files", [])[:10]:
        console.print(f"    skipped {line}", highlight=False, markup=False)


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
        print_summary(summary)
        if out:
            out.mkdir(parents=True, exist_ok=True)
            manifest.to_csv(out / "manifest.csv")
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            console.print(f"wrote {out / 'manifest.csv'} and {out / 'summary.json'}")
        return summary

    run_verb(work)


@data_app.command("download")
def data_download(
    name: str = typer.Argument("pcam", help="Dataset name (pcam)."),
    out: Path = typer.Option(None, help="Destination folder [default: $HISTOFLOW_DATA/<name>_h5]."),
    split: list[str] = typer.Option(None, help="Only these splits (train, valid, test)."),
) -> None:
    """Download a public dataset and verify its checksums (resumable, never half-written)."""
    from histoflow.data.download import PCAM_MD5, download
    from histoflow.core.paths import data_root

    dest = out or data_root() / f"{name}_h5"
    files = None
    if split:
        files = [f for f in PCAM_MD5 if any(f"_split_{s}_" in f for s in split)]
    paths = run_verb(download, name, dest, files=files)
    for p in paths:
        console.print(f"verified {p}")


@app.command()
def doctor() -> None:
    """Versions of torch, timm, OpenSlide, Java/Spark, and whether a GPU is visible."""
    from histoflow.doctor import checks

    table = Table(title="histoflow doctor")
    table.add_column("component")
    table.add_column("ok")
    table.add_column("details")
    for name, ok, details in checks():
        table.add_row(name, "[green]yes[/]" if ok else "[red]no[/]", details)
    console.print(table)


@app.command("models")
def models_cmd(timm_filter: Optional[str] = typer.Option(None, "--timm", help="Also list timm models matching this pattern, e.g. 'resnet*'.")) -> None:
    """List histoflow's models (any timm backbone name works too)."""
    from histoflow.models.registry import registered

    table = Table(title="histoflow models")
    table.add_column("name")
    table.add_column("what it is")
    for name, text in sorted(registered().items()):
        table.add_row(name, text)
    table.add_row("<any timm name>", "a timm backbone with a new head, e.g. resnet34, densenet161, legacy_xception")
    console.print(table)
    if timm_filter:
        import timm

        console.print(", ".join(timm.list_models(timm_filter)))


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="Run config YAML (defaults apply to anything it leaves out)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config value: --set train.epochs=3 (repeatable)."),
    out: Optional[Path] = typer.Option(None, help="Run folder [default: runs/<name>]."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint."),
    devices: Optional[str] = typer.Option(None, help="Number of devices (e.g. 2 GPUs)."),
    strategy: Optional[str] = typer.Option(None, help="Lightning strategy, e.g. ddp."),
) -> None:
    """Train a patch classifier; writes config.yaml, checkpoints/, history.csv, metrics.json."""
    from histoflow.config import load_config
    from histoflow.train.fit import fit

    overrides = list(set_ or [])
    if devices:
        overrides.append(f"train.devices={devices}")
    if strategy:
        overrides.append(f"train.strategy={strategy}")

    def work():
        cfg_path = config
        if resume and cfg_path is None:
            if out is None:
                raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
            cfg_path = out / "config.yaml"  # continue with exactly what ran
        cfg = load_config(cfg_path, overrides)
        run_dir = out or Path("runs") / cfg.name
        fit(cfg, run_dir, resume=resume)
        return run_dir

    run_dir = run_verb(work)
    _print_metrics(run_dir / "metrics.json")
    console.print(f"run folder: {run_dir}")


def _print_metrics(path: Path) -> None:
    if not path.exists():
        return
    payload = json.loads(path.read_text())
    for name, result in payload.items():
        if isinstance(result, dict) and "n" in result:
            figures = ", ".join(f"{k} {result[k]:.4f}" for k in ("auc", "accuracy", "f1", "recall", "specificity")
                                if isinstance(result.get(k), (int, float)))
            console.print(f"  {name}: n {result['n']}, {figures}", highlight=False)
            for note in result.get("notes", []):
                console.print(f"    note: {note}", highlight=False)


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="A histoflow checkpoint (best.pt)."),
    data: Path = typer.Option(..., help="Labelled patches: folder, CSV manifest, Kaggle folder or PCam HDF5."),
    split: Optional[str] = typer.Option(None, help="Only this split of the data (train/val/test)."),
    tta: bool = typer.Option(False, help="Average the 8 dihedral views."),
    threshold: float = typer.Option(0.5, help="Decision threshold on the positive-class probability."),
    out: Path = typer.Option(Path("runs/evaluate"), help="Output folder (metrics.json, plots)."),
) -> None:
    """Evaluate a checkpoint: metrics.json, ROC/PR/confusion plots."""
    from histoflow.evaluate.run import evaluate_checkpoint

    run_verb(evaluate_checkpoint, checkpoint, data, out, split=split, tta=tta, threshold=threshold)
    _print_metrics(out / "metrics.json")
    console.print(f"wrote {out / 'metrics.json'}")


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., help="A histoflow checkpoint (best.pt)."),
    data: Path = typer.Option(..., help="Images: a bare folder, a class-folder dataset, a CSV or Kaggle folder."),
    out: Path = typer.Option(Path("predictions.csv"), help="CSV with one row per image."),
    tta: bool = typer.Option(False, help="Average the 8 dihedral views."),
    threshold: float = typer.Option(0.5, help="Decision threshold on the positive-class probability."),
) -> None:
    """Class probabilities and predicted label for every image."""
    from histoflow.predict.folder import predict_to_csv

    frame = run_verb(predict_to_csv, checkpoint, data, out, tta=tta, threshold=threshold)
    console.print(f"wrote {len(frame)} predictions to {out}")


@app.command()
def demo(
    data_root: Optional[Path] = typer.Option(None, help="Folder holding pcam/ [default: $HISTOFLOW_DATA]."),
    out: Path = typer.Option(Path("runs/demo"), help="Output folder of the demo run."),
    set_: list[str] = typer.Option(None, "--set", help="Override the recipe, e.g. --set train.epochs=1 (quick look)."),
) -> None:
    """The main job on real PCam patches (what `make demo` runs)."""
    from histoflow.demo import run_demo

    code = run_verb(run_demo, data_root, out, console, list(set_ or []))
    raise typer.Exit(code or 0)


from histoflow.cli_colour import register as _register_colour  # noqa: E402

_register_colour(app)

from histoflow.cli_slides import register as _register_slides  # noqa: E402

_register_slides(app)

from histoflow.cli_slidepred import register as _register_slidepred  # noqa: E402

_register_slidepred(app)

from histoflow.cli_report import register as _register_report  # noqa: E402

_register_report(app)

from histoflow.cli_tune import register as _register_tune  # noqa: E402

_register_tune(app)


def _main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # python -m histoflow.cli (used by DDP launchers and tests)
    _main()
