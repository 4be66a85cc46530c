"""The device agent, its config, the edge-sync CLI and the packaging files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from edge_sync import desired
from edge_sync.agent import DeviceAgent, socket_request
from edge_sync.cli import main
from edge_sync.config import ConfigError, load_config, load_public_key
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore import LocalObjectStore, StoreUnavailable
from tests.support.device import DEVICE, KEY, NOW, TENANT, RecordingStore, central_view

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "edge_sync" / "packaging"

TOML = """
tenant_id = "{tenant}"
device_id = "{device}"
cache_path = "cache.duckdb"
identity_path = "id.pem"
platform_public_key_path = "platform.pub"
sync_interval_s = 0.05
{extra}
[cache_key]
source = "file"
path = "cache.key"

[keys]
source = "local"
keyring_dir = "keyring"

[object_store]
url = "store"
"""


def write_device(
    root: Path, *, extra: str = "", device: str = DEVICE
) -> tuple[Path, DeviceIdentity, PlatformSigner]:
    root.mkdir(parents=True, exist_ok=True)
    identity = DeviceIdentity.generate(TENANT, DEVICE)
    identity.save(root / "id.pem")
    platform = PlatformSigner.generate()
    (root / "platform.pub").write_text(platform.public_key_bytes().hex() + "\n")
    (root / "cache.key").write_text(KEY.hex() + "\n")
    (root / "cache.key").chmod(0o600)  # credential files must be private
    path = root / "device.toml"
    path.write_text(TOML.format(tenant=TENANT, device=device, extra=extra))
    return path, identity, platform


def parts_agent(root: Path, store=None, **kw) -> tuple[DeviceAgent, DeviceIdentity]:
    identity = DeviceIdentity.generate(TENANT, DEVICE)
    agent = DeviceAgent.for_device(
        TENANT,
        DEVICE,
        cache_path=root / "cache.db",
        cache_key=KEY,
        wall_ms=lambda: NOW,
        store=store or LocalObjectStore(root / "store"),
        key_service=LocalKeyring(root / "keys"),
        identity=identity,
        platform_keys=PlatformSigner.generate().public_key_bytes(),
        sleep=lambda s: None,
        **kw,
    )
    return agent, identity


def test_agent_from_config_records_syncs_and_reports(tmp_path):
    path, identity, platform = write_device(tmp_path)
    store = LocalObjectStore(tmp_path / "store")
    store.put(
        desired.desired_key(TENANT, DEVICE),
        desired.encode(
            desired.DesiredState(
                tenant_id=TENANT,
                device_id=DEVICE,
                revision=2,
                issued_hlc=1,
                release=desired.Release(version="1.4.0", slot="b"),
            ),
            platform,
        ),
    )
    with DeviceAgent(load_config(path)) as agent:
        agent.record("telemetry", {"metric": "cpu", "value": 0.5})
        agent.record("alerts", {"severity": "critical", "code": "hot", "message": "too hot"})
        report = agent.sync_once()
        assert report.ok and report.downlink["status"] == "applied"
        assert report.streams["telemetry"].rows_sent == 1 and report.streams["alerts"].rows_sent == 1
        status = agent.status()
    assert status["online"] is True
    assert status["streams"]["telemetry"] == {
        **status["streams"]["telemetry"],
        "queue_depth": 0,
        "watermark": 1,
    }
    assert status["release"] == {"version": "1.4.0", "slot": "b"} and status["desired_revision"] == 2
    assert status["last_sync"]["ok"] is True
    rows, _ = central_view(store, LocalKeyring(tmp_path / "keyring"), identity.public_key_bytes())
    assert {st for st, _ in rows} == {"telemetry", "alerts", "health"}


def test_agent_keeps_recording_offline_and_catches_up(tmp_path):
    store = RecordingStore(LocalObjectStore(tmp_path / "store"), fail=10**6)
    agent, identity = parts_agent(tmp_path, store=store)
    with agent:
        for i in range(3):
            agent.record("telemetry", {"metric": "t", "value": float(i)})
            report = agent.sync_once()
            assert report.offline and not report.ok and "StoreUnavailable" in report.errors[0]
        agent.put("config", "pump", {"mode": "eco"})
        assert agent.status()["online"] is False
        assert agent.status()["streams"]["telemetry"]["queue_depth"] == 3
        store.fail = 0  # back online
        report = agent.sync_once()
        assert report.ok and report.rows_sent == 4
    rows, _ = central_view(store.inner, LocalKeyring(tmp_path / "keys"), identity.public_key_bytes())
    assert sorted(rows) == [("state", 1), ("telemetry", 1), ("telemetry", 2), ("telemetry", 3)]


def test_run_loop_syncs_backs_off_offline_and_stops(tmp_path):
    store = RecordingStore(LocalObjectStore(tmp_path / "store"), fail=4)
    agent, _ = parts_agent(tmp_path, store=store, sync_interval_s=0.01, max_backoff_s=0.02)
    agent.record("logs", {"level": "info", "message": "hello"})
    stop = threading.Event()
    t = threading.Thread(target=agent.run, args=(stop,), kwargs={"handle_signals": False})
    t.start()
    try:
        for _ in range(300):
            if agent.last_report is not None and agent.last_report.ok:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not t.is_alive()
    assert agent.last_report is not None and agent.last_report.ok
    assert agent.backoff.attempt == 0  # reset after the store came back
    with pytest.raises(ValueError, match="closed"):
        agent.record("logs", {"level": "info", "message": "after stop"})


def test_socket_server_records_puts_and_reports(tmp_path):
    short = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))  # AF_UNIX paths are limited to ~108 bytes
    sock = short / "agent.sock"
    agent, _ = parts_agent(tmp_path, socket_path=sock)
    try:
        agent.serve_socket()
        got = socket_request(sock, {"stream": "telemetry", "row": {"metric": "cpu", "value": 1.5}})
        assert got["ok"] and got["seq"] == 1
        assert socket_request(sock, {"put": {"namespace": "config", "key": "k", "fields": {"mode": "on"}}})[
            "ok"
        ]
        bad = socket_request(sock, {"stream": "telemetry", "row": {"nope": 1}})
        assert not bad["ok"] and "nope" in bad["error"]
        assert not socket_request(sock, {"what": 1})["ok"]
        status = socket_request(sock, {"status": {}})["status"]
        assert status["streams"]["telemetry"]["queue_depth"] == 1
        assert socket_request(sock, {"sync": {}})["report"]["rows_sent"] == 2
    finally:
        agent.close()
    assert not sock.exists()


def test_cli_status_and_sync_once_print_json(tmp_path, capsys):
    path, _, _ = write_device(tmp_path)
    with DeviceAgent(load_config(path)) as agent:
        agent.record("logs", {"level": "warn", "message": "queued"})
    assert main(["status", "--config", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["streams"]["logs"]["queue_depth"] == 1 and status["last_sync"] is None
    assert main(["sync-once", "--config", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["streams"]["logs"]["rows_sent"] == 1
    assert main(["status", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "logs" in text and "last sync" in text


@pytest.mark.parametrize(
    ("extra", "device", "expect"),
    [
        ("", "bad/id", "device_id: invalid device id"),
        ("bogus_field = 1\n", DEVICE, "bogus_field: Extra inputs are not permitted -> remove it"),
        ("sync_interval_s = -1\n", DEVICE, "sync_interval_s"),
    ],
)
def test_cli_bad_config_names_the_field_and_fix(tmp_path, capsys, extra, device, expect):
    path, _, _ = write_device(tmp_path, extra=extra, device=device)
    if "sync_interval_s = -1" in extra:  # the template sets it already: replace it
        path.write_text(path.read_text().replace("sync_interval_s = 0.05\n", ""))
    assert main(["status", "--config", str(path)]) == 2
    assert expect in capsys.readouterr().err


def test_cli_missing_config_and_missing_section(tmp_path, capsys):
    assert main(["status", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "device.example.toml" in capsys.readouterr().err
    (tmp_path / "d.toml").write_text('tenant_id = "t1"\ndevice_id = "d1"\n')
    assert main(["sync-once", "--config", str(tmp_path / "d.toml")]) == 2
    err = capsys.readouterr().err
    assert "cache_path: Field required -> add it" in err and "object_store" in err


def test_identity_of_another_device_and_bad_key_files_are_named(tmp_path):
    path, _, _ = write_device(tmp_path)
    DeviceIdentity.generate(TENANT, "other").save(tmp_path / "id.pem")
    with pytest.raises(ConfigError, match="identity_path: .* is the identity of t1/other"):
        DeviceAgent(load_config(path))
    (tmp_path / "platform.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="platform_public_key_path"):
        load_public_key(tmp_path / "platform.pub")


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "--help"], ["status", "--help"], ["sync-once", "--help"]]
)
def test_cli_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "--config" in capsys.readouterr().out or argv == ["--help"]


@pytest.mark.slow
def test_cli_run_serves_the_socket_and_stops_on_sigterm(tmp_path):
    short = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))
    path, identity, _ = write_device(tmp_path, extra=f'socket_path = "{short / "a.sock"}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_sync.cli", "run", "--config", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):
            if (short / "a.sock").exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert socket_request(
            short / "a.sock",
            {"stream": "alerts", "row": {"severity": "critical", "code": "x", "message": "m"}},
        )["ok"]
        # status through the running agent (the cache file is locked by it)
        out = subprocess.run(
            [sys.executable, "-m", "edge_sync.cli", "status", "--config", str(path), "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["streams"]["alerts"]["last_seq"] == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert not (short / "a.sock").exists()
    rows, _ = central_view(
        LocalObjectStore(tmp_path / "store"), LocalKeyring(tmp_path / "keyring"), identity.public_key_bytes()
    )
    assert ("alerts", 1) in rows  # synced (by the loop or on the way out) before the process ended


def test_example_config_is_valid():
    config = load_config(PACKAGING / "device.example.toml")
    assert config.tenant_id == "acme" and config.object_store.url.startswith("s3://")
    assert config.cache_key.source == "file" and config.keys.source == "local"


def test_greengrass_recipe_is_a_valid_component_recipe():
    recipe = yaml.safe_load((PACKAGING / "greengrass-recipe.yaml").read_text())
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentName"] and recipe["ComponentVersion"]
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    lifecycle = recipe["Manifests"][0]["Lifecycle"]
    assert recipe["Manifests"][0]["Platform"]["os"] == "linux"
    assert "pip install" in lifecycle["install"]["Script"] and "packageSpec" not in defaults
    assert {a["Algorithm"] for a in recipe["Manifests"][0]["Artifacts"]} == {
        "SHA-256"
    }  # see test_agent_artifacts
    assert "dagster" not in json.dumps(recipe).lower()
    run = lifecycle["run"]["Script"]
    assert "edge-sync run --config {configuration:/configPath}" in run and "configPath" in defaults


def test_iot_edge_deployment_declares_the_module_volume_and_routes():
    doc = json.loads((PACKAGING / "iot-edge-deployment.json").read_text())
    agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert agent["schemaVersion"] and set(agent["systemModules"]) == {"edgeAgent", "edgeHub"}
    module = agent["modules"]["edge-sync"]
    assert module["type"] == "docker" and module["restartPolicy"] == "always"
    create = json.loads(module["settings"]["createOptions"])  # createOptions is itself JSON text
    assert any(b.endswith(":/var/lib/edge-sync") for b in create["HostConfig"]["Binds"])
    assert create["Cmd"][:2] == ["edge-sync", "run"]
    for name in ("edgeAgent", "edgeHub"):
        json.loads(agent["systemModules"][name]["settings"]["createOptions"])
    routes = doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    assert any("/messages/modules/edge-sync/" in r for r in routes.values())


def test_from_parts_refuses_a_store_outage_without_raising(tmp_path):
    store = RecordingStore(LocalObjectStore(tmp_path / "s"), fail=10**6, exc=StoreUnavailable("down"))
    agent, _ = parts_agent(tmp_path, store=store)
    with agent:
        assert agent.sync_once().downlink["status"] == "offline"
