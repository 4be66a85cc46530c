"""``edgeplat live``: the central subscriber of the live MQTT path (long-running; Ctrl-C stops it).

Verifies the devices' signed messages, writes them to ``live_rows`` and evaluates the alert
rules on them within seconds (docs/alerts.md). ``make dev`` starts it beside Dagster with
``--local-broker``. Broker credentials for production come from the environment:
``EDGEPLAT_MQTT_URL`` (``mqtts://user@host:8883``), ``EDGEPLAT_MQTT_PASSWORD``,
``EDGEPLAT_MQTT_CA``, ``EDGEPLAT_MQTT_CERT``, ``EDGEPLAT_MQTT_KEY``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading

from cli.common import CliError
from cli.environment import lakehouse
from edgeplat.alerts.rules import RulesError
from edgeplat.live.local_broker import start_local_broker
from edgeplat.live.subscriber import BrokerSettings, LiveSubscriber
from pipelines.resources import resources_for

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help="run the live MQTT subscriber: verify, store, alert within seconds")
    p.add_argument(
        "--broker",
        default=os.environ.get("EDGEPLAT_MQTT_URL", DEFAULT_BROKER),
        help="mqtt://host:1883 or mqtts://user@host:8883 (default: $EDGEPLAT_MQTT_URL or %(default)s)",
    )
    p.add_argument(
        "--local-broker",
        action="store_true",
        help="start a loopback Mosquitto first when nothing listens on the broker's port (make dev)",
    )
    p.add_argument("--status-every", type=float, default=60.0, help="seconds between status lines")
    p.set_defaults(handler=run)


def broker_settings(url: str) -> BrokerSettings:
    env = os.environ.get
    try:
        return BrokerSettings.from_url(
            url,
            password=env("EDGEPLAT_MQTT_PASSWORD") or None,
            ca_path=env("EDGEPLAT_MQTT_CA") or None,
            cert_path=env("EDGEPLAT_MQTT_CERT") or None,
            key_path=env("EDGEPLAT_MQTT_KEY") or None,
        )
    except ValueError as exc:
        raise CliError(f"--broker: {exc}") from None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    broker = broker_settings(args.broker)
    lake = lakehouse()
    resources = resources_for()
    try:
        engine = resources["alert_rules"].engine(lake)
    except RulesError as exc:
        raise CliError(str(exc)) from None
    local = start_local_broker(broker.host, broker.port) if args.local_broker else None
    sub = LiveSubscriber(
        lake, resources["device_registry"].get(), broker, on_rows=engine.on_live_rows if engine else None
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rules = resources["alert_rules"].rules_path if engine else "none (alerts not evaluated)"
    print(
        f"edgeplat live: {broker.host}:{broker.port} topic {broker.topic_root}/+/+/+, rules: {rules}",
        flush=True,
    )
    sub.start()
    try:
        while not stop.wait(args.status_every):
            print(json.dumps({"live": sub.counters}), flush=True)
    finally:
        sub.stop()
        if local is not None:
            local.terminate()
            local.wait(timeout=5)
    return 0
