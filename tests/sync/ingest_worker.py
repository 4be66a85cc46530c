"""A child process for the concurrency tests: runs the ingest of the given object keys, prints JSON.

Usage: ``python -m tests.sync.ingest_worker <root> <keys-file> <chunk>``; ``root`` holds the
fleet's keys/, devices/, objects/, catalog.sqlite and lake/ (see tests/support/fleet.Fleet).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge_sync.identity import LocalDeviceRegistry
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore import LocalObjectStore
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ingest import ingest_objects


def main() -> None:
    root, keys_file, chunk = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    keys = keys_file.read_text().split()
    lake = Lakehouse(LakehouseConfig(catalog=f"sqlite:{root}/catalog.sqlite", data_path=f"{root}/lake/"))
    env = SyncEnv(
        lake,
        LocalObjectStore(root / "objects"),
        LocalKeyring(root / "keys"),
        LocalDeviceRegistry(root / "devices"),
    )
    new = 0
    with lake.session() as con:
        for i in range(0, len(keys), chunk):
            new += ingest_objects(env, keys[i : i + chunk], con=con).rows_new
    print(json.dumps({"rows_new": new}))


if __name__ == "__main__":
    main()
