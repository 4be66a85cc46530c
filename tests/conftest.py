"""Shared fixtures. Service-backed ones: mark tests using them ``@pytest.mark.services``; a service
that cannot start skips them, or fails them under ``CI=true`` (tests/support/services.py)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from tests.support.moto_server import moto_client, running_moto_server
from tests.support.services import started

# Tests never touch a developer's ./.edgeplat: every test session gets its own state
# directory (and Dagster instance inside it), set before any test module is imported.
os.environ["EDGEPLAT_HOME"] = tempfile.mkdtemp(prefix="edgeplat-test-")
os.environ.pop("DAGSTER_HOME", None)
os.environ.pop("EDGEPLAT_ENV", None)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on loopback, one per test session (per xdist worker)."""
    with started("moto", running_moto_server()) as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(moto_server: str) -> tuple[str, str]:
    """A fresh, empty bucket on the moto server: (endpoint_url, bucket)."""
    bucket = f"test-{uuid.uuid4().hex}"
    client = moto_client(moto_server)
    client.create_bucket(Bucket=bucket)
    client.close()
    return moto_server, bucket
