"""``make agent-artifacts``: the recipe and deployment it renders pin the wheel it built, by hash.

Runs ``scripts/agent_artifacts.py`` as the Makefile does, then checks the rendered Greengrass
recipe's artifact digests against the files on disk, the IoT Edge module's image reference
against the wheel's hash, the dependency pins, and the agent's container build file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("agent")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "agent_artifacts.py"),
            "--out",
            str(out),
            "--artifact-base",
            "s3://fleet-artifacts/edge-sync",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _b64_sha256(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def test_rendered_recipe_pins_the_built_wheel_by_digest(out: Path) -> None:
    (wheel,) = out.glob("edge_sync-*.whl")
    recipe = yaml.safe_load((out / "greengrass-recipe.yaml").read_text())
    manifest = recipe["Manifests"][0]
    by_name = {a["URI"].rsplit("/", 1)[1]: a for a in manifest["Artifacts"]}
    assert set(by_name) == {wheel.name, "requirements-device.txt"}
    assert by_name[wheel.name]["Digest"] == _b64_sha256(wheel)
    assert by_name["requirements-device.txt"]["Digest"] == _b64_sha256(out / "requirements-device.txt")
    assert all(a["Algorithm"] == "SHA-256" for a in manifest["Artifacts"])
    assert (
        by_name[wheel.name]["URI"]
        == f"s3://fleet-artifacts/edge-sync/{recipe['ComponentVersion']}/{wheel.name}"
    )
    install = manifest["Lifecycle"]["install"]["Script"]
    assert f"{{artifacts:path}}/{wheel.name}" in install and "--no-index" in install
    assert "--require-hashes" in install and "{artifacts:path}/requirements-device.txt" in install
    assert "pypi.org" not in json.dumps(recipe) and "packageSpec" not in json.dumps(recipe)
    summary = json.loads((out / "artifacts.json").read_text())
    assert summary["wheel"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_the_template_is_never_deployable_as_is() -> None:
    recipe = yaml.safe_load((REPO / "edge_sync/packaging/greengrass-recipe.yaml").read_text())
    digests = {a["Digest"] for a in recipe["Manifests"][0]["Artifacts"]}
    assert digests == {"RENDERED-BY-make-agent-artifacts"}  # Greengrass refuses it: not a digest


def test_deployment_pins_the_agent_image_by_the_wheel_hash_or_a_digest(out: Path, tmp_path: Path) -> None:
    (wheel,) = out.glob("edge_sync-*.whl")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    doc = json.loads((out / "iot-edge-deployment.json").read_text())
    module = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["edge-sync"]
    assert module["settings"]["image"].endswith(f":0.1.0-{sha[:12]}")
    assert module["env"]["EDGE_SYNC_WHEEL_SHA256"]["value"] == sha
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import agent_artifacts  # noqa: PLC0415 - a script, importable only from its folder
    finally:
        sys.path.remove(str(REPO / "scripts"))
    pinned = agent_artifacts.render_deployment(
        agent_artifacts.BuiltFile(wheel), "reg.example/edge-sync", DIGEST
    )
    assert (
        json.loads(pinned)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["edge-sync"][
            "settings"
        ]["image"]
        == f"reg.example/edge-sync@{DIGEST}"
    )
    with pytest.raises(SystemExit, match="image-digest"):
        agent_artifacts.render_deployment(agent_artifacts.BuiltFile(wheel), "reg.example/edge-sync", "latest")


def test_every_agent_dependency_is_pinned_with_hashes() -> None:
    text = (REPO / "edge_sync/packaging/requirements-device.txt").read_text()
    entries = re.split(r"\n(?=[a-z0-9])", text.split("\n", 2)[2].strip())
    pins = {}
    for entry in entries:
        name, version = entry.split(" ", 1)[0].split("==")
        assert "--hash=sha256:" in entry, f"{name} has no hash"
        pins[name.lower().replace("_", "-")] = version
    device = tomllib.loads((REPO / "edge_sync/pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in device:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, (
            f"{name} (edge_sync/pyproject.toml) is not in requirements-device.txt: run make agent-lock"
        )
    lock = (REPO / "requirements.lock").read_text()
    for name, version in pins.items():  # the device runs what the platform's tests ran
        assert re.search(rf"^{re.escape(name)}=={re.escape(version)}$", lock, re.M | re.I), name


def test_agent_container_build_checks_the_wheel_and_runs_unprivileged() -> None:
    text = (REPO / "deploy/docker/edge-agent.Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    assert ":" in base and not base.endswith(":latest")
    assert re.search(r"^USER 10001", text, re.M)
    assert "sha256sum --check" in text and "AGENT_WHEEL_SHA256" in text
    assert "--require-hashes" in text and "--no-index" in text
    copied = re.search(r"^COPY (.+) /tmp/agent/$", text, re.M).group(1).split()
    assert copied == ["requirements-device.txt", "edge_sync-${AGENT_VERSION}-py3-none-any.whl"]
