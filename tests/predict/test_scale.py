"""Scale-out without Spark: the device and resource rules, and one worker process per device
(`--devices cpu,cpu`) giving exactly the single-process outputs, each slide done once, and a
worker that dies mid-slide leaving a slide that a rerun completes."""

from __future__ import annotations

import json

import pytest

from histoflow.config.slides import SlidePredictConfig
from histoflow.core.errors import ConfigError
from histoflow.predict.scale import (
    DISCOVERY_SCRIPT,
    InjectedFault,
    ScaleOut,
    parse_devices,
    spark_gpu_conf,
    task_device,
)
from histoflow.predict.slide import predict_slides
from tests.predict.scale_fixtures import SLIDE_IDS, assert_same_outputs, make_inputs, run_verb


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def test_devices_option_names_workers():
    assert parse_devices(None) == parse_devices("") == ()
    assert parse_devices("2") == ("cuda:0", "cuda:1")
    assert parse_devices("0,1") == parse_devices("cuda:0, cuda:1") == ("cuda:0", "cuda:1")
    assert parse_devices("cpu,cpu") == ("cpu", "cpu")
    for bad in ("0", "gpu", "cuda", "cpu,tpu:0"):
        with pytest.raises(ConfigError, match="--devices"):
            parse_devices(bad)
    with pytest.raises(ConfigError, match="--engine"):
        ScaleOut(engine="dask")
    assert not ScaleOut(devices=("cuda:1",)).spread and ScaleOut(devices=("cpu", "cpu")).spread
    assert ScaleOut(engine="spark", devices=parse_devices("4")).gpus == 4


def test_a_spark_task_uses_the_gpu_spark_gave_it_else_the_asked_device_else_cpu():
    # the shape of TaskContext.get().resources(), as name -> addresses
    assert task_device({"gpu": ["3"]}) == "cuda:3"
    assert task_device({"gpu": ["1", "2"]}, "cpu") == "cuda:1"
    assert task_device({}) == task_device({"gpu": []}) == task_device({"gpu": [""]}) == "cpu"
    assert task_device({}, "cuda:0") == "cuda:0"
    assert spark_gpu_conf(0) == {}
    conf = spark_gpu_conf(2)
    assert conf["spark.executor.resource.gpu.amount"] == "2" and conf["spark.task.resource.gpu.amount"] == "1"
    assert conf["spark.executor.resource.gpu.discoveryScript"] == str(DISCOVERY_SCRIPT)
    assert DISCOVERY_SCRIPT.is_file() and DISCOVERY_SCRIPT.stat().st_mode & 0o111, "Spark executes it"


def test_in_memory_slides_cannot_leave_the_process(inputs, tmp_path):
    import numpy as np

    from histoflow.slide import ArraySlide
    from histoflow.tiling.readers import register_in_memory

    path = register_in_memory(ArraySlide(np.full((64, 64, 3), 200, np.uint8), mpp=1.0, slide_id="mem"))
    with pytest.raises(ConfigError, match="in-memory"):
        predict_slides(
            inputs["predict-slide"], [path], tmp_path, progress=False, scale=ScaleOut(devices=("cpu", "cpu"))
        )


def test_two_worker_processes_give_the_single_process_outputs(inputs, tmp_path):
    one = run_verb("predict-slide", inputs, tmp_path / "one")
    two = run_verb("predict-slide", inputs, tmp_path / "two", "--devices", "cpu,cpu")
    assert_same_outputs("predict-slide", tmp_path / "one", tmp_path / "two")
    # each slide once: reported once, none found already done by another worker
    assert two["complete"] == 2 and two["resumed"] == [] and not two["failed"] and two["device"] == "cpu,cpu"
    assert two["scores"] == one["scores"] and list(two["scores"]) == list(SLIDE_IDS)  # in the order given
    again = run_verb("predict-slide", inputs, tmp_path / "two", "--devices", "cpu,cpu")
    assert sorted(again["resumed"]) == sorted(SLIDE_IDS)  # resumable per slide


@pytest.mark.slow
def test_a_worker_dying_mid_slide_leaves_it_incomplete_and_a_rerun_completes_it(inputs, tmp_path):
    from histoflow.slide.synthetic import write_synthetic_slide

    third = write_synthetic_slide(tmp_path / "pyr2.tif", 2000, 2000, mpp=0.25, tile_px=256, min_level_px=600, seed=7)
    slides = [*inputs["slides"], str(third)]
    ckpt, cfg = inputs["predict-slide"], SlidePredictConfig()
    clean = predict_slides(ckpt, slides, tmp_path / "clean", cfg, progress=False)
    # the worker running CMU-1 exits (os._exit, no clean-up) 0.3 s into it; the other worker
    # does the two other slides
    fault = InjectedFault("cmu-1-small-region", how="exit", after_s=0.3)
    hurt = predict_slides(
        ckpt, slides, tmp_path / "run", cfg, progress=False, scale=ScaleOut(devices=("cpu", "cpu"), fault=fault)
    )
    assert list(hurt["failed"]) == [slides[0]] and "died" in hurt["failed"][slides[0]]
    assert hurt["complete"] == 2 and set(hurt["scores"]) == {"pyr", "pyr2"}
    assert not (tmp_path / "run" / "cmu-1-small-region" / "slide.json").exists(), "no completion marker"
    rerun = predict_slides(ckpt, slides, tmp_path / "run", cfg, progress=False, scale=ScaleOut(devices=("cpu", "cpu")))
    assert not rerun["failed"] and sorted(rerun["resumed"]) == ["pyr", "pyr2"]
    assert rerun["scores"] == clean["scores"]
    assert_same_outputs("predict-slide", tmp_path / "clean", tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["complete"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["embed", "detect-mitoses"])
def test_embed_and_detect_mitoses_on_two_worker_processes(inputs, tmp_path, verb):
    run_verb(verb, inputs, tmp_path / "one")
    summary = run_verb(verb, inputs, tmp_path / "two", "--devices", "cpu,cpu")
    assert not summary["failed"] and summary["resumed"] == []
    assert_same_outputs(verb, tmp_path / "one", tmp_path / "two")


def test_scale_options_mean_one_thing_in_every_verb():
    import typer

    from histoflow.cli import app

    helps: dict[str, dict[str, str]] = {}
    for name, cmd in typer.main.get_command(app).commands.items():
        for param in getattr(cmd, "params", []):
            for opt in param.opts:
                helps.setdefault(opt, {})[name] = param.help or ""
    verbs = {"predict-slide", "embed", "detect-mitoses"}
    assert verbs <= set(helps["--devices"]) and len({helps["--devices"][v] for v in verbs}) == 1
    assert verbs | {"tile"} <= set(helps["--spark-master"]) and len(set(helps["--spark-master"].values())) == 1
    assert verbs | {"tile"} <= set(helps["--engine"]) and len({helps["--engine"][v] for v in verbs}) == 1


@pytest.mark.slow
def test_embed_with_a_foundation_encoder_on_two_worker_processes(inputs, tmp_path):
    """`embed --encoder` rebuilds the encoder (and its weights file) in each worker process:
    the same embeddings and embed.json as one process."""
    import torch
    from typer.testing import CliRunner

    from histoflow.cli import app
    from histoflow.models.encoder_backbone import build_architecture
    from histoflow.models.encoders import get_encoder_spec

    torch.manual_seed(1)
    torch.save(build_architecture(get_encoder_spec("vit-s16-imagenet")).state_dict(), tmp_path / "vit.bin")
    for out, extra in (("one", []), ("two", ["--devices", "cpu,cpu"])):
        args = ["--quiet", "embed", *inputs["slides"], "--encoder", "vit-s16-imagenet"]
        res = CliRunner().invoke(
            app, [*args, "--weights", str(tmp_path / "vit.bin"), "--out", str(tmp_path / out), *extra]
        )
        assert res.exit_code == 0, res.output
    assert_same_outputs("embed", tmp_path / "one", tmp_path / "two")
    assert json.loads((tmp_path / "two" / SLIDE_IDS[0] / "embed.json").read_text())["encoder"] == "vit-s16-imagenet"


@pytest.mark.parametrize("verb", ["predict-slide", "embed", "detect-mitoses"])
def test_every_slide_reader_a_verb_opens_is_closed(inputs, tmp_path, monkeypatch, verb):
    """The planning reader, the reader threads' readers and the pictures' reader: all closed by
    the time the verb returns (embed used to leave its planning reader open)."""
    import histoflow.slide.open as slide_open

    opened: list = []
    real_open = slide_open.open_slide

    def recording_open(*args, **kwargs):
        reader = real_open(*args, **kwargs)
        real_close = reader.close
        reader.closed_by_test = False

        def close():
            reader.closed_by_test = True
            real_close()

        reader.close = close
        opened.append(reader)
        return reader

    monkeypatch.setattr(slide_open, "open_slide", recording_open)
    run_verb(verb, inputs, tmp_path / "out")
    assert opened, "the verb should open the slides through open_slide"
    left_open = [r.path for r in opened if not r.closed_by_test]
    assert not left_open, left_open
