"""Progress bars: quiet is an argument, and a quiet bar prints nothing."""

from __future__ import annotations

from histoflow.core.progress import progress_bar


def test_quiet_bar_prints_nothing(capsys):
    with progress_bar(10, "counting", quiet=True) as bar:
        for _ in range(10):
            bar.advance()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_bar_counts_to_its_total():
    with progress_bar(4, "counting") as bar:
        bar.advance(3)
        bar.advance()
        assert bar._progress.tasks[0].completed == 4  # type: ignore[attr-defined]
