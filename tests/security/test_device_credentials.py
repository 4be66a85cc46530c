"""The device's S3 credentials from the AWS IoT credentials provider (edge_sync.iot_credentials),
against a loopback DOUBLE of the provider (tests/support/iot_credentials_double.py: mutual TLS,
the documented request and answer) and moto S3.

The device role's policy names ``${credentials-iot:ThingName}``; moto evaluates no policy
variables or conditions, so where the policy-enforcing moto server is used the double mints keys
whose policy has the variable substituted as IAM would, and the proof that the generated policy
itself refuses a sibling's prefix is the checker's (tests/security/test_device_scopes.py).
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import secrets
import ssl
import time
from datetime import timedelta
from pathlib import Path

import pytest

from edge_sync.config import ConfigError, iot_store, parse_config
from edge_sync.iot_credentials import IotCredentialsError, IotCredentialSource, IotCredentialsProvider
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore_s3 import S3ObjectStore
from edgeplat.security.device_scopes import device_role_policy, role_alias_name
from tests.support.device import agent_on
from tests.support.iot_credentials_double import IotCredentialsProviderDouble, substituted
from tests.support.moto_server import moto_client, s3_outcome
from tests.support.tls_certs import TestPki

pytestmark = pytest.mark.services

TENANT, DEVICE = "t1", "d1"
ALIAS = role_alias_name(TENANT)
MOTO_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
}


def _dummy_issue(alias: str, thing: str | None) -> tuple[str, str, str]:
    return f"ASIA{secrets.token_hex(8).upper()}", secrets.token_hex(20), secrets.token_hex(32)


def _provider(pki: TestPki, url: str, cn: str = DEVICE, thing: str = DEVICE, **kw) -> IotCredentialsProvider:
    cert, key = pki.client(cn)
    return IotCredentialsProvider(url, ALIAS, thing, cert_path=cert, key_path=key, ca_path=pki.ca, **kw)


def _store(provider: IotCredentialsProvider, endpoint: str, bucket: str, refresh_before_s: float = 300.0):
    return IotCredentialSource(provider, refresh_before_s).store(
        f"s3://{bucket}", endpoint_url=endpoint, region="us-east-1", max_attempts=1
    )


def test_the_agent_uploads_with_credentials_refreshed_before_expiry(moto_iam, tmp_path: Path) -> None:
    """Each credential the double issues is a moto STS session of a fresh role whose policy is the
    generated device role policy for the calling thing; issuing one strips the previous role's
    policy, so a sync after the refresh succeeds only with the refreshed credentials."""
    bucket = f"fleet-{secrets.token_hex(6)}"
    moto_iam.client("s3").create_bucket(Bucket=bucket)
    iam = moto_iam.client("iam")
    sts = moto_iam.client("sts")
    roles: list[str] = []
    serial = itertools.count()

    def issue(alias: str, thing: str | None) -> tuple[str, str, str]:
        role = f"iot-{thing}-{next(serial)}"
        # moto's AssumeRole fails (500) on a Service principal, so the double's role trusts the
        # account that assumes it here; trust_policy() itself is the checker's to prove
        made = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(MOTO_TRUST))
        arn = made["Role"]["Arn"]
        policy = substituted(device_role_policy(bucket, TENANT), thing)
        iam.put_role_policy(RoleName=role, PolicyName="device-role", PolicyDocument=json.dumps(policy))
        for old in roles:  # earlier credentials lose every permission
            iam.delete_role_policy(RoleName=old, PolicyName="device-role")
        roles[:] = [role]
        creds = sts.assume_role(RoleArn=arn, RoleSessionName=str(thing))["Credentials"]
        return creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]

    pki = TestPki(tmp_path / "pki")
    refresh_before_s = 30.0
    double = IotCredentialsProviderDouble(pki, issue, lifetime=timedelta(seconds=refresh_before_s + 2))
    double.register(DEVICE, DEVICE, ALIAS)
    with double.serve() as url:
        store = _store(_provider(pki, url), moto_iam.endpoint, bucket, refresh_before_s)
        agent, _ = agent_on(tmp_path, TENANT, DEVICE, LocalKeyring(tmp_path / "keys"), store=store)
        try:
            agent.record("telemetry", {"metric": "cpu", "value": 0.5})
            first = agent.sync_once()
            assert first.ok, first.errors
            assert len(double.issued) == 1
            time.sleep(2.5)  # into the refresh window: less than refresh_before_s left
            agent.record("telemetry", {"metric": "cpu", "value": 0.7})
            second = agent.sync_once()
            assert second.ok, second.errors
        finally:
            agent.close()
            store.close()
        # with the variable substituted for this thing, its key reaches no sibling (moto enforcing)
        creds = IotCredentialSource(_provider(pki, url)).credentials.get_frozen_credentials()
    # refreshed before the first credentials expired, and the upload used the new ones
    assert len(double.issued) >= 3
    assert double.issued[1].at < double.issued[0].expiration
    assert double.issued[-1].thing_name == DEVICE
    listed = moto_iam.client("s3").list_objects_v2(Bucket=bucket)["Contents"]
    batches = [o["Key"] for o in listed if o["Key"].endswith(".batch")]
    assert len(batches) == 2 and all(k.startswith(f"tenant={TENANT}/device={DEVICE}/") for k in batches)
    s3 = moto_client(
        moto_iam.endpoint,
        "s3",
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
    )
    put = lambda key: lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"x")  # noqa: E731
    assert s3_outcome(put(f"tenant={TENANT}/device={DEVICE}/stream=logs/x.batch")) == "allowed"
    assert s3_outcome(put(f"tenant={TENANT}/device=d2/stream=logs/x.batch")) == "AccessDenied"
    assert s3_outcome(put(f"tenant=t2/device={DEVICE}/stream=logs/x.batch")) == "AccessDenied"
    assert s3_outcome(lambda: s3.list_objects_v2(Bucket=bucket)) == "AccessDenied"


def test_the_provider_requires_the_device_certificate_and_its_own_thing(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    double = IotCredentialsProviderDouble(pki, _dummy_issue)
    double.register(DEVICE, DEVICE, ALIAS)
    with double.serve() as url:
        # no client certificate: the TLS handshake is refused before any HTTP
        port = int(url.rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, context=ssl.create_default_context(cafile=str(pki.ca)), timeout=5
        )
        with pytest.raises(OSError):
            conn.request(
                "GET", f"/role-aliases/{ALIAS}/credentials", headers={"x-amzn-iot-thingname": DEVICE}
            )
            conn.getresponse().read()
        conn.close()
        # a certificate from another CA: refused the same way, and the error says where and what to check
        stranger = TestPki(tmp_path / "other-pki")
        cert, key = stranger.client(DEVICE)
        foreign = IotCredentialsProvider(url, ALIAS, DEVICE, cert_path=cert, key_path=key, ca_path=pki.ca)
        with pytest.raises(IotCredentialsError, match="unreachable.*certificate"):
            foreign.fetch()
        # the device's certificate naming a sibling's thing: refused by the provider
        with pytest.raises(
            IotCredentialsError, match=r"refused thing 'd2' \(403: Invalid thing name passed\)"
        ):
            _provider(pki, url, thing="d2").fetch()
        # a certificate whose IoT policy does not allow the alias
        with pytest.raises(IotCredentialsError, match=r"403: Access Denied.*iot:AssumeRoleWithCertificate"):
            _provider(pki, url, cn="d9", thing="d9").fetch()
        assert double.issued == []
        fresh = _provider(pki, url).fetch()
        assert set(fresh) == {"access_key", "secret_key", "token", "expiry_time"}
        assert double.issued[0].thing_name == DEVICE


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, b'{"message": "Access Denied"}', r"refused thing 'd1' \(403: Access Denied\)"),
        (200, b"<html>not json</html>", "answered without usable credentials"),
        (200, b'{"credentials": {"accessKeyId": "A"}}', "answered without usable credentials"),
        (
            200,
            b'{"credentials": {"accessKeyId": "A", "secretAccessKey": "s", "sessionToken": "t", '
            b'"expiration": "tomorrow"}}',
            "answered without usable credentials",
        ),
        (
            200,
            b'{"credentials": {"accessKeyId": "A", "secretAccessKey": "s", "sessionToken": "t", '
            b'"expiration": "2001-01-01T00:00:00Z"}}',
            r"before this device's clock .*check the device clock",
        ),
    ],
)
def test_provider_errors_are_clear_and_the_agent_records_offline_until_it_answers(
    s3_bucket, tmp_path: Path, status: int, body: bytes, expected: str
) -> None:
    endpoint, bucket = s3_bucket
    pki = TestPki(tmp_path / "pki")
    double = IotCredentialsProviderDouble(pki, _dummy_issue)
    double.register(DEVICE, DEVICE, ALIAS)
    double.fail_next = [(status, body)] * 2
    with double.serve() as url:
        store = _store(_provider(pki, url), endpoint, bucket)
        agent, _ = agent_on(tmp_path, TENANT, DEVICE, LocalKeyring(tmp_path / "keys"), store=store)
        try:
            agent.record("logs", {"level": "info", "message": "before"})
            report = agent.sync_once()
            assert report.offline and not agent.online
            assert any("no current credentials" in e for e in report.errors), report.errors
            assert any(re.search(expected, e) for e in report.errors), report.errors
            agent.record("logs", {"level": "info", "message": "while refused"})  # recording goes on
            assert agent.sync_once().offline
            healed = agent.sync_once()
            assert healed.ok and agent.online, healed.errors
            assert healed.streams["logs"].rows_sent == 2  # both rows, the one recorded while refused too
        finally:
            agent.close()
            store.close()
    listed = S3ObjectStore(
        bucket, endpoint_url=endpoint, access_key_id="testing", secret_access_key="testing"
    )
    try:
        batches = listed.list(f"tenant={TENANT}/device={DEVICE}/").objects
    finally:
        listed.close()
    assert batches and double.issued


def test_device_toml_selects_the_iot_credentials_and_refuses_what_cannot_work(tmp_path: Path) -> None:
    base = {
        "tenant_id": TENANT,
        "device_id": DEVICE,
        "cache_path": "cache.db",
        "identity_path": "identity.json",
        "platform_public_key_path": "platform.pub",
        "cache_key": {"source": "file", "path": "cache.key"},
        "keys": {"source": "local", "keyring_dir": "keyring"},
    }
    pki = TestPki(tmp_path / "pki")
    cert, key = pki.client(DEVICE)
    iot = {
        "endpoint": "https://127.0.0.1:9",
        "role_alias": ALIAS,
        "cert_path": str(cert),
        "key_path": "device.key",
        "refresh_before_s": 120,
    }
    store_section = {"url": "s3://fleet/batches", "credentials": "iot", "iot": iot}
    config = parse_config({**base, "object_store": store_section}, base=tmp_path)
    assert config.object_store.iot.key_path == tmp_path / "device.key"  # relative paths resolved
    config.object_store.iot.key_path = key
    store = iot_store(config)  # builds offline: nothing is fetched until the first request
    try:
        assert store.url == "s3://fleet/batches/"
    finally:
        store.close()
    with pytest.raises(ConfigError, match=r"\[object_store.iot\] section"):
        parse_config({**base, "object_store": {"url": "s3://fleet", "credentials": "iot"}})
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        parse_config({**base, "object_store": {**store_section, "url": "/srv/store"}})
    with pytest.raises(ConfigError, match="thing name"):
        parse_config({**base, "device_id": "dev.1", "object_store": store_section})
    with pytest.raises(ConfigError, match="role_alias"):
        parse_config({**base, "object_store": {**store_section, "iot": {**iot, "role_alias": "a/b"}}})
