"""Class: what `data.on_error: skip` left out must stay visible after the console scrolls away.

Skipped files were logged once; metrics.json and report.html said nothing, so a run on 20% of
the data looked like a run on all of it.
"""

from __future__ import annotations

import json

from histoflow.data.manifest import read_manifest
from histoflow.data.verify import verify_manifest
from histoflow.evaluate.report import skipped_section
from histoflow.evaluate.run import skipped_summary
from tests.reliability.tiny import invoke, pcam_folder, train


def _with_bad_files(root, n_bad=3):
    data = pcam_folder(root, n_per_class=12)
    for k in range(n_bad):
        (data / "0" / f"broken_{k}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (data / "1" / "empty.png").write_bytes(b"")
    return data


def test_skipped_travel_with_every_part_of_the_manifest(tmp_path):
    manifest = verify_manifest(read_manifest(_with_bad_files(tmp_path / "d")), on_error="skip")
    assert len(manifest.skipped) == 4
    assert len(manifest.subset([0, 1]).skipped) == 4  # split/subsample keep the data set's record


def test_summary_lists_first_files_and_the_total():
    skipped = [(f"/d/{k}.png", "cannot decode") for k in range(120)]
    s = skipped_summary(skipped)
    assert s["count"] == 120 and len(s["files"]) == s["listed"] == 50
    html = skipped_section(s)
    assert "120 image(s)" in html and "first 50" in html and "/d/0.png" in html
    assert skipped_section(skipped_summary([])) == ""


def test_run_records_skipped_files_in_metrics_and_report(tmp_path):
    data = _with_bad_files(tmp_path / "d")
    result = train(data, tmp_path / "run", "data.on_error=skip")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped"]["count"] == 4
    assert {f["path"].rsplit("/", 1)[1] for f in metrics["skipped"]["files"]} == {
        "broken_0.jpg",
        "broken_1.jpg",
        "broken_2.jpg",
        "empty.png",
    }
    assert all(f["reason"] for f in metrics["skipped"]["files"])
    assert invoke("report", str(tmp_path / "run"), "--no-explain").exit_code == 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "4 image(s) could not be read" in html and "broken_0.jpg" in html
