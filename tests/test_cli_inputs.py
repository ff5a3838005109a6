"""Reading PROMPTS files and the ``sora2`` argument parser, in-process (no network, no key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sora2_async import ModelTier, VideoRequest
from sora2_async._cli.args import build_parser
from sora2_async._cli.inputs import InputError, parse_lines, read_requests
from sora2_async.cli import main


def test_plain_text_is_one_prompt_a_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("# my videos\na corgi surfing\n\n  a paper boat  \n", encoding="utf-8")
    lines = read_requests(path)
    assert [(line.number, line.request.prompt) for line in lines] == [
        (2, "a corgi surfing"),
        (4, "a paper boat"),
    ]


def test_jsonl_takes_python_and_wire_names(tmp_path: Path) -> None:
    rows = [
        {"prompt": "a", "model_tier": "sora2-pro-high", "aspect_ratio": "landscape"},
        {"prompt": "b", "modelTier": "sora2-pro-standard", "videoDuration": "15"},
        {"prompt": "c", "imageUrls": ["https://example.com/cat.png"]},
        {"prompt": "d", "mode": "textToVideo", "duration": 15, "image_urls": None},
    ]
    path = tmp_path / "prompts.txt"  # detected by its first line, whatever the name
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    requests = [line.request for line in read_requests(path)]
    assert requests[0] == VideoRequest("a", model_tier="sora2-pro-high", aspect_ratio="landscape")
    assert requests[1].model_tier is ModelTier.PRO_STANDARD
    assert requests[1].duration == 15
    assert requests[2].image_urls == ("https://example.com/cat.png",)
    assert requests[3].duration == 15


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "x", "tier": "sora2"}', "unknown field 'tier'"),
        ('{"prompt": "x", "model_tier": "sora3"}', "unknown model tier 'sora3'"),
        ('{"prompt": "x", "duration": 12}', "duration must be 10 or 15"),
        ('{"prompt": "x", "modelTier": "sora2", "model_tier": "sora2"}', "given twice"),
        ('{"model_tier": "sora2"}', "no 'prompt' field"),
        ('{"prompt": "  "}', "prompt must be a non-empty string"),
        ('{"prompt": "x",}', "not valid JSON"),
        ('["x"]', "expected a JSON object"),
        ('{"prompt": "x", "image_urls": ["file:///cat.png"]}', "not a public http(s) URL"),
        ('{"prompt": "x", "mode": "imageToVideo"}', "needs at least one image URL"),
    ],
)
def test_a_bad_jsonl_line_is_named_with_what_is_wrong(line: str, problem: str) -> None:
    good = '{"prompt": "fine"}'
    with pytest.raises(InputError) as caught:
        parse_lines([good, line, good], source="p.jsonl", jsonl=True)
    assert caught.value.problems[0][0] == 2
    assert problem in str(caught.value)
    assert str(caught.value).startswith("p.jsonl:2: ")


def test_every_bad_line_is_listed_and_an_empty_file_is_refused() -> None:
    bad = ['{"prompt": ""}'] * 12
    with pytest.raises(InputError) as caught:
        parse_lines(bad, jsonl=True)
    assert len(caught.value.problems) == 12
    assert "and 2 more bad lines" in str(caught.value)
    with pytest.raises(InputError, match="no requests"):
        parse_lines(["", "# nothing"], jsonl=False)


def test_the_api_commands_take_base_url_and_every_command_time_scale() -> None:
    parser = build_parser()
    for argv in (
        ["generate", "x"],
        ["status", "t"],
        ["wait", "t"],
        ["batch", "p.txt", "--out", "d"],
    ):
        args = parser.parse_args([*argv, "--base-url", "http://127.0.0.1:1", "--time-scale", "6"])
        assert (args.base_url, args.time_scale) == ("http://127.0.0.1:1", 6.0)
    for argv in (["simulator"], ["demo"]):  # they talk to no API: no --base-url to offer
        assert parser.parse_args([*argv, "--time-scale", "6"]).time_scale == 6.0
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--base-url", "http://127.0.0.1:1"])
    assert parser.parse_args(["demo"]).time_scale == 360.0


def test_missing_key_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("NANOPHOTO_API_KEY", raising=False)
    (tmp_path / "p.txt").write_text("a corgi\n", encoding="utf-8")
    assert main(["batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "NANOPHOTO_API_KEY" in err
    assert not (tmp_path / "o").exists()


def test_a_missing_prompts_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["batch", str(tmp_path / "nope.txt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sora2: error: No such file")
    assert len(err.splitlines()) == 1


def test_a_bad_generate_request_is_refused_before_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NANOPHOTO_API_KEY", "k-123")
    assert main(["generate", "x", "--image-url", "http://localhost/cat.png"]) == 2
    assert "private or loopback" in capsys.readouterr().err
