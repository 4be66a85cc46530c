"""The one place that chooses resources for an environment (``EDGEPLAT_ENV``).

``local`` (default): everything embedded under ``EDGEPLAT_HOME``: SQLite-catalogued
DuckLake, a folder as object store, a file keyring and device registry, the platform
signing key created on first use, desired-state documents as the fleet backend.
``production``: PostgreSQL catalog, S3 data and objects, Vault transit for data keys,
provisioned registry and signing key, and the fleet backend named by
``EDGEPLAT_FLEET_BACKEND``. Secrets reach resources only through ``dg.EnvVar``, so they are
read at run time and never appear in run config, logs or the UI; the rest are plain values.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

from edgeplat.settings import environment, paths
from resources.alerts import AlertRulesResource
from resources.arrival_queue import ArrivalNotifications
from resources.backends import FleetBackendResource
from resources.gitops import GitOpsRepoResource
from resources.keys import DeviceRegistryResource, KeyServiceResource, PlatformSignerResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource
from resources.vault import VaultKeyServiceResource, vault_from_env

# Production settings (documented in the README): (secret?, what).
PRODUCTION_ENV = {
    "EDGEPLAT_CATALOG": (
        True,
        "DuckLake catalog, e.g. 'postgres:dbname=edgeplat host=db' (may hold a password)",
    ),
    "EDGEPLAT_LAKE_DATA": (False, "s3://bucket/prefix/ for the lakehouse Parquet files"),
    "EDGEPLAT_OBJECTS_URL": (False, "s3://bucket/prefix for device batches and desired-state documents"),
    "AWS_ACCESS_KEY_ID": (True, "S3 access key"),
    "AWS_SECRET_ACCESS_KEY": (True, "S3 secret key"),
    "EDGEPLAT_S3_ENDPOINT": (False, "optional: S3 API endpoint URL for non-AWS stores"),
    "EDGEPLAT_ARRIVAL_QUEUE_URL": (
        False,
        "optional: SQS queue of the bucket's ObjectCreated notifications (unset: the sensor lists)",
    ),
    "EDGEPLAT_ARRIVAL_DLQ_URL": (False, "optional: SQS queue for poison notifications, with their reason"),
    "EDGEPLAT_SQS_ENDPOINT": (False, "optional: SQS API endpoint URL for non-AWS queues"),
    "EDGEPLAT_ARRIVAL_AZURE_QUEUE": (
        False,
        "optional: storage queue of Event Grid's BlobCreated events (instead of SQS)",
    ),
    "EDGEPLAT_ARRIVAL_AZURE_DLQ": (False, "optional: storage queue for poison events, with their reason"),
    "EDGEPLAT_ARRIVAL_AZURE_CONNECTION_STRING": (
        True,
        "optional: connection string of the storage account holding those queues",
    ),
    "AWS_REGION": (False, "optional: region, default us-east-1"),
    "EDGEPLAT_VAULT_ADDR": (True, "Vault address (transit unwraps batch data keys)"),
    "EDGEPLAT_VAULT_ROLE_ID": (True, "AppRole role id of the central service"),
    "EDGEPLAT_VAULT_SECRET_ID": (True, "AppRole secret id of the central service"),
    "EDGEPLAT_CATALOG_SCHEMA": (
        False,
        "optional: PostgreSQL schema of the DuckLake catalog (default: public)",
    ),
    "EDGEPLAT_PLATFORM_KEY": (False, "path of the platform's Ed25519 signing key (PEM, provisioned)"),
    "EDGEPLAT_FLEET_BACKEND": (False, "edge_agent (default) | greengrass | azure_iot_edge"),
    "EDGEPLAT_IOTHUB_CONNECTION_STRING": (True, "IoT Hub service connection string (azure_iot_edge)"),
    "EDGEPLAT_GITOPS_REPO": (False, "optional: git repository (path or URL) of rollout specs"),
    "EDGEPLAT_GITOPS_WORKDIR": (
        False,
        "scratch directory for the GitOps clone (default: <tmp>/edgeplat-gitops)",
    ),
    "EDGEPLAT_ALERT_RULES": (False, "alert rules and sinks file (docs/alerts.md)"),
    "EDGEPLAT_STATE_RULES": (
        False,
        "optional: the operator's state conflict rules file (docs/state-rules.md)",
    ),
    "EDGEPLAT_STATE_RULES_GITOPS_PATH": (
        False,
        "optional: the state conflict rules file as a path inside the GitOps repository",
    ),
    "EDGEPLAT_GITOPS_DRIFT_FILE": (
        False,
        "optional: .json path in the GitOps repository for the device_drift summary write-back",
    ),
}


def _gitops(workdir: str | None = None) -> GitOpsRepoResource:
    """The GitOps repository; its clone is scratch (re-cloned when missing): ``EDGEPLAT_GITOPS_WORKDIR``,
    else ``workdir``, else under the state directory (local)."""
    return GitOpsRepoResource(
        repo=os.environ.get("EDGEPLAT_GITOPS_REPO", ""),
        branch=os.environ.get("EDGEPLAT_GITOPS_BRANCH", "main"),
        spec_dir=os.environ.get("EDGEPLAT_GITOPS_DIR", "rollouts"),
        status_file=os.environ.get("EDGEPLAT_GITOPS_STATUS_FILE") or None,
        drift_file=os.environ.get("EDGEPLAT_GITOPS_DRIFT_FILE") or None,
        workdir=os.environ.get("EDGEPLAT_GITOPS_WORKDIR")
        or workdir
        or str(paths().home / "gitops" / "clone"),
    )


def _state_rules(workdir: str) -> StateRulesResource:
    """The central merge's conflict rules: ``EDGEPLAT_STATE_RULES`` (a file) or
    ``EDGEPLAT_STATE_RULES_GITOPS_PATH`` (in the GitOps repository), else the packaged rules."""
    return StateRulesResource(
        path=os.environ.get("EDGEPLAT_STATE_RULES", ""),
        gitops_path=os.environ.get("EDGEPLAT_STATE_RULES_GITOPS_PATH", ""),
        gitops_repo=os.environ.get("EDGEPLAT_GITOPS_REPO", ""),
        gitops_branch=os.environ.get("EDGEPLAT_GITOPS_BRANCH", "main"),
        gitops_workdir=workdir,
    )


def embedded_sync_resources(
    *,
    catalog: str,
    data_path: str,
    objects: str,
    keys: str,
    registry: str,
    platform_key: str,
    notifications: ArrivalNotifications | None = None,
) -> dict[str, Any]:
    """The sync's resources on embedded parts (a local or SQLite catalog, folders, a key file),
    wherever they are: the local environment's, a benchmark's or a test's."""
    return {
        "lakehouse": LakehouseResource(catalog=catalog, data_path=data_path),
        "object_store": ObjectStoreResource(url=objects, notifications=notifications),
        "key_service": KeyServiceResource(keyring_dir=keys),
        "device_registry": DeviceRegistryResource(registry_dir=registry),
        "platform_signer": PlatformSignerResource(path=platform_key, create_if_missing=True),
        "state_rules": StateRulesResource(),
    }


def local_resources() -> dict[str, Any]:
    p = paths()
    res = embedded_sync_resources(
        catalog=f"sqlite:{p.catalog}",
        data_path=f"{p.lake_data}/",
        objects=str(p.objects),
        keys=str(p.keys),
        registry=str(p.registry),
        platform_key=str(p.platform_key),
        # the local store's journal (enabled by cli/environment.py) drives the arrival sensor
        notifications=ArrivalNotifications(kind="journal"),
    )
    res["state_rules"] = _state_rules(str(p.home / "gitops" / "state-rules"))
    res["fleet_backend"] = FleetBackendResource(
        kind="edge_agent",
        object_store=res["object_store"],
        platform_signer=res["platform_signer"],
        lakehouse=res["lakehouse"],
        state_rules=res["state_rules"],  # release documents carry the rules in force too
    )
    res["gitops_repo"] = _gitops()
    res["alert_rules"] = AlertRulesResource(rules_path=str(p.home / "alerts.yaml"))
    return res


def _arrival_notifications(region: str) -> ArrivalNotifications | None:
    """Where the bucket's object-created notifications arrive in production (None: the sensor lists)."""
    env = os.environ.get
    if env("EDGEPLAT_ARRIVAL_QUEUE_URL"):
        return ArrivalNotifications(
            kind="sqs",
            queue_url=env("EDGEPLAT_ARRIVAL_QUEUE_URL", ""),
            dead_letter_url=env("EDGEPLAT_ARRIVAL_DLQ_URL", ""),
            endpoint_url=env("EDGEPLAT_SQS_ENDPOINT") or None,
            region=region,
            access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        )
    if env("EDGEPLAT_ARRIVAL_AZURE_QUEUE"):
        return ArrivalNotifications(
            kind="azure_queue",
            queue_name=env("EDGEPLAT_ARRIVAL_AZURE_QUEUE", ""),
            dead_letter_queue=env("EDGEPLAT_ARRIVAL_AZURE_DLQ", ""),
            connection_string=dg.EnvVar("EDGEPLAT_ARRIVAL_AZURE_CONNECTION_STRING"),
        )
    return None


def production_resources() -> dict[str, Any]:
    env = os.environ.get
    endpoint = env("EDGEPLAT_S3_ENDPOINT") or None
    region = env("AWS_REGION", "us-east-1")
    notifications = _arrival_notifications(region)
    object_store = ObjectStoreResource(  # S3 settings named as dagster-aws's S3Resource names them
        url=env("EDGEPLAT_OBJECTS_URL", ""),
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        notifications=notifications,
    )
    lakehouse = LakehouseResource(
        catalog=dg.EnvVar("EDGEPLAT_CATALOG"),
        data_path=env("EDGEPLAT_LAKE_DATA", ""),
        metadata_schema=env("EDGEPLAT_CATALOG_SCHEMA") or None,
        s3_endpoint_url=endpoint,
        s3_region=region,
        s3_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
        s3_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
    )
    signer = PlatformSignerResource(path=env("EDGEPLAT_PLATFORM_KEY", ""))
    state_rules = _state_rules(str(Path(tempfile.gettempdir()) / "edgeplat-state-rules"))
    kind = env("EDGEPLAT_FLEET_BACKEND", "edge_agent")
    backend: dict[str, Any] = {
        "kind": kind,
        "object_store": object_store,
        "platform_signer": signer,
        "lakehouse": lakehouse,
        "state_rules": state_rules,  # release documents carry the rules in force too
    }
    kinds = env("EDGEPLAT_FLEET_BACKENDS", "")  # several at once: a mixed fleet (RoutingBackend)
    backend["kinds"] = kinds
    if kind == "greengrass" or "greengrass" in kinds:
        backend.update(
            region=region,
            iot_endpoint_url=env("EDGEPLAT_IOT_ENDPOINT") or None,
            greengrass_endpoint_url=env("EDGEPLAT_GREENGRASS_ENDPOINT") or None,
        )
    if kind == "azure_iot_edge" or "azure_iot_edge" in kinds:
        backend.update(
            iothub_connection_string=dg.EnvVar("EDGEPLAT_IOTHUB_CONNECTION_STRING"),
            iothub_base_url=env("EDGEPLAT_IOTHUB_BASE_URL") or None,
        )
    # nothing on a replica's own disk: catalog in PostgreSQL, data and objects in S3, registry and
    # desired-state records in the lakehouse, data keys in Vault, the GitOps clone on scratch
    return {
        "lakehouse": lakehouse,
        "object_store": object_store,
        "key_service": VaultKeyServiceResource(vault=vault_from_env()),
        "device_registry": DeviceRegistryResource(lakehouse=lakehouse),
        "platform_signer": signer,
        "fleet_backend": FleetBackendResource(**backend),
        "gitops_repo": _gitops(str(Path(tempfile.gettempdir()) / "edgeplat-gitops")),
        "alert_rules": AlertRulesResource(rules_path=env("EDGEPLAT_ALERT_RULES", ""), required=True),
        "state_rules": state_rules,
    }


def resources_for(env: str | None = None) -> dict[str, Any]:
    env = env or environment()
    return production_resources() if env == "production" else local_resources()
