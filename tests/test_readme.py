"""The README's shell blocks, run as written.

Every ```bash block of README.md carries a tag on the line above it:
  <!-- readme-test: run -->     run here, in order, in one fresh folder laid out like a checkout
  <!-- readme-test: slow -->    the same, under `make test-slow` (minutes of training)
  <!-- readme-test: repo -->    run in the repository itself (the install block: `make setup` there)
  <!-- readme-test: skip (why) --> not run, with the reason written down
The only change made to a block is where the shared data lives: `../shared/data` becomes this
machine's data folder (HISTOFLOW_DATA). A new block without a tag fails the first test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO, need_data

BLOCK = re.compile(r"(?:<!-- readme-test: (?P<tag>[^>]*?) -->\n)?```bash\n(?P<body>.*?)```", re.S)


def readme_blocks() -> list[tuple[str, str]]:
    """(tag, shell text) of every bash block, in README order; tag '' when it has none."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [(m["tag"] or "", m["body"]) for m in BLOCK.finditer(text)]


def blocks_tagged(tag: str) -> list[str]:
    return [body for t, body in readme_blocks() if t == tag]


def checkout_like(tmp: Path) -> Path:
    """A folder that looks like the repository root to the README's commands: the environment,
    the scripts and the recipes, but none of the repository's runs/."""
    root = tmp / "histoflow"
    root.mkdir()
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "scripts").symlink_to(REPO / "scripts")
    # copied, not linked: recipes name paths relative to themselves (../runs/...), and the
    # kernel would resolve those through a link into the repository
    shutil.copytree(REPO / "configs", root / "configs")
    return root


def run_block(body: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    script = body.replace("../shared/data", str(DATA))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "HISTOFLOW_DATA")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # the block's own `source .venv/bin/activate` must work
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"README block failed (exit {proc.returncode}):\n{script}\n---\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def test_every_readme_shell_block_says_how_it_is_tested():
    blocks = readme_blocks()
    assert len(blocks) >= 5
    for tag, body in blocks:
        first = body.strip().splitlines()[0]
        assert tag, f"README bash block starting {first!r} has no <!-- readme-test: ... --> tag"
        assert tag in ("run", "slow", "repo") or re.fullmatch(r"skip \(.+\)", tag), (
            f"README bash block starting {first!r}: unknown tag {tag!r} (run, slow, repo or skip (reason))"
        )
    assert blocks_tagged("run"), "the quickstarts must be run by the tests"


def test_readme_quickstarts_run_as_written(tmp_path):
    """The patch quickstart (inspect, train a recipe by name, evaluate with TTA, explain, predict)
    then the slide quickstart (info, tile, predict-slide with that model), word for word."""
    need_data("breakhis")
    need_data("wsi", "cmu-1-small-region.svs")
    root = checkout_like(tmp_path)
    for body in blocks_tagged("run"):
        run_block(body, root, timeout=900)
    run = root / "runs" / "mine"
    for made in ("report.html", "checkpoints/best.pt", "test/metrics.json", "explain/gallery.png"):
        assert (run / made).is_file(), made
    assert len((run / "predictions.csv").read_text().splitlines()) == 1 + len(
        list((DATA / "breakhis" / "malignant").glob("*.png"))
    )
    assert list((root / "runs" / "tiles" / "shards").glob("*/part-*.parquet"))
    slide = root / "runs" / "slides" / "cmu-1-small-region"
    assert (slide / "heatmap.png").is_file() and (slide / "slide.json").is_file()


def test_readme_install_block_runs_in_the_repository():
    """`make setup` (a no-op when .venv is current), activating, `histoflow doctor`."""
    (body,) = blocks_tagged("repo")
    proc = run_block(body, REPO, timeout=1200)
    assert "torch" in proc.stdout


@pytest.mark.slow
def test_readme_long_blocks_run_as_written(tmp_path):
    """The study (cohort script + histoflow study) and the mitosis recipe, word for word."""
    need_data("pcam")
    need_data("ami_br")
    root = checkout_like(tmp_path)
    for body in blocks_tagged("slow"):
        run_block(body, root, timeout=3600)
    assert (root / "runs" / "study_binary" / "evaluation").is_dir()
    assert (root / "runs" / "mitosis" / "detections" / "detections.csv").is_file()
