"""The device agent: record locally always, sync (downlink, then upload) whenever the store answers.

``DeviceAgent(config)`` builds everything from ``device.toml``; ``DeviceAgent.from_parts``
takes ready objects (an open cache, an object store, a key service, an identity, the
platform keys, an injected wall clock and sleep), which is how tests and the fleet
simulator drive thousands of agents in one process without config files or threads.

Recording never depends on the network: ``record``/``put`` go to the encrypted cache,
and a sync that finds the store or the key service unreachable reports ``offline`` and
leaves every row cached. ``run()`` syncs every ``sync_interval_s`` while online and backs
off (exponential, full jitter, capped) while offline; SIGTERM/SIGINT stop it cleanly.

The optional local socket (Unix, JSON lines) lets device code record without importing
edge_sync; one request per line, one JSON reply per line::

    {"stream": "telemetry", "row": {"metric": "cpu", "value": 0.4}}   -> {"ok": true, "seq": 7, "hlc": ...}
    {"put": {"namespace": "config", "key": "k", "fields": {"threshold": 3}}} -> {"ok": true, "hlc": ...}
    {"status": {}}  -> {"ok": true, "status": {...}}      {"sync": {}} -> {"ok": true, "report": {...}}

The socket is also how ``edge-sync status`` / ``sync-once`` reach a running agent (the
cache file is locked by the process that has it open).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import platform
import signal
import socketserver
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from edge_sync.bandwidth import Backoff, BandwidthBudget
from edge_sync.cache import DeviceCache, Durability
from edge_sync.config import (
    AgentConfig,
    cache_key,
    device_identity,
    iot_store,
    key_service,
    load_public_key,
    state_rules,
    vault_session,
)
from edge_sync.downlink import (
    AGENT_NAMESPACE,
    Downlink,
    Installer,
    active_release,
    applied_revision,
    write_agent_state,
)
from edge_sync.identity import DeviceIdentity
from edge_sync.keys import KeyService
from edge_sync.live_credentials import render_mqtt_login
from edge_sync.live_publisher import LiveConfig, LivePublisher
from edge_sync.objectstore import ObjectStore
from edge_sync.objectstore_url import from_url
from edge_sync.rules import RuleSet
from edge_sync.slot_installer import SlotInstaller
from edge_sync.storage_credentials import VaultRenderedStore
from edge_sync.streams import STREAMS
from edge_sync.uploader import StepHook, SyncReport, Uploader, UploadPolicy, transient_errors

log = logging.getLogger(__name__)
# How often the sync loop asks Vault whether the AppRole secret id is due for renewal: a
# request per check, and the secret id lives for weeks.
SECRET_ID_CHECK_S = 600.0

# glibc raises its mmap threshold each time a large block is freed, after which DuckDB's and
# Arrow's buffers come from the heap, interleave with long-lived objects and are never returned,
# so a drain's peak memory varies from run to run. Pinning the threshold keeps them mmapped
# (freed at once). Evidence: docs/decisions.md, "Agent memory".
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def pin_malloc_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process (no-op elsewhere); True when it was set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, int(nbytes)))
    except (OSError, AttributeError):
        return False


class DeviceAgent:
    """One device's agent: cache, uploader and downlink, plus the run loop and local socket."""

    def __init__(
        self, config: AgentConfig, *, installer: Installer | None = None, hook: StepHook | None = None
    ) -> None:
        vault = vault_session(config) if config.vault is not None else None
        key = cache_key(config, vault)
        identity = device_identity(config)
        config.cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache = DeviceCache.open(
            config.cache_path,
            tenant_id=config.tenant_id,
            device_id=config.device_id,
            key=key,
            max_bytes=config.max_cache_bytes,
            durability=Durability(config.durability.max_rows, config.durability.max_ms),
        )
        store_source = None
        try:
            if config.object_store.credentials == "vault":
                store_source = VaultRenderedStore(
                    vault, config.tenant_id, config.object_store.runtime_dir, config.object_store.options
                )
                store = store_source.initial()
            elif config.object_store.credentials == "iot":
                store = iot_store(config)
            else:
                store = from_url(config.object_store.url, **config.object_store.options)
            budget = BandwidthBudget(
                config.bandwidth.bytes_per_second or None,
                config.bandwidth.burst_bytes or None,
                config.bandwidth.bytes_per_sync or None,
            )
            platform_keys = load_public_key(config.platform_public_key_path)
            if installer is None and config.install is not None:
                installer = SlotInstaller(
                    config.install.root,
                    cache=cache,
                    store=store,
                    platform_keys=platform_keys,
                    budget=budget,
                    min_free_bytes=config.install.min_free_bytes,
                    chunk_bytes=config.install.chunk_bytes,
                )
            self._setup(
                cache=cache,
                store=store,
                key_service=key_service(config, vault),
                identity=identity,
                platform_keys=platform_keys,
                rules=state_rules(config.rules_path),
                installer=installer,
                budget=budget,
                policy=UploadPolicy(
                    max_rows=config.upload.max_rows_per_batch, max_span_ms=config.upload.max_span_s * 1000
                ),
                sync_interval_s=config.sync_interval_s,
                max_backoff_s=config.max_backoff_s,
                socket_path=config.socket_path,
                hook=hook,
            )
        except BaseException:
            cache.close()
            raise
        self.config = config
        self.uploader.enrollment = (config.platform, dict(config.tags))  # signed into every batch manifest
        self._owns_store = True  # built here, so closed here (from_parts leaves a caller's store open)
        self._store_source = store_source
        self._vault = vault
        self._identity = identity  # signs the live path's messages once run() starts it

    @classmethod
    def from_parts(
        cls,
        *,
        cache: DeviceCache,
        store: ObjectStore,
        key_service: KeyService,
        identity: DeviceIdentity,
        platform_keys: bytes | list[bytes],
        rules: RuleSet | None = None,
        installer: Installer | None = None,
        budget: BandwidthBudget | None = None,
        policy: UploadPolicy | None = None,
        wall_ms: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        sync_interval_s: float = 60.0,
        max_backoff_s: float = 600.0,
        socket_path: str | os.PathLike[str] | None = None,
        hook: StepHook | None = None,
    ) -> DeviceAgent:
        """An agent over ready parts (no config file, no threads started): for tests and the simulator."""
        agent = cls.__new__(cls)
        agent._setup(
            cache=cache,
            store=store,
            key_service=key_service,
            identity=identity,
            platform_keys=platform_keys,
            rules=rules or state_rules(None),
            installer=installer,
            budget=budget,
            policy=policy,
            wall_ms=wall_ms,
            clock=clock,
            sleep=sleep,
            sync_interval_s=sync_interval_s,
            max_backoff_s=max_backoff_s,
            socket_path=socket_path,
            hook=hook,
        )
        agent.config = None
        return agent

    @classmethod
    def for_device(
        cls,
        tenant_id: str,
        device_id: str,
        *,
        cache_path: str | os.PathLike[str],
        cache_key: bytes,
        wall_ms: Callable[[], int] | None = None,
        max_cache_bytes: int | None = None,
        durability: Durability | None = None,
        **parts: Any,
    ) -> DeviceAgent:
        """Open (or create) the device's cache at ``cache_path`` and build the agent with ``from_parts``."""
        kw: dict[str, Any] = {"max_bytes": max_cache_bytes} if max_cache_bytes else {}
        cache = DeviceCache.open(
            cache_path,
            tenant_id=tenant_id,
            device_id=device_id,
            key=cache_key,
            durability=durability,
            wall_ms=wall_ms,
            **kw,
        )
        try:
            return cls.from_parts(cache=cache, wall_ms=wall_ms, **parts)
        except BaseException:
            cache.close()
            raise

    def _setup(
        self,
        *,
        cache: DeviceCache,
        store: ObjectStore,
        key_service: KeyService,
        identity: DeviceIdentity,
        platform_keys: bytes | list[bytes],
        rules: RuleSet,
        installer: Installer | None,
        budget: BandwidthBudget | None,
        policy: UploadPolicy | None,
        wall_ms: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        sync_interval_s: float,
        max_backoff_s: float,
        socket_path: str | os.PathLike[str] | None,
        hook: StepHook | None,
    ) -> None:
        pin_malloc_mmap_threshold()  # the agent is the device's long-running process
        self.cache, self.store = cache, store
        self.tenant_id, self.device_id = cache.tenant_id, cache.device_id
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self.uploader = Uploader(
            cache,
            store,
            key_service=key_service,
            identity=identity,
            budget=budget,
            policy=policy,
            wall_ms=self._wall_ms,
            clock=clock,
            sleep=sleep,
            hook=hook,
        )
        self.downlink = Downlink(cache, store, platform_keys=platform_keys, rules=rules, installer=installer)
        if isinstance(installer, SlotInstaller):  # one link: uploads and downloads share the byte rate
            installer.fetcher.share_rate(self.uploader.rate_limiter)
        self.sync_interval_s = sync_interval_s
        self.backoff = Backoff(base_s=min(sync_interval_s, max_backoff_s), cap_s=max_backoff_s)
        self.socket_path = Path(socket_path) if socket_path else None
        self.last_report: SyncReport | None = None
        self.online: bool | None = None  # unknown until the first sync
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._server: _SocketServer | None = None
        self._owns_store = False
        self._store_source: VaultRenderedStore | None = None
        self._vault: Any = None  # a VaultSession whose secret id the sync loop keeps fresh
        self._secret_id_checked: float | None = None
        self.live: LivePublisher | None = None  # see attach_live

    # -- recording -----------------------------------------------------------------------
    def record(self, stream: str, row: dict[str, Any]) -> tuple[int, int]:
        """Record one row of ``stream`` (see ``DeviceCache.record``); works offline.

        A stream the live path publishes is also offered to it, stamped exactly as cached,
        by the cache's ``on_record`` hook under its lock (so in recording order).
        """
        return self.cache.record(stream, row)

    def record_batch(self, stream: str, table: pa.Table) -> tuple[int, int]:
        return self.cache.record_batch(stream, table)

    def put(self, namespace: str, key: str, fields: dict[str, Any]) -> int:
        """A device state edit (see ``DeviceCache.put``)."""
        return self.cache.put(namespace, key, fields)

    # -- syncing -------------------------------------------------------------------------
    def sync_once(self) -> SyncReport:
        """Pull desired state, then upload pending rows; never raises for network trouble."""
        with self._sync_lock:
            started = self._wall_ms()
            self._refresh_store()
            self._renew_secret_id()
            downlink: dict[str, Any]
            offline_error = None
            try:
                downlink = self.downlink.pull().to_dict()
            except transient_errors() as exc:
                offline_error = f"downlink: {type(exc).__name__}: {exc}"
                downlink = {"status": "offline", "message": offline_error}
            except Exception as exc:  # a broken document or installer must not stop uploads
                log.exception("downlink failed")
                downlink = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
            if offline_error is None:
                report = self.uploader.upload()
                if downlink["status"] == "error":
                    report.errors.append(f"downlink: {downlink['message']}")
            else:
                report = SyncReport(offline=True, errors=[offline_error])
            report.started_ms = started
            report.finished_ms = self._wall_ms()
            report.downlink = downlink
            self.online = not report.offline
            self.last_report = report
            self._remember(report)
            return report

    def _start_live(self, live: LiveConfig) -> None:
        login = None
        if live.credentials == "vault":
            try:
                login = render_mqtt_login(self._vault, self.tenant_id, self.device_id, live.runtime_dir)
            except Exception as exc:  # Vault down or no login yet: record and sync without the live path
                log.warning("live path not started: MQTT login not rendered from Vault (%s)", exc)
                return
        self.attach_live(LivePublisher(self._identity, live, login=login))

    def attach_live(self, publisher: LivePublisher) -> LivePublisher:
        """Publish recorded rows live through ``publisher`` (started here, closed with the agent)."""
        self.live = publisher.start()
        self.cache.on_record = publisher.offer
        return publisher

    def _refresh_store(self) -> None:
        """Swap to a rotated object-store credential (``object_store.credentials = "vault"``)."""
        if self._store_source is None:
            return
        try:
            fresh = self._store_source.refresh()
        except Exception as exc:  # Vault down or our token lapsed: the credential we hold still works
            log.warning(
                "object-store credential not refreshed (%s); syncing with the one rendered earlier", exc
            )
            return
        if fresh is None:
            return
        old, self.store = self.store, fresh
        self.uploader.store = self.downlink.store = fresh
        if isinstance(self.downlink.installer, SlotInstaller):
            self.downlink.installer.use_store(fresh)
        old.close()
        log.info("object-store credential rotated: store rebuilt from %s", self._store_source.path)

    def _renew_secret_id(self) -> None:
        """Replace the Vault AppRole secret id before it expires or runs out of logins."""
        now = time.monotonic()
        if self._vault is None or (
            self._secret_id_checked is not None and now - self._secret_id_checked < SECRET_ID_CHECK_S
        ):
            return
        self._secret_id_checked = now
        try:
            self._vault.renew_secret_id()
        except Exception as exc:  # Vault down: the secret id we hold is still valid for a while
            log.warning("vault secret id not renewed (%s); trying again at the next sync", exc)

    def _remember(self, report: SyncReport) -> None:
        """Keep a summary of the last sync in local state, for ``edge-sync status`` after a restart."""
        summary = {
            ("sync", "last_ms"): report.finished_ms,
            ("sync", "ok"): report.ok,
            ("sync", "offline"): report.offline,
            ("sync", "rows_sent"): report.rows_sent,
            ("sync", "errors"): report.errors[:5],
        }
        if report.ok:
            summary[("sync", "last_ok_ms")] = report.finished_ms
        try:
            write_agent_state(self.cache, summary)
        except Exception:  # bookkeeping only
            log.exception("could not record the sync summary")

    def run(self, stop: threading.Event | None = None, *, handle_signals: bool = True) -> None:
        """Sync every interval until ``stop`` is set (or SIGTERM/SIGINT); closes the agent at the end."""
        self._stop = stop or threading.Event()
        restore = self._install_signals() if handle_signals else {}
        if self.live is None and self.config is not None and self.config.live is not None:
            # only the long-running agent publishes live: one-shot commands (status, sync-once) do not
            self._start_live(self.config.live)
        try:
            if self.socket_path is not None:
                self.serve_socket()
            while not self._stop.is_set():
                report = self.sync_once()
                if report.offline:
                    delay = max(
                        min(1.0, self.sync_interval_s), self.backoff.next_delay()
                    )  # never a busy loop
                    log.info("offline (%s); next sync in %.1fs", "; ".join(report.errors)[:200], delay)
                else:
                    self.backoff.reset()
                    delay = self.sync_interval_s
                self._stop.wait(delay)
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: self._stop.set())
        return old

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Queue depth, watermark and evictions per stream, cache size, release and last sync."""
        stats = self.cache.stats()
        version, slot = active_release(self.cache)
        last = self.cache.get_state(AGENT_NAMESPACE, "sync")
        return {
            "tenant_id": self.tenant_id,
            "device_id": self.device_id,
            "online": self.online,
            "streams": {
                s: {
                    k: stats["streams"][s][k]
                    for k in ("queue_depth", "watermark", "last_seq", "bytes", "evicted")
                }
                for s in STREAMS
            },
            "cache": {k: stats[k] for k in ("size_bytes", "max_bytes", "file_bytes")},
            "release": {"version": version, "slot": slot},
            "desired_revision": applied_revision(self.cache),
            "state_rules": {
                "version": self.downlink.rules.version,
                "content_hash": self.downlink.rules.content_hash,
                "refused": self.cache.get_state(AGENT_NAMESPACE, "rules").get("refused"),
            },
            "last_sync": last or None,
            "live": self.live.stats() if self.live is not None else None,
            "installer": self.downlink.installer.status()
            if isinstance(self.downlink.installer, SlotInstaller)
            else None,
        }

    # -- socket --------------------------------------------------------------------------
    def serve_socket(self) -> None:
        """Start the local Unix socket server in a daemon thread (``socket_path`` must be set)."""
        if self.socket_path is None:
            raise ValueError("this agent has no socket_path; set socket_path in device.toml")
        if self._server is not None:
            return
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a stale socket of a previous run
        self._server = _SocketServer(str(self.socket_path), _Handler, agent=self)
        os.chmod(self.socket_path, 0o660)
        threading.Thread(target=self._server.serve_forever, name="edge-sync-socket", daemon=True).start()

    def handle_request(self, req: Any) -> dict[str, Any]:
        """One socket request (already parsed JSON) -> reply."""
        if not isinstance(req, dict):
            raise ValueError('a request is a JSON object: {"stream": ..., "row": {...}} or {"put": {...}}')
        if "stream" in req:
            row = req.get("row")
            if not isinstance(row, dict):
                raise ValueError('"row" must be a JSON object of the stream\'s columns')
            seq, hlc = self.record(req["stream"], row)
            return {"ok": True, "seq": seq, "hlc": hlc}
        if "put" in req:
            p = req["put"]
            if not isinstance(p, dict) or not {"namespace", "key", "fields"} <= p.keys():
                raise ValueError('"put" needs {"namespace": ..., "key": ..., "fields": {...}}')
            return {"ok": True, "hlc": self.put(p["namespace"], p["key"], p["fields"])}
        if "status" in req:
            return {"ok": True, "status": self.status()}
        if "sync" in req:
            return {"ok": True, "report": self.sync_once().to_dict()}
        raise ValueError('unknown request: expected "stream"+"row", "put", "status" or "sync"')

    def close(self) -> None:
        """Stop the socket server and close the cache (flushes buffered rows) and a store it built."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        if self.live is not None:
            self.cache.on_record = None
            self.live.close()
            self.live = None
        self.cache.close()
        if self._owns_store:
            with contextlib.suppress(Exception):
                self.store.close()

    def __enter__(self) -> DeviceAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SocketServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handler: type, *, agent: DeviceAgent) -> None:
        self.agent = agent
        super().__init__(path, handler)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            if not line.strip():
                continue
            try:
                reply = self.server.agent.handle_request(json.loads(line))  # type: ignore[attr-defined]
            except Exception as exc:  # a bad request gets an answer, never kills the server
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")
            self.wfile.flush()


def socket_request(
    path: str | os.PathLike[str], request: dict[str, Any], timeout: float = 300.0
) -> dict[str, Any]:
    """Send one request to a running agent's socket and return its reply."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
