"""Tests of the run's HTTP client against a local server: retries, Retry-After, pacing, caps."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from ochinai import __version__
from ochinai.runtime.errors import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOPERM,
    EX_TEMPFAIL,
    TransientError,
    exit_code_for,
)
from ochinai.runtime.http import HttpClient
from ochinai.runtime.retry import RetryPolicy
from tests.servers.http import Answer, Api, Page

NOW = datetime(2026, 12, 1, 6, 10, tzinfo=UTC)


class FakeClock:
    """A monotonic clock that only ``sleep`` moves; every sleep is recorded."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.t += seconds


def client(clock: FakeClock, **options: object) -> HttpClient:
    """A client on the fake clock whose backoff jitter is always at its maximum."""
    policy = RetryPolicy(base=1.0, cap=8.0, max_tries=4, retry_after_cap=60.0, rng=lambda: 1.0)
    kwargs: dict[str, object] = {"policy": policy, "timeout": (2.0, 2.0), **options}
    return HttpClient(clock=clock, sleep=clock.sleep, now=lambda: NOW, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock of one test."""
    return FakeClock()


def test_get_sends_our_user_agent_and_returns_the_body(api_server: Api, clock: FakeClock) -> None:
    """A 200 comes back whole; the server saw a User-Agent naming ochinai and its version."""
    api_server.pages["/items"] = Page(b'{"items": []}')
    response = client(clock).get(api_server.url("/items"))
    assert (response.status, response.json()) == (200, {"items": []})
    assert api_server.hits[0].headers["User-Agent"] == f"ochinai/{__version__}"


def test_conditional_get_gives_304_when_accepted(api_server: Api, clock: FakeClock) -> None:
    """With the stored ETag the server answers 304, which the caller asked to accept."""
    api_server.pages["/items"] = Page(b"[]", etag='"v1"')
    http = client(clock)
    first = http.get(api_server.url("/items"))
    again = http.get(
        api_server.url("/items"), headers={"If-None-Match": first.headers["ETag"]}, accept=(304,)
    )
    assert again.status == 304 and again.body == b""
    assert http.stats.requests == 2 and http.stats.retries == 0


@pytest.mark.parametrize(
    "retry_after",
    ["7", format_datetime(NOW + timedelta(seconds=7), usegmt=True)],
    ids=["seconds", "http-date"],
)
def test_429_waits_as_retry_after_says(api_server: Api, clock: FakeClock, retry_after: str) -> None:
    """429 with Retry-After (seconds or an HTTP-date) is waited out, then the page comes."""
    api_server.pages["/items"] = Page(b"[1]")
    api_server.then("/items", Answer(429, b"slow down", {"Retry-After": retry_after}))
    http = client(clock)
    assert http.get(api_server.url("/items")).body == b"[1]"
    assert clock.sleeps == [7.0]
    assert (http.stats.requests, http.stats.retries, http.stats.waited_s) == (2, 1, 7.0)


def test_retry_after_over_the_cap_gives_up_at_once_as_transient(
    api_server: Api, clock: FakeClock
) -> None:
    """A server asking for more than the cap ends the call at once with exit code 75."""
    api_server.then("/items", Answer(503, b"", {"Retry-After": "3600"}))
    with pytest.raises(Exception) as caught:
        client(clock).get(api_server.url("/items"))
    assert exit_code_for(caught.value) == EX_TEMPFAIL
    assert "3600" in str(caught.value) and "cap" in str(caught.value)
    assert clock.sleeps == [] and len(api_server.hits) == 1


def test_5xx_backs_off_exponentially_until_the_try_limit(api_server: Api, clock: FakeClock) -> None:
    """500s are retried with doubling waits; after the fourth try the call gives up (75)."""
    api_server.then("/items", *[Answer(500, b"oops")] * 5)
    with pytest.raises(Exception) as caught:
        client(clock).get(api_server.url("/items"))
    assert exit_code_for(caught.value) == EX_TEMPFAIL
    assert "gave up after 4 tries" in str(caught.value)
    assert clock.sleeps == [1.0, 2.0, 4.0] and len(api_server.hits) == 4


@pytest.mark.parametrize(("status", "code"), [(401, EX_NOPERM), (403, EX_NOPERM), (404, EX_NOPERM)])
def test_client_errors_are_permanent_and_not_retried(
    api_server: Api, clock: FakeClock, status: int, code: int
) -> None:
    """401, 403 and other 4xx end the call at once with 77, naming the URL."""
    api_server.then("/items", Answer(status, b"no"))
    with pytest.raises(Exception) as caught:
        client(clock).get(api_server.url("/items"))
    assert exit_code_for(caught.value) == code
    assert api_server.url("/items") in str(caught.value) and len(api_server.hits) == 1


def test_a_slow_answer_times_out_and_is_retried(api_server: Api, clock: FakeClock) -> None:
    """An answer slower than the read timeout is a transient failure; the retry gets the page."""
    api_server.pages["/items"] = Page(b"[2]")
    api_server.then("/items", Answer(200, b"[1]", delay=1.0))
    http = client(clock, timeout=(2.0, 0.3))
    assert http.get(api_server.url("/items")).body == b"[2]"
    assert http.stats.retries == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_an_oversized_body_is_a_data_error(
    api_server: Api, clock: FakeClock, chunked: bool
) -> None:
    """A body over the cap is refused as bad input (65) whether or not its length is declared."""
    api_server.then("/big", Answer(200, b"x" * 300_000, chunked=chunked))
    with pytest.raises(Exception) as caught:
        client(clock, max_bytes=100_000).get(api_server.url("/big"))
    assert exit_code_for(caught.value) == EX_DATAERR
    assert "too large" in str(caught.value) and api_server.url("/big") in str(caught.value)


def test_requests_to_one_host_keep_the_minimum_interval(api_server: Api, clock: FakeClock) -> None:
    """Back-to-back requests to one host wait out the interval on the run's clock."""
    api_server.pages["/a"] = Page(b"a")
    http = client(clock, min_interval=1.5)
    for _ in range(3):
        http.get(api_server.url("/a"))
    assert clock.sleeps == [1.5, 1.5]
    assert http.stats.waited_s == 3.0


def test_one_request_in_flight_per_host(api_server: Api) -> None:
    """Four threads sharing the client never have two requests open to one host at once."""
    api_server.pages["/slow"] = Page(b"s")
    for _ in range(4):
        api_server.then("/slow", Answer(200, b"s", delay=0.05))
    http = HttpClient()
    threads = [threading.Thread(target=http.get, args=(api_server.url("/slow"),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(api_server.hits) == 4 and api_server.most_in_flight == 1


def test_with_options_shares_the_counts(api_server: Api, clock: FakeClock) -> None:
    """A client derived with other limits counts into the same run totals."""
    api_server.pages["/a"] = Page(b"a")
    http = client(clock)
    http.with_options(max_bytes=10).get(api_server.url("/a"))
    http.get(api_server.url("/a"))
    assert http.stats.requests == 2


def test_connection_refused_is_transient(clock: FakeClock) -> None:
    """Nobody listening is a network failure (75) after the tries, naming the URL."""
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/items"
    with pytest.raises(Exception) as caught:
        client(clock).get(url)
    assert exit_code_for(caught.value) == EX_TEMPFAIL and url in str(caught.value)
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_a_large_error_page_stays_a_transient_error(api_server: Api, clock: FakeClock) -> None:
    """A 503 whose error page is over the size cap is still 503 (retried), never bad input."""
    api_server.pages["/items"] = Page(b"[]")
    api_server.then("/items", Answer(503, b"<html>" + b"x" * 500_000, chunked=True))
    http = client(clock, max_bytes=1000)
    assert http.get(api_server.url("/items")).body == b"[]"
    assert http.stats.retries == 1


def test_a_post_is_not_retried_unless_the_caller_says_so(api_server: Api, clock: FakeClock) -> None:
    """POST may have taken effect before a failure: one attempt by default, retries on request."""
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/orders"
    with pytest.raises(Exception) as once:
        client(clock).request("POST", url, data=b"{}")
    assert exit_code_for(once.value) == EX_TEMPFAIL and clock.sleeps == []
    with pytest.raises(TransientError):
        client(clock).request("POST", url, data=b"{}", retry=True)
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_bad_json_names_the_request_not_a_secret_url(api_server: Api, clock: FakeClock) -> None:
    """A body that is not JSON is a DataError naming the request as the caller named it."""
    api_server.pages["/items?token=s3cr3t"] = Page(b"{not json")
    response = client(clock).get(api_server.url("/items?token=s3cr3t"), where="GET the items API")
    with pytest.raises(Exception) as caught:
        response.json()
    assert exit_code_for(caught.value) == EX_DATAERR
    assert str(caught.value).startswith("GET the items API: the answer is not valid JSON")
    assert "s3cr3t" not in str(caught.value)


def test_a_header_value_with_a_line_break_is_a_config_error_not_showing_it(
    api_server: Api, clock: FakeClock
) -> None:
    """A key with the line break ``echo`` put in its Secret is a bad setting (78), unquoted."""
    api_server.pages["/items"] = Page(b"{}")
    with pytest.raises(Exception) as caught:
        client(clock).get(api_server.url("/items"), headers={"X-API-Key": "k3y-Value\n"})
    assert exit_code_for(caught.value) == EX_CONFIG and "line break" in str(caught.value)
    assert "k3y-Value" not in str(caught.value) and api_server.hits == []


def test_json_nested_too_deeply_is_a_data_error(api_server: Api, clock: FakeClock) -> None:
    """100,000 levels of [ exhaust the parser's recursion: bad input (65), not a crash (70)."""
    api_server.pages["/deep"] = Page(b"[" * 100_000 + b"]" * 100_000)
    response = client(clock).get(api_server.url("/deep"))
    with pytest.raises(Exception) as caught:
        response.json()
    assert exit_code_for(caught.value) == EX_DATAERR
    assert f"{api_server.url('/deep')}: the answer is JSON nested too deeply" in str(caught.value)


def test_a_redirect_loop_is_a_data_error_naming_the_url(api_server: Api, clock: FakeClock) -> None:
    """/a -> /b -> /a ...: bad input (65) at once, never an unexpected error (70) or retries."""
    api_server.pages["/a"] = Page(b"")
    for path, to in (("/a", "/b"), ("/b", "/a")):
        api_server.then(path, *[Answer(302, b"", {"Location": to})] * 40)
    with pytest.raises(Exception) as caught:
        client(clock).get(api_server.url("/a"))
    assert exit_code_for(caught.value) == EX_DATAERR
    assert str(caught.value).startswith(f"GET {api_server.url('/a')}: too many redirects")
    assert clock.sleeps == []


def test_an_answer_dripped_a_byte_at_a_time_times_out_as_a_whole(api_server: Api) -> None:
    """Each byte within the read timeout, the whole far past it: transient (75), not a hang."""
    api_server.then("/drip", Answer(200, b"[" + b" " * 200 + b"]", drip=0.05))
    policy = RetryPolicy(base=1.0, cap=1.0, max_tries=1)
    http = HttpClient(timeout=(2.0, 0.5), policy=policy)  # the real clock: the drip is real
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        http.get(api_server.url("/drip"))
    assert time.monotonic() - started < 3, "given up soon after the timeout, not at the end"
    assert f"GET {api_server.url('/drip')}: timed out: the answer took more than 0.5s" in str(
        caught.value
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_an_answer_cut_off_is_transient(api_server: Api, clock: FakeClock, chunked: bool) -> None:
    """The connection closes before the body's end: retried, then 75, never 70."""
    api_server.then("/cut", *[Answer(200, b"x" * 1000, chunked=chunked, cut_after=100)] * 4)
    with pytest.raises(TransientError) as caught:
        client(clock).get(api_server.url("/cut"))
    assert "cut off" in str(caught.value) and api_server.url("/cut") in str(caught.value)
    assert clock.sleeps == [1.0, 2.0, 4.0]
