"""Live push pieces without a browser: snapshots, coalesced bursts, bounded client queues,
the event stream, and the queue page's handling of a pushed snapshot."""

from __future__ import annotations

import orjson

from dash_app import live
from dash_app.views.alerts import LIVE_SHOWN, live_items, on_push
from tests.tools.push_latency import make_alert


def _messages(hub: live.AlertHub, q: object, seconds: float = 0.3) -> list[dict]:
    chunks = list(live._events(hub, q, stream_s=seconds))  # type: ignore[arg-type]
    assert chunks[0].startswith(b"retry: 1000\n")
    return [orjson.loads(c[6:]) for c in chunks if c.startswith(b"data: ")]


def test_a_burst_is_one_snapshot_of_the_newest_alerts() -> None:
    hub = live.AlertHub()
    q = hub.subscribe()
    assert q is not None
    for i in range(live.SHOWN + 3):
        hub.publish(make_alert(i, "b"))
    (msg,) = _messages(hub, q)
    ids = [i["txn_id"] for i in msg["items"]]
    assert msg["kind"] == "alerts" and len(ids) == live.SHOWN
    assert ids[0] == f"push-b-{live.SHOWN + 2}" and ids[-1] == "push-b-3"  # newest first
    assert hub.streams == 0 and hub.published == live.SHOWN + 3  # an ended stream leaves


def test_a_slow_client_never_blocks_the_hub(monkeypatch) -> None:
    monkeypatch.setattr(live, "CLIENT_QUEUE", 2)
    hub = live.AlertHub()
    q = hub.subscribe()
    for i in range(50):  # nobody reads: wake-ups are dropped, the last snapshot is whole
        hub.publish(make_alert(i, "s"))
    (msg,) = _messages(hub, q)
    assert msg["items"][0]["txn_id"] == "push-s-49"


def test_streams_are_capped(monkeypatch) -> None:
    monkeypatch.setattr(live, "MAX_STREAMS", 1)
    hub = live.AlertHub()
    assert hub.subscribe() is not None
    assert live.sse_stream(hub).status_code == 503


def test_a_snapshot_shows_at_once_and_reloads_the_grid_at_most_every_two_seconds() -> None:
    hub = live.AlertHub()
    hub.publish(make_alert(1, "p"))
    msg = hub.snapshot().decode()
    items, lines, reload, notice = on_push(msg, [], 0, now_ms=10_000)
    assert len(items) == 1 and len(lines) == 1 and reload == 10_000
    assert notice == "New block: user-1 · 121.00 EUR · 4 charges under $5 in 10 min"
    again = on_push(msg, items, 10_000, now_ms=11_000)
    assert not isinstance(again[2], int) and not isinstance(again[3], str)  # no repeat
    assert live_items("not json", items) == items
    assert len(live_items(msg, [])) <= LIVE_SHOWN


def test_another_analysts_action_reloads_the_queue_at_once() -> None:
    hub = live.AlertHub()
    q = hub.subscribe()
    hub.publish_change(["case-1"], "ann")
    (msg,) = _messages(hub, q)
    items, _, reload, _ = on_push(orjson.dumps(msg).decode(), [{"alert_id": "a"}], 10_000, 10_500)
    assert msg == {"kind": "case"} and reload == 10_500  # not throttled
    assert not isinstance(items, list)  # the strip is untouched


def test_live_item_is_small_and_textual() -> None:
    item = live.live_item(make_alert(3, "i"))
    assert item["amount"] == "123.00 EUR" and item["reason"].startswith("4 charges")
    assert set(item) >= {"alert_id", "user_id", "decision", "risk", "created_ms"}
