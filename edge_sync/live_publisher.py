"""The live path on the device: recorded alerts and health (optionally sampled telemetry) over MQTT.

The batch upload stays the record; this path only makes rows visible centrally within
seconds while the device is online. ``offer`` is called from ``record()`` (the cache's
``on_record`` hook, under its lock) and must never block or slow it, so it only copies the
row and appends its fields to a bounded deque (a full one drops the row
from the live path and counts it: the batch still carries it). A background thread wakes
every ``poll_s``, takes what is pending, and publishes it as one message per stream and up
to ``MAX_ROWS`` rows, signed once with the device key (:mod:`edge_sync.live_message`), at
QoS 1 through paho-mqtt, which reconnects on its own. While the broker is unreachable the
pending rows wait (a short outage delays them; a long one costs only ``dropped_queue_full``).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_sync.identity import DeviceIdentity
from edge_sync.live_message import MAX_ROWS, TOPIC_ROOT, RowSigner, topic_for
from edge_sync.private_files import read_private_bytes

log = logging.getLogger(__name__)
_FIELDS = 5  # a pending row's fields in the queue: stream, seq, hlc, ts_ms, row


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
    poll_s: float = Field(default=0.02, gt=0, le=5)  # how often pending rows are published
    rows_per_message: int = Field(default=500, ge=1, le=MAX_ROWS)
    keepalive_s: int = Field(default=30, ge=5)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    tls: bool = False
    ca_path: Path | None = None
    cert_path: Path | None = None
    key_path: Path | None = None
    username: str | None = None
    password_path: Path | None = None
    credentials: Literal["config", "vault"] = "config"  # vault: the login from the device's KV secret
    runtime_dir: Path | None = None  # where a Vault-rendered login is written (tmpfs)

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

    @model_validator(mode="after")
    def _vault_login(self) -> LiveConfig:
        if self.credentials == "vault" and self.runtime_dir is None:
            raise ValueError(
                'credentials = "vault" needs runtime_dir = "/run/edge-sync" (where the login is rendered)'
            )
        return self


class LivePublisher:
    """A bounded deque, a signing thread and a paho-mqtt client; counters say what was lost."""

    def __init__(
        self,
        identity: DeviceIdentity,
        config: LiveConfig,
        *,
        client: mqtt.Client | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        """``login`` (username, password) overrides the config's (a Vault-rendered one)."""
        self.config = config
        self._login = login
        self.identity = identity
        self.streams = frozenset(config.streams) | (
            {"telemetry"} if config.telemetry_sample_every else frozenset()
        )
        self._pending: deque[Any] = deque()  # stream, seq, hlc, ts_ms, row; flat, _FIELDS per row
        self._telemetry_seen = 0
        self._queue_fields = config.queue_size * _FIELDS
        self._dropped = 0  # rows the full queue turned away; offered = queued + published + dropped
        self._unsent = 0  # rows of messages that failed to encode or queue in paho
        self.counters = {"published": 0, "publish_errors": 0, "connects": 0}
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._client = client or self._build_client()
        self._thread = threading.Thread(target=self._run, name="edge-sync-live", daemon=True)
        self._started = False

    @property
    def identity(self) -> DeviceIdentity:
        return self._identity

    @identity.setter
    def identity(self, identity: DeviceIdentity) -> None:
        """The signer and the topics follow the identity (built once, not per message)."""
        self._identity = identity
        self._signer = RowSigner(identity)
        self._topics = {
            s: topic_for(identity.tenant_id, identity.device_id, s, self.config.topic_root)
            for s in ("alerts", "health", "logs", "telemetry")
        }

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
        if self._login is not None:
            client.username_pw_set(*self._login)
        elif cfg.username:
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
        """Queue one recorded row for publishing; never blocks, never raises.

        Called under the cache's lock on every record(), so it does the least it can: a
        set lookup, a shallow copy (the caller may reuse its dict) and a deque extend by the
        row's five fields. No encoding, no signing and no wake-up of the thread, which polls.
        The fields go in flat rather than as a tuple per row: a queue of live tuples during a
        burst made the garbage collector's passes, paid by the recording thread, cost more
        than the rest of the offer (docs/decisions.md, "Live alerts over MQTT").
        """
        if stream not in self.streams:
            return
        if stream == "telemetry":
            self._telemetry_seen += 1
            if self._telemetry_seen % self.config.telemetry_sample_every:
                return
        if len(self._pending) >= self._queue_fields:
            self._dropped += 1
            return
        # one C call while holding the GIL, so the thread never sees part of a row
        self._pending.extend((stream, seq, hlc, ts_ms, dict(row)))

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LivePublisher:
        if not self._started:
            self._started = True
            self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
            self._client.loop_start()
            self._thread.start()
        return self

    def close(self, drain_s: float = 2.0) -> None:
        """Publish what is pending (for up to ``drain_s`` while connected), then disconnect."""
        if not self._started:
            return
        self._started = False
        deadline = time.monotonic() + drain_s
        while self._pending and self._connected.is_set() and time.monotonic() < deadline:
            time.sleep(self.config.poll_s)
        self._stop.set()
        self._thread.join(timeout=drain_s + 1)
        self._client.disconnect()
        self._client.loop_stop()

    def stats(self) -> dict[str, Any]:
        queued = len(self._pending) // _FIELDS
        return {
            **self.counters,
            "offered": queued + self.counters["published"] + self._dropped + self._unsent,
            "dropped_queue_full": self._dropped,
            "queued": queued,
            "connected": self._connected.is_set(),
        }

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
        while not self._stop.wait(self.config.poll_s):
            while self._pending and self._connected.is_set() and not self._stop.is_set():
                self._publish_some()

    def _publish_some(self) -> None:
        """Take up to ``rows_per_message`` pending rows and publish one message per stream, in order.

        Small slices and a ``sleep(0)`` after each message hand the GIL back at once, so a
        device recording flat out keeps the CPU and the publisher catches up when it pauses.
        """
        by_stream: dict[str, list[tuple[int, int, int, dict[str, Any]]]] = {}
        pending = self._pending
        take = pending.popleft
        for _ in range(min(self.config.rows_per_message, len(pending) // _FIELDS)):
            stream = take()
            by_stream.setdefault(stream, []).append((take(), take(), take(), take()))
        for stream, rows in by_stream.items():
            try:
                payload = self._signer.sign(stream, rows)
                info = self._client.publish(self._topics[stream], payload, qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.counters["published"] += len(rows)
                else:  # paho keeps a QoS 1 message it could not send and resends it on reconnect
                    self.counters["publish_errors"] += 1
                    self._unsent += len(rows)
            except Exception:  # rows the signer cannot encode must not stop the thread
                self.counters["publish_errors"] += 1
                self._unsent += len(rows)
                log.exception("live publish of %d %s rows failed", len(rows), stream)
            time.sleep(0)
