"""sora2_async: an async SDK for the nanophoto.ai Sora 2 video API.

One API key gets 100 requests an hour, submissions and status checks together. This SDK
submits and polls many videos under one shared, conservative budget, decides when each poll
is worth a request, and hands back finished videos as they complete. It runs on asyncio and
trio (through anyio).
"""

from ._budget import (
    BudgetState,
    Lease,
    Limiter,
    Permit,
    RateLimit,
    RequestKind,
    SlidingWindowLimiter,
)
from ._client import Sora2Client
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BudgetStoreError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    Sora2Error,
    TaskNotFoundError,
    WaitTimeoutError,
)
from ._events import Event, EventKind, EventStream
from ._journal import (
    Journal,
    JournalEntry,
    JournalState,
    SQLiteJournal,
    UncertainSubmissionError,
)
from ._models import (
    PRICE_TABLE,
    AspectRatio,
    BatchResult,
    Mode,
    ModelTier,
    Task,
    TaskState,
    TaskStatus,
    Video,
    VideoRequest,
)
from ._planner import Demand, Planner, PollPlan, PollPlanner, PollPolicy, Tracked
from ._retry import RetryPolicy
from ._sqlite_limiter import SQLiteLimiter

__version__ = "0.1.0"

__all__ = [
    "PRICE_TABLE",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AspectRatio",
    "AuthenticationError",
    "BatchResult",
    "BudgetState",
    "BudgetStoreError",
    "Demand",
    "Event",
    "EventKind",
    "EventStream",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Journal",
    "JournalEntry",
    "JournalState",
    "Lease",
    "Limiter",
    "Mode",
    "ModelTier",
    "Permit",
    "Planner",
    "PollPlan",
    "PollPlanner",
    "PollPolicy",
    "RateLimit",
    "RateLimitError",
    "RequestKind",
    "ResponseValidationError",
    "RetryPolicy",
    "SQLiteJournal",
    "SQLiteLimiter",
    "ServerError",
    "SlidingWindowLimiter",
    "Sora2Client",
    "Sora2Error",
    "Task",
    "TaskNotFoundError",
    "TaskState",
    "TaskStatus",
    "Tracked",
    "UncertainSubmissionError",
    "Video",
    "VideoRequest",
    "WaitTimeoutError",
    "__version__",
]
