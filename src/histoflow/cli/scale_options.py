"""The scale-out options every whole-slide model verb shares (predict-slide, embed,
detect-mitoses; `tile` shares --engine and --spark-master): one name, one meaning, one help."""

from __future__ import annotations

from typing import Any

import typer

from histoflow.predict.scale import ScaleOut, parse_devices

SPARK_MASTER_HELP = "Spark master: local[*], spark://host:7077, yarn."


def engine_option() -> Any:
    return typer.Option(
        "local", "--engine", help="local (this process, or one per --devices) or spark (one Spark task per slide)."
    )


def spark_master_option() -> Any:
    return typer.Option("local[*]", "--spark-master", help=SPARK_MASTER_HELP)


def devices_option() -> Any:
    return typer.Option(
        None,
        "--devices",
        help="One worker process per device: a GPU count (2), GPU indices (0,1) or cpu,cpu; "
        "with --engine spark, the GPUs of each executor (one per task).",
    )


def scale_out(engine: str, spark_master: str, devices: str | None) -> ScaleOut | None:
    """None for the plain local run (one process, the --device), else where slides run."""
    if engine == "local" and not devices:
        return None
    return ScaleOut(engine=engine, spark_master=spark_master, devices=parse_devices(devices))
