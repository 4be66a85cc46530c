"""``edgeplat release publish``: sign and publish a release the edge agent can install.

Uploads the files next to a manifest signed by the platform key (``edgeplat.release_publisher``)
in the tenant's object store; a desired state naming the version (a rollout of it) then makes
each agent with an ``[install]`` section download, verify, install and switch to it. The store
is ``--store``, else ``EDGEPLAT_OBJECTS_URL``, else the local state's; the signing key is
``--signing-key``, else ``EDGEPLAT_PLATFORM_KEY``, else the local state's.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from cli.common import CliError, dumps
from edge_sync.identity import PlatformSigner
from edge_sync.objectstore_url import from_url
from edgeplat.release_publisher import ArtifactFile, ReleaseExists, publish_release
from edgeplat.settings import paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="publish releases for the edge agent's installer")
    rsub = p.add_subparsers(dest="release_command", metavar="ACTION", required=True)
    q = rsub.add_parser(
        "publish",
        help="upload a release's files and its signed manifest",
        description="Publish a version once: its artifacts, health check and probation, signed by the platform key.",
    )
    q.add_argument("--tenant", required=True)
    q.add_argument("--version", required=True, help="the version rollouts will name")
    q.add_argument("--artifact", type=Path, action="append", default=[], help="a file copied into the slot")
    q.add_argument(
        "--archive", type=Path, action="append", default=[], help="a .tar/.tar.gz unpacked into the slot"
    )
    q.add_argument(
        "--health-check", default=None, help='command run in the new slot, e.g. "./bin/check --quick"'
    )
    q.add_argument("--health-timeout", type=float, default=30.0, help="seconds the check may take")
    q.add_argument(
        "--probation", type=float, default=300.0, help="seconds healthy before the release is committed"
    )
    q.add_argument(
        "--max-restarts", type=int, default=3, help="agent restarts in probation that count as a crash loop"
    )
    q.add_argument("--store", default=None, help="object store URL (s3://bucket/prefix or a folder)")
    q.add_argument("--signing-key", type=Path, default=None, help="the platform's Ed25519 key (PEM)")
    q.set_defaults(handler=publish)


def publish(args: argparse.Namespace) -> int:
    files = [ArtifactFile(p) for p in args.artifact] + [ArtifactFile(p, unpack=True) for p in args.archive]
    if not files:
        raise CliError("name at least one --artifact FILE or --archive FILE.tar.gz")
    for f in files:
        if not f.path.is_file():
            raise CliError(f"{f.path} is not a file")
    key = args.signing_key or Path(os.environ.get("EDGEPLAT_PLATFORM_KEY") or paths().platform_key)
    if not key.is_file():
        raise CliError(
            f"platform signing key {key} does not exist: pass --signing-key or set EDGEPLAT_PLATFORM_KEY"
        )
    url = args.store or os.environ.get("EDGEPLAT_OBJECTS_URL") or str(paths().objects)
    options = (
        {"endpoint_url": os.environ["EDGEPLAT_S3_ENDPOINT"]}
        if url.startswith("s3://") and os.environ.get("EDGEPLAT_S3_ENDPOINT")
        else {}
    )
    store = from_url(url, **options)
    try:
        manifest = publish_release(
            store,
            PlatformSigner.load(key),
            args.tenant,
            args.version,
            files,
            health_check=shlex.split(args.health_check) if args.health_check else None,
            health_timeout_s=args.health_timeout,
            probation_s=args.probation,
            max_restarts=args.max_restarts,
        )
    except (ReleaseExists, ValueError) as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    print(dumps(manifest.model_dump(mode="json")))
    return 0
