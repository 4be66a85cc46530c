"""deploy/k8s: every rendered object valid for Kubernetes (core objects with kubernetes-validate,
custom resources with their projects' schemas), secrets only through External Secrets, and the
migration ordered before the chart by Argo CD sync waves."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from cli import COMMANDS, build_parser
from pipelines.resources import PRODUCTION_ENV
from tests.support.deploy_tools import (
    ENVIRONMENTS,
    KUBERNETES_VERSION,
    REPO,
    is_core,
    name_of,
    validate_custom_resources,
    wave,
    yaml_documents,
)

# kubectl, node and the schema packages of `make tools`; one group renders the overlays once
pytestmark = [pytest.mark.services, pytest.mark.xdist_group("deploy")]


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}]


def test_every_core_object_is_valid_for_kubernetes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    problems = []
    for env, objects in rendered.items():
        core = [o for o in objects if is_core(o)]
        assert {"Deployment", "Job", "ConfigMap", "Service", "ServiceAccount"} <= {o["kind"] for o in core}
        for obj in core:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{env} {name_of(obj)}: {exc.message} at {list(exc.path)}")
    assert problems == []


def test_kubernetes_validate_refuses_an_unknown_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(next(o for o in rendered["dev"] if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_custom_resource_matches_its_schema(rendered: dict[str, list[dict[str, Any]]]) -> None:
    custom = [o for objects in rendered.values() for o in objects if not is_core(o)]
    assert {o["kind"] for o in custom} == {"SecretStore", "ExternalSecret", "ServiceMonitor"}
    verdicts = validate_custom_resources(custom)
    assert [(name_of(o), v) for o, v in zip(custom, verdicts, strict=True) if v] == []


def test_the_schemas_refuse_a_broken_external_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    secret = copy.deepcopy(next(o for o in rendered["prod"] if o["kind"] == "ExternalSecret"))
    secret["spec"]["refreshInterval"] = 3600  # a duration string, not a number
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    bad_secret, no_schema = validate_custom_resources([secret, unknown])
    assert bad_secret and "refreshInterval" in bad_secret
    assert no_schema and "no schema" in no_schema


def test_no_secret_is_kept_in_git() -> None:
    """Secrets come from Vault through External Secrets; no Secret object sits in the repository."""
    found = []
    for folder in ("deploy", "gitops"):
        for path in sorted((REPO / folder).rglob("*.y*ml")):
            found += [
                f"{path.relative_to(REPO)}: {name_of(d)}"
                for d in yaml_documents(path)
                if d.get("kind") == "Secret"
            ]
    assert found == []


def test_every_secret_a_workload_reads_comes_from_vault(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for env, objects in rendered.items():
        from_vault = {o["spec"]["target"]["name"] for o in objects if o["kind"] == "ExternalSecret"}
        stores = {o["metadata"]["name"]: o for o in objects if o["kind"] == "SecretStore"}
        assert all("vault" in s["spec"]["provider"] for s in stores.values())
        assert {o["spec"]["secretStoreRef"]["name"] for o in objects if o["kind"] == "ExternalSecret"} <= set(
            stores
        )
        read = set()
        for workload in _workloads(objects):
            pod = workload["spec"]["template"]["spec"]
            read |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
            for c in pod["containers"]:
                read |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
                read |= {
                    e["valueFrom"]["secretKeyRef"]["name"]
                    for e in c.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})
                }
        assert read and read <= from_vault, (
            f"{env}: {sorted(read - from_vault)} are not ExternalSecret targets"
        )
        keys = [
            ref["remoteRef"]["key"] if "remoteRef" in ref else ref["extract"]["key"]
            for o in objects
            if o["kind"] == "ExternalSecret"
            for ref in o["spec"].get("data", []) + o["spec"].get("dataFrom", [])
        ]
        assert keys and all(k.startswith(f"edgeplat/{env}/") for k in keys), keys


def test_the_migration_runs_after_the_secrets_and_before_the_workloads(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for env, objects in rendered.items():
        (job,) = [o for o in objects if o["kind"] == "Job"]
        annotations = job["metadata"]["annotations"]
        assert annotations["argocd.argoproj.io/hook"] == "Sync"  # re-run at every sync
        assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
        assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
            "dagster",
            "instance",
            "migrate",
        ]
        prerequisites = [o for o in objects if o["kind"] in {"SecretStore", "ExternalSecret", "ConfigMap"}]
        assert max(wave(o) for o in prerequisites) < wave(job) < 0, env
        # the chart's webserver and daemon carry no wave annotation: wave 0, after the Job
        assert all(wave(o) >= 0 for o in objects if o["kind"] == "Deployment")


def test_every_pod_is_locked_down(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objects in rendered.values():
        for workload in _workloads(objects):
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name_of(workload)
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert not sc.get("privileged", False) and sc["capabilities"]["drop"] == ["ALL"]
                assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name_of(workload)


def test_each_environment_gets_its_own_namespace_and_the_image(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for env, objects in rendered.items():
        assert {o["metadata"].get("namespace") for o in objects} == {f"edgeplat-{env}"}
        images = {
            c["image"] for w in _workloads(objects) for c in w["spec"]["template"]["spec"]["containers"]
        }
        assert len(images) == 1 and images.pop().startswith("registry.example.com/edgeplat/code-location:")


EDGEPLAT_COMMANDS = {
    "edgeplat-live": ["live"],
    "edgeplat-metrics": ["metrics", "serve", "--port", "9464", "--addr", "0.0.0.0"],
}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_live_and_metrics_run_the_edgeplat_commands(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    deployments = {o["metadata"]["name"]: o for o in rendered[env] if o["kind"] == "Deployment"}
    for name, args in EDGEPLAT_COMMANDS.items():
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["edgeplat"] and container["args"] == args
    (metrics,) = deployments["edgeplat-metrics"]["spec"]["template"]["spec"]["containers"]
    port = int(metrics["args"][metrics["args"].index("--port") + 1])
    assert [p["containerPort"] for p in metrics["ports"]] == [port]
    (service,) = [o for o in rendered[env] if o["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == metrics["ports"][0]["name"]
    assert service["spec"]["selector"] == deployments["edgeplat-metrics"]["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("args", list(EDGEPLAT_COMMANDS.values()), ids=list(EDGEPLAT_COMMANDS))
def test_the_manifests_commands_parse_with_the_cli(args: list[str]) -> None:
    """Once `edgeplat live` and `edgeplat metrics serve` are registered, their manifests' arguments
    must be accepted by the real parser (the commands come from the live and metrics work)."""
    if args[0] not in COMMANDS:
        pytest.skip(f"`edgeplat {args[0]}` is not registered in cli.COMMANDS on this branch yet")
    parsed = build_parser().parse_args(args)
    assert parsed.handler is not None


def test_the_pods_get_every_production_setting_from_its_right_place(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """pipelines/resources.py names the production settings: the plain ones that are not optional
    are in the edgeplat-env ConfigMap, and no secret one is (those come from Vault)."""
    plain = {
        k for k, (secret, what) in PRODUCTION_ENV.items() if not secret and not what.startswith("optional")
    }
    secret = {k for k, (is_secret, _) in PRODUCTION_ENV.items() if is_secret}
    for env, objects in rendered.items():
        config = next(o for o in objects if o["metadata"]["name"] == "edgeplat-env")["data"]
        assert plain <= set(config), f"{env}: {sorted(plain - set(config))} missing from edgeplat-env"
        assert not secret & set(config), (
            f"{env}: secret settings {sorted(secret & set(config))} in a ConfigMap"
        )
        assert config["EDGEPLAT_ENV"] == "production"


def test_every_manifest_under_deploy_k8s_is_rendered() -> None:
    """A manifest added under deploy/k8s but left out of its kustomization would be neither
    deployed nor checked: each file is a resource or a patch of the kustomization beside it."""
    k8s = REPO / "deploy" / "k8s"
    missing = []
    for path in sorted(k8s.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        kustomization = yaml_documents(path.parent / "kustomization.yaml")[0]
        used = set(kustomization.get("resources", [])) | {
            p["path"] for p in kustomization.get("patches", []) if "path" in p
        }
        if path.name not in used:
            missing.append(str(path.relative_to(REPO)))
    assert missing == []
