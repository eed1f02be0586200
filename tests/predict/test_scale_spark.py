"""The three slide verbs on Spark (local mode, real slides): the same outputs as the local run,
one task per slide; a task whose Python worker dies mid-slide is retried and nothing doubles."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from histoflow.config.slides import SlidePredictConfig
from histoflow.predict.scale import InjectedFault, ScaleOut
from histoflow.predict.slide import predict_slides
from tests.predict.scale_fixtures import SLIDE_IDS, assert_same_outputs, make_inputs, run_verb

pytestmark = pytest.mark.spark
MASTER = "local[2,2]"  # 2 cores, and a failed task is tried twice (plain local[2] never retries)


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from histoflow.tiling.spark import spark_session

    session = spark_session(MASTER, conf={"spark.sql.shuffle.partitions": "2"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def test_predict_slide_on_spark_equals_the_local_run(spark, inputs, tmp_path):
    local = run_verb("predict-slide", inputs, tmp_path / "local")
    on_spark = run_verb("predict-slide", inputs, tmp_path / "spark", "--engine", "spark", "--spark-master", MASTER)
    assert on_spark["device"] == f"spark {MASTER}" and on_spark["complete"] == 2 and not on_spark["failed"]
    assert on_spark["scores"] == local["scores"] and list(on_spark["scores"]) == list(SLIDE_IDS)
    assert_same_outputs("predict-slide", tmp_path / "local", tmp_path / "spark")
    # resumable: a second Spark run finds every slide complete
    again = run_verb("predict-slide", inputs, tmp_path / "spark", "--engine", "spark", "--spark-master", MASTER)
    assert sorted(again["resumed"]) == sorted(SLIDE_IDS)


def test_an_executor_dying_mid_slide_is_retried_and_nothing_doubles(spark, inputs, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="histoflow.predict.scale")
    ckpt, cfg = inputs["predict-slide"], SlidePredictConfig()
    clean = predict_slides(ckpt, inputs["slides"], tmp_path / "clean", cfg, progress=False)
    # attempt 0 of CMU-1's task: its Python worker exits 0.3 s into the slide (os._exit)
    fault = InjectedFault("cmu-1-small-region", how="exit", after_s=0.3)
    hurt = predict_slides(
        ckpt, inputs["slides"], tmp_path / "hurt", cfg, progress=False,
        scale=ScaleOut(engine="spark", spark_master=MASTER, fault=fault),
    )  # fmt: skip
    assert "cmu-1-small-region.svs: done on attempt 2" in caplog.text, "the fault struck and Spark retried"
    assert not hurt["failed"] and hurt["complete"] == 2 and hurt["resumed"] == []
    assert hurt["scores"] == clean["scores"]
    assert_same_outputs("predict-slide", tmp_path / "clean", tmp_path / "hurt")
    assert not list((tmp_path / "hurt").rglob("*.tmp*")), "no temporary file left behind"


def test_a_failing_slide_is_reported_as_in_the_local_run(spark, inputs, tmp_path):
    slides = [inputs["slides"][1], str(tmp_path / "missing.svs")]
    local = predict_slides(inputs["predict-slide"], slides, tmp_path / "local", progress=False)
    scale = ScaleOut(engine="spark", spark_master=MASTER)
    on_spark = predict_slides(inputs["predict-slide"], slides, tmp_path / "spark", progress=False, scale=scale)
    assert on_spark["failed"] == local["failed"] and "slide file not found" in on_spark["failed"][slides[1]]
    assert on_spark["scores"] == local["scores"] and on_spark["complete"] == 1


@pytest.mark.parametrize("verb", ["embed", "detect-mitoses"])
def test_embed_and_detect_mitoses_on_spark_equal_the_local_run(spark, inputs, tmp_path, verb):
    run_verb(verb, inputs, tmp_path / "local")
    summary = run_verb(verb, inputs, tmp_path / "spark", "--engine", "spark", "--spark-master", MASTER)
    assert not summary["failed"] and summary["resumed"] == []
    assert_same_outputs(verb, tmp_path / "local", tmp_path / "spark")
