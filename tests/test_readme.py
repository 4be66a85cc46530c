"""The README stays true: its SQL runs on a lakehouse built here (the plain-DuckDB attach snippet
included), every command and flag it shows exists with the defaults it states, and the files,
make targets and environment variables it names are real."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import duckdb
import pytest

from cli import build_parser
from edge_sync.cli import build_parser as device_parser
from edge_sync.duck import extension_path
from edgeplat import settings
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.sync.views import create_views
from pipelines.resources import PRODUCTION_ENV

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CODE_DIRS = ("cli", "pipelines", "assets", "resources", "edgeplat", "edge_sync")
GENERATED = {"bench/results.json"}  # written by `make bench`, named by the README, not checked in


def fenced(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def statements(sql: str) -> list[str]:
    """The SQL statements of a block, comments removed."""
    text = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def default_lakehouse(home: Path) -> Lakehouse:
    """A lakehouse at the state directory's default layout, with the ``sync_views`` views."""
    lake = Lakehouse(
        LakehouseConfig(
            catalog=f"sqlite:{home}/lakehouse/catalog.sqlite", data_path=f"{home}/lakehouse/data/"
        )
    )
    lake.ensure_schema()
    with lake.session() as con:
        create_views(con)
    return lake


def attach_snippet() -> str:
    (block,) = [b for b in fenced("sql") if "ATTACH" in b]
    return block


def test_the_readme_queries_run_on_the_lakehouse(tmp_path: Path) -> None:
    lake = default_lakehouse(tmp_path / ".edgeplat")
    queries = [b for b in fenced("sql") if "ATTACH" not in b]
    assert queries, "the README lost its SQL examples"
    ran = 0
    with lake.session(read_only=True) as con:
        for block in queries:
            for sql in statements(block):
                con.execute(sql).fetchall()
                ran += 1
    assert ran == 6  # "Five useful queries" and the drift query


def test_the_plain_duckdb_attach_snippet_works_as_written(tmp_path: Path, monkeypatch) -> None:
    default_lakehouse(tmp_path / ".edgeplat")
    monkeypatch.chdir(tmp_path)  # the snippet's paths are relative to the project directory
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    shown = None
    for sql in statements(attach_snippet()):
        # the README's alternative: LOAD '<path>' of the duckdb-extension-* packages (no download)
        sql = re.sub(r"^LOAD (\w+)$", lambda m: f"LOAD '{extension_path(m.group(1))}'", sql)
        shown = con.execute(sql).fetchall()
    assert {"device_state", "telemetry", "device_config_drift"} <= {r[0] for r in shown}
    with pytest.raises(duckdb.Error, match="read-only"):
        con.execute("CREATE TABLE lake.nope (x INTEGER)")


# ---------------------------------------------------------------------------------- commands
def command_lines(program: str) -> list[str]:
    """Every ``program ...`` the README shows (code blocks and inline code), continuations joined."""
    code = "\n".join(fenced("bash")).replace("\\\n", " ")
    lines = [line.split("#", 1)[0] for line in code.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", README)
    pattern = re.compile(rf"^(?:\.venv/bin/)?{re.escape(program)}\s+(.*)$")
    return [m.group(1).strip() for line in lines if (m := pattern.search(line.strip()))]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def resolve(
    parser: argparse.ArgumentParser, words: list[str]
) -> tuple[list[argparse.ArgumentParser], list[str]]:
    """The chain of parsers the leading subcommand words select, and the words left."""
    chain = [parser]
    while words and words[0] in subparsers(chain[-1]):
        chain.append(subparsers(chain[-1])[words.pop(0)])
    return chain, words


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def check_segment(parser: argparse.ArgumentParser, segment: str, where: str) -> None:
    for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", segment):
        assert option(parser, flag) is not None, f"README shows `{where}` with {flag}, which it does not take"
    for flag, value in re.findall(r"\[(--[a-z][a-z-]*) ([^\]\s]+)\]", segment):
        action = option(parser, flag)
        if "|" in value:
            assert set(value.split("|")) <= set(action.choices or ()), f"{where} {flag} choices"
        elif not re.fullmatch(r"[A-Z]+", value):  # a literal value in brackets is the stated default
            assert str(action.default) == value, f"README says {where} {flag} defaults to {value}"


@pytest.mark.parametrize(("program", "build"), [("edgeplat", build_parser), ("edge-sync", device_parser)])
def test_every_command_and_flag_the_readme_shows_exists(program: str, build) -> None:
    root = build()
    lines = command_lines(program)
    assert lines, f"no {program} commands found in the README"
    for line in lines:
        first, *alternatives = [s.strip() for s in line.split(" | ")]
        if first.split()[0] in ("--help", "-h"):
            continue
        chain, rest = resolve(root, first.split())
        assert len(chain) > 1, f"README shows `{program} {first}`: no such command"
        if subparsers(chain[-1]) and rest and not rest[0].lstrip("[").startswith("-"):
            raise AssertionError(f"README shows `{program} {first}`: {rest[0]!r} is no subcommand")
        check_segment(chain[-1], " ".join(rest), f"{program} {first}")
        for alt in alternatives:  # `rollout list | status ID | pause`: siblings of the last command
            parent = chain[-2]
            name, *args = alt.split()
            assert name in subparsers(parent), f"README shows `{program} ... | {alt}`: no such command"
            check_segment(subparsers(parent)[name], " ".join(args), f"{program} ... {name}")


def test_make_targets_files_and_variables_the_readme_names_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    for target in set(re.findall(r"\bmake ([a-z][\w-]*)", README)):
        assert target in targets, f"README mentions `make {target}`: no such Makefile target"

    roots = {p.name for p in REPO.iterdir()} - {".edgeplat", "dist", ".venv", ".tools"}
    names = rf"(?<![\w./:=-])((?:{'|'.join(map(re.escape, sorted(roots)))})/[\w./*-]*)"
    for path in set(re.findall(names, README)):
        path = path.rstrip(".,")
        if path in GENERATED:
            continue
        assert list(REPO.glob(path)) or (REPO / path).exists(), f"README names {path}, which does not exist"

    code = "\n".join(p.read_text() for d in CODE_DIRS for p in (REPO / d).rglob("*.py"))
    for var in set(re.findall(r"\bEDGEPLAT_[A-Z_]*[A-Z]", README)):
        assert var in code, f"README documents {var}, which no code reads"
    instance = (REPO / "deploy/dagster/dagster.production.yaml").read_text()
    for var in set(re.findall(r"\bDAGSTER_(?:PG|K8S)_[A-Z_]*[A-Z]", README)):
        assert var in instance, f"README says the production instance reads {var}"


def test_the_production_settings_and_defaults_the_readme_states(tmp_path: Path, monkeypatch) -> None:
    table = README.split("## Production services", 1)[1].split("\n## ", 1)[0]
    for var in PRODUCTION_ENV:
        assert f"`{var}`" in table, (
            f"{var} (pipelines/resources.py PRODUCTION_ENV) is not in the README's table"
        )
    monkeypatch.delenv("EDGEPLAT_HOME", raising=False)
    monkeypatch.delenv("EDGEPLAT_ENV", raising=False)
    monkeypatch.chdir(tmp_path)
    assert "| `EDGEPLAT_HOME` | state directory (default `./.edgeplat`) |" in table
    assert settings.paths().home == tmp_path / ".edgeplat"
    assert "| `EDGEPLAT_ENV` | `local` (default)" in table and settings.environment() == "local"


def test_the_assets_jobs_sensors_and_groups_the_readme_names_exist() -> None:
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    sensors = {s.name for s in defs.sensors}
    for name in set(re.findall(r"`([a-z_]+)`", README)):
        if name.endswith("_sensor"):
            assert name in sensors, f"README names sensor {name}, which the code location lacks"
        elif name in ("rollout_health", "device_drift", "sync_views"):
            assert name in assets, f"README names asset {name}, which the code location lacks"
    assert defs.resolve_job_def("sync_fleet") is not None  # "the main job, `sync_fleet`"
    (listed,) = re.findall(r"the asset graph \(groups ([^)]*)\)", README)
    assert set(re.findall(r"`(\w+)`", listed)) <= groups
