"""Fixtures for the Vault tests: one real OpenBao dev server per test session.

``openbao`` starts the server; ``vault_admin`` provisions the platform layout on it
(transit, KV v2 at ``edgeplat``, AppRole) through ``edge_sync.vault_admin``. Tests create
their own tenant and device ids (``unique_id``) so they never see each other's state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import hvac
import pytest

from edge_sync.vault_admin import VaultAdmin
from tests.support.openbao_server import running_openbao

_counter = itertools.count()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(addr, root_token)`` of a running OpenBao dev server on loopback."""
    with running_openbao(log_dir=tmp_path_factory.mktemp("openbao")) as server:
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
