"""One vocabulary across verbs (issue 20): an option name means the same thing in every verb.

`--mpp` is always the resolution tiles are read at for a model, `--slide-mpp` always a slide's
level-0 resolution; processes and threads say which they are; `--format` is only ever a data
layout; shared options have one help text (they come from histoflow.cli.common); a verb's inputs
are positional arguments, never `--data`."""

from __future__ import annotations

import re
from collections import defaultdict

import typer
from typer.testing import CliRunner

from histoflow.cli import app

SHARED_HELP = ("--slide-mpp", "--batch-size", "--device", "--reader-threads")


def _options() -> dict[str, list[tuple[str, str]]]:
    """option name -> [(verb, help)] over every verb and sub-verb."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)

    def walk(cmd, prefix: str) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{prefix} {name}".strip())
        for param in getattr(cmd, "params", []):
            if getattr(param, "hidden", False):  # deprecated spellings: not on the help
                continue
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
        assert {"evaluate", "explain", "predict", "predict-slide", "embed"} <= verbs, (name, verbs)


def _helps() -> dict[str, str]:
    """verb -> its `--help` text, for every verb and sub-verb."""
    helps: dict[str, str] = {}

    def walk(cmd, ctx) -> None:
        for name in getattr(cmd, "list_commands", lambda _: [])(ctx):
            sub = cmd.get_command(ctx, name)
            walk(sub, sub.context_class(sub, info_name=name, parent=ctx))
        helps[ctx.command_path] = cmd.get_help(ctx)

    group = typer.main.get_command(app)
    walk(group, group.context_class(group, info_name="histoflow"))
    return helps


def _arguments() -> dict[str, list[str]]:
    """verb -> names of its positional arguments."""
    found: dict[str, list[str]] = {}

    def walk(cmd, prefix: str) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{prefix} {name}".strip())
        found[prefix] = [p.name for p in getattr(cmd, "params", []) if p.param_type_name == "argument"]

    walk(typer.main.get_command(app), "")
    return found


def test_a_verbs_inputs_are_positional_and_data_is_on_no_help():
    arguments = _arguments()
    for verb in ("evaluate", "explain", "predict", "data inspect", "normalize", "tile", "predict-slide", "embed"):
        assert arguments[verb], f"{verb}: its input is not a positional argument"
    for verb in ("report", "view", "info", "detect-mitoses", "mitosis windows", "mitosis evaluate", "predict-mil"):
        assert arguments[verb], f"{verb}: its input is not a positional argument"
    assert arguments["evaluate"] == arguments["explain"] == arguments["predict"] == ["data"]
    assert "--data" not in _options()
    for verb, text in _helps().items():
        assert not re.search(r"--data\b(?!-)", text), (verb, text)  # --data-root (demo) is another option


def test_deprecated_data_option_still_runs_with_a_note(tmp_path):
    runner = CliRunner()
    missing, data = tmp_path / "nope.pt", tmp_path
    for verb in ("evaluate", "explain", "predict"):
        old = runner.invoke(app, [verb, "--checkpoint", str(missing), "--data", str(data)])
        assert old.exit_code == 2 and "nope.pt" in old.output, old.output  # it got as far as the checkpoint
        assert f"--data is deprecated; give the data as an argument: histoflow {verb} --checkpoint CKPT DATA" in (
            old.output
        )
        both = runner.invoke(app, [verb, "--checkpoint", str(missing), "--data", str(data), str(data)])
        assert both.exit_code == 2 and "given twice" in both.output, both.output
        neither = runner.invoke(app, [verb, "--checkpoint", str(missing)])
        assert neither.exit_code == 2 and "Missing argument 'data'" in neither.output, neither.output


def test_help_shows_plain_types_not_python_annotations():
    helps = _helps()
    for verb, text in helps.items():
        for python in ("list[", "Path]", "<bool>", "Optional", "NoneType", "Union"):
            assert python not in text, (verb, python, text)
    assert "slides... <path>" in helps["histoflow predict-slide"]
    assert "sources... <path>" in helps["histoflow normalize"]
    for verb in ("tile", "train", "predict-slide", "study", "mitosis windows"):
        assert "--set <key=value>" in helps[f"histoflow {verb}"], verb
    assert "--split <str>" in helps["histoflow data download"]


def test_mitosis_evaluate_takes_its_windows_positionally_and_the_old_option_still_runs(tmp_path):
    runner = CliRunner()
    missing = tmp_path / "nope.pt"
    old = runner.invoke(app, ["mitosis", "evaluate", "--checkpoint", str(missing), "--windows", str(tmp_path),
                              "--out", str(tmp_path / "o")])  # fmt: skip
    assert old.exit_code == 2 and "nope.pt" in old.output, old.output
    assert "--windows is deprecated; give the data as an argument: histoflow mitosis evaluate" in old.output
    both = runner.invoke(app, ["mitosis", "evaluate", str(tmp_path), "--checkpoint", str(missing), "--windows",
                               str(tmp_path), "--out", str(tmp_path / "o")])  # fmt: skip
    assert both.exit_code == 2 and "given twice (as an argument and as --windows)" in both.output, both.output
