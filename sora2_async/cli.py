"""``sora2``: the command line of sora2_async (``pip install 'sora2-async[cli]'``).

``sora2 demo`` runs a batch against the built-in simulator (no key, no network);
``sora2 batch PROMPTS --out DIR`` generates a file of prompts into a folder, resumably;
``sora2 generate``, ``status`` and ``wait`` handle one video; ``sora2 simulator`` serves the
simulator over HTTP. ``sora2 COMMAND --help`` says more.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sora2`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        from ._cli.app import run
    except ImportError as exc:  # rich is in the ``cli`` extra, not a core dependency
        if exc.name != "rich":
            raise
        print(
            "sora2: error: the command line needs rich: pip install 'sora2-async[cli]'",
            file=sys.stderr,
        )
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
