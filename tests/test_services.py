"""tests/support/services.py: a missing service skips a test, except under CI, where it fails it."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from tests.support.services import require_service, started


@contextmanager
def _server(fail_to_start: bool):
    if fail_to_start:
        raise RuntimeError("port taken")
    yield "http://127.0.0.1:1"


def test_outside_ci_a_missing_service_skips_with_how_to_get_it(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"(?s)OpenBao is not available: gone.*make venv"):
        require_service("OpenBao", "gone")


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_under_ci_a_missing_service_fails_with_how_to_get_it(monkeypatch, value) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"(?s)PostgreSQL is not available: gone.*5432.*CI=true"):
        require_service("PostgreSQL", "gone")


def test_a_server_that_does_not_start_is_a_missing_service(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    failed = r"moto is not available: it did not start \(RuntimeError: port taken\)"
    with pytest.raises(pytest.fail.Exception, match=failed), started("moto", _server(fail_to_start=True)):
        raise AssertionError("not reached")


def test_a_started_server_is_yielded_and_later_errors_are_the_tests_own() -> None:
    with (
        pytest.raises(ValueError, match="the test's own"),
        started("moto", _server(fail_to_start=False)) as url,
    ):
        assert url == "http://127.0.0.1:1"
        raise ValueError("the test's own")
