"""One vocabulary across verbs (issue 20): an option name means the same thing in every verb.

`--mpp` is always the resolution tiles are read at for a model, `--slide-mpp` always a slide's
level-0 resolution; processes and threads say which they are; `--format` is only ever a data
layout; shared options have one help text (they come from histoflow.cli.common)."""

from __future__ import annotations

from collections import defaultdict

import typer

from histoflow.cli import app

SHARED_HELP = ("--slide-mpp", "--batch-size", "--device", "--reader-threads")


def _options() -> dict[str, list[tuple[str, str]]]:
    """option name -> [(verb, help)] over every verb and sub-verb."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)

    def walk(cmd, prefix: str) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{prefix} {name}".strip())
        for param in getattr(cmd, "params", []):
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    found[opt].append((prefix, param.help or ""))

    walk(typer.main.get_command(app), "")
    return found


def test_no_option_hides_whether_it_is_threads_or_processes():
    options = _options()
    assert "--workers" not in options, options.get("--workers")
    assert all("process" in h for _, h in options["--processes"])
    assert all("thread" in h.lower() for _, h in options["--reader-threads"])


def test_mpp_and_slide_mpp_never_swap_meanings():
    options = _options()
    assert {v for v, _ in options["--mpp"]} >= {"tile", "predict-slide", "embed"}
    for verb, text in options["--mpp"]:
        assert "microns per pixel" in text.lower() and "level-0" not in text, (verb, text)
    assert {v for v, _ in options["--slide-mpp"]} >= {"info", "tile", "predict-slide", "embed"}
    for verb, text in options["--slide-mpp"]:
        assert "level-0" in text, (verb, text)


def test_format_is_only_a_data_layout_and_codecs_say_image_format():
    options = _options()
    assert [v for v, _ in options["--format"]] == ["data inspect"]
    assert [v for v, _ in options["--image-format"]] == ["tile"]


def test_shared_options_have_one_help_text():
    options = _options()
    for name in SHARED_HELP:
        texts = {h for _, h in options[name]}
        assert len(texts) == 1, (name, options[name])
    splits = {h for v, h in options["--split"] if v in ("evaluate", "explain")}
    assert len(splits) == 1 and "val (or valid)" in splits.pop()


def test_model_verbs_all_take_batch_size_and_device():
    options = _options()
    for name in ("--batch-size", "--device"):
        verbs = {v for v, _ in options[name]}
        assert {"evaluate", "predict", "predict-slide", "embed"} <= verbs, (name, verbs)
