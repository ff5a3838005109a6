"""OpenTelemetry (the ``otel`` extra): spans per request and per video, and the metrics,
read back with the SDK's in-memory exporter and metric reader; no key, no prompt unless
asked; nothing at all without the package."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sora2_async import VideoRequest
from sora2_async._telemetry import CAPTURE_PROMPTS_ENV
from sora2_async.testing import Simulator

KEY = "otel-secret-key-0123"

# The global providers can be set once per process: one pair, set when this module's first
# test starts (not at import: the modules collected with it must not record into them).
_SPANS = InMemorySpanExporter()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def providers() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(_SPANS))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    _SPANS.clear()
    return _SPANS


def metric_points() -> dict[str, list[Any]]:
    data = _READER.get_metrics_data()
    points: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


@pytest.mark.anyio
async def test_a_batch_makes_request_and_video_spans_and_metrics(
    spans: InMemorySpanExporter,
) -> None:
    sim = Simulator(seed=5)
    recorded = _READER.get_metrics_data() is not None  # earlier tests' videos, if any
    before = metric_points().get("sora2.videos.in_flight", []) if recorded else []
    in_flight_before = sum(p.value for p in before)
    async with sim.client(KEY) as client:
        prompts = ["a secret prompt one", "a secret prompt two"]
        async with client.batch(prompts) as results:
            got = [r async for r in results]
    assert all(r.ok for r in got)
    finished = spans.get_finished_spans()
    requests = [s for s in finished if s.name in ("sora2 generate", "sora2 check_status")]
    videos = [s for s in finished if s.name == "sora2 video"]
    assert len([s for s in requests if s.name == "sora2 generate"]) == 2
    assert len(requests) == sim.stats().total_requests
    assert len(videos) == 2
    poll = next(s for s in requests if s.name == "sora2 check_status")
    attributes = dict(poll.attributes or {})
    assert attributes["sora2.request.kind"] == "check_status"
    assert attributes["sora2.task_id"] in {r.task.task_id for r in got if r.task}
    assert attributes["sora2.attempt"] == 1
    assert attributes["sora2.budget.wait_s"] >= 0
    assert attributes["http.response.status_code"] == 200
    assert poll.kind is trace.SpanKind.CLIENT
    video = dict(videos[0].attributes or {})
    assert video["sora2.outcome"] == "completed"
    assert video["sora2.model_tier"] == "sora2"
    assert video["sora2.video.detection_delay_s"] >= 0
    everything = repr([dict(s.attributes or {}) for s in finished])
    assert KEY not in everything
    assert "secret prompt" not in everything  # not without the user's opt-in
    points = metric_points()
    by_outcome = {
        (p.attributes["sora2.request.kind"], p.attributes["sora2.outcome"]): p.value
        for p in points["sora2.requests"]
    }
    assert by_outcome[("generate", "ok")] >= 2
    assert points["sora2.budget.limit"][0].value == 100
    assert points["sora2.budget.used"][0].value >= 1
    in_flight = sum(p.value for p in points["sora2.videos.in_flight"])
    assert in_flight == in_flight_before  # both ended
    assert sum(p.count for p in points["sora2.video.detection_delay"]) >= 2


@pytest.mark.anyio
async def test_prompts_only_when_asked_and_failures_marked(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_PROMPTS_ENV, "1")
    sim = Simulator(seed=6, failure_rate=1.0)
    async with sim.client(KEY) as client:
        with pytest.raises(Exception, match=r"(?i)fail"):
            await client.run(VideoRequest("an opted-in prompt"))
    (video,) = [s for s in spans.get_finished_spans() if s.name == "sora2 video"]
    attributes = dict(video.attributes or {})
    assert attributes["sora2.prompt"] == "an opted-in prompt"
    assert attributes["sora2.outcome"] == "failed"
    assert video.status.status_code is trace.StatusCode.ERROR


def runs_in_a_fresh_interpreter(code: str) -> None:
    """Run ``code`` in a new Python (the global providers, or their absence, are its own)."""
    done = subprocess.run(
        [sys.executable, "-c", code + "print('ok')\n"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_nothing_is_made_until_a_provider_is_set_and_a_provider_set_later_is_used() -> None:
    """The API's default providers record nothing: no span is made for them (it costs a
    sixth of a poll's CPU), and one set mid-run gets the spans from then on."""
    code = (
        "import anyio\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import "
        "InMemorySpanExporter\n"
        "from sora2_async import _telemetry\n"
        "from sora2_async.testing import Simulator\n"
        "made = []\n"
        "real = trace.ProxyTracer.start_as_current_span\n"
        "def counted(self, *a, **k):\n"
        "    made.append(a[0])\n"
        "    return real(self, *a, **k)\n"
        "trace.ProxyTracer.start_as_current_span = counted\n"
        "spans = InMemorySpanExporter()\n"
        "async def main():\n"
        "    async with Simulator(seed=1).client() as client:\n"
        "        task = await client.generate('x')\n"
        "        await client.check_status(task)\n"
        "        assert made == [] and _telemetry._get() is None, made\n"
        "        provider = TracerProvider()\n"
        "        provider.add_span_processor(SimpleSpanProcessor(spans))\n"
        "        trace.set_tracer_provider(provider)\n"
        "        await client.check_status(task)\n"
        "    names = [s.name for s in spans.get_finished_spans()]\n"
        "    assert names == ['sora2 check_status'], names\n"
        "anyio.run(main)\n"
    )
    runs_in_a_fresh_interpreter(code)


def test_the_sdk_imports_and_runs_without_opentelemetry() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import anyio, sora2_async\n"
        "from sora2_async.testing import Simulator\n"
        "from sora2_async import _telemetry\n"
        "assert _telemetry.trace is None\n"
        "async def main():\n"
        "    async with Simulator(seed=1).client() as client:\n"
        "        task = await client.generate('x')\n"
        "        await client.check_status(task)\n"
        "anyio.run(main)\n"
    )
    runs_in_a_fresh_interpreter(code)


# -- the other extras: a missing one is one line naming it ---------------------------------------


def run_without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.modules[{module!r}] = None\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_simulator_server_without_uvicorn_names_the_extra() -> None:
    done = run_without(
        "uvicorn", "from sora2_async.testing.__main__ import main; sys.exit(main(['--port', '0']))"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: serving the simulator over HTTP needs uvicorn: pip install 'sora2-async[server]'"
    ]


def test_the_fastapi_module_without_fastapi_names_the_extra() -> None:
    done = run_without(
        "fastapi",
        "try:\n    import sora2_async.fastapi\nexcept ModuleNotFoundError as exc:\n"
        "    print(exc); print(exc.__cause__, exc.__suppress_context__)",
    )
    assert done.stdout.splitlines() == [
        "sora2_async.fastapi needs FastAPI: pip install 'sora2-async[fastapi]'",
        "None True",
    ]
