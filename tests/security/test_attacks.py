"""The attack table: each attack tried for real, with the refusal it must get.

Batch attacks go through the real central ingest (``edgeplat.sync.ingest.ingest_objects``)
with a good batch of another device in the same run, which must still be ingested
(ARCHITECTURE invariant 5: quarantined with a reason, the rest of the run goes on).
Desired-state attacks go through the device's decoder (``edge_sync.desired.decode``).
The local keyring stands in for Vault here (same ``KeyService`` reasons, see
test_transit_ingest.py for the transit path), so this module needs no server.

Run with ``-s`` to print the table (attack, expected, observed) as markdown; the same
table is in docs/security.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import zstandard

from edge_sync import desired
from edge_sync.batch import FORMAT_VERSION, MAX_MANIFEST_BYTES, write_batch
from edge_sync.batch_encoding import encode_table
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.objectstore import LocalObjectStore
from edge_sync.streams import STREAMS
from edgeplat.sync.ingest import ingest_objects
from tests.support import poison
from tests.support.batches import OtherTenantKeys, seal
from tests.support.fleet import Fleet, rows

T, OTHER, RETIRED = "tenant-a", "tenant-b", "tenant-r"
RESULTS: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def attack_table():
    """Print the collected table once the module's attacks ran (visible with ``pytest -s``)."""
    yield
    if RESULTS:
        lines = ["| attack | expected refusal | observed |", "|---|---|---|"]
        lines += [f"| {a} | `{e}` | `{o}` |" for a, e, o in sorted(RESULTS)]
        print("\n\n" + "\n".join(lines) + "\n")


def forge(
    fleet: Fleet,
    tenant: str,
    device: str,
    seqs: range,
    *,
    changes: dict | None = None,
    signer: DeviceIdentity | None = None,
    version: int = FORMAT_VERSION,
    announced_length: int | None = None,
    payload: bytes | None = None,
) -> tuple[str, bytes]:
    """A batch built by hand like ``write_batch`` does, with chosen manifest fields, signer and header.

    The payload is encrypted under a real data key of ``tenant`` so only the attacked check fails.
    """
    spec = STREAMS["telemetry"]
    table = rows("telemetry", tenant, device, list(seqs))
    payload = encode_table(table, spec, device) if payload is None else payload
    dk = fleet.keys.generate_data_key(tenant)
    signer = signer or fleet.device(tenant, device)
    manifest = {
        "format_version": FORMAT_VERSION,
        "tenant_id": tenant,
        "device_id": device,
        "stream": "telemetry",
        "schema_fingerprint": spec.fingerprint,
        "first_seq": seqs[0],
        "last_seq": seqs[-1],
        "row_count": len(seqs),
        "hlc_min": min(table.column("hlc").to_pylist()),
        "hlc_max": max(table.column("hlc").to_pylist()),
        "evictions": [],
        "signer_key_id": signer.key_id,
        "created_ms": fleet.clock(),
    }
    data = seal(
        manifest, payload, dk, signer, changes=changes, version=version, announced_length=announced_length
    )
    named = manifest | (changes or {})
    key = (
        f"tenant={named['tenant_id']}/device={named['device_id']}/stream=telemetry/"
        f"{named['first_seq']:020d}-{named['last_seq']:020d}.batch"
    )
    return key, data


# ----------------------------------------------------------------------------- batch attacks
# Each builds its object in the fleet's store and returns its key; the ingest must quarantine it.
def forged_signature(f: Fleet, d: str) -> str:
    f.device(T, d)  # the registered key
    impostor = DeviceIdentity.generate(T, d)  # same ids, a key nobody registered
    key, data = forge(f, T, d, range(1, 11), signer=impostor)
    f.store.put(key, data)
    return key


def another_tenants_path(f: Fleet, d: str) -> str:
    b = f.batch(T, d, "telemetry", range(1, 11))
    f.device(OTHER, d)  # tenant B has a device of the same id: the path is plausible
    return f.upload(b, key=b.key.replace(f"tenant={T}/", f"tenant={OTHER}/"))


def replay_under_new_name(f: Fleet, d: str) -> str:
    old = f.batch(T, d, "telemetry", range(1, 11))
    f.upload(old)
    assert ingest_objects(f.env(), [old.key]).accepted == 1
    # the same signed bytes again, named as the next seq range to slip past the ledger
    return f.upload(
        old,
        key=old.key.replace(
            "00000000000000000001-00000000000000000010", "00000000000000000011-00000000000000000020"
        ),
    )


def resent_range_altered(f: Fleet, d: str) -> str:
    old = f.batch(T, d, "telemetry", range(1, 11))
    f.upload(old)
    assert ingest_objects(f.env(), [old.key]).accepted == 1
    # a new, validly signed batch re-claiming ingested seqs with other content (a device rewriting history)
    return f.upload(f.batch(T, d, "telemetry", range(5, 13), salt="rewritten"))


def downgraded_version(f: Fleet, d: str) -> str:
    b = f.batch(T, d, "telemetry", range(1, 11))
    data = bytearray(b.data)
    data[4] = 0  # the version byte after b"EDGB"
    return f.upload(b, data=bytes(data))


def downgraded_version_resigned(f: Fleet, d: str) -> str:
    # The device itself (stolen) signs a version-0 header: the signature verifies, the version still does not.
    key, data = forge(f, T, d, range(1, 11), version=0)
    f.store.put(key, data)
    return key


def decompression_bomb(f: Fleet, d: str) -> str:
    # The device (stolen) signs a payload whose zstd frame declares 4 GiB: refused before decompressing.
    frame = b"\x28\xb5\x2f\xfd" + bytes([0xC0, 0x58]) + (4 << 30).to_bytes(8, "little") + bytes([1, 0, 0])
    key, data = forge(f, T, d, range(1, 11), payload=frame)
    f.store.put(key, data)
    return key


def deeply_nested_manifest(f: Fleet, d: str) -> str:
    # Any device of the tenant can write its prefix: 40 KB of nested brackets in a valid header.
    key = poison.object_key(T, d)
    f.store.put(key, poison.deep_field_manifest(T, d))
    return key


def parquet_amplification(f: Fleet, d: str) -> str:
    # The device signs a few hundred bytes of Parquet whose RLE runs declare 200 Mi rows.
    changes = {"row_count": poison.AMPLIFIED_ROWS}
    key, data = forge(f, T, d, range(1, 11), changes=changes, payload=poison.parquet_amplification())
    f.store.put(key, data)
    return key


def unknown_codec_in_footer(f: Fleet, d: str) -> str:
    # One byte of the footer names compression codec 28: pyarrow's metadata objects used to
    # abort the whole ingest process on it.
    table = rows("telemetry", T, d, range(1, 11))
    parquet = zstandard.ZstdDecompressor().decompress(encode_table(table, STREAMS["telemetry"], d))
    payload = zstandard.ZstdCompressor(write_content_size=True).compress(poison.unknown_codec(parquet))
    key, data = forge(f, T, d, range(1, 11), changes={}, payload=payload)
    f.store.put(key, data)
    return key


def lying_page_header(f: Fleet, d: str) -> str:
    # A format-1 payload (zstd inside each page) whose first page header claims 2 GiB.
    table = rows("telemetry", T, d, range(1, 11))
    payload = poison.lying_page(poison.format1(encode_table(table, STREAMS["telemetry"], d)))
    key, data = forge(f, T, d, range(1, 11), changes={}, payload=payload)
    f.store.put(key, data)
    return key


def oversized_manifest(f: Fleet, d: str) -> str:
    key, data = forge(f, T, d, range(1, 11), changes={"padding": "x" * (MAX_MANIFEST_BYTES + 1)})
    f.store.put(key, data)
    return key


def oversized_manifest_announced(f: Fleet, d: str) -> str:
    # A small object whose header announces a 4 GiB manifest: refused before any allocation or parsing.
    key, data = forge(f, T, d, range(1, 11), announced_length=2**32 - 1)
    f.store.put(key, data)
    return key


def traversal_in_manifest_tenant(f: Fleet, d: str) -> str:
    _, data = forge(f, T, d, range(1, 11), changes={"tenant_id": "../tenant-b"})
    key = f"tenant={T}/device={d}/stream=telemetry/{1:020d}-{10:020d}.batch"
    f.store.put(key, data)
    return key


def traversal_in_manifest_device(f: Fleet, d: str) -> str:
    _, data = forge(f, T, d, range(1, 11), changes={"device_id": f"{d}/../../victim"})
    key = f"tenant={T}/device={d}/stream=telemetry/{1:020d}-{10:020d}.batch"
    f.store.put(key, data)
    return key


def traversal_in_object_key(f: Fleet, d: str) -> str:
    b = f.batch(T, d, "telemetry", range(1, 11))
    # 'tenant=..' is a legal file name (a bare '..' segment is refused by the store), not a legal id
    return f.upload(b, key=b.key.replace(f"tenant={T}/", "tenant=../"))


def other_devices_identity(f: Fleet, d: str) -> str:
    f.device(T, d + "-victim")
    # d's real key signs a batch claiming to be the victim device's
    key, data = forge(f, T, d + "-victim", range(1, 11), signer=f.device(T, d))
    f.store.put(key, data)
    return key


def other_tenants_device_identity(f: Fleet, d: str) -> str:
    f.device(T, d)
    # tenant B's device of the same id signs a batch claiming tenant A's device
    key, data = forge(f, T, d, range(1, 11), signer=f.device(OTHER, d))
    f.store.put(key, data)
    return key


def other_tenants_key(f: Fleet, d: str) -> str:
    return f.upload(f.batch(T, d, "telemetry", range(1, 11), key_service=OtherTenantKeys(f.keys, OTHER)))


def relabelled_key_id(f: Fleet, d: str) -> str:
    # B's wrapped data key, relabelled with A's key id (a device signs whatever manifest it likes)
    dk = f.keys.generate_data_key(OTHER)
    key, data = forge(
        f,
        T,
        d,
        range(1, 11),
        changes={"key_id": f"local:{T}:v1", "wrapped_key": base64.b64encode(dk.wrapped).decode()},
    )
    f.store.put(key, data)
    return key


def flipped_ciphertext_bit(f: Fleet, d: str) -> str:
    b = f.batch(T, d, "telemetry", range(1, 11))
    data = bytearray(b.data)
    data[len(data) - 80] ^= 1  # inside the ciphertext, before the signature
    return f.upload(b, data=bytes(data))


def truncated_upload(f: Fleet, d: str) -> str:
    b = f.batch(T, d, "telemetry", range(1, 11))
    return f.upload(b, data=b.data[:-200])


def revoked_device_key(f: Fleet, d: str) -> str:
    b = f.batch(T, d, "telemetry", range(1, 11))
    f.registry.revoke(T, d, f.device(T, d).key_id)
    return f.upload(b)


def unregistered_device(f: Fleet, d: str) -> str:
    b = write_batch(
        rows("telemetry", T, d, range(1, 11)),
        tenant_id=T,
        device_id=d,
        stream="telemetry",
        key_service=f.keys,
        identity=DeviceIdentity.generate(T, d),
    )
    return f.upload(b)


def retired_key_version(f: Fleet, d: str) -> str:
    tenant = RETIRED  # its own tenant: retiring v1 must not touch the other attacks' batches
    b = f.batch(tenant, d, "telemetry", range(1, 11))
    f.keys.rotate(tenant)
    f.keys.set_min_decryption_version(tenant, 2)
    return f.upload(b)


@dataclass(frozen=True)
class BatchAttack:
    name: str
    build: Callable[[Fleet, str], str]
    expected: str

    @property
    def device(self) -> str:
        return "dev-" + self.build.__name__.replace("_", "-")


BATCH_ATTACKS = [
    BatchAttack("forged signature (key not registered for the device)", forged_signature, "bad_signature"),
    BatchAttack(
        "another tenant's path (A's batch under tenant B's prefix)", another_tenants_path, "path_mismatch"
    ),
    BatchAttack("replay of an old batch under a new name", replay_under_new_name, "path_mismatch"),
    BatchAttack("ingested seq range re-sent with other content", resent_range_altered, "replay_conflict"),
    BatchAttack("downgraded format version byte", downgraded_version, "unsupported_version"),
    BatchAttack(
        "downgraded version, re-signed by the device", downgraded_version_resigned, "unsupported_version"
    ),
    BatchAttack("oversized manifest (64 KiB + 1)", oversized_manifest, "oversized_manifest"),
    BatchAttack(
        "payload zstd frame declaring 4 GiB, signed by the device", decompression_bomb, "corrupt_payload"
    ),
    BatchAttack("deeply nested manifest (20 000 levels, 40 KB)", deeply_nested_manifest, "bad_manifest"),
    BatchAttack(
        "Parquet dictionary/RLE runs declaring 200 Mi rows, signed by the device",
        parquet_amplification,
        "corrupt_payload",
    ),
    BatchAttack(
        "Parquet footer naming an unknown compression codec (aborted pyarrow), signed by the device",
        unknown_codec_in_footer,
        "corrupt_payload",
    ),
    BatchAttack(
        "format-1 page header claiming 2 GiB uncompressed, signed by the device",
        lying_page_header,
        "corrupt_payload",
    ),
    BatchAttack(
        "oversized manifest announced in the header (4 GiB)",
        oversized_manifest_announced,
        "oversized_manifest",
    ),
    BatchAttack(
        "path traversal in manifest tenant id ('../tenant-b')", traversal_in_manifest_tenant, "bad_manifest"
    ),
    BatchAttack(
        "path traversal in manifest device id ('<d>/../../victim')",
        traversal_in_manifest_device,
        "bad_manifest",
    ),
    BatchAttack("path traversal in object key ('tenant=..')", traversal_in_object_key, "path_mismatch"),
    BatchAttack("one device's identity used for another device", other_devices_identity, "bad_signature"),
    BatchAttack(
        "tenant B's device identity used for tenant A's device of the same id",
        other_tenants_device_identity,
        "bad_signature",
    ),
    BatchAttack("data key wrapped under another tenant's key", other_tenants_key, "tenant_mismatch"),
    BatchAttack(
        "another tenant's wrapped key relabelled with own key id", relabelled_key_id, "decryption_failure"
    ),
    BatchAttack("ciphertext bit flipped after signing", flipped_ciphertext_bit, "bad_signature"),
    BatchAttack("truncated upload", truncated_upload, "truncated"),
    BatchAttack("revoked device key", revoked_device_key, "unknown_device"),
    BatchAttack("unregistered device", unregistered_device, "unknown_device"),
    BatchAttack("key version retired by min_decryption_version", retired_key_version, "decryption_failure"),
]
PRE_INGESTED = {replay_under_new_name, resent_range_altered}  # their attacks need seqs 1..10 ingested first


@dataclass
class AttackRun:
    fleet: Fleet
    keys: dict[str, str]  # attack function name -> object key
    quarantined: dict[str, str]  # object key -> reason
    report: object
    rows: dict[tuple[str, str], int]  # (tenant, device) -> telemetry rows after the run


@pytest.fixture(scope="module")
def attack_run(tmp_path_factory) -> AttackRun:
    """Every batch attack's object, plus two bystanders' good batches, through ONE ingest run."""
    fleet = Fleet(tmp_path_factory.mktemp("attacks"))
    keys = {a.build.__name__: a.build(fleet, a.device) for a in BATCH_ATTACKS}
    bystanders = [
        fleet.upload(fleet.batch(T, "bystander", "telemetry", range(1, 6))),
        fleet.upload(fleet.batch(OTHER, "bystander", "telemetry", range(1, 4))),
    ]
    report = ingest_objects(fleet.env(), [*bystanders, *keys.values()])
    with fleet.lake.session(read_only=True) as con:
        quarantined = dict(con.execute("SELECT object_key, reason FROM quarantine").fetchall())
        counts = {
            (t, d): n
            for t, d, n in con.execute(
                "SELECT tenant_id, device_id, count(*) FROM telemetry GROUP BY ALL"
            ).fetchall()
        }
    return AttackRun(fleet, keys, quarantined, report, counts)


@pytest.mark.parametrize("attack", BATCH_ATTACKS, ids=lambda a: a.build.__name__)
def test_batch_attack_is_quarantined_with_its_reason(attack: BatchAttack, attack_run: AttackRun) -> None:
    key = attack_run.keys[attack.build.__name__]
    observed = attack_run.quarantined.get(key, "ingested!")
    RESULTS.append((attack.name, attack.expected, observed))
    assert observed == attack.expected
    # nothing of the attacker's object reached a table
    expected_rows = 10 if attack.build in PRE_INGESTED else 0
    assert sum(n for (_, d), n in attack_run.rows.items() if d.startswith(attack.device)) == expected_rows


def test_the_run_goes_on_past_every_attack(attack_run: AttackRun) -> None:
    report = attack_run.report
    assert report.accepted == 2, "both bystanders' good batches are ingested in the same run"
    assert sum(report.quarantined.values()) == len(BATCH_ATTACKS)
    assert attack_run.rows[(T, "bystander")] == 5 and attack_run.rows[(OTHER, "bystander")] == 3
    # tenant B holds only its bystander's rows: no attack moved data into it
    assert [k for k in attack_run.rows if k[0] == OTHER] == [(OTHER, "bystander")]
    assert sum(attack_run.rows.values()) == 5 + 3 + 10 * len(PRE_INGESTED)


def test_replay_under_its_own_name_changes_nothing(attack_run: AttackRun) -> None:
    fleet = attack_run.fleet
    device = next(a.device for a in BATCH_ATTACKS if a.build is replay_under_new_name)
    key = next(k for k in attack_run.keys.values() if f"device={device}/" in k).replace(
        "00000000000000000011-00000000000000000020", "00000000000000000001-00000000000000000010"
    )
    fleet.store.put(key, fleet.store.get(key))  # the same bytes put again (a retry, or an attacker)
    again = ingest_objects(fleet.env(), [key])
    after = fleet.count("SELECT count(*) FROM telemetry WHERE device_id = ?", [device])[0][0]
    settled = again.skipped_settled == 1 and again.accepted == 0 and after == 10
    observed = "skipped (already settled)" if settled else f"changed: {again.as_dict()}"
    RESULTS.append(("replay of an old batch under its own name", "skipped (already settled)", observed))
    assert observed == "skipped (already settled)"


def test_object_key_with_a_dot_dot_segment_is_refused_by_the_store(tmp_path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(ValueError, match="'..' segment") as err:
        store.put(f"tenant={T}/../tenant={OTHER}/device=d1/stream=telemetry/x.batch", b"EDGB")
    observed = "store refuses the key" if "'..' segment" in str(err.value) else str(err.value)
    RESULTS.append(("path traversal in object key ('/../' segment)", "store refuses the key", observed))
    assert not any(tmp_path.rglob("x.batch"))


# ----------------------------------------------------------------------------- desired-state attacks
@pytest.fixture
def platform() -> PlatformSigner:
    return PlatformSigner.generate()


def _doc(**over) -> desired.DesiredState:
    base = {
        "tenant_id": T,
        "device_id": "d1",
        "revision": 5,
        "issued_hlc": 1,
        "release": desired.Release(version="2.0.0", slot="b"),
    }
    return desired.DesiredState(**(base | over))


def tampered_release(platform: PlatformSigner) -> bytes:
    signed = json.loads(desired.encode(_doc(), platform))
    signed["document"]["release"]["version"] = "6.6.6-evil"
    return json.dumps(signed).encode()


def signed_by_another_key(platform: PlatformSigner) -> bytes:
    return desired.encode(_doc(), PlatformSigner.generate())


def signature_stripped(platform: PlatformSigner) -> bytes:
    signed = json.loads(desired.encode(_doc(), platform))
    signed["signature"] = base64.b64encode(bytes(64)).decode()
    return json.dumps(signed).encode()


def replayed_old_revision(platform: PlatformSigner) -> bytes:
    return desired.encode(_doc(revision=3), platform)  # validly signed, but older than the applied 4


def for_another_device(platform: PlatformSigner) -> bytes:
    return desired.encode(_doc(device_id="d2"), platform)


def for_another_tenant(platform: PlatformSigner) -> bytes:
    return desired.encode(_doc(tenant_id=OTHER), platform)


def traversal_device_id(platform: PlatformSigner) -> bytes:
    return desired.encode(_doc(device_id="../d1"), platform)


def oversized_document(platform: PlatformSigner) -> bytes:
    return desired.encode(
        _doc(
            state_edits=[
                desired.StateEdit(namespace="config", key="k", field=f"f{i}", value="x" * 1000, hlc=1)
                for i in range(1200)
            ]
        ),
        platform,
    )


def deeply_nested_document(platform: PlatformSigner) -> bytes:
    return b'{"document": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"


DESIRED_ATTACKS = [
    ("tampered desired-state document (release changed after signing)", tampered_release, "bad_signature"),
    ("desired state signed by a key other than the platform's", signed_by_another_key, "bad_signature"),
    ("desired state with a zeroed signature", signature_stripped, "bad_signature"),
    ("replayed older desired-state revision", replayed_old_revision, "stale_revision"),
    ("desired state of another device", for_another_device, "wrong_device"),
    ("desired state of another tenant's device of the same id", for_another_tenant, "wrong_device"),
    ("path traversal in desired-state device id ('../d1')", traversal_device_id, "wrong_device"),
    ("oversized desired-state document (> 1 MiB)", oversized_document, "oversized"),
    ("deeply nested desired-state document (20 000 levels)", deeply_nested_document, "bad_json"),
]


@pytest.mark.parametrize(
    "name, build, expected", DESIRED_ATTACKS, ids=[b.__name__ for _, b, _ in DESIRED_ATTACKS]
)
def test_desired_state_attack_is_refused(name: str, build, expected: str, platform: PlatformSigner) -> None:
    data = build(platform)
    # control: the genuine document for this device decodes
    assert (
        desired.decode(
            desired.encode(_doc(), platform),
            platform_keys=platform.public_key_bytes(),
            tenant_id=T,
            device_id="d1",
            applied_revision=4,
        ).release.version
        == "2.0.0"
    )
    with pytest.raises(desired.DesiredStateError) as err:
        desired.decode(
            data, platform_keys=platform.public_key_bytes(), tenant_id=T, device_id="d1", applied_revision=4
        )
    RESULTS.append((name, expected, err.value.reason))
    assert err.value.reason == expected


def test_desired_state_key_refuses_traversal_ids() -> None:
    for tenant, device in (("../x", "d1"), (T, "../x"), (T, "a/b"), ("t=1", "d")):
        with pytest.raises(ValueError, match="invalid (tenant|device) id"):
            desired.desired_key(tenant, device)
