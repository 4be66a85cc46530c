"""The live MQTT path: alert latency end to end, and what publishing costs ``record()`` on the device.

- ``live_alert_latency_p50/p99``: a real device agent records an alert; it goes through a real
  Mosquitto on loopback to the central subscriber (signature and replay checks, a
  ``live_rows`` commit to the DuckLake lakehouse, the alert engine, its ``alert_events`` and
  ``notifications`` commits) to a loopback webhook sink; measured from before ``record()`` to
  the sink's receipt. Each alert has its own code, so none is deduplicated. Baseline in the
  same run: the batch path for one alert from the start of a sync (upload, ingest, scheduled
  evaluation), which excludes the wait for the agent's sync interval (60 s by default) and
  for the sensor's tick, so the real batch path is slower still. The issue's budget is 5 s.
- ``live_record_throughput``: ``record()`` of health rows (a published stream) with the live
  publisher attached and connected, against the same agent without it: the median of the
  on/off ratios of back-to-back pairs of trials (ABBA order), with its spread. Target >= 0.9.
"""

from __future__ import annotations

import http.server
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import Result
from edge_sync.agent import DeviceAgent
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry, PlatformSigner
from edge_sync.keys import LocalKeyring
from edge_sync.live_publisher import LiveConfig, LivePublisher
from edge_sync.objectstore import LocalObjectStore
from edgeplat.alerts.engine import AlertEngine
from edgeplat.alerts.rules import parse_rules
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.live.local_broker import start_local_broker
from edgeplat.live.subscriber import BrokerSettings, LiveSubscriber
from edgeplat.sync.env import SyncEnv, local_decoder
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.reconcile import list_batch_keys

HOST = "127.0.0.1"
HEALTH = {
    "version": "1.0",
    "slot": "a",
    "desired_revision": 1,
    "error_rate": 0.01,
    "requests": 100,
    "errors": 1,
    "crash_count": 0,
    "cpu_pct": 12.5,
    "mem_mb": 80.0,
    "heartbeat": 1,
    "queue_depth": 0,
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _Sink(http.server.BaseHTTPRequestHandler):
    received: dict[str, float] = {}
    event = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 - stdlib hook
        import json

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.perf_counter()
        for alert in body["alerts"]:
            _Sink.received.setdefault(alert["code"], now)
        _Sink.event.set()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _agent(root: Path, keys: LocalKeyring, store: LocalObjectStore, identity: DeviceIdentity) -> DeviceAgent:
    return DeviceAgent.for_device(
        identity.tenant_id,
        identity.device_id,
        cache_path=root / f"{secrets.token_hex(4)}.duckdb",
        cache_key=secrets.token_bytes(32),
        store=store,
        key_service=keys,
        identity=identity,
        platform_keys=PlatformSigner.generate().public_key_bytes(),
        sleep=lambda s: None,
    )


def _publisher(identity: DeviceIdentity, port: int) -> LivePublisher:
    return LivePublisher(identity, LiveConfig(host=HOST, port=port, queue_size=100_000))


def bench_throughput(root: Path, port: int, rows: int, pairs: int) -> list[Result]:
    """Paired trials of the same rows with the publisher off and on, in ABBA order.

    Load on a shared machine drifts over seconds, so each pair's trials run back to back and
    the figure is the median of the per-pair ratios (its spread in the note), not a ratio of
    medians of separate runs. Before each trial the publisher has drained what earlier trials
    queued, so neither side pays for the other's backlog. The wall-clock ratio is the issue's
    figure but swings with the machine's load; the recording thread's CPU ratio is what
    record() itself pays; the process-CPU ratio (all threads, until the publisher drained) is
    everything the live path costs the device. Both CPU ratios stay put under load.
    """
    keys, store = LocalKeyring(root / "keys-t"), LocalObjectStore(root / "objects-t")
    identity = DeviceIdentity.generate("bench", "dev-throughput")
    plain, live = _agent(root, keys, store, identity), _agent(root, keys, store, identity)
    publisher = live.attach_live(_publisher(identity, port))
    deadline = time.monotonic() + 10
    while not publisher.stats()["connected"] and time.monotonic() < deadline:
        time.sleep(0.05)

    def drained() -> None:
        while publisher.stats()["queued"]:
            time.sleep(0.005)

    def trial(agent: DeviceAgent) -> tuple[float, float, float]:
        """record() rows per second of wall time and of the recording thread's CPU, and rows
        per CPU second of the whole process until the publisher drained."""
        drained()
        c0, r0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
        for _ in range(rows):
            agent.record("health", HEALTH)
        agent.cache.flush()
        wall, own = time.perf_counter() - t0, time.thread_time() - r0
        drained()  # the publisher's CPU (encode, sign, paho) is part of the cost of recording
        return rows / wall, rows / own, rows / (time.process_time() - c0)

    trial(plain), trial(live)  # warm both caches and the connection
    off, on, ratios, own_ratios, cpu_ratios = [], [], [], [], []
    for i in range(pairs):
        if i % 2:
            b, a = trial(live), trial(plain)
        else:
            a, b = trial(plain), trial(live)
        off.append(a[0])
        on.append(b[0])
        ratios.append(b[0] / a[0])
        own_ratios.append(b[1] / a[1])
        cpu_ratios.append(b[2] / a[2])
    while publisher.stats()["queued"] and time.monotonic() < deadline + 60:
        time.sleep(0.05)
    stats = publisher.stats()
    plain.close()
    live.close()
    wall, own, cpu = _spread(ratios), _spread(own_ratios), _spread(cpu_ratios)
    print(
        f"live record() on/off per pair: wall {wall}; recording thread CPU {own}; "
        f"process CPU to drained {cpu}",
        flush=True,
    )
    counts = (
        f"{pairs} ABBA pairs of {rows:,} health rows; published {stats['published']:,}, "
        f"dropped (queue full) {stats['dropped_queue_full']:,}"
    )
    return [
        Result(
            "live_record_throughput",
            statistics.median(ratios),
            "on/off",
            "the same pair's record() rows/s without the live publisher (= 1.0)",
            1.0,
            target=0.9,
            note=f"{wall}; medians off {statistics.median(off):,.0f} on {statistics.median(on):,.0f} "
            f"rows/s; {counts}",
        ),
        Result(
            "live_record_thread_cpu",
            statistics.median(own_ratios),
            "on/off",
            "the same pair's record() rows per CPU second of the recording thread without it (= 1.0)",
            1.0,
            target=0.9,
            note=f"{own}; what record() itself costs the caller (offer under the cache lock), "
            f"excluding waits for the GIL, so steady under load; {counts}",
        ),
        Result(
            "live_record_cpu_cost",
            statistics.median(cpu_ratios),
            "on/off",
            "the same pair's rows per process CPU second without the publisher (= 1.0)",
            1.0,
            target=None,
            note=f"{cpu}; CPU of all threads until the publisher drained; {counts}",
        ),
    ]


def _spread(ratios: list[float]) -> str:
    q = statistics.quantiles(ratios, n=4, method="inclusive")
    return (
        f"median {statistics.median(ratios):.3f} (IQR {q[0]:.2f}-{q[2]:.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


def bench_latency(root: Path, port: int, alerts: int) -> list[Result]:
    keys, store = LocalKeyring(root / "keys"), LocalObjectStore(root / "objects")
    registry = LocalDeviceRegistry(root / "devices")
    lake = Lakehouse(LakehouseConfig(catalog=f"sqlite:{root}/catalog.sqlite", data_path=f"{root}/lake/"))
    lake.ensure_schema()
    server = http.server.ThreadingHTTPServer((HOST, 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{HOST}:{server.server_address[1]}"
    rules = parse_rules(
        "rules: [{name: dev, kind: device_alert, severities: [critical]}]\n"
        f"sinks: {{t1: [{{name: hook, kind: webhook, url: '{url}'}}]}}\n"
        "device_alert_grace_s: 0\n"
    )
    engine = AlertEngine(lake, rules)
    sub = LiveSubscriber(lake, registry, BrokerSettings(HOST, port), on_rows=engine.on_live_rows).start()
    sub.subscribed.wait(10)
    identity = DeviceIdentity.generate("t1", "dev-1")
    registry.register("t1", "dev-1", identity.public_key_bytes())
    agent = _agent(root, keys, store, identity)
    agent.attach_live(_publisher(identity, port))
    latencies = []
    try:
        for i in range(alerts + 2):
            code = f"code-{i}"
            _Sink.event.clear()
            t0 = time.perf_counter()
            agent.record("alerts", {"severity": "critical", "code": code, "message": "bench"})
            _Sink.event.wait(30)
            if code in _Sink.received and i >= 2:  # the first two warm the lakehouse connections
                latencies.append(_Sink.received[code] - t0)
        # the batch path for one more alert, from the start of a sync
        agent.record("alerts", {"severity": "critical", "code": "batch-only", "message": "bench"})
        sub.stop()
        time.sleep(0.5)
        engine_batch = AlertEngine(lake, rules)
        t0 = time.perf_counter()
        agent.sync_once()
        env = SyncEnv(lake, store, keys, registry, decoder=local_decoder(root / "keys", root / "devices"))
        ingest_objects(env, list(list_batch_keys(env)))
        engine_batch.evaluate()
        batch_s = time.perf_counter() - t0
    finally:
        agent.close()
        server.shutdown()
    lost = alerts - len(latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    dist = (
        f"n={len(latencies)} (lost {lost}); min {min(latencies):.3f}s p50 {q[49]:.3f}s "
        f"p90 {q[89]:.3f}s p99 {q[98]:.3f}s max {max(latencies):.3f}s"
    )
    print(f"live alert latency: {dist}; batch path from sync start {batch_s:.2f}s", flush=True)
    return [
        Result(
            "live_alert_latency_p50",
            q[49],
            "s",
            "batch path from the start of a sync (upload, ingest, evaluate; excludes the 60 s interval)",
            batch_s,
            target=None,
            higher_is_better=False,
            note=dist,
        ),
        Result(
            "live_alert_latency_p99",
            q[98],
            "s",
            "the issue's budget of 5 s",
            5.0,
            target=1.0,
            higher_is_better=False,
            note=dist,
        ),
    ]


def run(quick: bool) -> list[Result]:
    root = Path(tempfile.mkdtemp(prefix="bench-live-"))
    port = _free_port()
    broker = start_local_broker(HOST, port)
    if broker is None:
        raise RuntimeError("bench_live needs /usr/sbin/mosquitto (Debian package mosquitto)")
    try:
        results = bench_latency(root, port, alerts=20 if quick else 100)
        results += bench_throughput(root, port, rows=5_000 if quick else 10_000, pairs=11 if quick else 31)
        return results
    finally:
        broker.terminate()
        broker.wait(timeout=5)
