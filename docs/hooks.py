"""MkDocs hooks (mkdocs.yml `hooks:`): the pages that must never drift from the code.

- `cli.md`: `histoflow <verb> --help` of every verb, rendered from the typer app at build time.
- `recipes.md`: every `configs/*.yaml` (and `configs/mil/*.yaml`): a table from the YAML, and
  each recipe's header comment with the file itself.
- `<!-- README: Heading -->` in a page is replaced by the text of that README.md section (the
  page writes its own heading), so the site and the README say the same thing; a heading that
  no longer exists fails the build. `<!-- README: top -->` is all before the first section.
- A table cell's code span may hold `\\|` (GitHub needs it); the site shows `|`.
- `api.md` must document every name of `histoflow.__all__`: a public name without its entry
  fails the build.
- `<!-- DEFAULTS: RunConfig -->` (any schema in `histoflow.config`) becomes the YAML of that
  schema's defaults, so a page never shows defaults that the code does not have.

The site documents this checkout's code: `src/` goes first on sys.path before the CLI is
imported, whatever histoflow the environment has installed.
"""

from __future__ import annotations

import ast
import html
import re
import sys
from pathlib import Path

import yaml
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
HELP_WIDTH = 100
README_MARKER = re.compile(r"^<!-- README: (.+?) -->$", re.MULTILINE)
DEFAULTS_MARKER = re.compile(r"^( *)<!-- DEFAULTS: (\w+) -->$", re.MULTILINE)


# -- CLI reference -------------------------------------------------------------------------------


def _context(cmd, name, parent=None):
    # the command's own Context class: typer now vendors click, so plain click classes may not match
    return cmd.context_class(
        cmd, info_name=name, parent=parent, terminal_width=HELP_WIDTH, max_content_width=HELP_WIDTH
    )


def _commands(group, ctx):
    """(full name, help text) for the group and every command under it, in the app's order."""
    yield ctx.command_path, group.get_help(ctx)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = _context(cmd, name, ctx)
        if hasattr(cmd, "list_commands"):  # a group of verbs (histoflow data ...)
            yield from _commands(cmd, sub)
        else:
            yield sub.command_path, cmd.get_help(sub)


def cli_page() -> str:
    import typer

    src = str(ROOT / "src")
    if sys.path[0] != src:
        sys.path.insert(0, src)
    from histoflow.cli.app import app

    group = typer.main.get_command(app)
    helps = list(_commands(group, _context(group, "histoflow")))
    if len(helps) < 2:
        raise PluginError("the typer app has no commands")
    lines = [
        "# CLI reference",
        "",
        "Generated at build time from the typer app (`histoflow <verb> --help`), so it is always the",
        "code's own help. The global flags `-q/--quiet` and `--debug` work before or after the verb.",
        "",
        "| command | what |",
        "|---|---|",
    ]
    for path, text in helps[1:]:
        first = " ".join(text.split("\n\n")[1].split()) if "\n\n" in text else ""
        lines.append(f"| [`{path}`](#{_anchor(path)}) | {_escape_cell(first)} |")
    for path, text in helps:
        lines += ["", f"## `{path}` {{#{_anchor(path)}}}", "", "```text", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


# -- recipes --------------------------------------------------------------------------------------


def _escape_text(text: str) -> str:
    """Markdown-safe prose from a YAML comment: HTML and emphasis characters escaped outside code."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        parts[i] = html.escape(parts[i], quote=False).replace("*", r"\*").replace("_", r"\_")
    return "`".join(parts)


def _escape_cell(text: str) -> str:
    return _escape_text(text).replace("|", r"\|")


def _header(path: Path) -> list[str]:
    """The leading comment block of a YAML file, without the `# `."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        out.append(line[2:] if line.startswith("# ") else line[1:])
    return out


def _header_markdown(lines: list[str]) -> str:
    """Prose lines become paragraphs; lines indented by 2+ spaces (commands) become code blocks."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        kind = "code" if line.startswith("  ") else "text"
        if blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(line.strip())
        else:
            blocks.append((kind, [line.strip()]))
    out = []
    for kind, body in blocks:
        out.append("```bash\n" + "\n".join(body) + "\n```" if kind == "code" else _escape_text(" ".join(body)))
    return "\n\n".join(out)


def _first_sentence(lines: list[str]) -> str:
    """The header's first sentence: up to the first `:` or `. Capital` outside parentheses."""
    text = " ".join(line.strip() for line in lines if not line.startswith("  "))
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        rest = text[i + 1 : i + 3]
        if depth == 0 and ch in ".:" and (rest == "" or (rest[0] == " " and (ch == ":" or rest[1:].isupper()))):
            return text[:i]
    return text


def _summary(cfg: dict, mil: bool) -> tuple[str, str, str]:
    """(kind, model, data) columns of one recipe."""
    if mil:
        model = cfg.get("model") or {}
        return "train-mil", f"attention MIL (hidden {model.get('hidden', 'default')})", "tile embeddings"
    if "tile_model" in cfg:
        return "study", f"tiles: `{cfg['tile_model'].get('recipe')}`; MIL", f"`{cfg.get('slides')}`"
    model = cfg.get("model") or {}
    name = model.get("name", "simple_cnn")
    if name == "concat":
        name = " + ".join((model.get("params") or {}).get("backbones", [])) or name
    data = cfg.get("data") or {}
    path = str(data.get("path")).removeprefix("${HISTOFLOW_DATA}/")
    where = "tile shards" if "tiles" in data else f"`{path}`"
    kind = "tune" if cfg.get("tune") else "train"
    px = data.get("image_px")
    epochs = (cfg.get("train") or {}).get("epochs")
    details = ", ".join(x for x in (f"{px} px" if px else "", f"{epochs} epochs" if epochs else "") if x)
    return kind, f"`{name}`" + (f" ({details})" if details else ""), where


def recipes_page() -> str:
    paths = sorted((ROOT / "configs").rglob("*.yaml"), key=lambda p: (len(p.relative_to(ROOT).parts), str(p)))
    if not paths:
        raise PluginError("no recipes in configs/")
    lines = [
        "# Recipes",
        "",
        "Generated at build time from `configs/` (the table from each YAML, the text from its",
        "header comment). A recipe loads by its name from any folder",
        "(`histoflow train pcam_simple_cnn --set ...`); a wheel installs them under",
        "`<prefix>/share/histoflow/configs`. `--set a.b=value` overrides any field;",
        "the [CLI reference](cli.md) lists the verbs that take them. Data folders are under",
        "`$HISTOFLOW_DATA` unless the recipe names another path.",
        "",
        "| recipe | verb | model | data | what |",
        "|---|---|---|---|---|",
    ]
    sections = []
    for path in paths:
        rel = path.relative_to(ROOT).as_posix()
        mil = path.parent.name == "mil"
        cfg = yaml.safe_load(path.read_text()) or {}
        kind, model, data = _summary(cfg, mil)
        header = _header(path)
        anchor = _anchor(rel)
        lines.append(
            f"| [`{rel.removeprefix('configs/').removesuffix('.yaml')}`](#{anchor}) | {kind} | {model} | {data} "
            f"| {_escape_cell(_first_sentence(header))} |"
        )
        body = "\n".join("    " + line if line else "" for line in path.read_text().rstrip().splitlines())
        sections += [
            "",
            f"## `{rel}` {{#{anchor}}}",
            "",
            _header_markdown(header),
            "",
            f'??? example "{rel}"',
            "",
            "    ```yaml",
            body,
            "    ```",
        ]
    return "\n".join(lines + sections) + "\n"


# -- README sections ------------------------------------------------------------------------------


def _table_code_pipes(markdown: str) -> str:
    """A table cell's code span needs `\\|` on GitHub and `|` in Python-Markdown (which shows the
    backslash and never splits a row inside backticks): every page is written for GitHub."""

    def unescape(line: str) -> str:
        parts = line.split("`")
        return "`".join(p.replace("\\|", "|") if i % 2 else p for i, p in enumerate(parts))

    return "\n".join(unescape(ln) if ln.startswith("|") else ln for ln in markdown.split("\n"))


def _gfm_to_python_markdown(text: str) -> str:
    """Links from the README into docs/ are relative to the repository root."""
    return re.sub(r"\]\(docs/", "](", text)


def readme_section(readme: str, heading: str) -> str:
    """The text under `## heading` in the README (up to the next `## `); `top`: all before the first."""
    if heading == "top":
        return _gfm_to_python_markdown(readme.split("\n## ", 1)[0]).strip()
    parts = re.split(r"^(?=## )", readme, flags=re.MULTILINE)
    for part in parts:
        title = part.split("\n", 1)[0][3:].strip()
        if title == heading or title.startswith(heading + " ("):
            return _gfm_to_python_markdown(part.split("\n", 1)[1]).strip()
    titles = [p.split("\n", 1)[0][3:].strip() for p in parts[1:]]
    raise PluginError(f"README.md has no section '## {heading}' (it has: {titles})")


def defaults_block(schema: str) -> str:
    """A ```yaml block of the defaults of `histoflow.config.<schema>`."""
    import histoflow.config as config_package

    cls = getattr(config_package, schema, None)
    if cls is None:
        raise PluginError(f"histoflow.config has no schema {schema!r}")
    dumped = yaml.safe_dump(cls().model_dump(mode="json"), sort_keys=False, default_flow_style=None, width=100)
    return f"```yaml\n{dumped}```"


# -- the public API must be documented --------------------------------------------------------------


def public_names() -> list[str]:
    tree = ast.parse((ROOT / "src" / "histoflow" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [n for n in ast.literal_eval(node.value) if not n.startswith("_")]
    raise PluginError("histoflow/__init__.py has no __all__")


# -- hooks ------------------------------------------------------------------------------------------


def on_files(files, config):
    for name, render in (("cli.md", cli_page), ("recipes.md", recipes_page)):
        if files.get_file_from_path(name) is not None:
            raise PluginError(f"docs/{name} is generated at build time: remove the file")
        files.append(File.generated(config, name, content=render()))
    return files


def on_page_markdown(markdown, page, config, files):
    if README_MARKER.search(markdown):
        readme = (ROOT / "README.md").read_text()
        markdown = README_MARKER.sub(lambda m: readme_section(readme, m.group(1)), markdown)
    markdown = DEFAULTS_MARKER.sub(
        lambda m: "\n".join(m.group(1) + line for line in defaults_block(m.group(2)).split("\n")), markdown
    )
    markdown = _table_code_pipes(markdown)
    if page.file.src_uri == "api.md":
        documented = set(re.findall(r'heading: "histoflow\.(\w+)"', markdown))
        missing = [n for n in public_names() if n not in documented]
        if missing:
            raise PluginError(f"docs/api.md lacks histoflow.__all__ names: {missing}")
    return markdown
