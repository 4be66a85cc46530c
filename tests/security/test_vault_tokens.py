"""Device token lifecycle and device policy against a real OpenBao server.

TTLs are compressed to seconds. Sleeps let Vault's own clock move a token past its TTL or
max TTL; the session's schedule runs on a fake clock, so every renewal decision is the
test's choice and the assertions are on outcomes (which token, which error), not timings.
Each step that must come before or after one of Vault's deadlines has at least 2.5 s to
spare, so a stall of a loaded machine between two steps does not decide the outcome.
"""

from __future__ import annotations

import logging
import time

import hvac
import pytest
from hvac import exceptions as hvac_exc

from edge_sync.keys import KeyServiceError
from edge_sync.vault import DeviceRevoked, SecretAccessDenied, VaultSession, VaultUnavailable
from edge_sync.vault_admin import device_kv_path, device_role_name, shared_kv_path
from edge_sync.vault_keys import VaultTransitKeyService

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]


def _session(openbao, creds, clock, **kw) -> VaultSession:
    addr, _ = openbao
    return VaultSession(addr, *creds, clock=clock, **kw)


def test_token_is_renewed_before_expiry_and_outlives_its_first_ttl(
    openbao, vault_admin, unique_id, fake_clock
):
    tenant, device = unique_id("t"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device, token_ttl="6s", token_max_ttl="30s")
    session = _session(openbao, creds, fake_clock)
    session.ensure_token()
    # Control: a token from the same role that nobody renews.
    control = hvac.Client(url=openbao[0], token="")
    control.auth.approle.login(*creds)
    started = time.monotonic()
    accessor = session.token_accessor

    time.sleep(3.0)  # half the TTL: the renewal has 3 s to spare before the token would expire
    fake_clock.advance(3.1)  # past renew_fraction (0.5) of the 6 s TTL
    session.ensure_token()
    assert (session.logins, session.renewals, session.token_accessor) == (1, 1, accessor)

    # beyond the first TTL (the control is dead), 2.5 s within the renewed one
    time.sleep(max(0.0, 6.5 - (time.monotonic() - started)))
    with pytest.raises(hvac_exc.Forbidden):
        control.auth.token.lookup_self()
    info = session.call(lambda c: c.auth.token.lookup_self())["data"]
    assert info["accessor"] == accessor
    assert session.logins == 1, "the renewed token should still be valid, without a new login"


def test_past_max_ttl_the_session_logs_in_again(openbao, vault_admin, unique_id, fake_clock):
    tenant, device = unique_id("t"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device, token_ttl="3s", token_max_ttl="5s")
    session = _session(openbao, creds, fake_clock)
    session.ensure_token()
    first = session.token_accessor
    started = time.monotonic()

    fake_clock.advance(1.6)  # past renew_fraction (0.5) of the 3 s TTL, at once: 3 s to spare
    session.ensure_token()  # renewal granted: 3 s, or from 2 s up if capped by the 5 s max TTL
    assert session.renewals == 1 and session.logins == 1

    time.sleep(max(0.0, 5.5 - (time.monotonic() - started)))  # Vault has expired the token (max TTL)
    fake_clock.advance(1.6)  # locally not yet expired: the session tries to renew, is refused, logs in
    session.ensure_token()
    assert session.logins == 2
    assert session.token_accessor != first
    assert session.call(lambda c: c.auth.token.lookup_self())["data"]["accessor"] == session.token_accessor


def test_renewal_capped_by_max_ttl_triggers_a_fresh_login(
    openbao, vault_admin, unique_id, fake_clock, caplog
):
    tenant, device = unique_id("t"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device, token_ttl="6s", token_max_ttl="7s")
    session = _session(openbao, creds, fake_clock, renew_fraction=0.9)
    old_token = session.ensure_token().token
    first = session.token_accessor
    caplog.set_level(logging.INFO, logger="edge_sync.vault")

    # still alive (TTL 6 s, 4 s to spare), but at most 5 s of max TTL left: less than 0.9 x 6 s
    time.sleep(2.0)
    fake_clock.advance(5.7)
    session.ensure_token()
    assert (session.logins, session.renewals) == (2, 0)
    assert session.token_accessor != first
    assert session.token_ttl == 6
    assert "capped" in caplog.text
    # The old token was still valid (renewed, capped): the new login was a choice, not a rescue.
    old = hvac.Client(url=openbao[0], token=old_token)
    assert old.auth.token.lookup_self()["data"]["accessor"] == first


def test_revoked_token_is_replaced_by_a_new_login(openbao, vault_admin, unique_id, fake_clock):
    tenant, device = unique_id("t"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device, token_ttl="60s")
    session = _session(openbao, creds, fake_clock)
    session.ensure_token()
    first = session.token_accessor
    vault_admin.client.auth.token.revoke_accessor(first)

    # Between renewals, a request with the dead token is retried once after a new login.
    assert session.call(lambda c: c.auth.token.lookup_self())["data"]["accessor"] != first
    assert session.logins == 2


def test_revoked_device_is_refused_and_its_live_token_stops_working(
    openbao, vault_admin, unique_id, fake_clock
):
    tenant, device = unique_id("t"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device, token_ttl="60s")
    vault_admin.write_device_secret(tenant, device, "mqtt", {"password": "p-1"})
    session = _session(openbao, creds, fake_clock)
    assert session.read_secret(device_kv_path(tenant, device, "mqtt")) == {"password": "p-1"}
    bystander = hvac.Client(url=openbao[0], token="")
    bystander.auth.approle.login(*creds)

    assert vault_admin.revoke_device(tenant, device) == 2
    # The policy is gone too: a token missed by the accessor scan would hold no rights.
    with pytest.raises(hvac_exc.InvalidPath):
        vault_admin.client.sys.read_policy(device_role_name(tenant, device))

    with pytest.raises(hvac_exc.Forbidden):  # the live token is dead now, not one TTL later
        bystander.auth.token.lookup_self()
    with pytest.raises(DeviceRevoked, match="refused"):
        session.read_secret(device_kv_path(tenant, device, "mqtt"))
    with pytest.raises(DeviceRevoked):
        _session(openbao, creds, fake_clock).ensure_token()


def test_unreachable_vault_is_unavailable_not_revoked(openbao, vault_admin, unique_id, fake_clock):
    creds = vault_admin.enrol_device(unique_id("t"), unique_id("d"))
    session = VaultSession("http://127.0.0.1:9", *creds, clock=fake_clock, timeout=2)
    with pytest.raises(VaultUnavailable):
        session.ensure_token()


def test_enrolment_names_never_collide_across_tenants():
    # 'a' + 'b-c' vs 'a-b' + 'c', and case: Vault lower-cases policy names.
    names = {
        device_role_name("a", "b-c"),
        device_role_name("a-b", "c"),
        device_role_name("A", "b"),
        device_role_name("a", "b"),
        device_role_name("a.b", "c"),
        device_role_name("a", "b.c"),
        device_role_name("a_d", "c"),
    }
    assert len(names) == 7
    with pytest.raises(ValueError, match="tenant id"):
        device_role_name("a/b", "c")


def test_device_policy_allows_only_its_own_paths_and_key(openbao, vault_admin, unique_id, fake_clock):
    tenant, other_tenant = unique_id("t"), unique_id("t")
    device, other_device = unique_id("d"), unique_id("d")
    vault_admin.ensure_tenant(other_tenant)
    creds = vault_admin.enrol_device(tenant, device, token_ttl="60s")
    vault_admin.write_device_secret(tenant, device, "own", {"v": "own"})
    vault_admin.write_shared_secret(tenant, "fleet", {"v": "shared"})
    vault_admin.write_device_secret(tenant, other_device, "own", {"v": "neighbour"})
    vault_admin.write_device_secret(other_tenant, device, "own", {"v": "other tenant, same device id"})
    vault_admin.write_shared_secret(other_tenant, "fleet", {"v": "other tenant shared"})
    session = _session(openbao, creds, fake_clock)

    assert session.read_secret(device_kv_path(tenant, device, "own")) == {"v": "own"}
    assert session.read_secret(shared_kv_path(tenant, "fleet")) == {"v": "shared"}
    for path in (
        device_kv_path(tenant, other_device, "own"),
        device_kv_path(other_tenant, device, "own"),
        shared_kv_path(other_tenant, "fleet"),
    ):
        with pytest.raises(SecretAccessDenied):
            session.read_secret(path)

    keys = VaultTransitKeyService(session)
    own_key = keys.generate_data_key(tenant)
    with pytest.raises(KeyServiceError) as denied:
        keys.generate_data_key(other_tenant)
    assert denied.value.reason == "permission_denied"
    with pytest.raises(KeyServiceError) as no_decrypt:
        keys.unwrap(tenant, own_key.key_id, own_key.wrapped)
    assert no_decrypt.value.reason == "permission_denied"
    with pytest.raises(hvac_exc.Forbidden):
        session.call(
            lambda c: c.secrets.transit.decrypt_data(
                f"tenant-{tenant}", own_key.wrapped.decode(), mount_point="transit"
            )
        )
    assert session.logins == 1, "policy denials must not look like a dead token"
