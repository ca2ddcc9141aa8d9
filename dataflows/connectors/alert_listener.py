"""Follows the alerts topic for the analyst app's live push (see :mod:`dash_app.live`).

One consumer per app process, in a daemon thread: a group of its own (every app process
sees every alert), starting at the end of the topic (a page loads what came before from
ClickHouse), never committing.  An alert that does not decode is logged and skipped; a
lost broker is retried by librdkafka, so the app keeps serving pages meanwhile.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError

from dataflows.connectors.kafka import consumer_config
from schemas.scored import Alert, decode_alert
from schemas.settings import Settings

__all__ = ["alert_listener"]

log = logging.getLogger(__name__)

Listen = Callable[[Callable[[Alert], None]], Callable[[], None]]


def alert_listener(s: Settings) -> Listen | None:
    """``listen(on_alert) -> stop`` for the app's live push, or None without a broker."""
    if not s.brokers:
        return None

    def listen(on_alert: Callable[[Alert], None]) -> Callable[[], None]:
        stop = threading.Event()
        cfg = consumer_config(s, group=f"fraud-app-live-{uuid.uuid4().hex[:12]}")
        cfg |= {"auto.offset.reset": "latest", "enable.auto.commit": False}
        consumer = Consumer(cfg)
        consumer.subscribe([s.topic_alerts])

        def run() -> None:
            try:
                while not stop.is_set():
                    msg = consumer.poll(0.2)
                    if msg is None:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("live alerts: %s", err)
                        continue
                    try:
                        alert = decode_alert(msg.value() or b"")
                    except (ValueError, KeyError, TypeError) as e:
                        log.warning(
                            "live alerts: undecodable message at %s[%d]@%d: %s",
                            msg.topic(),
                            msg.partition(),
                            msg.offset(),
                            e,
                        )
                        continue
                    try:
                        on_alert(alert)
                    except Exception:
                        log.exception("live alerts: delivering %s failed", alert.alert_id)
            finally:
                consumer.close()

        thread = threading.Thread(target=run, name="live-alerts", daemon=True)
        thread.start()

        def stop_listening() -> None:
            stop.set()
            thread.join(2.0)  # closed before the caller stops the broker

        return stop_listening

    return listen
