"""The live path on the device: recorded alerts and health (optionally sampled telemetry) over MQTT.

The batch upload stays the record; this path only makes rows visible centrally within
seconds while the device is online. ``offer`` is called from ``record()`` and must never
block or slow it, so it only puts a tuple on a bounded queue (a full queue drops the row
from the live path and counts it: the batch still carries it). A background thread signs
each row with the device key (:mod:`edge_sync.live_message`) and publishes it at QoS 1
through paho-mqtt, which reconnects on its own; while the broker is unreachable the thread
holds the queue, so a short outage delays rows rather than losing them, and a long one
costs only the ``dropped_queue_full`` counter.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_sync.identity import DeviceIdentity
from edge_sync.live_message import TOPIC_ROOT, sign_row, topic_for
from edge_sync.private_files import read_private_bytes

log = logging.getLogger(__name__)
_STOP = object()


class LiveConfig(BaseModel):
    """The ``[live]`` section of ``device.toml``: where and how the agent publishes live rows.

    Production: ``tls = true`` with the broker's CA and, for brokers that authenticate by
    certificate (AWS IoT Core, a Greengrass core's broker), the device's client certificate
    and key; brokers with passwords take ``username`` and ``password_path`` (a 0600 file).
    """

    model_config = ConfigDict(extra="forbid")

    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    topic_root: str = TOPIC_ROOT
    client_id: str | None = None  # default: <tenant>.<device>
    streams: list[str] = Field(default_factory=lambda: ["alerts", "health"])
    telemetry_sample_every: int = Field(default=0, ge=0)  # 0: no telemetry; n: every n-th row
    queue_size: int = Field(default=10_000, ge=1)
    keepalive_s: int = Field(default=30, ge=5)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    tls: bool = False
    ca_path: Path | None = None
    cert_path: Path | None = None
    key_path: Path | None = None
    username: str | None = None
    password_path: Path | None = None

    @field_validator("streams")
    @classmethod
    def _streams(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in ("alerts", "health", "logs")]
        if bad:
            raise ValueError(
                f"{bad} cannot be published live: choose from alerts, health, logs "
                "(telemetry goes by telemetry_sample_every)"
            )
        return v


class LivePublisher:
    """A bounded queue, a signing thread and a paho-mqtt client; counters say what was lost."""

    def __init__(
        self, identity: DeviceIdentity, config: LiveConfig, *, client: mqtt.Client | None = None
    ) -> None:
        self.identity = identity
        self.config = config
        self.streams = frozenset(config.streams) | (
            {"telemetry"} if config.telemetry_sample_every else frozenset()
        )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_size)
        self._telemetry_seen = 0
        self.counters = {
            "offered": 0,
            "published": 0,
            "dropped_queue_full": 0,
            "publish_errors": 0,
            "connects": 0,
        }
        self._connected = threading.Event()
        self._client = client or self._build_client()
        self._thread = threading.Thread(target=self._run, name="edge-sync-live", daemon=True)
        self._started = False

    def _build_client(self) -> mqtt.Client:
        cfg = self.config
        client_id = cfg.client_id or f"{self.identity.tenant_id}.{self.identity.device_id}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if cfg.tls:
            client.tls_set(
                ca_certs=str(cfg.ca_path) if cfg.ca_path else None,
                certfile=str(cfg.cert_path) if cfg.cert_path else None,
                keyfile=str(cfg.key_path) if cfg.key_path else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if cfg.username:
            password = None
            if cfg.password_path:
                password = read_private_bytes(cfg.password_path, "MQTT password").decode().strip()
            client.username_pw_set(cfg.username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(cfg.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    # -- called from record() ------------------------------------------------------------
    def offer(self, stream: str, seq: int, hlc: int, ts_ms: int, row: dict[str, Any]) -> None:
        """Queue one recorded row for publishing; never blocks, never raises."""
        if stream not in self.streams:
            return
        if stream == "telemetry":
            self._telemetry_seen += 1
            if self._telemetry_seen % self.config.telemetry_sample_every:
                return
        self.counters["offered"] += 1
        try:
            self._queue.put_nowait((stream, seq, hlc, ts_ms, row))
        except queue.Full:
            self.counters["dropped_queue_full"] += 1

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LivePublisher:
        if not self._started:
            self._started = True
            self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
            self._client.loop_start()
            self._thread.start()
        return self

    def close(self, drain_s: float = 2.0) -> None:
        """Publish what is queued (for up to ``drain_s`` while connected), then disconnect."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=drain_s)
        self._thread.join(timeout=drain_s + 1)
        self._client.disconnect()
        self._client.loop_stop()

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "queued": self._queue.qsize(), "connected": self._connected.is_set()}

    # -- the background thread -----------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            self.counters["connects"] += 1
            self._connected.set()
        else:
            log.warning("live MQTT broker refused the connection: %s", reason_code)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._connected.clear()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            while not self._connected.wait(0.5):
                if not self._started:
                    return
            stream, seq, hlc, ts_ms, row = item
            try:
                payload = sign_row(self.identity, stream, seq, hlc, ts_ms, row)
                topic = topic_for(
                    self.identity.tenant_id, self.identity.device_id, stream, self.config.topic_root
                )
                info = self._client.publish(topic, payload, qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.counters["published"] += 1
                else:
                    self.counters["publish_errors"] += 1
            except Exception:  # a row the signer cannot encode must not stop the thread
                self.counters["publish_errors"] += 1
                log.exception("live publish of %s seq %s failed", stream, seq)
