"""The docs cannot rot: every ```python block of ``docs/*.md`` runs against the simulator.

Conventions of the pages (a writer's guide):

* A fence of exactly ```` ```python ```` runs. Anything else is shown only: ```` ```bash ````,
  ```` ```text ````, and ```` ```python title="..." ```` for files that other tests run (the
  FastAPI example is ``docs/examples/fastapi_app.py``, run by ``tests/test_fastapi_app.py``).
* The blocks of one page run in order in one namespace, like a notebook: a later block may
  use what an earlier one defined.
* A block that defines ``async def main()`` is a program: ``main()`` is awaited (its
  ``if __name__ == "__main__":`` part does not run: ``__name__`` is not ``"__main__"``).
* Any other block may ``await`` at top level, and finds ``client`` (an open
  :class:`Sora2Client`) in the namespace, as the pages say.
* A block whose first line is ``# conftest.py`` or ``# test_<name>.py`` is a file of the
  reader's own test suite: the page's files are written to a temporary folder, and pytest
  runs them there in a process of its own (exactly as the reader would).

How: ``NANOPHOTO_API_KEY`` is set, and ``sora2_async.Sora2Client`` is replaced by a subclass
whose HTTP goes to the page's in-process :class:`Simulator` (unless the block passes its own
``http_client``). Pages run on asyncio with looptime's virtual clock, so minutes of polling
pass at once; the working directory is a temporary folder, for downloads. Run with
``SHOW_DOCS_OUTPUT=1`` to see what each page's code prints.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import sora2_async
from sora2_async.testing import Simulator

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```", flags=re.DOTALL | re.MULTILINE)
FILE_HEADER = re.compile(r"# (?P<name>conftest\.py|test_\w+\.py)\n")


def blocks(page: Path) -> list[str]:
    """The runnable blocks of ``page``, in order."""
    text = page.read_text(encoding="utf-8")
    return [m["code"] for m in FENCE.finditer(text) if m["info"].strip() == "python"]


def test_the_pages_have_code_to_run() -> None:
    ran = {page.name for page in PAGES if blocks(page)}
    assert {"quickstart.md", "concepts.md", "fastapi.md", "testing.md", "errors.md"} <= ran


def wired_client(sim: Simulator) -> type[sora2_async.Sora2Client]:
    class Sora2Client(sora2_async.Sora2Client):
        __doc__ = sora2_async.Sora2Client.__doc__

        def __init__(self, api_key: str | None = None, **options: Any) -> None:
            if options.get("http_client") is None:
                options["http_client"] = httpx.AsyncClient(transport=sim.transport())
            super().__init__(api_key, **options)

    return Sora2Client


async def run_block(code: str, namespace: dict[str, Any], where: str) -> None:
    compiled = compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, namespace)
    if inspect.iscoroutine(result):  # the block awaits at top level
        await result
    if "main" in namespace and "async def main(" in code:
        await namespace.pop("main")()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
async def test_page(
    page: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = Simulator(seed=1)
    monkeypatch.setenv("NANOPHOTO_API_KEY", "docs-key-0123")
    monkeypatch.delenv("NANOPHOTO_BASE_URL", raising=False)
    monkeypatch.setattr(sora2_async, "Sora2Client", wired_client(sim))
    monkeypatch.chdir(tmp_path)
    files: dict[str, str] = {}
    async with sora2_async.Sora2Client() as client:
        namespace: dict[str, Any] = {"__name__": "docs", "client": client}
        for number, code in enumerate(blocks(page), start=1):
            header = FILE_HEADER.match(code)
            if header:
                files[header["name"]] = code
                continue
            await run_block(code, namespace, f"{page.name}, block {number}")
    if files:
        run_test_files(files, tmp_path / "suite")
    printed = capsys.readouterr().out
    if os.environ.get("SHOW_DOCS_OUTPUT"):  # for writers: what the page's code prints
        with capsys.disabled():
            print(f"\n--- {page.name} ---\n{printed}")


def run_test_files(files: dict[str, str], folder: Path) -> None:
    folder.mkdir()
    for name, code in files.items():
        (folder / name).write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)]
    # Our dev environment has looptime, whose plugin wants pytest-asyncio: a reader's need not.
    command += ["-p", "no:looptime_plugin", "-p", "no:looptime_chronometers"]
    command += ["-p", "no:looptime_timeproxies"]
    done = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
    assert "failed" not in done.stdout


def load_hooks() -> Any:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_included_files_are_relinked_and_demoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = load_hooks()
    monkeypatch.setattr(hooks, "ROOT", tmp_path)
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "latest.png").write_bytes(b"\x89PNG")
    (results / "latest.md").write_text(
        "# Results\n\n![plot](latest.png)\n\nSee [the runner](../run.py) and "
        "[the site](https://example.org).\n\n```python\n# not a heading\n```\n",
        encoding="utf-8",
    )
    text = hooks._include("benchmarks/results/latest.md")
    assert text.startswith("## Results\n")
    assert "![plot](assets/included/benchmarks/results/latest.png)" in text
    assert "the runner (`benchmarks/run.py`)" in text
    assert "[the site](https://example.org)" in text
    assert "```python\n# not a heading\n```" in text
    assert "not in this checkout yet" in hooks._include("benchmarks/results/missing.md")
    assert hooks._image("benchmarks/results/latest.png", "plot") == (
        "![plot](assets/included/benchmarks/results/latest.png)"
    )
    assert "not in this checkout yet" in hooks._image("benchmarks/nope.png", "plot")


def test_sphinx_roles_become_optional_links() -> None:
    hooks = load_hooks()
    page = type("Page", (), {"file": type("F", (), {"src_uri": "reference/testing.md"})()})()
    html = hooks.on_page_content(
        "a :class:<code>~sora2_async.testing.Simulator</code> and :meth:<code>run()</code>",
        page=page,
        config={},
        files=None,
    )
    assert ":class:" not in html
    assert ":meth:" not in html
    assert '<autoref identifier="sora2_async.testing.Simulator" optional>' in html
    assert "<code>Simulator</code>" in html
    assert 'identifier="sora2_async.testing.run" slug="sora2_async.run" optional' in html
