"""The keys of the official Dagster Helm chart (1.13) that deploy/helm/values-*.yaml set.

The chart validates its values with a JSON schema generated from pydantic models
(dagster-io/dagster, helm/dagster/schema/schema/charts/...), which no package ships: these
models restate, for the blocks we use, the fields and types of that schema
(``Webserver``, ``UserDeployment``, ``PostgreSQL``, ``K8sRunLauncherConfig``, ``RunK8sConfig``,
``QueuedRunCoordinatorConfig``, ``Concurrency``, ``Daemon``, ``Global``, ``S3ComputeLogManager``,
``PythonLogs``), with unknown keys
refused, so a misspelt or misplaced key fails here instead of being ignored by ``helm``.
The chart's schema points its Kubernetes sub-objects (security contexts, resources, volumes)
at Kubernetes' own definitions; :func:`chart_pods` puts them into the pods the chart renders,
which the tests validate with kubernetes-validate and scan with checkov.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KubernetesObject = dict[str, Any]  # checked as part of the pods of chart_pods
PullPolicy = Literal["Always", "IfNotPresent", "Never"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Image(_Strict):
    repository: str
    tag: str | int | None = None
    pullPolicy: PullPolicy


class EnvSource(_Strict):
    name: str
    optional: bool | None = None


class Service(_Strict):
    type: str
    port: int
    annotations: dict[str, str] | None = None


class _Pod(_Strict):
    envConfigMaps: list[EnvSource] = []
    envSecrets: list[EnvSource] = []
    podSecurityContext: KubernetesObject = {}
    securityContext: KubernetesObject = {}
    resources: KubernetesObject = {}
    volumes: list[KubernetesObject] | None = None
    volumeMounts: list[KubernetesObject] | None = None
    nodeSelector: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    labels: dict[str, str] | None = None


class Webserver(_Pod):
    replicaCount: int
    image: Image
    service: Service
    enableReadOnly: bool | None = None
    logLevel: str | None = None


class IncludeConfigInLaunchedRuns(_Strict):
    enabled: bool


class UserDeployment(_Pod):
    name: str
    image: Image
    port: int
    dagsterApiGrpcArgs: list[str] | None = None
    codeServerArgs: list[str] | None = None
    includeConfigInLaunchedRuns: IncludeConfigInLaunchedRuns | None = None
    replicaCount: int | None = None


class UserDeployments(_Strict):
    enabled: bool
    enableSubchart: bool
    deployments: list[UserDeployment]


class PostgreSQLService(_Strict):
    port: int


class PostgreSQL(_Strict):
    enabled: bool
    postgresqlHost: str
    postgresqlUsername: str
    postgresqlDatabase: str
    postgresqlParams: dict[str, Any] | None = None
    postgresqlScheme: str | None = None
    service: PostgreSQLService


class RunK8sConfig(_Strict):
    containerConfig: KubernetesObject | None = None
    podSpecConfig: KubernetesObject | None = None
    podTemplateSpecMetadata: KubernetesObject | None = None
    jobSpecConfig: KubernetesObject | None = None
    jobMetadata: KubernetesObject | None = None


class K8sRunLauncherConfig(_Strict):
    image: Image | None = None
    imagePullPolicy: PullPolicy
    jobNamespace: str | None = None
    loadInclusterConfig: bool
    kubeconfigFile: str | None = None
    envConfigMaps: list[EnvSource] = []
    envSecrets: list[EnvSource] = []
    envVars: list[str] = []
    volumeMounts: list[KubernetesObject] = []
    volumes: list[KubernetesObject] = []
    labels: dict[str, str] | None = None
    failPodOnRunFailure: bool | None = None
    resources: KubernetesObject | None = None
    schedulerName: str | None = None
    securityContext: KubernetesObject | None = None
    runK8sConfig: RunK8sConfig | None = None


class RunLauncherConfig(_Strict):
    k8sRunLauncher: K8sRunLauncherConfig


class RunLauncher(_Strict):
    type: Literal["K8sRunLauncher"]
    config: RunLauncherConfig


class TagLimitValue(_Strict):
    applyLimitPerUniqueValue: bool


class TagConcurrencyLimit(_Strict):
    key: str
    value: str | TagLimitValue | None = None
    limit: int


class QueuedRunCoordinatorConfig(_Strict):
    maxConcurrentRuns: int | None = None
    tagConcurrencyLimits: list[TagConcurrencyLimit] | None = None
    dequeueIntervalSeconds: int | None = None
    dequeueNumWorkers: int | None = None
    dequeueUseThreads: bool | None = None


class RunCoordinatorConfig(_Strict):
    queuedRunCoordinator: QueuedRunCoordinatorConfig


class RunCoordinator(_Strict):
    enabled: bool
    type: Literal["QueuedRunCoordinator"]
    config: RunCoordinatorConfig


class Daemon(_Pod):
    enabled: bool
    image: Image
    runCoordinator: RunCoordinator
    heartbeatTolerance: int | None = None


class ConcurrencyPools(_Strict):
    defaultLimit: int | None = None
    granularity: Literal["run", "op"] | None = None
    opGranularityRunBuffer: int | None = None


class ConcurrencyRuns(_Strict):
    maxConcurrentRuns: int | None = None
    tagConcurrencyLimits: list[TagConcurrencyLimit] = []


class Concurrency(_Strict):
    enabled: bool = False
    pools: ConcurrencyPools = ConcurrencyPools()
    runs: ConcurrencyRuns = ConcurrencyRuns()


class Global(_Strict):
    postgresqlSecretName: str
    dagsterHome: str | None = None
    serviceAccountName: str | None = None
    celeryConfigSecretName: str | None = None


class Toggle(_Strict):
    enabled: bool


class PythonLogs(_Strict):
    pythonLogLevel: str | None = None
    managedPythonLoggers: list[str] | None = None
    dagsterHandlerConfig: dict[str, Any] | None = None


class S3ComputeLogManager(_Strict):
    bucket: str
    localDir: str | None = None
    prefix: str | None = None
    useSsl: bool | None = None
    verify: bool | None = None
    verifyCertPath: str | None = None
    endpointUrl: str | None = None
    skipEmptyFiles: bool | None = None
    uploadInterval: int | None = None
    uploadExtraArgs: dict[str, Any] | None = None
    showUrlOnly: bool | None = None
    region: str | None = None


class ComputeLogManagerConfig(_Strict):
    s3ComputeLogManager: S3ComputeLogManager


class ComputeLogManager(_Strict):
    type: Literal["S3ComputeLogManager"]
    config: ComputeLogManagerConfig


class ChartValues(_Strict):
    """The values files: only keys the chart knows, in the places it reads them."""

    global_: Global = Field(alias="global")
    generatePostgresqlPasswordSecret: bool
    postgresql: PostgreSQL
    migrate: Toggle
    telemetry: Toggle
    dagsterWebserver: Webserver
    dagster_user_deployments: UserDeployments = Field(alias="dagster-user-deployments")
    runLauncher: RunLauncher
    dagsterDaemon: Daemon
    concurrency: Concurrency | None = None
    computeLogManager: ComputeLogManager | None = None
    pythonLogs: PythonLogs | None = None
    additionalInstanceConfig: dict[str, Any] | None = None


def _env_from(pod: _Pod | K8sRunLauncherConfig) -> list[dict[str, Any]]:
    return [{"configMapRef": {"name": s.name}} for s in pod.envConfigMaps] + [
        {"secretRef": {"name": s.name}} for s in pod.envSecrets
    ]


def _pod(
    component: str,
    image: str,
    *,
    pod_security: KubernetesObject,
    security: KubernetesObject,
    resources: KubernetesObject,
    env_from: list[dict[str, Any]],
    volumes: list[KubernetesObject] | None,
    mounts: list[KubernetesObject] | None,
    secret_name: str,
    port: int | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": component,
        "image": image,
        "securityContext": security,
        "resources": resources,
        "envFrom": env_from,
        # the chart adds the instance database password to every Dagster container this way
        "env": [
            {
                "name": "DAGSTER_PG_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "postgresql-password"}},
            }
        ],
    }
    if mounts:
        container["volumeMounts"] = mounts
    if port is not None:
        container["ports"] = [{"containerPort": port, "protocol": "TCP"}]
    spec: dict[str, Any] = {"securityContext": pod_security, "containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"dagster-{component}"}, "spec": spec}


def _image(image: Image) -> str:
    return f"{image.repository}:{image.tag}" if image.tag is not None else image.repository


def chart_pods(values: ChartValues) -> dict[str, dict[str, Any]]:
    """The pods the chart renders from ``values`` (webserver, daemon, each code location) and
    the pod the K8sRunLauncher starts for a run: the containers, security contexts, resources,
    environment sources and volumes these values give them."""
    secret = values.global_.postgresqlSecretName
    web, daemon = values.dagsterWebserver, values.dagsterDaemon
    pods = {
        "webserver": _pod(
            "webserver",
            _image(web.image),
            pod_security=web.podSecurityContext,
            security=web.securityContext,
            resources=web.resources,
            env_from=_env_from(web),
            volumes=web.volumes,
            mounts=web.volumeMounts,
            secret_name=secret,
            port=web.service.port,
        ),
        "daemon": _pod(
            "daemon",
            _image(daemon.image),
            pod_security=daemon.podSecurityContext,
            security=daemon.securityContext,
            resources=daemon.resources,
            env_from=_env_from(daemon),
            volumes=daemon.volumes,
            mounts=daemon.volumeMounts,
            secret_name=secret,
        ),
    }
    for deployment in values.dagster_user_deployments.deployments:
        pods[f"user-{deployment.name}"] = _pod(
            f"user-{deployment.name}",
            _image(deployment.image),
            pod_security=deployment.podSecurityContext,
            security=deployment.securityContext,
            resources=deployment.resources,
            env_from=_env_from(deployment),
            volumes=deployment.volumes,
            mounts=deployment.volumeMounts,
            secret_name=secret,
            port=deployment.port,
        )
        # a run starts from the code location's image (includeConfigInLaunchedRuns)
        launcher = values.runLauncher.config.k8sRunLauncher
        run_config = launcher.runK8sConfig or RunK8sConfig()
        container_config = run_config.containerConfig or {}
        pods[f"run-{deployment.name}"] = _pod(
            f"run-{deployment.name}",
            _image(deployment.image),
            pod_security=(run_config.podSpecConfig or {}).get("securityContext", {}),
            security={**(launcher.securityContext or {}), **container_config.get("securityContext", {})},
            resources=container_config.get("resources", launcher.resources or {}),
            env_from=_env_from(launcher),
            volumes=launcher.volumes,
            mounts=launcher.volumeMounts,
            secret_name=secret,
        )
    return pods
