"""``edgeplat live`` as a process: it reads the rules file of the state directory, verifies a
device's message from a real Mosquitto, notifies the tenant's sink, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cli import main
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry
from edge_sync.live_message import sign_row, topic_for
from tests.support.cli import EDGEPLAT
from tests.support.processes import HOST, stop
from tests.support.sink_servers import http_sink, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_a_bad_broker_url_is_a_clear_error(capsys) -> None:
    assert main(["live", "--broker", "http://127.0.0.1:1883"]) == 2
    assert "use mqtt://host:1883 or mqtts://host:8883" in capsys.readouterr().err


def test_edgeplat_live_notifies_and_stops_on_sigterm(tmp_path: Path, broker) -> None:
    home = tmp_path / "home"
    identity = DeviceIdentity.generate("tenant-a", "dev-1")
    LocalDeviceRegistry(home / "devices" / "registry").register(
        "tenant-a", "dev-1", identity.public_key_bytes()
    )
    with http_sink() as (url, hook):
        (home / "alerts.yaml").write_text(
            "rules: [{name: dev, kind: device_alert}]\n"
            f"sinks: {{tenant-a: [{{name: hook, kind: webhook, url: '{url}'}}]}}\n"
        )
        env = {**os.environ, "EDGEPLAT_HOME": str(home)}
        env.pop("DAGSTER_HOME", None)
        proc = subprocess.Popen(
            [EDGEPLAT, "live", "--broker", f"mqtt://{HOST}:{broker.port}", "--status-every", "0.5"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe")
            spy.connect(HOST, broker.port)
            spy.loop_start()
            payload = sign_row(
                identity, "alerts", 1, 1 << 16, 0, {"severity": "critical", "code": "c", "message": "m"}
            )

            def delivered() -> bool:  # published until the subscriber is up; later copies are replays
                spy.publish(topic_for("tenant-a", "dev-1", "alerts"), payload, qos=1)
                return bool(hook.bodies())

            assert wait_for(delivered, timeout=60.0, every=0.5), "edgeplat live never notified"
            spy.loop_stop()
            spy.disconnect()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            stop(proc)
        out = proc.stdout.read()
    assert [a["code"] for b in hook.bodies() for a in b["alerts"]] == ["c"]
    assert f"rules: {home / 'alerts.yaml'}" in out
