"""``edgeplat demo --production``: the same demo on the production stack, with local stand-ins.

Starts what production reaches over the network, on loopback: a fresh database on the
machine's PostgreSQL (``EDGEPLAT_DEMO_PG``, default ``host=127.0.0.1 port=5432 user=postgres
dbname=test``; the demo creates ``edgeplat_demo_<random>`` and drops it afterwards) for the
Dagster instance and the DuckLake catalog, a moto S3 server for batches, desired-state
documents and the lakehouse data, and an OpenBao dev server (``bao server -dev``) for the
tenants' transit keys and the central AppRole. It then sets the production settings
(``EDGEPLAT_ENV=production`` and the variables ``pipelines/resources.py`` lists) and runs the
demo. Each stand-in is stopped by its process id, the database dropped, when the demo ends.

Stand-in shortcuts, which the field does not take: the simulated devices (the sync fleet's and
the rollouts' 2,000) wrap their data keys with the dev server's root token (each real device
logs in with its own AppRole; the central AppRole may only decrypt), and S3 takes any access key.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import hvac

from cli.common import CliError
from edge_sync.identity import PlatformSigner
from edge_sync.vault_admin import VaultAdmin
from edge_sync.vault_keys import VaultTransitKeyService
from edgeplat.desired_records import LakehouseDesiredRecords
from edgeplat.device_registry import LakehouseDeviceRegistry
from edgeplat.lakehouse import Lakehouse
from edgeplat.security.openbao_binary import bao_binary
from edgeplat.simulator import SimulationConfig
from edgeplat.simulator.fleet import build_fleet

# the rollout demo's fleet (DemoFleet's tenants): their transit keys exist before it uploads
ROLLOUT_TENANTS = ("acme", "globex")
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
S3_KEY = "edgeplat-demo"  # moto accepts any key; the settings still travel as secrets would
INSTANCE_YAML = """\
# Written by edgeplat demo --production: runs and event logs in the demo's PostgreSQL database.
telemetry:
  enabled: false
storage:
  postgres:
    postgres_url:
      env: EDGEPLAT_DEMO_DAGSTER_PG_URL
python_logs:
  python_log_level: INFO
  managed_python_loggers:
    - edgeplat
    - edge_sync
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _wait_http(url: str, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"{what} exited at start (code {proc.returncode}); its log: {log}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise CliError(f"{what} did not answer at {url} within 60 s; its log: {log}")


@contextmanager
def _process(args: list[str], url: str, what: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_http(url, proc, what, log)
        yield
    finally:
        _stop(proc)


@contextmanager
def _database(admin_dsn: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_dsn``; its libpq DSN. Dropped afterwards."""
    import psycopg2

    try:
        conn = psycopg2.connect(admin_dsn, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        raise CliError(
            f"PostgreSQL does not answer at '{admin_dsn}' ({exc}); start it, or point EDGEPLAT_DEMO_PG at one"
        ) from None
    conn.autocommit = True
    name = f"edgeplat_demo_{secrets.token_hex(5)}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    params = dict(p.split("=", 1) for p in admin_dsn.split())
    params["dbname"] = name
    try:
        yield " ".join(f"{k}={v}" for k, v in params.items())
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def _bao_binary() -> str:
    try:
        return bao_binary()
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None


@contextmanager
def stand_ins(home: Path, tenants: list[str]) -> Iterator[dict[str, str]]:
    """Start the stand-ins, prepare them as an operator would, and yield the production settings."""
    logs = Path(tempfile.mkdtemp(prefix="edgeplat-demo-logs-"))
    with ExitStack() as stack:
        pg_dsn = stack.enter_context(_database(os.environ.get("EDGEPLAT_DEMO_PG", PG_ADMIN_DSN)))
        s3_port, bao_port = _free_port(), _free_port()
        s3 = f"http://127.0.0.1:{s3_port}"
        stack.enter_context(
            _process(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                s3,
                "the moto S3 server",
                logs / "moto.log",
            )
        )
        token = "root-" + secrets.token_hex(12)
        bao = f"http://127.0.0.1:{bao_port}"
        stack.enter_context(
            _process(
                [
                    _bao_binary(),
                    "server",
                    "-dev",
                    "-dev-no-store-token",
                    f"-dev-root-token-id={token}",
                    f"-dev-listen-address=127.0.0.1:{bao_port}",
                ],
                f"{bao}/v1/sys/health",
                "the OpenBao dev server",
                logs / "openbao.log",
            )
        )
        import boto3

        bucket = f"edgeplat-demo-{secrets.token_hex(4)}"
        boto3.client(
            "s3",
            endpoint_url=s3,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_KEY,
        ).create_bucket(Bucket=bucket)
        admin = VaultAdmin(hvac.Client(url=bao, token=token))
        admin.ensure_engines()
        for tenant in tenants:
            admin.ensure_tenant(tenant)
        role_id, secret_id = admin.enrol_central()
        key_path = home / "keys" / "platform.pem"  # production mounts it from a Secret
        if not key_path.exists():
            key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            PlatformSigner.generate().save(key_path)
        user = dict(p.split("=", 1) for p in pg_dsn.split())
        yield {
            "EDGEPLAT_ENV": "production",
            "EDGEPLAT_CATALOG": f"postgres:{pg_dsn}",
            "EDGEPLAT_LAKE_DATA": f"s3://{bucket}/lake/",
            "EDGEPLAT_OBJECTS_URL": f"s3://{bucket}/fleet",
            "EDGEPLAT_S3_ENDPOINT": s3,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_KEY,
            "AWS_REGION": "us-east-1",
            "EDGEPLAT_VAULT_ADDR": bao,
            "EDGEPLAT_VAULT_ROLE_ID": role_id,
            "EDGEPLAT_VAULT_SECRET_ID": secret_id,
            "EDGEPLAT_PLATFORM_KEY": str(key_path),
            "EDGEPLAT_GITOPS_WORKDIR": str(Path(tempfile.gettempdir()) / f"edgeplat-gitops-{bucket}"),
            "EDGEPLAT_DEMO_DAGSTER_PG_URL": (
                f"postgresql+psycopg2://{user.get('user', 'postgres')}@{user.get('host', '127.0.0.1')}:"
                f"{user.get('port', '5432')}/{user['dbname']}"
            ),
            "EDGEPLAT_DEMO_VAULT_TOKEN": token,
        }


@contextmanager
def production_environment(home: Path, fleet: dict[str, Any]) -> Iterator[None]:
    """The stand-ins running and their settings in this process's environment (restored afterwards)."""
    tenants = sorted(
        {d.tenant_id for d in build_fleet(SimulationConfig(**fleet, start_ms=0))} | set(ROLLOUT_TENANTS)
    )
    saved = dict(os.environ)
    try:
        with stand_ins(home, tenants) as settings:
            os.environ.update(settings)
            dagster_home = home / "dagster"
            dagster_home.mkdir(parents=True, exist_ok=True)
            (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
            os.environ["DAGSTER_HOME"] = str(dagster_home)
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def device_key_service() -> VaultTransitKeyService:
    """STAND-IN: the simulated devices' key service, on the dev server's root token.

    A real device logs in with its own AppRole, whose policy lets it wrap data keys for its
    tenant; the simulated fleets share the root token instead (the central AppRole the
    platform runs with may only decrypt, so it cannot stand in for the devices)."""
    client = hvac.Client(url=os.environ["EDGEPLAT_VAULT_ADDR"], token=os.environ["EDGEPLAT_DEMO_VAULT_TOKEN"])
    return VaultTransitKeyService(client)


def simulation_parts(lake: Lakehouse, store: Any) -> dict[str, Any]:
    """The simulator's parts on the production stack (``simulate`` keywords)."""
    return {
        "store": store,
        "keyring": device_key_service(),
        "registry": LakehouseDeviceRegistry(lake),
        "signer": PlatformSigner.load(os.environ["EDGEPLAT_PLATFORM_KEY"]),
        "desired_records": LakehouseDesiredRecords(lake),
    }
