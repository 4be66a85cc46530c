"""A device rolling a peer back by writing an old signed ``desired.json``, against a moto server
that enforces the per-tenant IAM policy our code generates (``moto_iam``).

The tenant's credential cannot put any ``desired.json``; and when an old signed document
reaches the store anyway (someone with wider rights), the publisher's next revision is built
from its own record in the lakehouse, not from the store's copy.
"""

from __future__ import annotations

import json
import secrets

import pytest

from edge_sync.desired import Release, StateEdit, decode, desired_key
from edge_sync.identity import PlatformSigner
from edge_sync.objectstore_s3 import S3ObjectStore
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import STORE_RECORD_PREFIX
from edgeplat.security.storage_policy import tenant_storage_policy
from tests.support.desired import embedded_records
from tests.support.moto_server import s3_outcome

pytestmark = pytest.mark.services

T, BASE = "tenant-a", "fleet"


def test_a_device_cannot_roll_a_peer_back(moto_iam, tmp_path) -> None:
    bucket = f"fleet-{secrets.token_hex(6)}"
    moto_iam.client("s3").create_bucket(Bucket=bucket)
    iam = moto_iam.client("iam")
    user = f"tenant-{secrets.token_hex(4)}"
    iam.create_user(UserName=user)
    policy = tenant_storage_policy(bucket, T, base_prefix=BASE)
    iam.put_user_policy(UserName=user, PolicyName="tenant", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    device_s3 = moto_iam.client("s3", key["AccessKeyId"], key["SecretAccessKey"])

    store = S3ObjectStore(
        bucket,
        BASE,
        endpoint_url=moto_iam.endpoint,
        access_key_id=moto_iam.admin_key_id,
        secret_access_key=moto_iam.admin_secret,
    )
    signer = PlatformSigner.generate()
    records = embedded_records(tmp_path / "lake")  # the publisher's record: in the lakehouse
    publisher = DesiredStatePublisher(store, signer, records=records)
    publisher.set_release(T, "d1", Release(version="1.0"))
    old = store.get(desired_key(T, "d1"))
    publisher.set_release(T, "d1", Release(version="2.0"))

    # the peer d2 (same tenant credential) tries to put d1's old document back, or its own
    for device in ("d1", "d2"):
        put = lambda d=device: device_s3.put_object(  # noqa: E731
            Bucket=bucket, Key=f"{BASE}/{desired_key(T, d)}", Body=old
        )
        assert s3_outcome(put) == "AccessDenied"
    # nor the prefix older publishers kept their record in, which the migration imports from
    record = f"{BASE}/{STORE_RECORD_PREFIX}/tenant={T}/device=d1.json"
    assert s3_outcome(lambda: device_s3.put_object(Bucket=bucket, Key=record, Body=old)) == "AccessDenied"
    # what the tenant's devices need still works: read their document, upload a batch
    assert s3_outcome(lambda: device_s3.get_object(Bucket=bucket, Key=f"{BASE}/{desired_key(T, 'd1')}")) == (
        "allowed"
    )
    batch = f"{BASE}/tenant={T}/device=d2/stream=telemetry/{1:020d}-{2:020d}.batch"
    assert s3_outcome(lambda: device_s3.put_object(Bucket=bucket, Key=batch, Body=b"x")) == "allowed"

    # someone with wider rights puts the old signed document back: the publisher does not take it
    store.put(desired_key(T, "d1"), old)
    doc = publisher.add_state_edits(
        T, "d1", [StateEdit(namespace="config", key="k", field="f", value='"v"', hlc=publisher.clock.now())]
    )
    assert doc.release == Release(version="2.0") and doc.revision == 3
    seen = decode(
        store.get(desired_key(T, "d1")),
        platform_keys=signer.public_key_bytes(),
        tenant_id=T,
        device_id="d1",
        applied_revision=2,
    )
    assert seen.release == Release(version="2.0")
    # a fresh publisher process reads the same record
    assert DesiredStatePublisher(store, signer, records=records).current(T, "d1") == doc
    # the store holds no record of the publisher's at all: nothing there to replay or delete
    assert not store.list("platform/").objects
    assert records.get_many([(T, "d1")])[(T, "d1")].revision == 3
