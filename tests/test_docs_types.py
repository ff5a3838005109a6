"""The snippets type-check: every ```python block of README.md and docs/*.md passes
``mypy --strict``, as a reader's own code would be checked.

The blocks are found as ``tests/test_docs.py`` finds them, and laid out as that test runs
them: a block that defines ``async def main()`` is a program (a module of its own); a block
whose first line is ``# conftest.py`` or ``# test_<name>.py`` is a file of the reader's test
suite (a folder of its own per page); the other blocks of a page are one notebook, in
order, with ``client`` (an open ``Sora2Client``) given, as the pages say. A notebook is one
``async def`` (its blocks may ``await`` at top level). mypy runs once over all of them.

The same run checks that the typed parameters catch typos: ``typos.py`` must fail, on
exactly the lines marked ``# error``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_docs import FILE_HEADER, PAGES, ROOT, blocks

README = ROOT / "README.md"

_NOTEBOOK = """\
from __future__ import annotations

from sora2_async import Sora2Client


async def _notebook(client: Sora2Client) -> None:
"""

TYPOS = """\
from sora2_async import BatchResult, ModelTier, VideoRequest

VideoRequest("x", model_tier="sora2-pro-ultra")  # error
VideoRequest("x", aspect_ratio="square")  # error
VideoRequest("x", duration="twelve")  # error
VideoRequest("x", duration=12)  # error
VideoRequest("x", mode="text")  # error
VideoRequest(
    "x",
    model_tier=ModelTier.PRO_HIGH,
    aspect_ratio="landscape",
    duration="15",
    mode="imageToVideo",
    image_urls=["https://example.com/a.png"],
)


def url(result: BatchResult) -> str:
    if result.ok:
        return result.video.url + result.request.prompt
    return str(result.error)
"""


def lay_out(page: Path, folder: Path) -> list[Path]:
    """Write ``page``'s blocks as modules under ``folder``; return the files written."""
    stem = re.sub(r"\W", "_", page.stem)
    written: list[Path] = []
    notebook: list[str] = []
    for number, code in enumerate(blocks(page), start=1):
        header = FILE_HEADER.match(code)
        if header:
            target = folder / f"{stem}_suite" / header["name"]
            target.parent.mkdir(exist_ok=True)
        elif "async def main(" in code:
            target = folder / f"{stem}_program_{number}.py"
        else:
            notebook.append(f"    # {page.name}, block {number}\n" + textwrap.indent(code, "    "))
            continue
        target.write_text(code, encoding="utf-8")
        written.append(target)
    if notebook:
        target = folder / f"{stem}_notebook.py"
        target.write_text(_NOTEBOOK + "\n".join(notebook), encoding="utf-8")
        written.append(target)
    return written


def readme_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_snippets_pass_mypy_strict_and_typos_fail(tmp_path: Path) -> None:
    files: list[Path] = []
    for page in PAGES:
        files += lay_out(page, tmp_path)
    for number, code in enumerate(readme_blocks(), start=1):
        target = tmp_path / f"readme_{number}.py"
        target.write_text(code, encoding="utf-8")
        files.append(target)
    assert len(files) >= 8  # every page with code, and the README
    typos = tmp_path / "typos.py"
    typos.write_text(TYPOS, encoding="utf-8")
    # Each suite folder is a package of its own (conftest.py twice would clash otherwise).
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    command += ["--explicit-package-bases", "--namespace-packages"]
    command += ["--cache-dir", os.devnull, "--no-error-summary", "--show-absolute-path"]
    suites = sorted({f.parent for f in files if f.parent != tmp_path})
    loose = [str(f) for f in files if f.parent == tmp_path]
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    errors: dict[str, list[str]] = {}
    for group in [[*loose, str(typos)], *[[str(s)] for s in suites]]:
        done = subprocess.run(
            [*command, *group],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode in (0, 1), done.stdout + done.stderr
        for line in done.stdout.splitlines():
            if ": error:" in line or (": note:" not in line and line.strip()):
                name = line.split(":", 1)[0]
                errors.setdefault(name, []).append(line)
    typo_errors = errors.pop(str(typos), [])
    shown = {path: "\n".join(lines) for path, lines in errors.items()}
    assert not errors, "\n\n".join(
        f"{path}:\n{text}\n--- the file:\n{Path(path).read_text(encoding='utf-8')}"
        for path, text in shown.items()
        if Path(path).exists()
    ) or str(shown)
    marked = {n for n, line in enumerate(TYPOS.splitlines(), start=1) if "# error" in line}
    failed = {int(line.split(":")[1]) for line in typo_errors if ": error:" in line}
    assert failed == marked, "\n".join(typo_errors)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_every_block_is_laid_out(page: Path, tmp_path: Path) -> None:
    written = lay_out(page, tmp_path)
    text = "\n".join(path.read_text(encoding="utf-8") for path in written)
    for code in blocks(page):
        assert code.strip().splitlines()[-1].strip() in text
