"""The environment an ``edgeplat`` command works in: state directory, Dagster instance, code location.

Everything local lives under one state directory, ``EDGEPLAT_HOME`` (default ``./.edgeplat``).
The CLI, ``make demo`` and ``make dev`` prepare it the same way and point ``DAGSTER_HOME``
into it (unless set), so they share one Dagster instance and the runs one starts show in the
other's UI. Preparing it is the entry points' job: the code location itself writes nothing
when it loads.
"""

from __future__ import annotations

import os
from importlib import resources as package_files
from pathlib import Path

import dagster as dg

from edge_sync.objectstore_journal import enable_journal
from edge_sync.private_files import private_dir
from edgeplat.lakehouse import Lakehouse
from edgeplat.settings import Paths, paths
from pipelines.definitions import build_definitions
from pipelines.resources import resources_for

LOCAL_INSTANCE_YAML = "dagster.local.yaml"


def dagster_home(p: Paths) -> Path:
    """``DAGSTER_HOME`` when set, else the instance folder inside the state directory."""
    return Path(os.environ.get("DAGSTER_HOME") or p.home / "dagster")


def prepare_home() -> Paths:
    """Create the state directory, export it and ``DAGSTER_HOME`` to this process and its children,
    and write the local instance's ``dagster.yaml`` unless one exists."""
    p = paths()
    for d in (p.home, p.objects, p.plots):
        d.mkdir(parents=True, exist_ok=True)
    enable_journal(p.objects)  # every put into the local store is then recorded for the arrival sensor
    # keys, identities and every tenant's lakehouse rows: for this user only
    for d in (p.keys, p.devices, p.lakehouse, p.lake_data):
        private_dir(d, tighten=True)
    os.environ["EDGEPLAT_HOME"] = str(p.home)
    home = dagster_home(p)
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(package_files.files(__package__).joinpath(LOCAL_INSTANCE_YAML).read_text())
    return p


def instance() -> dg.DagsterInstance:
    """The shared Dagster instance under ``DAGSTER_HOME``."""
    prepare_home()
    return dg.DagsterInstance.get()


def definitions() -> dg.Definitions:
    """The code location, built now for the current environment and state directory."""
    prepare_home()
    return build_definitions()


def lakehouse() -> Lakehouse:
    """The lakehouse of the current environment, configured exactly as the code location's."""
    prepare_home()
    # initialised as a run would: its dg.EnvVar settings (the catalog DSN, S3 keys) read now
    lake = resources_for()["lakehouse"].process_config_and_initialize().get()
    lake.ensure_created()
    return lake
