"""A moto S3 server that starts with a bucket full of settled batch history, filled in its own process.

A million PUTs over HTTP take the better part of an hour on moto; its S3 backend takes them
in-process at about 12,000 a second. ``python -m tests.support.moto_prefilled`` creates the
bucket, puts every key of a :class:`~edgeplat.simulator.settled_store.SettledLayout` (empty
bodies) straight into the backend, and only then serves HTTP (moto's ``ThreadedMotoServer``:
every service on one port, as ``python -m moto.server`` does), so "answers HTTP" means
"filled". :func:`running_prefilled_moto` runs it on a free loopback port and stops it by pid.

Moto's ListObjectsV2 sorts the whole bucket on every request (O(objects), unlike S3): time a
listing on it as moto's, and count its requests and keys as the store-independent cost.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.moto_server import _answers
from tests.support.processes import HOST, free_port, stop

FILL_RATE_FLOOR = 2_000  # objects/s the start-up timeout allows for (measured: ~12,000/s idle)


def _fill_and_serve(args: argparse.Namespace) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    from edgeplat.simulator.settled_store import SettledLayout

    layout = SettledLayout(args.tenants, args.devices, args.batches, args.rows)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(args.bucket, "us-east-1")
    base = f"{args.prefix.rstrip('/')}/" if args.prefix else ""
    started = time.perf_counter()
    for key in layout.object_keys():
        backend.put_object(args.bucket, base + key, b"", disable_notification=True)
    print(f"filled {layout.count} objects in {time.perf_counter() - started:.1f} s", flush=True)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


@contextmanager
def running_prefilled_moto(layout, bucket: str, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Yield (endpoint URL, seconds to fill and start) of a moto server whose ``bucket`` holds
    every key of ``layout`` under ``prefix``; stop it (by pid) on exit."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "tests.support.moto_prefilled", "--host", HOST, "--port", str(port)]
    cmd += ["--bucket", bucket, "--prefix", prefix, "--tenants", str(layout.tenants)]
    cmd += ["--devices", str(layout.devices_per_tenant), "--batches", str(layout.batches_per_device)]
    cmd += ["--rows", str(layout.rows_per_batch)]
    timeout = 30 + layout.count / FILL_RATE_FLOOR
    with tempfile.TemporaryDirectory(prefix="moto-prefilled-") as tmp:
        log = Path(tmp) / "moto.log"
        started = time.perf_counter()
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while not _answers(f"{url}/moto-api/"):
                if proc.poll() is not None or time.perf_counter() - started > timeout:
                    raise RuntimeError(
                        f"prefilled moto server on {url} did not start (exit code {proc.poll()}):\n"
                        + log.read_text(errors="replace")[-2000:]
                    )
                time.sleep(0.2)
            yield url, time.perf_counter() - started
        finally:
            stop(proc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.moto_prefilled", description=__doc__)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True, help="devices per tenant")
    parser.add_argument("--batches", type=int, required=True, help="settled batches per device")
    parser.add_argument("--rows", type=int, required=True, help="rows per batch")
    _fill_and_serve(parser.parse_args(argv))


if __name__ == "__main__":
    main()
