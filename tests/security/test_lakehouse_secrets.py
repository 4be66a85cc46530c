"""The lakehouse keeps its secrets: DSN passwords out of messages, the S3 secret out of repr, data 0700.

Every message naming the catalog uses the redacted form (libpq key/value with bare or
quoted passwords, URIs with a password or a ``password`` parameter); the local lakehouse's
catalog and data folders are private to the user, since they hold every tenant's rows.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgeplat.lakehouse import Lakehouse, LakehouseConfig, LakehouseError, S3Settings, redact_catalog


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask():
    old = os.umask(0o022)  # files and folders come out 0644/0755 unless the code says otherwise
    yield
    os.umask(old)


@pytest.mark.usefixtures("usual_umask")
def test_local_lakehouse_folders_are_private(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o755)  # an existing data folder made before the fix
    lake = Lakehouse(
        LakehouseConfig(catalog=f"sqlite:{tmp_path}/cat/c.sqlite", data_path=f"{tmp_path}/data/")
    )
    lake.ensure_schema()

    def fill(con):
        con.execute(
            "INSERT INTO telemetry (tenant_id, device_id, stream, seq, hlc, node_id, ts, metric, value) "
            "SELECT 't' || (i % 2), 'd', 'telemetry', i, i, 'd', now(), 'm', i FROM range(5000) r(i)"
        )

    lake.write(fill)
    written = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert written, "the rows went to Parquet files"
    assert mode(tmp_path / "data") == 0o700 and mode(tmp_path / "cat") == 0o700
    # DuckDB creates what lies below with the umask; the closed folders above keep it from others
    for p in [*written, tmp_path / "cat" / "c.sqlite"]:
        assert any(mode(a) & 0o077 == 0 for a in p.parents if tmp_path in a.parents), p


# ----------------------------------------------------------------------------- redaction
@pytest.mark.parametrize(
    "catalog, secret",
    [
        ("postgres:postgresql://edgeplat:pw-uri-1@db.example/edgeplat", "pw-uri-1"),
        ("postgres:postgres://u:pw%40x@db/edgeplat?sslmode=require", "pw%40x"),
        ("postgres:dbname=e host=db user=u password=plain-pw-2", "plain-pw-2"),
        ("postgres:dbname=e password='quoted pw 3' host=db", "quoted pw 3"),
        ("postgres:dbname=e password = 'esc\\' pw 4' host=db", "esc\\' pw 4"),
        ("postgres:postgresql://db/e?user=u&password=param-pw-5&sslmode=require", "param-pw-5"),
        ("postgres:host=db PASSWORD=upper-pw-6", "upper-pw-6"),
    ],
)
def test_catalog_passwords_are_redacted(catalog: str, secret: str) -> None:
    redacted = redact_catalog(catalog)
    assert "***" in redacted
    for part in secret.split():
        assert part not in redacted, redacted
    assert secret not in repr(LakehouseConfig(catalog=catalog, data_path="/x"))
    assert "host" in redacted or "db" in redacted  # the rest stays readable


def test_catalog_messages_never_show_the_password(tmp_path: Path) -> None:
    with pytest.raises(LakehouseError) as bad:
        Lakehouse(LakehouseConfig(catalog="mysql://u:topsecret@h/db password='a b'", data_path="/x"))
    assert "topsecret" not in str(bad.value) and "a b" not in str(bad.value)
    # an unreachable PostgreSQL catalog: the attach error names the catalog, redacted
    for catalog in (
        "postgres:postgresql://u:uri-secret@127.0.0.1:1/db?connect_timeout=2",
        "postgres:host=127.0.0.1 port=1 connect_timeout=2 dbname=db user=u password='kv secret'",
    ):
        with pytest.raises(LakehouseError) as failed:
            Lakehouse(LakehouseConfig(catalog=catalog, data_path=f"{tmp_path}/d/")).read_only(fresh=True)
        text = str(failed.value)
        assert "cannot attach the lakehouse" in text and "***" in text
        assert "uri-secret" not in text and "kv secret" not in text


def test_s3_settings_repr_hides_the_secret() -> None:
    s3 = S3Settings(access_key_id="AKIAID", secret_access_key="s3-secret-key", session_token="s3-token")
    for text in (repr(s3), str(s3), repr(LakehouseConfig(catalog="sqlite:/c", data_path="s3://b/", s3=s3))):
        assert "s3-secret-key" not in text and "s3-token" not in text and "AKIAID" in text
