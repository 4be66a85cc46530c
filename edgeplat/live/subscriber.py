"""``edgeplat live``'s process: subscribe to ``edgeplat/+/+/+``, verify, store, evaluate alerts.

paho-mqtt's network thread only puts (topic, payload) on a bounded inbox; one worker drains
the inbox for up to ``drain_s`` at a time, verifies each message (signature by a registered
key of the device the topic names, seq and hlc newer than what was accepted before), stores
the drained batch in one lakehouse transaction (``live_rows``, refusals in
``live_rejections`` with their reason) and hands the accepted rows to the alert engine.
A message refused or dropped here is not lost: the device's batch upload carries every row.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from edge_sync.identity import DeviceRegistry
from edge_sync.live_message import TOPIC_ROOT, LiveMessage, LiveMessageError, parse
from edgeplat.lakehouse import Lakehouse
from edgeplat.live.guard import ReplayGuard
from edgeplat.live.store import Rejection, replay_marks, store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerSettings:
    """Where the central subscriber connects; TLS and credentials for production brokers."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = "edgeplat-live"
    topic_root: str = TOPIC_ROOT

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> BrokerSettings:
        """``mqtt://[user@]host[:1883]`` or ``mqtts://[user@]host[:8883]``."""
        u = urlparse(url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(f"broker URL {url!r}: use mqtt://host:1883 or mqtts://host:8883")
        tls = u.scheme == "mqtts"
        return cls(
            host=u.hostname, port=u.port or (8883 if tls else 1883), tls=tls, username=u.username, **kw
        )


class LiveSubscriber:
    """The central subscriber; :meth:`process` is the whole per-batch logic, callable without a broker."""

    def __init__(
        self,
        lake: Lakehouse,
        registry: DeviceRegistry,
        broker: BrokerSettings,
        *,
        on_rows: Callable[[list[LiveMessage]], Any] | None = None,
        drain_s: float = 0.1,
        inbox_size: int = 100_000,
    ) -> None:
        self.lake = lake
        self.broker = broker
        self.on_rows = on_rows
        self.drain_s = drain_s
        self.guard = ReplayGuard(registry, *replay_marks(lake))
        self.counters = {"received": 0, "accepted": 0, "refused": 0, "inbox_full": 0, "store_errors": 0}
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=inbox_size)
        self._stop = threading.Event()
        self.subscribed = threading.Event()
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None

    # -- the logic -----------------------------------------------------------------------
    def process(self, items: list[tuple[str, bytes]]) -> tuple[list[LiveMessage], list[Rejection]]:
        """Verify, store and evaluate one drained batch of (topic, payload)."""
        accepted: list[LiveMessage] = []
        rejected: list[Rejection] = []
        for topic, payload in items:
            batch = None
            try:
                batch = parse(topic, payload, self.broker.topic_root)
                fresh, refusal = self.guard.admit(batch)
            except LiveMessageError as exc:
                fresh, refusal = [], exc
            accepted += fresh
            if refusal is not None:
                claimed = (batch.tenant_id, batch.device_id, batch.stream, batch.rows[0].seq) if batch else ()
                rejected.append(Rejection(topic, refusal.reason, refusal.detail, *claimed))
        self.counters["accepted"] += len(accepted)
        self.counters["refused"] += len(rejected)
        for r in rejected:
            log.warning("live message refused on %s: %s (%s)", r.topic[:200], r.reason, r.detail[:200])
        if accepted or rejected:
            store(self.lake, accepted, rejected)
        if accepted and self.on_rows is not None:
            self.on_rows(accepted)
        return accepted, rejected

    # -- the process ---------------------------------------------------------------------
    def start(self) -> LiveSubscriber:
        b = self.broker
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=b.client_id)
        if b.tls:
            client.tls_set(
                ca_certs=b.ca_path,
                certfile=b.cert_path,
                keyfile=b.key_path,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if b.username:
            client.username_pw_set(b.username, b.password)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.connect_async(b.host, b.port, keepalive=30)
        client.loop_start()
        self._client = client
        self._worker = threading.Thread(target=self._work, name="edgeplat-live", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._worker is not None:
            self._worker.join(timeout=10)

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker refused the subscriber: %s", reason_code)
            return
        client.subscribe(f"{self.broker.topic_root}/+/+/+", qos=1)
        self.subscribed.set()
        log.info("live subscriber connected to %s:%s", self.broker.host, self.broker.port)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.counters["received"] += 1
        try:
            self._inbox.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self.counters["inbox_full"] += 1

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            items = [first]
            deadline = time.monotonic() + self.drain_s
            while len(items) < 2000 and (left := deadline - time.monotonic()) > 0:
                try:
                    items.append(self._inbox.get(timeout=left))
                except queue.Empty:
                    break
            try:
                self.process(items)
            except Exception:  # the lakehouse or a sink broke: the batch path still has these rows
                self.counters["store_errors"] += 1
                log.exception("live batch of %d messages not processed", len(items))
