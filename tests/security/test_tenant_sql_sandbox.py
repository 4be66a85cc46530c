"""``edgeplat sql --tenant``: escapes from the tenant session, refused twice over.

A lakehouse with two tenants (every table filled for both, tenant B's text values marked
``B-SECRET``), the analysts' views, an S3 secret on the lakehouse connection (a canary) and
files on disk the process can read (CSV, JSON, Parquet, text with a marker). A generated
family of escape queries (every table function and system view DuckDB lists, file paths and
globs in every position a table can stand, CTE/subquery/UNION/lateral scopes, SHOW, DESCRIBE,
SUMMARIZE, PIVOT, non-SELECT statements) must be refused by the query check, **and**, run
straight in the sandbox without the check, fail or show nothing but the tenant's own rows.
The README's five queries still answer, scoped to the tenant, also while a writer commits.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from edgeplat.lakehouse import Lakehouse, LakehouseConfig, S3Settings
from edgeplat.lakehouse_schema import TABLES
from edgeplat.settings import Paths
from edgeplat.sync.views import create_views
from edgeplat.tenant_sql import (
    TenantQueryError,
    TenantScopeError,
    TenantSession,
    check_query,
    open_tenant_session,
    run_in_child,
    run_tenant_query,
)
from tests.support.cli import cli

A, B = "tenant-a", "tenant-b"
B_MARK, FILE_MARK = "B-SECRET", "FILE-MARKER-5d1c"
CANARY_KEY_ID, CANARY_SECRET = "AKIACANARYKEYID", "CANARY-S3-SECRET-9e2f"
LEAKS = (B_MARK, B, FILE_MARK, CANARY_KEY_ID, CANARY_SECRET)
README_QUERIES = [  # README "Five useful queries", with the tenant and metric of this lakehouse
    f"SELECT hour, avg(avg_value) FROM telemetry_hourly WHERE tenant_id = '{A}' "
    "AND metric = 'temperature_c' GROUP BY 1 ORDER BY 1",
    "SELECT * FROM device_last_seen WHERE last_batch_at < now() - INTERVAL 30 MINUTE",
    "SELECT * FROM sync_lag ORDER BY lag_seconds DESC LIMIT 20",
    "SELECT * FROM quarantine_summary ORDER BY objects DESC",
    "SELECT rule, count(*) FROM conflicts_recent GROUP BY 1",
]


@dataclass(frozen=True)
class WithS3Secret(LakehouseConfig):
    """A local lakehouse whose connections also carry an S3 secret, as production ones do."""

    @property
    def extensions(self) -> tuple[str, ...]:
        return (*super().extensions, "httpfs")


@dataclass(frozen=True)
class World:
    home: Path
    lake: Lakehouse
    files: dict[str, Path]


def _value(table: str, column: str, type_: str, tenant: str, i: int, now: datetime) -> object:
    if column == "tenant_id":
        return tenant
    if column == "device_id":
        return f"d{i}"  # the same device ids in both tenants
    if table == "telemetry" and column == "metric":
        return "temperature_c"
    mark = B_MARK if tenant == B else "a-visible"
    return {
        "VARCHAR": f"{mark}-{column}-{i}",
        "BIGINT": int(now.timestamp() * 1000) - i * 1000,
        "INTEGER": i,
        "DOUBLE": i + 0.5,
        "BOOLEAN": i % 2 == 0,
        "TIMESTAMPTZ": now - timedelta(hours=i),
        "DATE": now.date(),
    }[type_]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("tenant-sql")
    p = Paths(home)
    p.lakehouse.mkdir(parents=True)
    lake = Lakehouse(
        WithS3Secret(
            catalog=f"sqlite:{p.catalog}",
            data_path=f"{p.lake_data}/",
            s3=S3Settings(access_key_id=CANARY_KEY_ID, secret_access_key=CANARY_SECRET),
        )
    )
    lake.ensure_schema()
    now = datetime.now(UTC)

    def fill(con: duckdb.DuckDBPyConnection) -> None:
        for table in TABLES.values():
            cols = ", ".join(f'"{c}"' for c, _ in table.columns)
            marks = ", ".join("?" for _ in table.columns)
            for tenant in (A, B):
                for i in range(3):
                    con.execute(
                        f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks})',
                        [_value(table.name, c, t, tenant, i, now) for c, t in table.columns],
                    )

    lake.write(fill)
    with lake.session() as con:
        create_views(con)
        con.execute("CALL ducklake_flush_inlined_data('lake')")  # the rows into Parquet files
    files = {kind: home / f"marker.{kind}" for kind in ("csv", "json", "parquet", "txt")}
    files["csv"].write_text(f"secret\n{FILE_MARK}\n")
    files["json"].write_text(json.dumps([{"secret": FILE_MARK}]))
    files["txt"].write_text(FILE_MARK)
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT '{FILE_MARK}' AS secret) TO '{files['parquet']}' (FORMAT parquet)")
    assert list(p.lake_data.glob(f"**/tenant_id={B}/**/*.parquet")), "B's rows are in Parquet files"
    return World(home, lake, files)


# ----------------------------------------------------------------------------- the escape family
def _tables(world: World) -> list[str]:
    """Table expressions that must never be readable: files, globs, the catalog, B's partitions."""
    p = Paths(world.home)
    paths = [
        *map(str, world.files.values()),
        f"{p.lake_data}/**/*.parquet",
        # B's partition, spelled without B's id: the sandbox's own query log may echo a path
        f"{p.lake_data}/main/telemetry/tenant_id=*b/**/*.parquet",
        str(p.catalog),
        f"{world.home}/*",
        "/etc/passwd",
    ]
    return [form.format(path) for path in paths for form in ("'{}'", '"{}"')]


def _cte_name(t: str) -> str:
    return '"' + t.strip("'\"") + '"'


POSITIONS = [
    "SELECT * FROM {t}",
    "FROM {t}",
    "SELECT count(*) FROM telemetry JOIN {t} ON true",
    "SELECT count(*) FROM telemetry, LATERAL (SELECT * FROM {t})",
    "SELECT count(*) FROM telemetry POSITIONAL JOIN {t}",
    "SELECT (SELECT count(*) FROM {t})",
    "SELECT count(*) FROM telemetry WHERE EXISTS (SELECT 1 FROM {t})",
    "SELECT count(*) FROM telemetry WHERE device_id IN (SELECT CAST(1 AS VARCHAR) FROM {t})",
    "SELECT count(*) FROM telemetry UNION ALL SELECT count(*) FROM {t}",
    "WITH x AS (SELECT * FROM {t}) SELECT * FROM x",
    "WITH x AS (SELECT 1) SELECT * FROM x, {t}",
    # a CTE of the same name, but in another scope than the reference
    "SELECT * FROM {t}, (WITH {n} AS (SELECT 1 AS x) SELECT * FROM {n})",
    "SELECT (WITH {n} AS (SELECT 1) SELECT 1) AS y, * FROM {t}",
    "WITH a AS (SELECT * FROM {t}), {n} AS (SELECT 1) SELECT * FROM a",
    "(WITH {n} AS (SELECT 1 AS x) SELECT count(*) FROM {n}) UNION ALL (SELECT count(*) FROM {t})",
    "SELECT * FROM telemetry WHERE seq IN (WITH {n} AS (SELECT 1) SELECT 1) AND EXISTS (SELECT * FROM {t})",
    "SELECT count(*) FROM telemetry, LATERAL (WITH {n} AS (SELECT 1) SELECT * FROM {n}) JOIN {t} ON true",
    "DESCRIBE {t}",
    "SUMMARIZE {t}",
    "SELECT * FROM (DESCRIBE {t})",
    "SELECT * FROM (SUMMARIZE {t})",
    "PIVOT {t} ON tenant_id USING count(*)",
    "SELECT * FROM (PIVOT {t} ON tenant_id USING count(*))",
    "UNPIVOT {t} ON COLUMNS(*) INTO NAME k VALUE v",
]


def _arg(type_: str, path: str) -> str:
    if type_ in ("VARCHAR", "ANY", "BLOB") or type_ is None:
        return f"'{path}'"
    if type_.endswith("[]"):
        return f"['{path}']"
    if type_ in ("BIGINT", "INTEGER", "UBIGINT", "DOUBLE", "HUGEINT", "SMALLINT", "TINYINT"):
        return "3"
    if type_ == "BOOLEAN":
        return "true"
    return "NULL"


def escape_family(world: World, source: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """``(what, query)`` pairs; every one reaches outside the tenant's relations."""
    p = Paths(world.home)
    family: list[tuple[str, str]] = []
    # every table function (and overload) DuckDB lists, with path-, catalog- and query-like arguments
    strings = [str(world.files["csv"]), f"{p.lake_data}/**/*.parquet", "lake", "SELECT * FROM lake.telemetry"]
    overloads = source.execute(
        "SELECT DISTINCT function_name, parameter_types FROM duckdb_functions() "
        "WHERE function_type = 'table' ORDER BY ALL"
    ).fetchall()
    for name, types in overloads:
        family.append((f"table function {name}()", f"SELECT * FROM {name}()"))
        # DuckDB's Python package has internal scans taking raw pointers; SQL can only pass NULL
        kind = POINTER_SCAN if "POINTER" in (types or []) else f"table function {name}"
        for s in strings if types else []:
            args = ", ".join(_arg(t, s) for t in types)
            family.append((kind, f"SELECT * FROM {name}({args})"))
    # every view and table the lakehouse connection can see, qualified and not
    for db, schema, name in source.execute(
        "SELECT database_name, schema_name, view_name FROM duckdb_views() "
        "UNION SELECT database_name, schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
    ).fetchall():
        family.append(("system view or table", f'SELECT * FROM "{db}"."{schema}"."{name}"'))
        family.append(("system view or table", f'SELECT * FROM "{schema}"."{name}"'))
        if db in ("system", "temp"):
            family.append(("system view", f'SELECT * FROM "{name}"'))
    for rel in TABLES:
        for qualified in (f"lake.{rel}", f"memory.main.{rel}", f"temp.main.{rel}", f"main.{rel}"):
            family.append(("qualified relation", f"SELECT * FROM {qualified}"))
    # files and globs in every position a table can stand, and CTE scopes around them
    for t in _tables(world):
        for pos in POSITIONS:
            family.append(("file in a table position", pos.format(t=t, n=_cte_name(t))))
    # statements that are not a SELECT, or more than one
    glob = f"{p.lake_data}/**/*.parquet"
    for statement in [
        "SHOW TABLES",
        "SHOW ALL TABLES",
        "SHOW DATABASES",
        "DESCRIBE",
        "SUMMARIZE telemetry",
        "DESCRIBE telemetry",
        "PIVOT telemetry ON metric USING count(*)",
        "PRAGMA show_tables",
        "PRAGMA database_list",
        "CALL pragma_version()",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET ALL",
        "SET allowed_directories = ['/']",
        f"ATTACH '{p.catalog}' AS cat (TYPE sqlite, READ_ONLY)",
        f"ATTACH 'ducklake:sqlite:{p.catalog}' AS lake2 (DATA_PATH '{p.lake_data}/', READ_ONLY)",
        "USE lake",
        "DETACH memory",
        f"COPY (SELECT * FROM telemetry) TO '{world.home}/out.csv'",
        f"COPY telemetry FROM '{world.files['csv']}'",
        f"EXPORT DATABASE '{world.home}/export'",
        f"IMPORT DATABASE '{world.home}'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')",
        f"CREATE VIEW v AS SELECT * FROM '{glob}'",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO telemetry SELECT * FROM telemetry",
        "DELETE FROM telemetry",
        "CHECKPOINT",
        f"SELECT 1; SELECT * FROM '{glob}'",
        f"SELECT * FROM telemetry; SELECT tenant_id, count(*) FROM '{glob}' GROUP BY 1",
    ]:
        family.append(("statement", statement))
    return family


POINTER_SCAN = "internal pointer scan"


def _leaks(text: str, query: str = "") -> list[str]:
    """The markers in ``text`` that the query did not bring itself (a path it names, echoed)."""
    return [mark for mark in LEAKS if mark in text and mark not in query]


def test_the_escape_family_is_refused_by_the_check_and_contained_by_the_sandbox(world: World) -> None:
    with world.lake.read_only(fresh=True) as source:
        family = escape_family(world, source)
        assert source.execute("SELECT count(*) FROM duckdb_secrets()").fetchone() == (1,)  # the canary
    session, allowed = open_tenant_session(world.lake, A)
    passed, refused_by_sandbox, answered, pointer_scans = [], 0, 0, 0
    leaked = []
    try:
        for what, query in family:
            try:
                check_query(session, query, allowed)
                passed.append(query)
            except TenantScopeError:
                pass
            if what == POINTER_SCAN:
                # pandas_scan(NULL) crashes the process (a NULL dereference in DuckDB's Python
                # package): only the check stands in front of it (docs/security.md)
                pointer_scans += 1
                continue
            # the second layer alone: the same query straight in the sandbox
            try:
                cur = session.execute(query)
                rows = cur.fetchmany(100_000) if cur.description else []
                answered += 1
                text = repr(rows)
                if _leaks(text, query):
                    leaked.append((what, query, text[:300]))
            except duckdb.Error as exc:
                refused_by_sandbox += 1
                if _leaks(str(exc), query):
                    leaked.append((what, query, str(exc)[:300]))
        # nothing the family did unlocked the sandbox
        assert session.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
        assert session.execute("SELECT DISTINCT tenant_id FROM telemetry").fetchall() == [(A,)]
    finally:
        session.close()
    print(
        f"\nescape family: {len(family)} queries; query check refused {len(family) - len(passed)}; "
        f"sandbox alone: {refused_by_sandbox} failed, {answered} answered without a leak, "
        f"{pointer_scans} internal pointer scans not run"
    )
    assert passed == []
    assert leaked == []
    assert len(family) > 1000
    assert not (world.home / "out.csv").exists() and not (world.home / "export").exists()


# ----------------------------------------------------------------------------- named attacks
def _named_attacks(world: World) -> list[tuple[str, str]]:
    p = Paths(world.home)
    glob = f"{p.lake_data}/**/*.parquet"
    csv = world.files["csv"]
    return [
        (
            "CTE named after the lakehouse's Parquet glob, glob read outside the CTE's scope",
            f"SELECT tenant_id, count(*) FROM '{glob}', (WITH \"{glob}\" AS (SELECT 1) SELECT 1) GROUP BY 1",
        ),
        (
            "CTE named after a CSV file, file read in a sibling subquery",
            f"SELECT (WITH \"{csv}\" AS (SELECT 1) SELECT 1), * FROM '{csv}'",
        ),
        (
            "CTE named after a system view, view read outside",
            "SELECT * FROM (WITH duckdb_tables AS (SELECT 1) SELECT 1), duckdb_tables",
        ),
        (
            "forward reference to a later CTE (resolves as a file)",
            f"WITH a AS (SELECT * FROM '{csv}'), \"{csv}\" AS (SELECT 1) SELECT * FROM a",
        ),
        ("Parquet glob of the lakehouse as a table", f"SELECT tenant_id, count(*) FROM '{glob}' GROUP BY 1"),
        ("JSON file as a table", f"SELECT * FROM '{world.files['json']}'"),
        ("read_csv of a file", f"SELECT * FROM read_csv('{csv}')"),
        ("read_text of a file", f"SELECT * FROM read_text('{world.files['txt']}')"),
        ("another catalog (lake.main.telemetry)", "SELECT * FROM lake.main.telemetry"),
        ("DuckLake metadata catalog", "SELECT * FROM __ducklake_metadata_lake.main.ducklake_data_file"),
        ("system view duckdb_tables", "SELECT * FROM duckdb_tables"),
        ("table function duckdb_secrets()", "SELECT * FROM duckdb_secrets()"),
        ("SHOW TABLES", "SHOW TABLES"),
        ("DESCRIBE of a file", f"DESCRIBE '{csv}'"),
        ("SUMMARIZE of the glob", f"SUMMARIZE '{glob}'"),
        ("PIVOT", "PIVOT telemetry ON metric USING count(*)"),
        ("SET enable_external_access = true", "SET enable_external_access = true"),
        ("ATTACH the catalog", f"ATTACH 'ducklake:sqlite:{p.catalog}' AS l2 (DATA_PATH '{p.lake_data}/')"),
        ("COPY a file into the session", f"COPY telemetry FROM '{csv}'"),
        ("second statement after a SELECT", f"SELECT 1; SELECT * FROM '{glob}'"),
    ]


def _outcome(fn) -> str:
    try:
        rows = fn()
    except (TenantScopeError, duckdb.Error) as exc:
        return "refused: " + str(exc).splitlines()[0][:90].replace("|", "/")
    text = repr(rows)
    return "LEAKED" if _leaks(text) else f"answered, {len(rows)} rows, only {A}'s"


def test_named_attacks_table(world: World) -> None:
    """The attack table of docs/security.md (``pytest -s`` prints it)."""
    session, allowed = open_tenant_session(world.lake, A)
    lines = ["| attack | query check | sandbox alone (check skipped) |", "|---|---|---|"]
    try:
        for what, query in _named_attacks(world):
            checked = _outcome(lambda q=query: check_query(session, q, allowed))
            alone = _outcome(
                lambda q=query: session.execute(q).fetchall() if session.execute(q).description else []
            )
            lines.append(f"| {what} | {checked} | {alone} |")
            assert checked.startswith("refused"), (what, checked)
            assert "LEAKED" not in alone, (what, alone)
    finally:
        session.close()
    print("\n" + "\n".join(line.replace(str(world.home), "<home>") for line in lines))


def test_the_reported_escape_is_refused_by_the_cli(world: World) -> None:
    glob = f"{Paths(world.home).lake_data}/**/*.parquet"
    query = f"SELECT tenant_id, count(*) FROM '{glob}', (WITH \"{glob}\" AS (SELECT 1) SELECT 1) GROUP BY 1"
    out = cli("sql", query, "--tenant", A, home=world.home, check=False)
    assert out.returncode != 0 and "refused" in out.stderr and "not a tenant view" in out.stderr
    assert B not in out.stdout + out.stderr


# ----------------------------------------------------------------------------- still usable
def _reference(world: World, query: str) -> list[tuple]:
    """The query on the lakehouse itself, every relation replaced by its rows of tenant A."""
    with world.lake.read_only(fresh=True) as con:
        rels = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT table_name FROM duckdb_columns() WHERE database_name = 'lake' AND column_name = 'tenant_id'"
            ).fetchall()
        ]
        for rel in rels:
            con.execute(
                f'CREATE VIEW memory.main."{rel}" AS SELECT * FROM lake.main."{rel}" WHERE tenant_id = \'{A}\''
            )
        con.execute("USE memory")
        return con.execute(query).fetchall()


def _same_rows(got: list[tuple], want: list[tuple]) -> bool:
    # lag_seconds depends on now(), which moves between the two runs: floats within a minute
    def key(row: tuple) -> str:
        return repr(tuple(None if isinstance(v, float) else v for v in row))

    pairs = (
        list(zip(sorted(got, key=key), sorted(want, key=key), strict=True)) if len(got) == len(want) else []
    )
    return len(pairs) == len(want) and all(
        math.isclose(a, b, abs_tol=60) if isinstance(a, float) else a == b
        for g, w in pairs
        for a, b in zip(g, w, strict=True)
    )


@pytest.mark.parametrize("query", README_QUERIES)
def test_the_readme_queries_answer_scoped_to_the_tenant(world: World, query: str) -> None:
    session, allowed = open_tenant_session(world.lake, A)
    try:
        check_query(session, query, allowed)
        rows = session.execute(query).fetchall()
    finally:
        session.close()
    assert rows, "the query has rows of tenant A to show"
    assert not _leaks(repr(rows))
    assert _same_rows(rows, _reference(world, query))


def test_tenant_sessions_answer_while_a_writer_commits(world: World, tmp_path: Path) -> None:
    """``edgeplat sql --tenant`` sessions open and answer while another process writes the lakehouse."""
    worker = str(Path(__file__).parents[1] / "edgeplat" / "lakehouse_worker.py")
    cfg = world.lake.config
    writer = subprocess.Popen(
        [sys.executable, worker, "write", cfg.catalog, cfg.data_path, "a", "150"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, started = [], time.monotonic()
    try:
        while writer.poll() is None or not seen:
            session, allowed = open_tenant_session(world.lake, A)
            try:
                q = "SELECT count(*), count(*) FILTER (WHERE tenant_id <> 'tenant-a') FROM devices"
                check_query(session, q, allowed)
                seen.append(session.execute(q).fetchone())
            finally:
                session.close()
    finally:
        out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert json.loads(out) == {"wrote": 150}
    print(
        f"\n{len(seen)} tenant sessions during {time.monotonic() - started:.1f}s of writes: {seen[0]} .. {seen[-1]}"
    )
    assert all(other == 0 for _, other in seen)
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)  # each session sees the writes committed so far
    with world.lake.read_only(fresh=True) as con:
        assert con.execute("SELECT count(*) FROM lake.devices WHERE tenant_id = ?", [A]).fetchone()[0] >= 153


# ----------------------------------------------------------------------------- process isolation
def _unchecked_pointer_scan(config: LakehouseConfig, tenant: str, sender: object) -> None:
    """What a query that got past the check could do: pandas_scan(NULL) straight in the sandbox."""
    with TenantSession(Lakehouse(config), tenant) as session:
        session.execute("SELECT * FROM pandas_scan(NULL)").fetchall()
    sender.send(("ok", None))


def test_a_crash_inside_duckdb_ends_only_the_sandbox_process(world: World) -> None:
    with pytest.raises(TenantQueryError, match="crashed the tenant sandbox .signal SIGSEGV"):
        run_in_child(_unchecked_pointer_scan, (world.lake.config, A))
    # the caller is unharmed and the next tenant query answers, scoped
    result = run_tenant_query(world.lake.config, A, "SELECT DISTINCT tenant_id FROM telemetry")
    assert result.columns == ["tenant_id"] and result.rows == [(A,)]
    with pytest.raises(TenantScopeError, match="table function pandas_scan"):
        run_tenant_query(world.lake.config, A, "SELECT * FROM pandas_scan(NULL)")
    with pytest.raises(TenantQueryError, match="no_such_column"):
        run_tenant_query(world.lake.config, A, "SELECT no_such_column FROM telemetry")
