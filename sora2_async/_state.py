"""Where one key's shared stores live on a host, and their timings under ``time_scale``.

The ``sora2`` command and a FastAPI app's ``open_shared_stores`` use the same state folder
(``platformdirs``) and the same file names, named by a fingerprint of the key and the base
URL (never the key): a batch job and an app on one host share one budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from ._budget import RateLimit
from ._fingerprint import key_fingerprint

__all__ = ["REDIS_URL_ENV", "budget_path", "budget_timings", "state_folder", "videos_path"]

#: The environment variable that names the Redis server shared by every host.
REDIS_URL_ENV = "NANOPHOTO_REDIS_URL"
_APP_NAME = "sora2-async"


def state_folder() -> Path:
    """The user's state folder for this SDK (needs ``platformdirs``)."""
    import platformdirs

    return Path(platformdirs.user_state_dir(_APP_NAME, appauthor=False))


def budget_path(api_key: str, base_url: str, folder: Path | None = None) -> Path:
    """A key's budget store file: ``<state dir>/budget-<fingerprint>.sqlite``."""
    folder = state_folder() if folder is None else folder
    return folder / f"budget-{key_fingerprint(api_key, base_url)}.sqlite"


def videos_path(api_key: str, base_url: str, folder: Path | None = None) -> Path:
    """A key's video store file (a FastAPI app's): ``<state dir>/videos-<fingerprint>.sqlite``."""
    folder = state_folder() if folder is None else folder
    return folder / f"videos-{key_fingerprint(api_key, base_url)}.sqlite"


def budget_timings(rate_limit: RateLimit, time_scale: float) -> dict[str, Any]:
    """A shared budget store's keyword arguments for ``rate_limit``, shrunk by ``time_scale``
    as ``Sora2Client(time_scale=...)`` shrinks its own."""
    return {
        "rate_limit": attrs.evolve(rate_limit, per=rate_limit.per / time_scale),
        "margin": 2.0 / time_scale,
        "lease_ttl": max(2.0, 60.0 / time_scale),
        # A request's entry counts from admission until a window after its answer would come
        # at the latest: compressed time keeps that short, as the simulator answers at once.
        "flight_ttl": max(5.0, 120.0 / time_scale),
    }
