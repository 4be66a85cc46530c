"""Fixtures for the Vault tests: one real OpenBao dev server per test session.

``openbao`` starts the server; ``vault_admin`` provisions the platform layout on it
(transit, KV v2 at ``edgeplat``, AppRole) through ``edge_sync.vault_admin``. Tests create
their own tenant and device ids (``unique_id``) so they never see each other's state.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass

import hvac
import pytest

from edge_sync.vault_admin import VaultAdmin
from tests.support.moto_server import moto_client, running_moto_server
from tests.support.openbao_server import running_openbao
from tests.support.services import started

_counter = itertools.count()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(addr, root_token)`` of a running OpenBao dev server on loopback."""
    with started("OpenBao", running_openbao(log_dir=tmp_path_factory.mktemp("openbao"))) as server:
        yield server


@pytest.fixture(scope="session")
def root_client(openbao: tuple[str, str]) -> hvac.Client:
    addr, root_token = openbao
    return hvac.Client(url=addr, token=root_token)


@pytest.fixture(scope="session")
def vault_admin(root_client: hvac.Client) -> VaultAdmin:
    """A ``VaultAdmin`` (root token) on a server with the platform's engines enabled."""
    admin = VaultAdmin(root_client)
    admin.ensure_engines()
    return admin


@pytest.fixture
def unique_id(request: pytest.FixtureRequest):
    """Factory of ids unique within the session, readable in server logs."""
    base = request.node.name.split("[")[0].replace("test_", "")[:20].replace("_", "-").strip("-")

    def make(kind: str) -> str:
        return f"{kind}-{base}-{next(_counter)}"

    return make


class FakeClock:
    """A monotonic clock the test moves by hand: it decides when the session renews."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@dataclass(frozen=True)
class MotoIam:
    """A moto server that enforces IAM policies, and an administrator's credentials on it."""

    endpoint: str
    admin_key_id: str
    admin_secret: str

    def client(self, service: str, key_id: str | None = None, secret: str | None = None):
        return moto_client(
            self.endpoint,
            service,
            aws_access_key_id=key_id or self.admin_key_id,
            aws_secret_access_key=secret or self.admin_secret,
        )


@pytest.fixture(scope="session")
def moto_iam() -> Iterator[MotoIam]:
    """A SEPARATE moto server (the shared ``moto_server`` stays permissive) that checks every
    request's signature and IAM policies, like AWS: an admin user is created while moto still
    lets everything through, then ``/moto-api/reset-auth`` with 0 turns enforcement on (the
    server-mode form of ``INITIAL_NO_AUTH_ACTION_COUNT``)."""
    import requests

    with started("moto", running_moto_server()) as endpoint:
        iam = moto_client(endpoint, "iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="edgeplat-operator")
        iam.put_user_policy(
            UserName="edgeplat-operator",
            PolicyName="admin",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="edgeplat-operator")["AccessKey"]
        iam.close()
        answer = requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
        answer.raise_for_status()
        yield MotoIam(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
