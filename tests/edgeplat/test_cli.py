"""The ``edgeplat`` CLI: help everywhere, the demo's JSON, SQL while another process writes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli import build_parser
from tests.support.cli import cli

WORKER = str(Path(__file__).with_name("lakehouse_worker.py"))


def all_command_paths(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += all_command_paths(sub, prefix + (name,))
    return paths


def test_every_command_has_help(capsys) -> None:
    paths = all_command_paths(build_parser())
    assert ("sql",) in paths and ("fleet", "status") in paths and ("demo",) in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*path, "--help"])
        assert exit_.value.code == 0
        assert "usage: edgeplat" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the whole demo (its rollouts' 2,000 devices send ~9,000 real batches), twice
def test_demo_json_summary(tmp_path: Path) -> None:
    out = cli("demo", "--json", home=tmp_path, timeout=1800)
    summary = json.loads(out.stdout)
    assert summary["job"] == "sync_fleet"
    assert set(summary["assets_materialized"]) >= {"lakehouse_tables", "sync_reconciliation", "fleet_status"}
    assert summary["state_dir"] == str(tmp_path)
    assert summary["dagster_home"] == str(tmp_path / "dagster")
    # every row generated on a device is stored centrally, evicted (and counted) or still pending
    rows = summary["rows_by_stream"]
    assert {"telemetry", "health", "logs", "alerts", "state"} <= set(rows)
    assert all(r["missing"] == 0 for r in rows.values()), rows
    assert rows["telemetry"]["stored"] > 0
    assert summary["fleet"]["upload_crashes"] > 0 and summary["fleet"]["offline_syncs"] > 0
    assert sum(summary["conflicts_by_rule"].values()) > 0
    assert summary["checks"]["no_sequence_gaps"] is True
    outcomes = {r["name"]: r for r in summary["rollouts"]}
    bad, good = outcomes["inference-2-2-0"], outcomes["inference-2-1-0"]
    # the decision logs say why when an outcome differs
    assert bad["outcome"] == "rolled_back" and bad["last_phase"] == 0 and 0 < bad["blast_radius"] <= 60, bad
    assert good["outcome"] == "completed" and good["devices_updated_at_peak"] == 2000, good
    assert any(e["kind"] == "approve" for e in good["decision_log"])
    # the rollouts' fleet reports through the real data path: every health row the gates read came
    # in a ledgered batch of the device that signed it, and every acknowledgement through the ingest
    health = json.loads(
        cli(
            "sql",
            "SELECT count(*) AS n, count(b.object_key) AS ledgered FROM health h "
            "LEFT JOIN batches b ON b.object_key = h.batch_key AND b.device_id = h.device_id",
            "--format",
            "json",
            home=tmp_path,
        ).stdout
    )[0]
    assert health["n"] > 0 and health["ledgered"] == health["n"], health
    updated = json.loads(
        cli(
            "sql",
            "SELECT count(*) AS n FROM devices WHERE reported_version = '2.1.0'",
            "--format",
            "json",
            home=tmp_path,
        ).stdout
    )
    assert updated == [{"n": 2000}]
    # the runs are in the shared instance that `make dev` serves
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(tmp_path / "dagster"))
    jobs = {r.job_name for r in instance.get_runs()}
    assert {"sync_fleet", "approve_phase"} <= jobs
    # the README's five queries run on what the demo made
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("Five useful queries", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    queries = [
        q.strip()
        for q in "\n".join(line for line in block.splitlines() if not line.strip().startswith("--")).split(
            ";"
        )
        if q.strip()
    ]
    assert len(queries) == 5
    for q in queries:
        answer = json.loads(cli("sql", q, "--format", "json", home=tmp_path).stdout)
        assert isinstance(answer, list), q
    hourly = json.loads(
        cli("sql", "SELECT count(*) AS n FROM telemetry_hourly", "--format", "json", home=tmp_path).stdout
    )
    assert hourly[0]["n"] > 0
    # a second demo re-syncs only, and the sync changes nothing
    again = json.loads(cli("demo", "--json", home=tmp_path, timeout=900).stdout)
    assert (
        again["rows_by_stream"] == rows
        and again["table_rows"]["telemetry"] == summary["table_rows"]["telemetry"]
    )


@pytest.mark.slow
def test_sql_answers_while_another_process_writes(tmp_path: Path) -> None:
    cli("sql", "SELECT 1", home=tmp_path)  # creates the lakehouse
    catalog = f"sqlite:{tmp_path}/lakehouse/catalog.sqlite"
    data = f"{tmp_path}/lakehouse/data/"
    writer = subprocess.Popen(
        [sys.executable, WORKER, "write", catalog, data, "9", "40"], stdout=subprocess.PIPE, text=True
    )
    counts = []
    try:
        deadline = time.monotonic() + 240
        while writer.poll() is None and time.monotonic() < deadline:
            out = cli("sql", "SELECT count(*) AS n FROM devices", "--format", "json", home=tmp_path)
            counts.append(json.loads(out.stdout)[0]["n"])
    finally:
        writer.communicate(timeout=240)
    assert writer.returncode == 0
    assert counts and counts == sorted(counts)
    final = json.loads(
        cli("sql", "SELECT count(*) AS n FROM devices", "--format", "json", home=tmp_path).stdout
    )
    assert final == [{"n": 40}]


def test_sql_errors_are_clear(tmp_path: Path) -> None:
    cli("sql", "SELECT 1", home=tmp_path)
    bad = cli("sql", "SELEC 1", home=tmp_path, check=False)
    assert bad.returncode == 2 and "query failed" in bad.stderr and "Traceback" not in bad.stderr
    write = cli("sql", "DELETE FROM devices", home=tmp_path, check=False)
    assert write.returncode == 2 and "read-only" in write.stderr


def test_sql_formats(tmp_path: Path) -> None:
    q = "SELECT 1 AS a, 'x' AS b"
    assert json.loads(cli("sql", q, "--format", "json", home=tmp_path).stdout) == [{"a": 1, "b": "x"}]
    assert cli("sql", q, "--format", "csv", home=tmp_path).stdout.splitlines() == ["a,b", "1,x"]
    assert "┃ a" in cli("sql", q, home=tmp_path).stdout


def test_sql_tenant_scope(tmp_path: Path) -> None:
    ok = cli(
        "sql", "SELECT count(*) AS n FROM devices", "--tenant", "tenant-a", "--format", "json", home=tmp_path
    )
    assert json.loads(ok.stdout) == [{"n": 0}]
    refused = cli(
        "sql", "SELECT * FROM lake.main.devices", "--tenant", "tenant-a", home=tmp_path, check=False
    )
    assert (
        refused.returncode == 2
        and "refused" in refused.stderr
        and "outside the tenant's views" in refused.stderr
    )
