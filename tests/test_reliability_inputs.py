"""Bad input, before anything is sent: every class of it is a typed error at construction.

Image-URL hosts in every IPv4 spelling ``inet_aton`` reads, trailing dots and non-host
characters; prompts that show nothing; durations ``int()`` would read but the API would not;
the size limits; and the client's wrong types (checked against the simulator: nothing sent).
"""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from sora2_async import InvalidRequestError, Sora2Client, Task, VideoRequest
from sora2_async._inputs import (
    MAX_IMAGE_URL_LENGTH,
    MAX_IMAGE_URLS,
    MAX_PROMPT_LENGTH,
    parse_ipv4,
)
from sora2_async.testing import Simulator

IMAGE = "https://images.example.com/cat.png"


def _refused(**kwargs: object) -> InvalidRequestError:
    prompt = kwargs.pop("prompt", "a corgi surfing")
    with pytest.raises(InvalidRequestError) as info:
        VideoRequest(prompt, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- image URL hosts ---------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "0x7f000001",
    "0X7F000001",
    "0177.0.0.1",
    "0177.0000.0000.0001",
    "127.1",
    "127.0.1",
    "0x7f.1",
    "0x7f.0.0.1",
    "017700000001",
    "2130706433",
    "127.0.0.1.",
    "0",
    "0x0",
    "0.0.0.0",
    "10.1",
    "0xa.0xb.0xc.0xd",
    "192.168.0x1.1",
    "0xc0a80101",
    "169.254.169.254",  # the cloud metadata address
    "0251.0376.0251.0376",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::1]",
    "１２７．０．０．１",  # full-width digits and dots: IDNA maps them to ASCII
    "127。0。0。1",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_ipv4_spelling_of_a_private_host_is_refused(host: str) -> None:
    error = _refused(image_urls=[f"http://{host}/cat.png"])
    assert error.error_code == "IMAGE_URLS_REQUIRED"
    assert "private or loopback" in str(error)


@pytest.mark.parametrize(
    "host", ["localhost.", "foo.localhost.", "LOCALHOST", "Foo.LocalHost..", "a.b.localhost"]
)
def test_localhost_names_with_trailing_dots_are_refused(host: str) -> None:
    assert "private or loopback" in str(_refused(image_urls=[f"https://{host}/cat.png"]))


@pytest.mark.parametrize(
    "url",
    [
        "http://exa mple.com/cat.png",
        "http://example.com\t/cat.png",
        "http://%31%32%37.0.0.1/cat.png",  # percent-decoded by browsers: 127.0.0.1
        "http://exa%00mple.com/cat.png",
        "http://exa\\mple.com/cat.png",
        "http://./cat.png",
        "http://1.2.3.4.5/cat.png",  # ends in a number, is no IPv4 address
        "http://4294967296/cat.png",  # one past 255.255.255.255
        "http://0x100000000/cat.png",
        "http://256.0.0.1/cat.png",
        "http://08.0.0.1/cat.png",  # 08 is no octal number
        "http://0x/cat.png",  # no number to inet_aton, 0.0.0.0 to WHATWG: refused either way
        "http://[::1/cat.png",  # a broken IPv6 literal: urlsplit raises ValueError
    ],
)
def test_hosts_that_are_no_host_names_are_refused(url: str) -> None:
    assert _refused(image_urls=[url]).error_code == "IMAGE_URLS_REQUIRED"


@pytest.mark.parametrize(
    "url",
    [
        IMAGE,
        "https://images.example.com./cat.png",  # a trailing dot on a public name is fine
        "http://8.8.8.8/cat.png",
        "http://0x08080808/cat.png",  # 8.8.8.8, spelt oddly, is still public
        "http://134744072/cat.png",
        "https://[2606:4700::1111]/cat.png",
        "https://bücher.example/cat.png",
        "https://cdn-7.example.com:8443/a/b.png?sig=abc%20def",
        "https://example.com/" + "a" * (MAX_IMAGE_URL_LENGTH - 20),
    ],
)
def test_public_image_urls_pass(url: str) -> None:
    assert VideoRequest("animate it", image_urls=[url]).image_urls == (url,)


INET_ATON_CASES = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "0x7f000001",
    "0177.0.0.1",
    "017700000001",
    "2130706433",
    "0x",
    "0x.0x.0x.0x",
    "00",
    "08",
    "09.1",
    "1.2.3.4.5",
    "256.1",
    "1.256.1",
    "1.2.65535",
    "1.2.65536",
    "1.16777215",
    "1.16777216",
    "4294967295",
    "4294967296",
    "0xffffffff",
    "0x100000000",
    "0xg",
    "1..1",
    ".1",
    "1.",
    "",
    "example.com",
    "1e3",
    "-1",
    "+1",
]


@pytest.mark.parametrize("text", INET_ATON_CASES)
def test_parse_ipv4_reads_what_inet_aton_reads(text: str) -> None:
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        expected = None
    assert parse_ipv4(text) == expected


# -- prompts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "\x00",
        "\x00\x00\x00",
        "\u200b",  # zero-width space
        "\u200b\u200c\u200d\u2060\ufeff",  # zero-width (non-)joiners, word joiner, BOM
        "\u2028\u2029",  # line and paragraph separators
        "\u00a0\u3000",  # no-break and ideographic spaces
        "\u202e\u202d",  # bidi overrides
        "\x1b\x7f\x85",
        "\u0301\u0301",  # combining marks with nothing to combine with
        "\U000e0041",  # a tag character
        " \t\n\r\x0b\x0c",
    ],
)
def test_prompts_that_show_nothing_are_refused(prompt: str) -> None:
    error = _refused(prompt=prompt)
    assert error.error_code == "PROMPT_REQUIRED"
    assert "visible" in str(error)


def test_a_nul_inside_a_prompt_is_refused() -> None:
    assert "NUL" in str(_refused(prompt="a corgi\x00 surfing"))


@pytest.mark.parametrize("prompt", ["a", "é", "猫", "🐈", "a\u200bb", "  a corgi  "])
def test_prompts_with_something_visible_pass(prompt: str) -> None:
    assert VideoRequest(prompt).prompt == prompt


def test_prompt_length_is_limited_at_construction() -> None:
    assert VideoRequest("a" * MAX_PROMPT_LENGTH).prompt
    error = _refused(prompt="a" * (MAX_PROMPT_LENGTH + 1))
    assert str(MAX_PROMPT_LENGTH) in str(error)
    assert VideoRequest.MAX_PROMPT_LENGTH == MAX_PROMPT_LENGTH == 10_000
    _refused(prompt="a" * 1_000_000)


def test_image_url_count_and_length_are_limited_at_construction() -> None:
    urls = [f"https://images.example.com/{i}.png" for i in range(MAX_IMAGE_URLS)]
    assert len(VideoRequest("x", image_urls=urls).image_urls) == MAX_IMAGE_URLS
    error = _refused(image_urls=[*urls, IMAGE])
    assert str(MAX_IMAGE_URLS) in str(error)
    long = "https://images.example.com/" + "a" * MAX_IMAGE_URL_LENGTH
    assert str(MAX_IMAGE_URL_LENGTH) in str(_refused(image_urls=[long]))


@pytest.mark.parametrize("value", [b"https://images.example.com/cat.png", {IMAGE: 1}, 42])
def test_image_urls_of_the_wrong_kind_are_refused(value: object) -> None:
    assert "image" in str(_refused(image_urls=value))


# -- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration", ["1_0", "1_5", "+10", "-10", "10.0", "١٠", "0x0a", "010 0", 10.0, 15.5]
)
def test_durations_int_would_read_but_the_api_would_not_are_refused(duration: object) -> None:
    assert "10 or 15" in str(_refused(duration=duration))


@pytest.mark.parametrize("duration", [10, 15, "10", "15", " 15 "])
def test_plain_durations_pass(duration: object) -> None:
    assert VideoRequest("x", duration=duration).duration in (10, 15)  # type: ignore[arg-type]


# -- the client's wrong types, against the simulator ----------------------------------------------


def _client(sim: Simulator) -> Sora2Client:
    return Sora2Client("input-key", http_client=httpx.AsyncClient(transport=sim.transport()))


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [None, 42, b"a corgi", ["a corgi"], {"prompt": "a corgi"}])
async def test_generate_and_run_of_the_wrong_type_say_what_was_expected(bad: object) -> None:
    sim = Simulator(seed="inputs")
    async with _client(sim) as client:
        for call in (client.generate, client.run):
            with pytest.raises(TypeError, match="expected a VideoRequest or a prompt string"):
                await call(bad)  # type: ignore[arg-type]
    assert sim.stats().total_requests == 0


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [None, 42, b"task_1", VideoRequest("x")])
async def test_wait_and_check_status_of_the_wrong_type_say_what_was_expected(bad: object) -> None:
    sim = Simulator(seed="inputs")
    async with _client(sim) as client:
        with pytest.raises(TypeError, match="expected a Task or a task id string"):
            await client.wait(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected a Task or a task id string"):
            await client.check_status(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError):
            await client.wait("  ")
        with pytest.raises(TypeError):
            client.known_status(None)  # type: ignore[arg-type]
    assert sim.stats().total_requests == 0


@pytest.mark.anyio
async def test_a_prompt_string_stands_for_a_request_as_in_batch() -> None:
    sim = Simulator(seed="inputs")
    async with _client(sim) as client:
        task = await client.generate("a corgi surfing")
        assert task.request == VideoRequest("a corgi surfing")
        video = await client.run("a fox in the snow")
        assert isinstance(await client.wait(Task(task.task_id)), type(video))
        with pytest.raises(InvalidRequestError):
            await client.generate("\u200b")
    assert sim.stats().tasks_created == 2
    assert set(sim.stats().tasks_by_prompt) == {"a corgi surfing", "a fox in the snow"}
