"""The simulator's parts on their own: configuration, body parsing, the MP4, the CLI."""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sora2_async.testing as testing
from sora2_async import ModelTier
from sora2_async.testing import Durations, Faults, RateLimitPolicy, Simulator, WindowKind
from sora2_async.testing.__main__ import build_parser, simulator_from_args
from sora2_async.testing._mp4 import boxes, video_bytes
from sora2_async.testing._validate import BadRequest, parse_check_status, parse_generate

CODES = {"INVALID_INPUT", "PROMPT_REQUIRED", "IMAGE_REQUIRED", "IMAGE_URLS_REQUIRED"}


def test_public_names() -> None:
    assert sorted(testing.__all__) == sorted(
        [
            "DEFAULT_VIDEO_BASE_URL",
            "Durations",
            "Faults",
            "RateLimitPolicy",
            "RuleTransport",
            "Simulator",
            "SimulatorApp",
            "SimulatorStats",
            "SimulatorTransport",
            "TaskRecord",
            "WindowKind",
            "run_server",
            "serve_in_thread",
            "video_bytes",
        ]
    )
    for name in testing.__all__:
        obj = getattr(testing, name)
        if callable(obj):
            assert obj.__doc__, name


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Faults(server_error=1.5),
        lambda: Faults(drop_connection=-0.1),
        lambda: Faults(latency=-1),
        lambda: Faults(latency=math.inf),
        lambda: Faults(slow_body_seconds=math.nan),
        lambda: RateLimitPolicy(0),
        lambda: RateLimitPolicy(10, 0),
        lambda: RateLimitPolicy(10, window="rolling"),
        lambda: Durations(sora2=(100, 50)),
        lambda: Durations(pro_high=-1),
        lambda: Simulator(time_scale=0),
        lambda: Simulator(failure_rate=2),
        lambda: Simulator(credits=-1),
        lambda: Simulator(api_keys=["has space"]),
        lambda: Simulator(api_keys=[""]),
        lambda: Simulator(api_keys={"k": -5}),
    ],
)
def test_nonsense_configuration_is_refused_at_construction(make: Any) -> None:
    with pytest.raises(ValueError, match=r"."):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Faults(server_error="0.5"),
        lambda: Faults(latency=True),
        lambda: RateLimitPolicy(10.5),
        lambda: RateLimitPolicy(10, count_rejected="yes"),
        lambda: Durations(sora2="fast"),
    ],
)
def test_wrong_types_are_refused(make: Any) -> None:
    with pytest.raises(TypeError):
        make()


def test_config_classes_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Faults().server_error = 1.0  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        RateLimitPolicy().requests = 5  # type: ignore[misc]


def test_durations_take_a_number_or_a_range() -> None:
    durations = Durations(sora2=30, pro_standard=(1, 2))
    assert durations.for_tier(ModelTier.SORA2) == (30.0, 30.0)
    assert durations.for_tier(ModelTier.PRO_STANDARD) == (1, 2)
    assert durations.for_tier(ModelTier.PRO_HIGH) == (180.0, 480.0)


def test_window_kind_converts_from_strings() -> None:
    assert RateLimitPolicy(window="fixed").window is WindowKind.FIXED


def test_failure_rate_setter_validates() -> None:
    sim = Simulator()
    sim.failure_rate = 0.25
    assert sim.failure_rate == 0.25
    with pytest.raises(ValueError, match="probability"):
        sim.failure_rate = -0.1


def test_simulator_outside_an_event_loop() -> None:
    sim = Simulator(api_keys={"k": 7})
    assert sim.balance("k") == 7  # no event loop here: falls back to the last time seen
    assert sim.stats().tasks_created == 0
    assert "1 keys" in repr(sim)
    with pytest.raises(KeyError):
        sim.balance("nobody")
    with pytest.raises(RuntimeError):
        sim.now()


# -- request bodies ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
field_values = st.sampled_from(
    [
        None,
        "",
        " ",
        "x",
        10,
        15,
        "10",
        "15",
        10.0,
        True,
        [],
        ["https://a.example/i.png"],
        ["data:image/png;base64,AAAA"],
        "textToVideo",
        "imageToVideo",
        "sora2",
        "landscape",
        {},
    ]
)
generate_bodies = st.fixed_dictionaries(
    {},
    optional={
        name: field_values
        for name in (
            "prompt",
            "mode",
            "modelTier",
            "aspectRatio",
            "videoDuration",
            "imageUrls",
            "images",
        )
    },
)


def outcome(parse: Any, body: bytes) -> Any:
    """What a parser makes of ``body``: its result, or the BadRequest it raised."""
    try:
        return parse(body)
    except BadRequest as exc:
        return exc


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_body_is_parsed_or_refused_with_a_typed_400(body: bytes) -> None:
    generated = outcome(parse_generate, body)
    assert not isinstance(generated, BadRequest) or generated.code in CODES
    task_id = outcome(parse_check_status, body)
    if isinstance(task_id, BadRequest):
        assert task_id.code in {"INVALID_INPUT", "TASK_ID_REQUIRED"}
    else:
        assert isinstance(task_id, str)
        assert task_id


@settings(max_examples=500, deadline=None)
@given(generate_bodies)
def test_generate_fields_are_parsed_or_refused_with_a_typed_400(fields: dict[str, Any]) -> None:
    params = outcome(parse_generate, json.dumps(fields).encode())
    if isinstance(params, BadRequest):
        assert params.code in CODES
        return
    assert params.prompt.strip()
    assert params.video_duration in (10, 15)
    if params.mode.value == "imageToVideo":
        assert params.image_urls


# -- the video file ------------------------------------------------------------------------------


def test_video_bytes_are_a_tiled_iso_bmff_file() -> None:
    data = video_bytes(15)
    found = boxes(data)
    assert [kind for kind, _ in found] == ["ftyp", "moov", "mdat"]
    assert sum(size for _, size in found) == len(data)
    assert data[8:12] == b"isom"  # major brand
    # The movie header's duration: 15 s at a timescale of 1000.
    mvhd = data.index(b"mvhd")
    assert int.from_bytes(data[mvhd + 16 : mvhd + 20], "big") == 1000
    assert int.from_bytes(data[mvhd + 20 : mvhd + 24], "big") == 15_000
    assert video_bytes(15) is data  # built once


@pytest.mark.parametrize(
    "data", [b"\x00\x00\x00", b"\x00\x00\x00\x04ftyp", b"\x00\x00\x01\x00ftyp"]
)
def test_boxes_refuse_broken_files(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        boxes(data)


# -- the command line ----------------------------------------------------------------------------


def test_cli_arguments_build_the_simulator() -> None:
    args = build_parser().parse_args(
        [
            "--port", "9000", "--time-scale", "600", "--api-key", "a", "--api-key", "b",
            "--seed", "7", "--failure-rate", "0.1", "--rate-limit", "50", "--fixed-window",
            "--retry-after", "--no-count-rejected", "--drop-rate", "0.05",
        ]
    )  # fmt: skip
    sim = simulator_from_args(args)
    assert args.port == 9000
    assert sim.time_scale == 600
    assert sim.failure_rate == 0.1
    assert sim.rate_limit == RateLimitPolicy(50, 3600.0, "fixed", False, True)
    assert sim.faults == Faults(drop_connection=0.05)
    assert sim.window == 6.0
    assert sim.now() > 0  # a real clock: usable outside any event loop
    assert sim.balance("a") == 1_000_000
    with pytest.raises(KeyError):
        sim.balance("c")


def test_cli_refuses_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    from sora2_async.testing.__main__ import main

    with pytest.raises(SystemExit):
        main(["--failure-rate", "3"])
    assert "probability" in capsys.readouterr().err
