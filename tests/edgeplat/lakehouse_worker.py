"""A child process for the concurrency test: writes or reads the lakehouse, prints JSON."""

from __future__ import annotations

import json
import sys

from edgeplat.lakehouse import Lakehouse, LakehouseConfig


def main() -> None:
    role, catalog, data, worker, count = sys.argv[1:6]
    lake = Lakehouse(LakehouseConfig(catalog=catalog, data_path=data))
    if role == "write":
        for i in range(int(count)):
            lake.write(
                lambda con, i=i: con.execute(
                    "INSERT INTO devices (tenant_id, device_id, status) VALUES (?, ?, 'online')",
                    [f"tenant-{worker}", f"w{worker}-d{i}"],
                ),
                what="test insert",
            )
        print(json.dumps({"wrote": int(count)}))
    else:
        seen = []
        for _ in range(int(count)):
            with lake.session(read_only=True) as con:
                seen.append(con.execute("SELECT count(*) FROM devices").fetchone()[0])
        print(json.dumps({"seen": seen}))


if __name__ == "__main__":
    main()
