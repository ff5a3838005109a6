"""Opening our SQLite files (``_sqlite_file``) from several real processes at once.

What a first ``uvicorn --workers 4`` start does: every worker opens the budget and video
store files of a state folder that does not have them yet, at the same moment.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROUNDS = 40
CHILD = f"""
import sys, time
import anyio
from sora2_async.fastapi import open_shared_stores

async def open_both(folder):
    async with open_shared_stores(api_key="k", base_url="http://x", state_dir=folder):
        pass

folder, start = sys.argv[1], float(sys.argv[2])
for i in range({ROUNDS}):
    due = start + 0.2 * i
    time.sleep(max(0.0, due - time.time() - 0.02))
    while time.time() < due:  # all of them at the same instant
        pass
    anyio.run(open_both, f"{{folder}}/{{i}}")
"""


def test_processes_that_make_new_store_files_at_once_all_open_them(tmp_path: Path) -> None:
    """Four processes open a budget and a video store that do not exist yet, at the same
    moment, 40 times over: one makes each file, the others wait their turn and open it.

    None gives up on a lock (switching a new file to WAL does not wait out the busy timeout
    by itself), and none takes a file finished meanwhile for a foreign one (its mark and its
    tables read in one snapshot). Both failed a worker's startup, and uvicorn then stops
    every worker.
    """
    start = time.time() + 2.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), repr(start)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errors = []
    try:
        for child in children:
            _, err = child.communicate(timeout=90)
            if child.returncode:
                errors.append(err.strip().splitlines()[-1])
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert errors == []
    assert len(list(tmp_path.glob("*/*.sqlite"))) == 2 * ROUNDS
