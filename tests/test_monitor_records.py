"""The monitor's records in S3 (state items, changes, history) read and written as the
version before this one wrote them, older ones read, broken ones refused."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from ochinai.jobs.monitor import state as state_module
from ochinai.jobs.monitor.changes import Change
from ochinai.jobs.monitor.history import Pending
from ochinai.jobs.monitor.message import notice
from ochinai.jobs.monitor.state import VERSION, State, StateFile, parse_state, renamed
from ochinai.runtime.errors import DataError
from ochinai.runtime.storage import Store
from tests.servers.http import Api, Hook, Page
from tests.test_monitor import BUCKET, STATE, Monitor

RUN = "20261130T061000000Z-0a1b2c"
AT = "2026-11-30T06:10:00+00:00"
LINK = "https://shop.example/p/"

# What the monitor wrote before its records were typed (taken from its own output): a
# state with rows (one missing), validators, an outbox of every kind of change and a
# history object not yet written; that history object's NDJSON; the notice of the outbox.
STATE_JSON = (
    '{"version":2,"generation":3,"items":{"a":["猫の爪とぎ","1480.00",true,5,"https://shop.example'
    '/p/a"],"b":["犬のおもちゃ","100",true,null,"https://shop.example/p/b"],"d":["金魚鉢",null,nul'
    'l,null,"https://shop.example/p/d"],"g":["亀の島","2500",null,null,"https://shop.example/p/g"]'
    ',"h":["インコのブランコ","800",false,0,"https://shop.example/p/h"],"c":["鳥のえさ","500",true'
    ',7,null,1]},"validators":{"https://shop.example/api/items":{"etag":"\\"v7\\"","last_modified"'
    ':"Tue, 01 Dec 2026 06:00:00 GMT"}},"outbox":[{"id":"monitor/fa79dd622a048a48ce55156c89fbe193"'
    ',"item":"a","name":"猫の爪とぎ","link":"https://shop.example/p/a","kind":"price_changed","old'
    '":"1980","new":"1480.00","change_pct":"-25.3"},{"id":"monitor/4d3c63c43c7d53cac944c8bba9a4650'
    'e","item":"a","name":"猫の爪とぎ","link":"https://shop.example/p/a","kind":"price_below","old'
    '":"1980","new":"1480.00","target":"1500"},{"id":"monitor/3a1e62655c08a32930de4f54a371485d","i'
    'tem":"b","name":"犬のおもちゃ","link":"https://shop.example/p/b","kind":"price_changed","old"'
    ':"0","new":"100","change_pct":null},{"id":"monitor/01c60fa11702db000458d7ceae83eb53","item":"'
    'c","name":"鳥のえさ","link":null,"kind":"restocked","old":"False","new":"True"},{"id":"monito'
    'r/4ac36a503eff08c975648ac5aff36cba","item":"g","name":"亀の島","link":"https://shop.example/p'
    '/g","kind":"new","old":null,"new":"2500"},{"id":"monitor/48dd5e1e9e11e912c242b1da0263fbc3","i'
    'tem":"h","name":"インコのブランコ","link":"https://shop.example/p/h","kind":"sold_out","old":'
    '"True","new":"False"},{"id":"monitor/1331b02f37d1ce5c0e33146c7913afe9","item":"e","name":"ハ'
    'ムスターの車","link":"https://shop.example/p/e","kind":"gone","old":"1200.50","new":null,"mis'
    'sing":2},{"id":"monitor/e82b7107c744d6d35b97d6f5bc6df527","item":"f","name":"うさぎの草","lin'
    'k":"https://shop.example/p/f","kind":"gone","old":"300","new":null,"missing":2}],"unrecorded"'
    ':[{"key":"monitor/history/dt=2026-11-30/20261130T061000000Z-0a1b2c.ndjson","body":"{\\"change'
    '_pct\\": \\"-25.3\\", \\"id\\": \\"monitor/fa79dd622a048a48ce55156c89fbe193\\", \\"item\\": '
    '\\"a\\", \\"kind\\": \\"price_changed\\", \\"link\\": \\"https://shop.example/p/a\\", \\"name'
    '\\": \\"猫の爪とぎ\\", \\"new\\": \\"1480.00\\", \\"old\\": \\"1980\\", \\"run_id\\": \\"2026'
    '1130T061000000Z-0a1b2c\\", \\"time\\": \\"2026-11-30T06:10:00+00:00\\"}\\n{\\"id\\": \\"monit'
    'or/4d3c63c43c7d53cac944c8bba9a4650e\\", \\"item\\": \\"a\\", \\"kind\\": \\"price_below\\", '
    '\\"link\\": \\"https://shop.example/p/a\\", \\"name\\": \\"猫の爪とぎ\\", \\"new\\": \\"1480.'
    '00\\", \\"old\\": \\"1980\\", \\"run_id\\": \\"20261130T061000000Z-0a1b2c\\", \\"target\\": '
    '\\"1500\\", \\"time\\": \\"2026-11-30T06:10:00+00:00\\"}\\n{\\"change_pct\\": null, \\"id\\":'
    ' \\"monitor/3a1e62655c08a32930de4f54a371485d\\", \\"item\\": \\"b\\", \\"kind\\": \\"price_ch'
    'anged\\", \\"link\\": \\"https://shop.example/p/b\\", \\"name\\": \\"犬のおもちゃ\\", \\"new'
    '\\": \\"100\\", \\"old\\": \\"0\\", \\"run_id\\": \\"20261130T061000000Z-0a1b2c\\", \\"time\\'
    '": \\"2026-11-30T06:10:00+00:00\\"}\\n{\\"id\\": \\"monitor/01c60fa11702db000458d7ceae83eb53'
    '\\", \\"item\\": \\"c\\", \\"kind\\": \\"restocked\\", \\"link\\": null, \\"name\\": \\"鳥の'
    'えさ\\", \\"new\\": \\"True\\", \\"old\\": \\"False\\", \\"run_id\\": \\"20261130T061000000Z-'
    '0a1b2c\\", \\"time\\": \\"2026-11-30T06:10:00+00:00\\"}\\n{\\"id\\": \\"monitor/4ac36a503eff0'
    '8c975648ac5aff36cba\\", \\"item\\": \\"g\\", \\"kind\\": \\"new\\", \\"link\\": \\"https://sh'
    'op.example/p/g\\", \\"name\\": \\"亀の島\\", \\"new\\": \\"2500\\", \\"old\\": null, \\"run_i'
    'd\\": \\"20261130T061000000Z-0a1b2c\\", \\"time\\": \\"2026-11-30T06:10:00+00:00\\"}\\n{\\"id'
    '\\": \\"monitor/48dd5e1e9e11e912c242b1da0263fbc3\\", \\"item\\": \\"h\\", \\"kind\\": \\"sold'
    '_out\\", \\"link\\": \\"https://shop.example/p/h\\", \\"name\\": \\"インコのブランコ\\", \\"n'
    'ew\\": \\"False\\", \\"old\\": \\"True\\", \\"run_id\\": \\"20261130T061000000Z-0a1b2c\\", \\'
    '"time\\": \\"2026-11-30T06:10:00+00:00\\"}\\n{\\"id\\": \\"monitor/1331b02f37d1ce5c0e33146c79'
    '13afe9\\", \\"item\\": \\"e\\", \\"kind\\": \\"gone\\", \\"link\\": \\"https://shop.example/p'
    '/e\\", \\"missing\\": 2, \\"name\\": \\"ハムスターの車\\", \\"new\\": null, \\"old\\": \\"120'
    '0.50\\", \\"run_id\\": \\"20261130T061000000Z-0a1b2c\\", \\"time\\": \\"2026-11-30T06:10:00+0'
    '0:00\\"}\\n{\\"id\\": \\"monitor/e82b7107c744d6d35b97d6f5bc6df527\\", \\"item\\": \\"f\\", \\'
    '"kind\\": \\"gone\\", \\"link\\": \\"https://shop.example/p/f\\", \\"missing\\": 2, \\"name\\'
    '": \\"うさぎの草\\", \\"new\\": null, \\"old\\": \\"300\\", \\"run_id\\": \\"20261130T0610000'
    '00Z-0a1b2c\\", \\"time\\": \\"2026-11-30T06:10:00+00:00\\"}\\n"}]}'
)

HISTORY = (
    '{"change_pct": "-25.3", "id": "monitor/fa79dd622a048a48ce55156c89fbe193", "item": "a", "kind"'
    ': "price_changed", "link": "https://shop.example/p/a", "name": "猫の爪とぎ", "new": "1480.00"'
    ', "old": "1980", "run_id": "20261130T061000000Z-0a1b2c", "time": "2026-11-30T06:10:00+00:00"}'
    '\n{"id": "monitor/4d3c63c43c7d53cac944c8bba9a4650e", "item": "a", "kind": "price_below", "lin'
    'k": "https://shop.example/p/a", "name": "猫の爪とぎ", "new": "1480.00", "old": "1980", "run_i'
    'd": "20261130T061000000Z-0a1b2c", "target": "1500", "time": "2026-11-30T06:10:00+00:00"}\n{"c'
    'hange_pct": null, "id": "monitor/3a1e62655c08a32930de4f54a371485d", "item": "b", "kind": "pri'
    'ce_changed", "link": "https://shop.example/p/b", "name": "犬のおもちゃ", "new": "100", "old":'
    ' "0", "run_id": "20261130T061000000Z-0a1b2c", "time": "2026-11-30T06:10:00+00:00"}\n{"id": "m'
    'onitor/01c60fa11702db000458d7ceae83eb53", "item": "c", "kind": "restocked", "link": null, "na'
    'me": "鳥のえさ", "new": "True", "old": "False", "run_id": "20261130T061000000Z-0a1b2c", "time'
    '": "2026-11-30T06:10:00+00:00"}\n{"id": "monitor/4ac36a503eff08c975648ac5aff36cba", "item": "'
    'g", "kind": "new", "link": "https://shop.example/p/g", "name": "亀の島", "new": "2500", "old"'
    ': null, "run_id": "20261130T061000000Z-0a1b2c", "time": "2026-11-30T06:10:00+00:00"}\n{"id": '
    '"monitor/48dd5e1e9e11e912c242b1da0263fbc3", "item": "h", "kind": "sold_out", "link": "https:/'
    '/shop.example/p/h", "name": "インコのブランコ", "new": "False", "old": "True", "run_id": "202'
    '61130T061000000Z-0a1b2c", "time": "2026-11-30T06:10:00+00:00"}\n{"id": "monitor/1331b02f37d1c'
    'e5c0e33146c7913afe9", "item": "e", "kind": "gone", "link": "https://shop.example/p/e", "missi'
    'ng": 2, "name": "ハムスターの車", "new": null, "old": "1200.50", "run_id": "20261130T06100000'
    '0Z-0a1b2c", "time": "2026-11-30T06:10:00+00:00"}\n{"id": "monitor/e82b7107c744d6d35b97d6f5bc6'
    'df527", "item": "f", "kind": "gone", "link": "https://shop.example/p/f", "missing": 2, "name"'
    ': "うさぎの草", "new": null, "old": "300", "run_id": "20261130T061000000Z-0a1b2c", "time": "2'
    '026-11-30T06:10:00+00:00"}\n'
)

NOTICE = (
    '{"key": "monitor/changes/9d7e5315a84aaa98d73c59c4282dda99", "subject": "価格・在庫の変化 8 件'
    '", "text": "127.0.0.1 の価格・在庫に変化がありました。\\n・猫の爪とぎ: 価格 ¥1,980 → ¥1,480 ('
    "-25.3%) https://shop.example/p/a\\n・猫の爪とぎ: 目標価格 ¥1,500 以下に (¥1,480) https://shop"
    ".example/p/a\\n・犬のおもちゃ: 価格 ¥0 → ¥100 https://shop.example/p/b\\n・鳥のえさ: 再入荷し"
    "ました\\n・亀の島: 新しく掲載 (¥2,500) https://shop.example/p/g\\n・インコのブランコ: 在庫切"
    "れになりました https://shop.example/p/h\\n・ハムスターの車: 掲載が終了しました https://shop.e"
    "xample/p/e\\n・うさぎの草: 掲載が終了しました https://shop.example/p/f\\n\\n変更 ID: 01c60fa1"
    "1702, 1331b02f37d1, 3a1e62655c08, 48dd5e1e9e11, 4ac36a503eff, 4d3c63c43c7d, e82b7107c744, fa7"
    '9dd622a04"}'
)

STATE_V1 = (
    '{"version":1,"generation":7,"items":{"a":{"name":"商品 a","price":"1980","available":true,"co'
    'unt":5,"link":"https://shop.example/p/a","missing":0},"b":{"name":"商品 b","price":"500","ava'
    'ilable":false,"count":0,"link":"https://shop.example/p/b","missing":1},"c":{"name":null,"pric'
    'e":null,"available":null,"count":null,"link":null}},"validators":{},"outbox":[]}'
)

STATE_V1_AS_V2 = (
    '{"version":2,"generation":7,"items":{"a":["商品 a","1980",true,5,"https://shop.example/p/a"],'
    '"b":["商品 b","500",false,0,"https://shop.example/p/b",1],"c":["",null,null,null,null]},"vali'
    'dators":{},"outbox":[]}'
)


def test_a_state_written_before_is_read_as_typed_records() -> None:
    """Every record of the state: rows in order (the missing one apart), validators, each
    kind of change with what only it carries, the history object to write."""
    state = parse_state(STATE_JSON.encode())
    assert (VERSION, state.generation, state.etag) == (2, 3, None)
    assert state.items == {
        "a": ("猫の爪とぎ", "1480.00", True, 5, LINK + "a"),
        "b": ("犬のおもちゃ", "100", True, None, LINK + "b"),
        "d": ("金魚鉢", None, None, None, LINK + "d"),
        "g": ("亀の島", "2500", None, None, LINK + "g"),
        "h": ("インコのブランコ", "800", False, 0, LINK + "h"),
        "c": ("鳥のえさ", "500", True, 7, None),
    }
    assert list(state.items) == ["a", "b", "d", "g", "h", "c"] and state.missing == {"c": 1}
    assert state.validators == {
        "https://shop.example/api/items": {
            "etag": '"v7"',
            "last_modified": "Tue, 01 Dec 2026 06:00:00 GMT",
        }
    }
    kinds = [c.kind for c in state.outbox]
    assert kinds == [
        "price_changed",
        "price_below",
        "price_changed",
        "restocked",
        "new",
        "sold_out",
        "gone",
        "gone",
    ]
    assert state.outbox[0] == Change(
        id="monitor/fa79dd622a048a48ce55156c89fbe193",
        item="a",
        name="猫の爪とぎ",
        link=LINK + "a",
        kind="price_changed",
        old="1980",
        new="1480.00",
        change_pct="-25.3",
    )
    assert (state.outbox[1].target, state.outbox[2].change_pct) == ("1500", None)
    assert (state.outbox[3].old, state.outbox[3].new, state.outbox[3].link) == (
        "False",
        "True",
        None,
    )
    assert [c.missing for c in state.outbox] == [None] * 6 + [2, 2]
    assert state.unrecorded == (Pending(f"monitor/history/dt=2026-11-30/{RUN}.ndjson", HISTORY),)


def test_a_state_is_written_back_to_the_bytes_it_was_read_from() -> None:
    """The format is unchanged: read and written again, a state is the same bytes."""
    assert parse_state(STATE_JSON.encode()).body() == STATE_JSON.encode()
    written = parse_state(STATE_JSON.encode())
    assert parse_state(written.body()) == written


def test_the_history_and_the_notice_of_the_changes_are_as_before() -> None:
    """The changes read back make the same history object and the same notice."""
    state = parse_state(STATE_JSON.encode())
    assert (
        Pending.of("monitor", date(2026, 11, 30), RUN, AT, list(state.outbox))
        == (state.unrecorded[0])
    )
    made = notice(state.outbox, 20, "127.0.0.1")
    assert {"key": made.key, "subject": made.subject, "text": made.text} == json.loads(NOTICE)


def test_a_history_line_is_its_change_with_the_run_and_the_time_and_no_version() -> None:
    """History lines say no version: a line without one is version 1, this one."""
    state = parse_state(STATE_JSON.encode())
    lines = [json.loads(line) for line in HISTORY.splitlines()]
    assert lines == [{"run_id": RUN, "time": AT, **c.to_json()} for c in state.outbox]
    assert all("version" not in line for line in lines)


def test_a_version_1_state_is_read_and_written_as_version_2() -> None:
    """Items as objects (version 1): the same values as rows, written as version 2 writes them."""
    state = parse_state(STATE_V1.encode())
    assert state.items == {
        "a": ("商品 a", "1980", True, 5, LINK + "a"),
        "b": ("商品 b", "500", False, 0, LINK + "b"),
        "c": ("", None, None, None, None),
    }
    assert state.missing == {"b": 1}
    assert state.body() == STATE_V1_AS_V2.encode()


def broken(**changed: Any) -> bytes:
    """Today's state with some of its top-level values replaced."""
    doc = json.loads(STATE_JSON)
    doc.update(changed)
    return json.dumps(doc, ensure_ascii=False).encode()


def with_item(value: Any) -> bytes:
    doc = json.loads(STATE_JSON)
    doc["items"]["a"] = value
    return json.dumps(doc).encode()


def with_change(**changed: Any) -> bytes:
    doc = json.loads(STATE_JSON)
    doc["outbox"][0].update(changed)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (broken(version=3), "version 3, expected 2"),
        (broken(items=[]), "its items are not an object"),
        (with_item(["猫", 1980.0, True, 5, None]), "item 'a' is not a row"),
        (with_item(["猫", "1980", True, 5]), "item 'a' is not a row"),
        (with_item(["猫", "1980", True, 5, None, 1, 2]), "item 'a' is not a row"),
        (with_item(["猫", "1980", 1, 5, None]), "item 'a' is not a row"),
        (with_item(["猫", "1980", True, 5, None, "1"]), "item 'a' is not a row"),
        (with_item(["猫", "1980", True, 5, None, True]), "item 'a' is not a row"),
        (with_item({"name": "猫"}), "item 'a' is not a row"),
        (with_change(kind="cheaper"), "a change's kind is 'cheaper'"),
        (with_change(old=1980), "its old is 1980, not text"),
        (with_change(missing=True), "its missing is True"),
        (broken(unrecorded=[{"key": "k"}]), "an unrecorded history entry is not {key, body}"),
        (broken(validators={"u": {"etag": 7}}), "a URL's validators are {'etag': 7}"),
        (broken(validators={"u": {"date": "x"}}), "a URL's validators are {'date': 'x'}"),
    ],
)
def test_a_broken_state_says_what_is_wrong(body: bytes, message: str) -> None:
    """Whatever in it is not what a monitor writes is named, never read as something else."""
    with pytest.raises((ValueError, TypeError, KeyError), match=message.replace("{", r"\{")):
        parse_state(body)


def put_state(client: Any, body: bytes) -> None:
    client.put_object(Bucket=BUCKET, Key=STATE, Body=body)


def test_a_broken_state_object_is_65_naming_it(moto_ops: Any) -> None:
    """StateFile names the object and what to do."""
    put_state(moto_ops, with_item(["猫"]))
    with pytest.raises(DataError, match=r"s3://ops/monitor/state.json: not a monitor state \(item"):
        StateFile(Store(moto_ops, BUCKET, run_id="t"), STATE).read()


def test_the_bytes_read_or_written_last_are_not_parsed_again(
    moto_ops: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run reads its state up to three times: the same bytes are parsed once; other
    bytes (another run's write) are parsed and built on."""
    parsed: list[int] = []
    parse = state_module.parse_state

    def counted(body: bytes) -> State:
        parsed.append(len(body))
        return parse(body)

    monkeypatch.setattr(state_module, "parse_state", counted)
    put_state(moto_ops, STATE_JSON.encode())
    file = StateFile(Store(moto_ops, BUCKET, run_id="t"), STATE)
    first = file.read()
    assert first.etag is not None and len(parsed) == 1

    def emptied(current: State | None) -> State | None:
        assert current is not None and current.outbox  # read again, not parsed again
        return replace(current, outbox=(), unrecorded=())

    done = file.update(emptied)
    assert done is not None and done.outcome == "replaced" and len(parsed) == 1
    seen: list[State | None] = []

    def looked(current: State | None) -> None:
        seen.append(current)  # and nothing to write

    assert file.update(looked) is not None
    assert len(parsed) == 1 and seen[0] == replace(done.value, etag=done.etag)
    put_state(moto_ops, STATE_JSON.encode())  # another writer
    assert file.update(looked) is not None
    assert len(parsed) == 2 and seen[1] is not None and len(seen[1].outbox) == 8


def page_of(*rows: tuple[str, str, Any, Any, str | None]) -> Page:
    items = [
        {"id": key, "name": name, "price": price, "stock": stock, "url": link}
        for key, name, price, stock, link in rows
    ]
    return Page(json.dumps({"items": items}, ensure_ascii=False).encode())


@pytest.fixture
def mon(moto_ops: Any, api_server: Api, hook: Hook) -> Monitor:
    """A bucket, a local API and a webhook (as in test_monitor.py)."""
    return Monitor(moto_ops, api_server, hook)


def test_a_run_over_a_state_written_before_writes_its_history_and_sends_its_notice(
    mon: Monitor,
) -> None:
    """What an earlier version committed and left: its history object written as it was
    committed, its notice sent as it was meant, and nothing new from the same items."""
    put_state(mon.client, STATE_JSON.encode())
    mon.api.pages["/items"] = page_of(
        ("a", "猫の爪とぎ", "1480.00", 5, LINK + "a"),
        ("b", "犬のおもちゃ", "100", True, LINK + "b"),
        ("d", "金魚鉢", None, None, LINK + "d"),
        ("g", "亀の島", 2500, None, LINK + "g"),
        ("h", "インコのブランコ", "800", 0, LINK + "h"),
        ("c", "鳥のえさ", "500", 7, None),
    )
    assert mon.run() == 0
    summary = mon.summary
    assert (summary["outcome"], summary["notified"], summary["history_recorded"]) == ("ok", 8, 1)
    assert sum(summary[kind] for kind in ("new", "gone", "price_changed", "sold_out")) == 0
    key = f"monitor/history/dt=2026-11-30/{RUN}.ndjson"
    written = mon.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert written == HISTORY.encode()
    [(sent_key, text)] = mon.posted()
    expected = json.loads(NOTICE)
    assert sent_key == expected["key"] and expected["text"] in text
    state = mon.state()
    assert (state["generation"], state["outbox"], "unrecorded" in state) == (4, [], False)
    assert state["items"]["c"] == ["鳥のえさ", "500", True, 7, None]  # back: no longer missing


def test_a_missing_count_follows_its_row_to_the_key_it_is_kept_by_now() -> None:
    """An earlier version's key is renamed with its missing count; a row dropped for a
    newer one under the same key leaves its count behind."""
    row = ("猫", "100", True, 1, None)
    state = State({"old": row, "b": row}, {"old": 1, "b": 2}, {"old": {"etag": '"e"'}})
    moved = renamed(state, {"old": "new"})
    assert moved.items == {"new": row, "b": row} and moved.missing == {"new": 1, "b": 2}
    assert moved.validators == {"new": {"etag": '"e"'}}
    both = renamed(replace(state, items={"old": row, "new": row}), {"old": "new"})
    assert both.items == {"new": row} and both.missing == {}
