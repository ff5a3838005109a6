"""mkdocs hooks: what the site shows that is written elsewhere, included at build time.

* ``<!-- sora2-help: ARGS -->`` in a page becomes the output of ``sora2 ARGS --help``, so
  the command-line page cannot drift from the command.
* ``<!-- image: PATH ALT -->`` shows the image at PATH (published with the site).
* ``<!-- include: PATH -->`` becomes the Markdown file at PATH (relative to the repository),
  its headings one level down, or a note when it does not exist yet. Its relative links to
  images beside it are published with the site (plots); other relative links become plain
  text naming the file, so ``--strict`` holds.
* Docstrings written with Sphinx roles (``:class:`Video```) get the role dropped and a
  link to the object when the API reference has it; a paragraph's closing ``::`` (reST's
  mark of a literal block) becomes ``:``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]

_HELP = re.compile(r"<!-- sora2-help:(?P<args>[^>]*?)-->")
_INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->")
_IMAGE = re.compile(r"<!-- image: (?P<path>\S+) (?P<alt>[^>]*?) -->")
_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
_ROLE = re.compile(
    r":(?:class|meth|func|attr|data|mod|exc|obj):<code>(?P<tilde>~?)(?P<name>[\w.]+)(?:\(\))?</code>"
)
# Files beside an included page that are published with the site, under this folder.
_PUBLISHED = {".png", ".svg", ".jpg", ".jpeg", ".gif"}
_ASSETS = "assets/included"


def _help(args: str) -> str:
    command = [sys.executable, "-m", "sora2_async.cli", *args.split(), "--help"]
    env = {**os.environ, "COLUMNS": "76", "NO_COLOR": "1"}  # the width of a code block
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr}")
    shown = " ".join(["sora2", *args.split(), "--help"])
    return f"```text\n$ {shown}\n{done.stdout.rstrip()}\n```"


def _include(path: str) -> str:
    source = ROOT / path
    if not source.is_file():
        return _missing(path)
    text = source.read_text(encoding="utf-8")

    def relink(match: re.Match[str]) -> str:
        target = match["target"]
        if re.match(r"^[a-z]+:|^#", target):  # a URL or an anchor: keep it
            return match[0]
        beside = (source.parent / target).resolve()
        if match["bang"] and beside.suffix.lower() in _PUBLISHED and beside.is_file():
            # Relative to the including page, which sits at the top of docs/.
            return f"![{match['text']}]({_ASSETS}/{beside.relative_to(ROOT)})"
        return f"{match['text']} (`{beside.relative_to(ROOT)}`)" if match["text"] else ""

    return _demoted(_LINK.sub(relink, text))


def _missing(path: str) -> str:
    return f'!!! note "Not there yet"\n    `{path}` is not in this checkout yet.'


def _image(path: str, alt: str) -> str:
    if not (ROOT / path).is_file():
        return _missing(path)
    return f"![{alt}]({_ASSETS}/{path})"


def _demoted(markdown: str) -> str:
    """One heading level down (outside code blocks): the including page has the title."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append(f"#{line}" if line.startswith("#") and not fenced else line)
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Expand the ``sora2-help`` and ``include`` markers."""
    markdown = _HELP.sub(lambda m: _help(m["args"]), markdown)
    markdown = _IMAGE.sub(lambda m: _image(m["path"], m["alt"]), markdown)
    return _INCLUDE.sub(lambda m: _include(m["path"]), markdown)


def on_files(files: Files, config: Any) -> Files:
    """Publish the images that included pages show (benchmark plots)."""
    for page in Path(config["docs_dir"]).glob("*.md"):
        text = page.read_text(encoding="utf-8")
        for match in [*_INCLUDE.finditer(text), *_IMAGE.finditer(text)]:
            folder = (ROOT / match["path"]).parent
            if not folder.is_dir():
                continue
            for image in sorted(folder.iterdir()):
                if image.suffix.lower() in _PUBLISHED:
                    uri = f"{_ASSETS}/{image.relative_to(ROOT).as_posix()}"
                    if files.get_file_from_path(uri) is None:
                        files.append(File.generated(config, uri, abs_src_path=str(image)))
    return files


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    """Turn Sphinx roles left in docstrings into code, linked when the reference has it."""

    def link(match: re.Match[str]) -> str:
        name = match["name"]
        shown = name.rsplit(".", 1)[-1] if match["tilde"] else name
        candidates = [name] if name.startswith("sora2_async") else [f"sora2_async.{name}"]
        for package in ("testing", "fastapi"):  # a short name there is first that package's
            if package in page.file.src_uri and not name.startswith("sora2_async"):
                candidates.insert(0, f"sora2_async.{package}.{name}")
        slug = f' slug="{candidates[1]}"' if len(candidates) > 1 else ""
        # "optional": an unknown name stays plain code instead of failing the build.
        return (
            f'<autoref identifier="{candidates[0]}"{slug} optional><code>{shown}</code></autoref>'
        )

    # A reST literal block's "::" ends the paragraph before it; Markdown shows it as is.
    return _ROLE.sub(link, html).replace("::</p>", ":</p>")
