"""End to end through the DeviceAgent: desired state names releases whose artifacts come from the
moto S3 server and a loopback HTTP server; the agent installs, switches, reverts, stages and rolls
back, and the uploaded health rows carry each update step."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge_sync.agent import DeviceAgent
from edge_sync.bandwidth import BandwidthBudget
from edge_sync.cli import _status_text
from edge_sync.desired import DesiredState, Release, desired_key, encode
from edge_sync.identity import PlatformSigner
from edge_sync.objectstore_s3 import S3ObjectStore
from edge_sync.slot_installer import SlotInstaller
from tests.support.device import DEVICE, TENANT, central_view, make_env
from tests.support.moto_server import MOTO_CREDENTIALS
from tests.support.processes import HOST
from tests.support.releases import app_release, publish, tarball


class Files(ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) with HTTP Range support; counts the requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests = 0
        super().__init__((HOST, 0), _RangeHandler)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"


class _RangeHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests += 1  # type: ignore[attr-defined]
        data = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if data is None:
            self.send_error(404)
            return
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, b = rng.removeprefix("bytes=").split("-")
            start, end = int(a), min(int(b), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start : end + 1])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def files() -> Iterator[Files]:
    server = Files()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Clock:
    t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.services
def test_agent_installs_reverts_stages_and_rolls_back(tmp_path, s3_bucket, files):
    endpoint, bucket = s3_bucket
    env = make_env(tmp_path)
    store = S3ObjectStore(
        bucket,
        "fleet",
        endpoint_url=endpoint,
        access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
        secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
    )
    signer, clock = PlatformSigner.generate(), Clock()
    installer = SlotInstaller(
        tmp_path / "releases",
        cache=env.cache,
        store=store,
        platform_keys=signer.public_key_bytes(),
        min_free_bytes=0,
        chunk_bytes=4096,
        wall=clock,
    )
    agent = DeviceAgent.from_parts(
        cache=env.cache,
        store=store,
        key_service=env.keys,
        identity=env.identity,
        platform_keys=signer.public_key_bytes(),
        installer=installer,
        wall_ms=lambda: int(clock.t * 1000),
        sleep=lambda s: None,
    )
    revision = 0

    def desire(release: Release | None, staged: Release | None = None) -> dict:
        nonlocal revision
        revision += 1
        doc = DesiredState(
            tenant_id=TENANT,
            device_id=DEVICE,
            revision=revision,
            issued_hlc=0,
            release=release,
            staged=staged,
        )
        store.put(desired_key(TENANT, DEVICE), encode(doc, signer))
        report = agent.sync_once()
        assert report.ok, report.errors
        return report.downlink

    def served(version: str, *, healthy: bool = True, probation_s: float = 0.0) -> None:
        payload = app_release(version, healthy=healthy)
        files.files[f"/{version}.tar.gz"] = payload
        publish(
            store,
            signer,
            version,
            payload,
            tenant_id=TENANT,
            url=f"{files.base}/{version}.tar.gz",
            sha256=hashlib.sha256(payload).hexdigest(),
            probation_s=probation_s,
        )

    try:
        # v1 from the object store: installed, switched, checked, committed
        publish(store, signer, "v1", app_release("v1"), tenant_id=TENANT)
        assert desire(Release(version="v1", slot="a", rollout_id="r1"))["install_error"] is None
        assert agent.status()["release"] == {"version": "v1", "slot": "a"}
        assert (installer.root / "current" / "VERSION").read_text() == "v1"

        # v2 over HTTP fails its health check: the device reverts to v1 and says so
        served("v2", healthy=False)
        down = desire(Release(version="v2", slot="b", rollout_id="r2"))
        assert "health check" in down["install_error"]
        assert agent.status()["release"] == {"version": "v1", "slot": "a"}
        shown = agent.status()["installer"]
        assert shown["committed"] == {"version": "v1", "slot": "a"} and shown["pending"] is None
        assert list(shown["reverted"]) == ["v2"] and shown["slots"] == {"a": "v1", "b": "v2"}
        assert "installer: committed v1" in _status_text(agent.status())  # edge-sync status
        assert "reverted here: v2" in _status_text(agent.status())

        # blue/green: v3 staged on the inactive slot, then an instant switch, then a rollback
        served("v3", probation_s=60)
        down = desire(Release(version="v1", slot="a"), staged=Release(version="v3", slot="b"))
        assert down["staged"] == {"version": "v3", "slot": "b"}
        requests = files.requests
        assert desire(Release(version="v3", slot="b", rollout_id="r3"))["install_error"] is None
        assert agent.status()["release"] == {"version": "v3", "slot": "b"}
        assert installer.in_probation()
        clock.t += 61
        agent.sync_once()  # the probation tick commits
        assert installer.journal["committed"] == {"version": "v3", "slot": "b"}
        assert desire(Release(version="v1", slot="a"))["install_error"] is None
        assert agent.status()["release"] == {"version": "v1", "slot": "a"}
        assert files.requests == requests  # the switch and the rollback downloaded nothing

        # what the central side receives: every step, in order, in the health stream
        rows, _ = central_view(store, env.keys, env.identity.public_key_bytes())
        steps = [
            (r["update_state"], r["update_version"], r["version"])
            for (stream, _seq), r in sorted(rows.items())
            if stream == "health" and r["update_state"]
        ]
        assert steps == [
            ("downloading", "v1", None),
            ("installed", "v1", None),
            ("activated", "v1", "v1"),
            ("committed", "v1", "v1"),
            ("downloading", "v2", "v1"),
            ("installed", "v2", "v1"),
            ("activated", "v2", "v2"),
            ("reverted", "v2", "v1"),
            ("downloading", "v3", "v1"),
            ("installed", "v3", "v1"),
            ("activated", "v3", "v3"),
            ("committed", "v3", "v3"),
            ("activated", "v1", "v1"),
            ("committed", "v1", "v1"),
        ]
    finally:
        agent.close()
        store.close()


def test_a_download_over_several_syncs_keeps_the_document_pending(tmp_path):
    """The per-sync download allowance: each sync resumes the download; the revision is applied
    (and state edits merged) only when the release runs."""
    env = make_env(tmp_path)
    signer = PlatformSigner.generate()
    payload = tarball({"VERSION": "v1", "blob": secrets.token_bytes(12_000)})
    publish(env.store, signer, "v1", payload, tenant_id=TENANT, check=False)
    installer = SlotInstaller(
        tmp_path / "releases",
        cache=env.cache,
        store=env.store,
        platform_keys=signer.public_key_bytes(),
        min_free_bytes=0,
        chunk_bytes=4096,
        budget=BandwidthBudget(bytes_per_sync=4096),
    )
    agent = DeviceAgent.from_parts(
        cache=env.cache,
        store=env.store,
        key_service=env.keys,
        identity=env.identity,
        platform_keys=signer.public_key_bytes(),
        installer=installer,
        sleep=lambda s: None,
    )
    doc = DesiredState(
        tenant_id=TENANT, device_id=DEVICE, revision=1, issued_hlc=0, release=Release(version="v1", slot="a")
    )
    env.store.put(desired_key(TENANT, DEVICE), encode(doc, signer))
    try:
        statuses = [agent.sync_once().downlink["status"] for _ in range(-(-len(payload) // 4096))]
        assert len(statuses) >= 3
        assert statuses[:-1] == ["pending"] * (len(statuses) - 1) and statuses[-1] == "applied"
        assert agent.status()["release"] == {"version": "v1", "slot": "a"}
        assert agent.status()["desired_revision"] == 1
        assert agent.sync_once().downlink["status"] == "unchanged"
    finally:
        agent.close()


def test_device_toml_install_section_builds_the_slot_installer(tmp_path):
    from edge_sync.config import parse_config

    base = {
        "tenant_id": TENANT,
        "device_id": DEVICE,
        "cache_path": "cache.db",
        "identity_path": "id.pem",
        "platform_public_key_path": "platform.pub",
        "object_store": {"url": "store"},
        "cache_key": {"path": "cache.key"},
        "keys": {"keyring_dir": "keys"},
    }
    assert parse_config(base, base=tmp_path).install is None  # the agent then only records releases
    config = parse_config({**base, "install": {"root": "releases"}}, base=tmp_path)
    assert config.install.root == tmp_path / "releases" and config.install.min_free_bytes == 64 << 20


def test_uploads_and_downloads_share_one_byte_rate(tmp_path):
    env = make_env(tmp_path)
    signer = PlatformSigner.generate()
    installer = SlotInstaller(
        tmp_path / "releases",
        cache=env.cache,
        store=env.store,
        platform_keys=signer.public_key_bytes(),
        budget=BandwidthBudget(bytes_per_second=1000),
    )
    agent = DeviceAgent.from_parts(
        cache=env.cache,
        store=env.store,
        key_service=env.keys,
        identity=env.identity,
        platform_keys=signer.public_key_bytes(),
        installer=installer,
        budget=BandwidthBudget(bytes_per_second=1000),
    )
    try:
        assert agent.uploader.rate_limiter is not None
        assert installer.fetcher._bucket is agent.uploader.rate_limiter
    finally:
        agent.close()
