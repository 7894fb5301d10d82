"""The monitor job against a real local API and webhook, with its state in S3 (moto)."""

from __future__ import annotations

import io
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ochinai.jobs.monitor import JOB
from ochinai.jobs.monitor.api import Api as ApiSource
from ochinai.jobs.monitor.rows import FIELDS
from ochinai.jobs.monitor.settings import MonitorSettings
from ochinai.jobs.monitor.urls import url_key
from ochinai.runtime import logs
from ochinai.runtime.declare import load
from ochinai.runtime.errors import TransientError
from ochinai.runtime.run import Runner
from ochinai.runtime.settings import RuntimeSettings
from ochinai.runtime.storage import Store
from tests.servers.http import Answer, Api, Hook, Page

BUCKET = "ops"
STATE = "monitor/state.json"
NOW = datetime(2026, 12, 1, 6, 15, tzinfo=UTC)
PRICE, AVAILABLE = FIELDS.index("price"), FIELDS.index("available")  # in a row as written


class Monitor:
    """Runs the monitor job in this process as its CronJob would; keeps logs and waits."""

    def __init__(self, client: Any, api: Api, hook: Hook | None, buf: Any = None) -> None:
        self.client, self.api, self.hook = client, api, hook
        self.waits: list[float] = []
        self.t = 1000.0  # the run's monotonic clock: only sleeping moves it
        self.runs = 0
        self.buf = buf or io.StringIO()
        if buf is None:
            logs.configure(fmt="json", stream=self.buf)

    def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 3))
        self.t += seconds

    def run(self, **env: str) -> int:
        self.runs += 1
        full = {
            "OCHINAI_STORE": f"s3://{BUCKET}",
            "OCHINAI_LOCK": "s3",
            "OCHINAI_RUN_ID": f"m-{self.runs}",
            "OCHINAI_MONITOR_URL": self.api.url("/items"),
            "OCHINAI_MONITOR_MIN_INTERVAL": "1s",
            **({"OCHINAI_WEBHOOK_URL": self.hook.url} if self.hook else {}),
            **env,
        }
        runner = Runner(
            JOB,
            load(RuntimeSettings, full),
            load(MonitorSettings, full),
            utcnow=lambda: NOW,
            monotonic=lambda: self.t,
            sleep=self.sleep,
        )
        return runner.run()

    @property
    def summary(self) -> dict[str, Any]:
        lines = [json.loads(line) for line in self.buf.getvalue().splitlines()]
        return [line for line in lines if line.get("event") == "summary"][-1]

    def state(self) -> dict[str, Any]:
        body = self.client.get_object(Bucket=BUCKET, Key=STATE)["Body"].read()
        result: dict[str, Any] = json.loads(body)
        return result

    def state_etag(self) -> str:
        return str(self.client.head_object(Bucket=BUCKET, Key=STATE)["ETag"])

    def keys(self, prefix: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]

    def posted(self) -> list[tuple[str, str]]:
        """(Idempotency-Key, text) of each change notice the webhook got (not failure notices)."""
        assert self.hook is not None
        posts = [
            (headers["Idempotency-Key"], json.loads(body)["text"])
            for headers, body in self.hook.received
        ]
        return [(key, text) for key, text in posts if key.startswith("monitor/changes/")]


def items_page(*items: dict[str, Any], etag: str | None = None, **extra: Any) -> Page:
    body = json.dumps({"items": list(items), **extra}, ensure_ascii=False).encode()
    return Page(body, etag=etag)


def item(key: str, price: Any, stock: Any, name: str | None = None) -> dict[str, Any]:
    return {
        "id": key,
        "name": name or f"商品 {key}",
        "price": price,
        "stock": stock,
        "url": f"https://shop.example/p/{key}",
    }


@pytest.fixture
def mon(moto_ops: Any, api_server: Api, hook: Hook) -> Monitor:
    """A bucket, a local API and a webhook."""
    return Monitor(moto_ops, api_server, hook)


def test_the_first_run_is_a_baseline_and_notifies_nothing(mon: Monitor) -> None:
    """Every item is recorded, nothing is announced, no history is written."""
    mon.api.pages["/items"] = items_page(item("a", "¥1,980", "in stock"), item("b", 500, 0))
    assert mon.run() == 0
    assert mon.summary["outcome"] == "unchanged" and mon.summary["items"] == 2
    assert mon.state()["items"]["a"][PRICE] == "1980" and mon.hook is not None
    assert mon.hook.received == [] and mon.keys("monitor/history/") == []


def test_each_change_is_announced_once_with_its_history(mon: Monitor) -> None:
    """A price cut and a restock: one message, one history file; the rerun sends nothing."""
    mon.api.pages["/items"] = items_page(item("a", "1,980", "in stock"), item("b", 500, 0))
    assert mon.run() == 0
    mon.api.pages["/items"] = items_page(item("a", "1,780", "in stock"), item("b", 500, 3))
    assert mon.run() == 0
    summary = mon.summary
    assert (summary["price_changed"], summary["restocked"], summary["notified"]) == (1, 1, 2)
    [(key, text)] = mon.posted()
    assert key.startswith("monitor/changes/")
    assert "商品 a: 価格 ¥1,980 → ¥1,780 (-10.1%) https://shop.example/p/a" in text
    assert "商品 b: 再入荷しました" in text
    [history] = mon.keys("monitor/history/dt=2026-12-01/")
    lines = mon.client.get_object(Bucket=BUCKET, Key=history)["Body"].read().splitlines()
    assert sorted(json.loads(x)["kind"] for x in lines) == ["price_changed", "restocked"]
    assert mon.state()["outbox"] == []
    assert mon.run() == 0
    assert mon.summary["outcome"] == "unchanged" and len(mon.posted()) == 1


def test_a_history_not_written_after_the_commit_is_written_by_the_next_run(
    mon: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The changes are committed, then the history write fails (or the run is killed):
    the next run finds no change in the API, yet writes that history and sends it."""
    mon.api.pages["/items"] = items_page(item("a", "1,980", "in stock"))
    assert mon.run() == 0
    mon.api.pages["/items"] = items_page(item("a", "1,780", "in stock"))
    put = Store.put

    def failing_history(self: Store, key: str, *args: Any, **kwargs: Any) -> Any:
        if "/history/" in key:
            raise TransientError(f"{key}: injected")
        return put(self, key, *args, **kwargs)

    monkeypatch.setattr(Store, "put", failing_history)
    assert mon.run() == 75
    assert mon.keys("monitor/history/") == [] and mon.posted() == []
    assert [e["key"] for e in mon.state()["unrecorded"]] == [
        "monitor/history/dt=2026-12-01/m-2.ndjson"
    ]
    monkeypatch.setattr(Store, "put", put)
    assert mon.run() == 0
    assert (mon.summary["outcome"], mon.summary["history_recorded"]) == ("ok", 1)
    [history] = mon.keys("monitor/history/")
    assert history == "monitor/history/dt=2026-12-01/m-2.ndjson"
    [line] = mon.client.get_object(Bucket=BUCKET, Key=history)["Body"].read().splitlines()
    assert (json.loads(line)["kind"], json.loads(line)["run_id"]) == ("price_changed", "m-2")
    assert "unrecorded" not in mon.state() and len(mon.posted()) == 1
    assert mon.run() == 0 and mon.summary["outcome"] == "unchanged"
    assert mon.summary["history_recorded"] == 0
    assert len(mon.keys("monitor/history/")) == 1 and len(mon.posted()) == 1


def test_a_changing_run_writes_the_state_twice(
    mon: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit, then one write taking out both the history written and the notice sent."""
    mon.api.pages["/items"] = items_page(item("a", "1,980", "in stock"), item("b", 500, 0))
    assert mon.run() == 0
    mon.api.pages["/items"] = items_page(item("a", "1,780", "in stock"), item("b", 500, 3))
    put = Store.put
    state_puts: list[str] = []

    def counted(self: Store, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == STATE:
            state_puts.append(key)
        return put(self, key, *args, **kwargs)

    monkeypatch.setattr(Store, "put", counted)
    assert mon.run() == 0
    assert len(state_puts) == 2 and len(mon.posted()) == 1
    assert len(mon.keys("monitor/history/")) == 1
    assert mon.state()["outbox"] == [] and "unrecorded" not in mon.state()


def a_change_left_in_the_outbox(mon: Monitor) -> None:
    """A baseline, then a price change whose notice the webhook refuses (500): 75."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    mon.api.pages["/items"] = items_page(item("a", 90, 1))
    assert mon.hook is not None
    mon.hook.status = 500
    assert mon.run() == 75


def test_a_dry_run_with_changes_and_leftovers_writes_and_sends_nothing(mon: Monitor) -> None:
    """--dry-run over a change and an earlier run's outbox: the state, history and hook
    stay as they were, and the real run after it announces the changes."""
    a_change_left_in_the_outbox(mon)
    mon.hook.status = 200
    mon.api.pages["/items"] = items_page(item("a", 80, 1))
    before = mon.state_etag()
    assert mon.run(OCHINAI_DRY_RUN="true") == 0
    assert mon.state_etag() == before and len(mon.keys("monitor/history/")) == 1
    assert len(mon.posted()) == 1  # the failed one only
    assert mon.run() == 0 and len(mon.keys("monitor/history/")) == 2
    assert mon.state()["outbox"] == [] and len(mon.posted()) == 3


def test_a_notice_sent_by_an_earlier_run_is_not_counted_again(
    mon: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notice went out, then the state write taking it out of the outbox failed: the
    next run finds it recorded as sent, takes it out, and does not count it as its own."""
    mon.api.pages["/items"] = items_page(item("a", "1,980", "in stock"))
    assert mon.run() == 0
    mon.api.pages["/items"] = items_page(item("a", "1,780", "in stock"))
    put = Store.put
    state_puts = itertools.count(1)

    def second_state_write_fails(self: Store, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == STATE and next(state_puts) == 2:
            raise TransientError(f"{key}: injected")
        return put(self, key, *args, **kwargs)

    monkeypatch.setattr(Store, "put", second_state_write_fails)
    assert mon.run() == 75
    assert len(mon.posted()) == 1 and len(mon.state()["outbox"]) == 1
    monkeypatch.setattr(Store, "put", put)
    assert mon.run() == 0
    assert len(mon.posted()) == 1 and mon.state()["outbox"] == []
    assert mon.summary["notified"] == 0


def test_a_version_1_state_is_read_and_only_real_changes_are_news(mon: Monitor) -> None:
    """A state written before items became rows: read as it was meant, no false alarm."""
    old = {"name": "商品 a", "price": "1980", "available": True, "count": 5}
    gone_soon = {"name": "商品 b", "price": "500", "available": False, "count": 0}
    v1 = {
        "version": 1,
        "generation": 7,
        "items": {
            "a": {**old, "link": "https://shop.example/p/a", "missing": 0},
            "b": {**gone_soon, "link": "https://shop.example/p/b", "missing": 1},
        },
        "validators": {},
        "outbox": [],
    }
    mon.client.put_object(Bucket=BUCKET, Key=STATE, Body=json.dumps(v1).encode())
    mon.api.pages["/items"] = items_page(item("a", "1,980", 5))
    assert mon.run() == 0
    assert (mon.summary["price_changed"], mon.summary["gone"], mon.summary["new"]) == (0, 1, 0)
    state = mon.state()
    assert state["version"] == 2 and state["generation"] == 8
    assert state["items"] == {"a": ["商品 a", "1980", True, 5, "https://shop.example/p/a"]}


def test_a_rerun_on_the_same_answer_rewrites_nothing(mon: Monitor) -> None:
    """The same answer again: no state write; under a new ETag only the ETag is new."""
    same = (item("a", 100, 1), item("b", "2,000", "在庫なし"))
    mon.api.pages["/items"] = items_page(*same)
    assert mon.run() == 0
    before, body = mon.state_etag(), mon.state()
    assert mon.run() == 0
    assert (mon.summary["outcome"], mon.state_etag()) == ("unchanged", before)
    mon.api.pages["/items"] = items_page(*same, etag='"v2"')
    assert mon.run() == 0
    assert mon.summary["outcome"] == "unchanged" and mon.hook is not None
    assert mon.state()["items"] == body["items"] and mon.hook.received == []
    assert mon.state()["validators"][mon.api.url("/items")] == {"etag": '"v2"'}


def test_304_means_no_parse_and_no_state_write(mon: Monitor) -> None:
    """With the stored ETag the API answers 304: nothing parsed, the state untouched."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1), etag='"v1"')
    assert mon.run() == 0
    before = mon.state_etag()
    assert mon.run() == 0
    assert (mon.summary["outcome"], mon.summary["not_modified"]) == ("unchanged", 1)
    assert mon.state_etag() == before
    assert mon.api.hits[-1].headers.get("If-None-Match") == '"v1"'
    assert mon.api.hits[-1].status == 304


def test_the_state_keeps_the_url_without_the_password_and_token_in_it(mon: Monitor) -> None:
    """A URL with user:password@ and ?api_key= works, and neither is written to the bucket."""
    path = "/items?api_key=t0ken-In-Query"
    mon.api.pages[path] = items_page(item("a", 100, 1), etag='"v1"')
    url = f"http://watcher:Pa55-In-Url@127.0.0.1:{mon.api.port}{path}"
    old = {"version": 2, "generation": 1, "items": {}, "outbox": []}
    old["validators"] = {url: {"etag": '"v0"'}}  # as earlier versions kept it
    mon.client.put_object(Bucket=BUCKET, Key=STATE, Body=json.dumps(old).encode())
    assert mon.run(OCHINAI_MONITOR_URL=url) == 0
    assert mon.run(OCHINAI_MONITOR_URL=url) == 0
    assert mon.api.hits[-1].status == 304  # the validators are found under the URL's key
    stored = json.dumps(mon.state())
    assert "Pa55-In-Url" not in stored and "t0ken-In-Query" not in stored
    [kept] = mon.state()["validators"]
    assert kept.startswith(f"http://127.0.0.1:{mon.api.port}/items?api_key=***")


def test_a_429_then_the_page_is_no_change_and_waits_as_told(mon: Monitor) -> None:
    """429 with Retry-After: the wait is honoured and the same data is no change."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    mon.api.then("/items", Answer(429, b"slow down", {"Retry-After": "7"}))
    assert mon.run() == 0
    assert mon.summary["outcome"] == "unchanged" and mon.summary["retries"] == 1
    assert 7.0 in mon.waits and mon.posted() == []


def test_retry_after_over_the_cap_ends_75_with_the_state_untouched(mon: Monitor) -> None:
    """A server asking for an hour: the run ends transient at once; nothing is written."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    before = mon.state_etag()
    mon.api.then("/items", Answer(503, b"", {"Retry-After": "3600"}))
    assert mon.run() == 75
    assert mon.state_etag() == before and mon.posted() == []


def test_an_empty_or_broken_answer_is_never_everything_gone(mon: Monitor) -> None:
    """An empty body or bad JSON is 65 naming the URL; the state is not touched."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    before = mon.state_etag()
    for body in (b"", b"{not json"):
        mon.api.then("/items", Answer(200, body))
        assert mon.run() == 65
        assert mon.state_etag() == before
    assert mon.posted() == []


def test_an_answer_nested_100k_deep_is_65_naming_the_url(mon: Monitor) -> None:
    """JSON nested past the parser's recursion limit is bad data, never an unexpected error."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    before = mon.state_etag()
    mon.api.then("/items", Answer(200, b'{"items": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"))
    assert mon.run() == 65
    record = json.loads(
        mon.client.get_object(Bucket=BUCKET, Key="_runs/monitor/2026-12-01/m-2.json")["Body"].read()
    )
    assert (
        f"{mon.api.url('/items')}: the answer is JSON nested too deeply"
        in (record["error"]["message"])
    )
    assert mon.state_etag() == before and mon.keys("monitor/history/") == []


def test_401_is_permanent(mon: Monitor) -> None:
    """Wrong credentials: 77 at once, no retries."""
    mon.api.then("/items", Answer(401, b"no"))
    assert mon.run() == 77
    assert len(mon.api.hits) == 1


def test_a_failed_webhook_keeps_the_outbox_for_the_next_run(mon: Monitor) -> None:
    """The webhook fails: the changes stay committed in the outbox, sent first next time."""
    a_change_left_in_the_outbox(mon)
    assert len(mon.state()["outbox"]) == 1
    # The history is written all the same, and out of the state.
    assert "unrecorded" not in mon.state() and len(mon.keys("monitor/history/")) == 1
    mon.hook.status = 200
    assert mon.run() == 0
    keys = [key for key, _ in mon.posted()]
    assert len(keys) == 2 and keys[0] == keys[1], "the same notice id, sent again"
    assert mon.state()["outbox"] == [] and mon.summary["notified"] == 1
    assert mon.summary["price_changed"] == 0, "the change was found once, on the earlier run"


def test_a_revoked_webhook_never_stops_changes_from_being_recorded(mon: Monitor) -> None:
    """The webhook answers 404 (revoked, 77) run after run: each run still commits its
    state and history first and then ends 77; a change that comes and goes while the
    hook is down is in the history both ways, and its notices wait in the outbox.
    Before, the leftovers' failed delivery stopped every run before its fetch."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    assert mon.hook is not None
    mon.hook.status = 404
    mon.api.pages["/items"] = items_page(item("a", 90, 1))
    assert mon.run() == 77
    mon.api.pages["/items"] = items_page(item("a", 100, 1))  # and back
    assert mon.run() == 77
    state = mon.state()
    assert state["items"]["a"][PRICE] == "100"
    assert len(state["outbox"]) == 2 and "unrecorded" not in state
    history = [
        json.loads(line)
        for key in mon.keys("monitor/history/")
        for line in mon.client.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines()
    ]
    assert [(h["old"], h["new"]) for h in history if h["kind"] == "price_changed"] == [
        ("100", "90"),
        ("90", "100"),
    ]
    mon.hook.status = 200
    assert mon.run() == 0 and mon.state()["outbox"] == []
    assert mon.summary["notified"] == 2


def test_pages_are_followed_by_next_link_and_link_header(mon: Monitor) -> None:
    """A next URL in the body and a Link rel=next header both lead to the next page."""
    mon.api.pages["/items"] = items_page(item("a", 1, 1), next="/items?page=2")
    body = json.dumps({"items": [item("b", 2, 1)]}).encode()
    mon.api.pages["/items?page=2"] = Page(body)
    mon.api.then("/items?page=2", Answer(200, body, {"Link": '</items?page=3>; rel="next"'}))
    mon.api.pages["/items?page=3"] = items_page(item("c", 3, 1))
    assert mon.run() == 0
    assert mon.summary["items"] == 3 and mon.summary["pages"] == 3


def test_requests_to_the_api_keep_the_minimum_interval(mon: Monitor) -> None:
    """Three pages from one host: two waits of the interval on the run's clock."""
    mon.api.pages["/items"] = items_page(item("a", 1, 1), next="/items?page=2")
    mon.api.pages["/items?page=2"] = items_page(item("b", 1, 1), next="/items?page=3")
    mon.api.pages["/items?page=3"] = items_page(item("c", 1, 1))
    assert mon.run(OCHINAI_MONITOR_MIN_INTERVAL="2s") == 0
    assert mon.waits.count(2.0) == 2 and mon.api.most_in_flight == 1


def test_a_lost_state_race_diffs_again_and_announces_each_change_once(
    mon: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run commits between this run's read and write: re-read, re-diff, no double."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    mon.api.pages["/items"] = items_page(item("a", 80, 1))
    real_fetch = ApiSource.fetch
    raced: list[int] = []

    def fetch_then_race(self: ApiSource, *args: Any, **kwargs: Any) -> Any:
        fetched = real_fetch(self, *args, **kwargs)
        if not raced:
            raced.append(1)
            inner = Monitor(mon.client, mon.api, mon.hook, buf=io.StringIO())
            inner.runs = 100
            inner_code = inner.run(OCHINAI_LOCK="none")  # the other run commits first
            assert inner_code == 0
        return fetched

    monkeypatch.setattr(ApiSource, "fetch", fetch_then_race)
    assert mon.run(OCHINAI_LOCK="none") == 0
    assert mon.state()["items"]["a"][PRICE] == "80"
    assert len(mon.posted()) == 1, "the change went out once, from the run that won"
    assert mon.summary["price_changed"] == 0


# --- HTML mode ------------------------------------------------------------------------

JSON_LD_PAGE = """<!doctype html><html><head><title>猫の爪とぎ | Shop</title>
<script type="application/ld+json">{ "@context": "https://schema.org", broken json, }</script>
<script type="application/ld+json">
{"@context": "https://schema.org", "@graph": [
  {"@type": "BreadcrumbList", "itemListElement": []},
  {"@type": ["Product", "Thing"], "name": "猫の爪とぎ", "sku": "N-1",
   "offers": {"@type": "Offer", "price": "%(price)s", "priceCurrency": "JPY",
              "availability": "  http://schema.org/%(stock)s"}}]}
</script></head><body><h1>猫の爪とぎ</h1></body></html>"""

MICRODATA_PAGE = """<html><body><div itemscope itemtype="https://schema.org/Product">
<h1 itemprop="name">犬のおもちゃ</h1>
<div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
<meta itemprop="price" content="%(price)s"><span>¥%(price)s</span>
<link itemprop="availability" href="https://schema.org/%(stock)s"></div></div></body></html>"""

PLAIN_PAGE = """<html><head><title>鳥のえさ</title></head><body>
<span class="price">¥%(price)s</span><p id="stock">%(stock)s</p></body></html>"""


def html(template: str, etag: str | None = None, **values: str) -> Page:
    return Page((template % values).encode(), etag=etag, content_type="text/html")


def html_env(mon: Monitor, *paths: str, **extra: str) -> dict[str, str]:
    return {
        "OCHINAI_MONITOR_MODE": "html",
        "OCHINAI_MONITOR_PAGES": ",".join(mon.api.url(p) for p in paths),
        **extra,
    }


def test_html_pages_are_read_from_json_ld_microdata_and_selectors(mon: Monitor) -> None:
    """Three kinds of page, one item each; an invalid JSON-LD block beside a good one is ok."""
    mon.api.pages["/cat"] = html(JSON_LD_PAGE, price="1,980", stock="InStock")
    mon.api.pages["/dog"] = html(MICRODATA_PAGE, price="980", stock="OutOfStock")
    mon.api.pages["/bird"] = html(PLAIN_PAGE, price="500", stock="在庫あり")
    env = html_env(
        mon,
        "/cat",
        "/dog",
        "/bird",
        OCHINAI_MONITOR_PRICE_SELECTOR="span.price",
        OCHINAI_MONITOR_STOCK_SELECTOR="#stock",
    )
    assert mon.run(**env) == 0
    items = mon.state()["items"]
    cat, dog, bird = (items[mon.api.url(p)] for p in ("/cat", "/dog", "/bird"))
    assert cat[: AVAILABLE + 1] == ["猫の爪とぎ", "1980", True]
    assert dog[: AVAILABLE + 1] == ["犬のおもちゃ", "980", False]
    assert bird[: AVAILABLE + 1] == ["鳥のえさ", "500", True]
    mon.api.pages["/cat"] = html(JSON_LD_PAGE, price="1,780", stock="InStock")
    mon.api.pages["/dog"] = html(MICRODATA_PAGE, price="980", stock="InStock")
    assert mon.run(**env) == 0
    [(_, text)] = mon.posted()
    assert "猫の爪とぎ: 価格 ¥1,980 → ¥1,780 (-10.1%)" in text
    assert "犬のおもちゃ: 再入荷しました" in text


def test_a_page_with_a_token_in_its_url_is_kept_and_announced_without_it(mon: Monitor) -> None:
    """The item's key and link are the page's URL with a digest for the token, in state and
    notice."""
    mon.api.pages["/cat?token=t0ken-In-Page"] = html(JSON_LD_PAGE, price="1,980", stock="InStock")
    env = html_env(mon, "/cat?token=t0ken-In-Page")
    assert mon.run(**env) == 0
    [kept] = mon.state()["items"]
    assert kept.startswith(mon.api.url("/cat?token=***")) and len(kept) > len(
        mon.api.url("/cat?token=***")
    )
    mon.api.pages["/cat?token=t0ken-In-Page"] = html(JSON_LD_PAGE, price="1,780", stock="InStock")
    assert mon.run(**env) == 0
    [(_, text)] = mon.posted()
    assert "¥1,780" in text and "t0ken-In-Page" not in text
    [history] = mon.keys("monitor/history/")
    body = mon.client.get_object(Bucket=BUCKET, Key=history)["Body"].read().decode()
    assert "t0ken-In-Page" not in body + json.dumps(mon.state())


def test_pages_apart_by_their_query_stay_two_items_with_links_that_open(mon: Monitor) -> None:
    """?id=A1 and ?id=B2 behind user:password@: two items, each with its own ETag, a target
    set on the URL as written, a link without the password; a secret setting in a query
    stays out of the bucket and the notice."""
    secret = "k3y-In-Query-0123"
    for path, price, etag in (("/item?id=A1", "1,980", '"a1"'), ("/item?id=B2", "980", '"b2"')):
        mon.api.pages[path] = html(JSON_LD_PAGE, etag=etag, price=price, stock="InStock")
    mon.api.pages[f"/item?auth={secret}"] = html(JSON_LD_PAGE, price="500", stock="InStock")
    pages = [
        f"http://watcher:Pa55-In-Url@127.0.0.1:{mon.api.port}{p}"
        for p in ("/item?id=A1", "/item?id=B2", f"/item?auth={secret}")
    ]
    env = {
        "OCHINAI_MONITOR_MODE": "html",
        "OCHINAI_MONITOR_PAGES": ",".join(pages),
        "OCHINAI_MONITOR_TARGETS": f"{pages[0]}=1500",
        "OCHINAI_MONITOR_API_KEY": secret,
    }
    assert mon.run(**env) == 0
    a1, b2 = mon.api.url("/item?id=A1"), mon.api.url("/item?id=B2")
    hidden = mon.api.url("/item?auth=***OCHINAI_MONITOR_API_KEY")
    assert list(mon.state()["items"]) == [a1, b2, hidden]
    mon.api.pages["/item?id=A1"] = html(JSON_LD_PAGE, etag='"a2"', price="1,480", stock="InStock")
    assert mon.run(**env) == 0
    sent = {h.path: h.headers.get("If-None-Match") for h in mon.api.hits[-3:]}
    assert sent["/item?id=A1"] == '"a1"' and sent["/item?id=B2"] == '"b2"'
    [(_, text)] = mon.posted()
    assert f"目標価格 ¥1,500 以下に (¥1,480) {a1}\n" in text
    [history] = mon.keys("monitor/history/")
    body = mon.client.get_object(Bucket=BUCKET, Key=history)["Body"].read().decode()
    for shown in (text, body, json.dumps(mon.state())):
        assert "Pa55-In-Url" not in shown and secret not in shown


def test_a_url_key_is_unique_and_stable_and_holds_no_credential() -> None:
    """?key=A1 and ?key=B2 are two keys, the same on every run; TOKEN@ and :pw@ go."""
    secrets = {"k3y-In-Query-0123": "OCHINAI_MONITOR_API_KEY"}
    a1, b2 = (url_key(f"https://shop.example/item?key={k}", secrets) for k in ("A1", "B2"))
    assert a1 != b2 and a1 == url_key("https://shop.example/item?key=A1", secrets)
    assert a1.startswith("https://shop.example/item?key=***") and "A1" not in a1
    assert url_key("https://T0KEN@shop.example/p?id=1", {}) == "https://shop.example/p?id=1"
    assert url_key("https://:pw@shop.example:8443/p", {}) == "https://shop.example:8443/p"
    assert (
        url_key("https://shop.example/p?id=2&auth=k3y-In-Query-0123", secrets)
        == "https://shop.example/p?id=2&auth=***OCHINAI_MONITOR_API_KEY"
    )


def test_two_pages_of_one_key_are_refused_naming_both(mon: Monitor) -> None:
    """Pages apart only by their credentials are one item: 78 naming both without them."""
    pages = [f"http://{who}@127.0.0.1:{mon.api.port}/cat" for who in ("a:Pa55-1", "b:Pa55-2")]
    env = {"OCHINAI_MONITOR_MODE": "html", "OCHINAI_MONITOR_PAGES": ",".join(pages)}
    assert mon.run(**env) == 78
    assert mon.api.hits == [] and mon.keys("monitor/") == []
    url = mon.api.url("/cat")
    assert f"{url} and {url} are one page" in mon.buf.getvalue()
    assert "Pa55" not in mon.buf.getvalue()


def test_items_an_earlier_version_kept_under_the_url_with_credentials_are_renamed(
    mon: Monitor,
) -> None:
    """A state keyed by the URL as set, or as 1f6ff9a masked it: the same items, nothing new
    or gone, and the credentials leave the bucket."""
    cat = f"http://watcher:Pa55-In-Url@127.0.0.1:{mon.api.port}/cat"
    dog = f"http://watcher:Pa55-In-Url@127.0.0.1:{mon.api.port}/dog?sig=s1g-In-Page"
    masked_dog = f"http://watcher:***@127.0.0.1:{mon.api.port}/dog?sig=***"
    mon.api.pages["/cat"] = html(JSON_LD_PAGE, price="1,980", stock="InStock")
    mon.api.pages["/dog?sig=s1g-In-Page"] = html(MICRODATA_PAGE, price="980", stock="InStock")
    old = {
        "version": 2,
        "generation": 3,
        "items": {
            cat: ["猫の爪とぎ", "1980", True, None, cat],
            masked_dog: ["犬のおもちゃ", "980", True, None, masked_dog],
        },
        "validators": {cat: {"etag": '"c0"'}},
        "outbox": [],
    }
    mon.client.put_object(Bucket=BUCKET, Key=STATE, Body=json.dumps(old).encode())
    env = {
        "OCHINAI_MONITOR_MODE": "html",
        "OCHINAI_MONITOR_PAGES": f"{cat},{dog}",
        "OCHINAI_MONITOR_GONE_AFTER": "1",
    }
    assert mon.run(**env) == 0
    assert mon.api.hits[-2].headers.get("If-None-Match") == '"c0"'
    assert (mon.summary["new"], mon.summary["gone"]) == (0, 0)
    state = mon.state()
    assert set(state["items"]) == {mon.api.url("/cat"), url_key(dog, {})}
    assert "Pa55" not in json.dumps(state) and "s1g" not in json.dumps(state)


def test_a_selector_matching_nothing_names_itself_and_the_page(mon: Monitor) -> None:
    """A page without markup and a selector that finds nothing: 65, naming both."""
    mon.api.pages["/bird"] = html(PLAIN_PAGE, price="500", stock="x")
    env = html_env(mon, "/bird", OCHINAI_MONITOR_PRICE_SELECTOR="span.cost")
    assert mon.run(**env) == 65
    assert mon.keys("monitor/") == []


def test_robots_txt_is_obeyed(mon: Monitor) -> None:
    """Disallowed for ochinai: 78, and the page is never fetched."""
    mon.api.pages["/robots.txt"] = Page(
        b"User-agent: *\nAllow: /\n\nUser-agent: ochinai\nDisallow: /private/\n",
        content_type="text/plain",
    )
    mon.api.pages["/private/cat"] = html(JSON_LD_PAGE, price="1", stock="InStock")
    assert mon.run(**html_env(mon, "/private/cat")) == 78
    assert [h.path for h in mon.api.hits] == ["/robots.txt"]


def test_robots_txt_unreachable_means_fetch_nothing(mon: Monitor) -> None:
    """RFC 9309: a 5xx robots.txt forbids everything for now: 75, no page read."""
    mon.api.then("/robots.txt", *[Answer(503, b"down")] * 4)
    mon.api.pages["/cat"] = html(JSON_LD_PAGE, price="1", stock="InStock")
    assert mon.run(**html_env(mon, "/cat")) == 75
    assert {h.path for h in mon.api.hits} == {"/robots.txt"}


def test_a_not_modified_page_keeps_its_item(mon: Monitor) -> None:
    """304 for every page is no run at all; 304 for one page is no 'gone' for its item."""
    mon.api.pages["/cat"] = html(JSON_LD_PAGE, etag='"c1"', price="1,980", stock="InStock")
    mon.api.pages["/dog"] = html(MICRODATA_PAGE, etag='"d1"', price="980", stock="InStock")
    env = html_env(mon, "/cat", "/dog")
    assert mon.run(**env) == 0
    before = mon.state_etag()
    assert mon.run(**env) == 0
    assert (mon.summary["outcome"], mon.summary["not_modified"]) == ("unchanged", 2)
    assert mon.state_etag() == before
    mon.api.pages["/cat"] = html(JSON_LD_PAGE, etag='"c2"', price="1,500", stock="InStock")
    for _ in range(3):  # past OCHINAI_MONITOR_GONE_AFTER: the dog is still there
        assert mon.run(**env) == 0
    assert mon.summary["gone"] == 0 and mon.api.url("/dog") in mon.state()["items"]


# --- the API misbehaving -------------------------------------------------------------


def test_a_503_burst_is_waited_out_and_is_no_change(mon: Monitor) -> None:
    """Three 503s then the page: backoff waits, no false change, the tries counted."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    mon.api.then("/items", *[Answer(503, b"busy")] * 3)
    assert mon.run() == 0
    assert (mon.summary["outcome"], mon.summary["retries"]) == ("unchanged", 3)
    assert mon.posted() == []


def test_past_the_try_limit_the_run_ends_75_with_the_state_untouched(mon: Monitor) -> None:
    """5xx on every try: 75 after OCHINAI_MONITOR_TRIES, nothing written."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    assert mon.run() == 0
    before = mon.state_etag()
    mon.api.then("/items", *[Answer(500, b"oops")] * 3)
    assert mon.run(OCHINAI_MONITOR_TRIES="3") == 75
    assert mon.state_etag() == before and len(mon.api.hits) == 1 + 3


def test_a_slow_answer_times_out_and_the_retry_gets_the_page(mon: Monitor) -> None:
    """An answer slower than OCHINAI_MONITOR_TIMEOUT is retried, not waited for."""
    mon.api.pages["/items"] = items_page(item("a", 100, 1))
    mon.api.then("/items", Answer(200, b"{}", delay=1.5))
    assert mon.run(OCHINAI_MONITOR_TIMEOUT="0.5s") == 0
    assert mon.summary["retries"] == 1 and mon.summary["items"] == 1


def test_an_oversized_answer_is_refused_unread(mon: Monitor) -> None:
    """Over OCHINAI_MONITOR_MAX_BYTES: 65, whether or not the length is declared."""
    big = items_page(*(item(f"k{n}", n, 1) for n in range(2000)))
    mon.api.then("/items", Answer(200, big.body, chunked=True))
    assert mon.run(OCHINAI_MONITOR_MAX_BYTES="50KB") == 65
    assert mon.keys("monitor/") == []


def test_requests_are_spaced_as_the_server_sees_them(moto_ops: Any, api_server: Api) -> None:
    """On the real clock: the server records request starts at least the interval apart."""
    from ochinai.runtime.cancel import cancellation

    api_server.pages["/items"] = items_page(item("a", 1, 1), next="/items?page=2")
    api_server.pages["/items?page=2"] = items_page(item("b", 1, 1), next="/items?page=3")
    api_server.pages["/items?page=3"] = items_page(item("c", 1, 1))
    env = {
        "OCHINAI_STORE": f"s3://{BUCKET}",
        "OCHINAI_LOCK": "none",
        "OCHINAI_MONITOR_URL": api_server.url("/items"),
        "OCHINAI_MONITOR_MIN_INTERVAL": "0.2s",
    }
    logs.configure(fmt="json", stream=io.StringIO())
    runner = Runner(JOB, load(RuntimeSettings, env), load(MonitorSettings, env))
    assert runner.sleep == cancellation.sleep and runner.run() == 0
    starts = [hit.start for hit in api_server.hits]
    assert len(starts) == 3
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(starts))
