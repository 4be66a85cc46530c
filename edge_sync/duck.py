"""DuckDB connections with extensions loaded from the pip packages, never downloaded.

Devices run offline and must never try to fetch an extension, so automatic install and
load are switched off and each extension is loaded by path from its
``duckdb-extension-<name>`` package, whose version must match DuckDB's.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import duckdb

# extension name -> the importable package that ships it
_PACKAGES = {
    "httpfs": "duckdb_extension_httpfs",
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}

BASE_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


class ExtensionMissing(RuntimeError):
    """An extension's pip package is not installed, or not for this DuckDB version."""


def extension_path(name: str) -> Path:
    package = _PACKAGES.get(name)
    if package is None:
        raise ExtensionMissing(f"no pip package is known for DuckDB extension {name!r}")
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        dist = package.replace("_", "-")
        raise ExtensionMissing(
            f"DuckDB extension {name!r} needs the package {dist}=={duckdb.__version__}: "
            f"pip install '{dist}=={duckdb.__version__}'"
        ) from exc
    path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise ExtensionMissing(
            f"{path} is missing: the installed {package} does not match DuckDB {duckdb.__version__}; "
            f"install {package.replace('_', '-')}=={duckdb.__version__}"
        )
    return path


def load_extensions(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    for name in names:
        con.execute(f"LOAD '{extension_path(name)}'")


def connect(
    database: str = ":memory:", *, read_only: bool = False, extensions: tuple[str, ...] = (), **config
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with automatic extension download off and ``extensions`` loaded."""
    con = duckdb.connect(database, read_only=read_only, config={**BASE_CONFIG, **config})
    load_extensions(con, *extensions)
    return con
