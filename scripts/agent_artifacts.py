"""Build the device agent's install artifacts and render its Greengrass and IoT Edge packaging.

``make agent-artifacts`` (``python scripts/agent_artifacts.py``) builds the agent wheel from
``./edge_sync`` with ``uv build``, copies the agent's dependency pins (with hashes,
``edge_sync/packaging/requirements-device.txt``, kept by ``make agent-lock``) beside it, and
renders into the output folder:

- ``greengrass-recipe.yaml``: the component recipe with both files as artifacts, each with its
  SHA-256 digest (base64, the form Greengrass checks before it runs the install script); the
  install step then installs the dependencies by hash and the wheel with no package index;
- ``iot-edge-deployment.json``: the deployment with the agent module's image pinned by digest
  (``--image-digest``, after the image is pushed) or by a tag carrying the wheel's hash;
- ``artifacts.json``: names, sizes and SHA-256 of the files and the exact ``docker build``
  command of ``deploy/docker/edge-agent.Dockerfile``, which checks the wheel's hash again.

Nothing is fetched from a package index by name alone: the wheel comes from this repository and
every dependency is pinned to a version and its hashes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]  # scripts/ sits at the repository root
DEVICE = REPO / "edge_sync"
PACKAGING = DEVICE / "packaging"
REQUIREMENTS = "requirements-device.txt"
DOCKERFILE = "deploy/docker/edge-agent.Dockerfile"
DEFAULT_ARTIFACT_BASE = "s3://EDGE-ARTIFACTS-BUCKET/edge-sync"
DEFAULT_IMAGE = "edgeplat.azurecr.io/edge-sync"
# The wheel file name the templates are written with; rendering puts the built one in its place.
TEMPLATE_WHEEL = "edge_sync-0.1.0-py3-none-any.whl"


@dataclass(frozen=True)
class BuiltFile:
    """One artifact: its path and digests."""

    path: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def greengrass_digest(self) -> str:
        """SHA-256 as Greengrass recipes write it: base64 of the raw digest."""
        return base64.b64encode(hashlib.sha256(self.path.read_bytes()).digest()).decode("ascii")


def build_wheel(out: Path) -> BuiltFile:
    """Build the agent wheel from ./edge_sync into ``out`` (from a copy: the build writes beside its sources)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("edge_sync-*.whl"):
        old.unlink()
    uv = Path(sys.executable).parent / "uv"
    uv_cmd = str(uv) if uv.exists() else shutil.which("uv")
    if uv_cmd is None:
        raise SystemExit("uv is not installed: run `make venv` (it installs uv into .venv)")
    with tempfile.TemporaryDirectory() as tmp:
        source = shutil.copytree(
            DEVICE,
            Path(tmp) / "edge_sync",
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
        )
        done = subprocess.run(
            [uv_cmd, "build", "--wheel", "--quiet", "-o", str(out), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"building the agent wheel failed:\n{done.stdout}{done.stderr}")
    (wheel,) = out.glob("edge_sync-*.whl")
    return BuiltFile(wheel)


def render_recipe(wheel: BuiltFile, requirements: BuiltFile, artifact_base: str) -> str:
    """The Greengrass recipe with the built wheel and pins as digest-checked artifacts."""
    template = (PACKAGING / "greengrass-recipe.yaml").read_text()
    recipe = yaml.safe_load(template.replace(TEMPLATE_WHEEL, wheel.path.name))
    recipe["ComponentVersion"] = wheel_version(wheel.path)
    base = artifact_base.rstrip("/") + f"/{recipe['ComponentVersion']}"
    for manifest in recipe["Manifests"]:
        manifest["Artifacts"] = [
            {
                "URI": f"{base}/{f.path.name}",
                "Digest": f.greengrass_digest,
                "Algorithm": "SHA-256",
                "Unarchive": "NONE",
                "Permission": {"Read": "OWNER", "Execute": "NONE"},
            }
            for f in (wheel, requirements)
        ]
    header = (
        f"# Rendered by `make agent-artifacts` from edge_sync/packaging/greengrass-recipe.yaml.\n"
        f"# {wheel.path.name} sha256 {wheel.sha256}\n"
        f"# Upload {wheel.path.name} and {REQUIREMENTS} to {base}/, then:\n"
        "#   aws greengrassv2 create-component-version --inline-recipe fileb://greengrass-recipe.yaml\n"
    )
    return header + "---\n" + yaml.safe_dump(recipe, sort_keys=False, width=120)


def render_deployment(wheel: BuiltFile, image: str, image_digest: str | None) -> str:
    """The IoT Edge deployment with the agent module's image pinned (digest, or a tag of the wheel's hash)."""
    doc = json.loads((PACKAGING / "iot-edge-deployment.json").read_text())
    module = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["edge-sync"]
    module["settings"]["image"] = image_reference(wheel, image, image_digest)
    module.setdefault("env", {})["EDGE_SYNC_WHEEL_SHA256"] = {"value": wheel.sha256}
    return json.dumps(doc, indent=2) + "\n"


def image_reference(wheel: BuiltFile, image: str, image_digest: str | None) -> str:
    if image_digest:
        digest = image_digest.removeprefix("sha256:")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise SystemExit(
                f"--image-digest {image_digest!r} is not sha256:<64 hex digits> (docker inspect shows it)"
            )
        return f"{image}@sha256:{digest}"
    return f"{image}:{image_tag(wheel)}"


def image_tag(wheel: BuiltFile) -> str:
    return f"{wheel_version(wheel.path)}-{wheel.sha256[:12]}"


def wheel_version(path: Path) -> str:
    return path.name.split("-")[1]


def build(
    out: Path,
    *,
    artifact_base: str = DEFAULT_ARTIFACT_BASE,
    image: str = DEFAULT_IMAGE,
    image_digest: str | None = None,
) -> dict:
    """Build the wheel, copy the pins, render recipe and deployment into ``out``; return the summary."""
    wheel = build_wheel(out)
    requirements = BuiltFile(Path(shutil.copyfile(PACKAGING / REQUIREMENTS, out / REQUIREMENTS)))
    (out / "greengrass-recipe.yaml").write_text(render_recipe(wheel, requirements, artifact_base))
    (out / "iot-edge-deployment.json").write_text(render_deployment(wheel, image, image_digest))
    summary = {
        "wheel": {"file": wheel.path.name, "size": wheel.path.stat().st_size, "sha256": wheel.sha256},
        "requirements": {"file": REQUIREMENTS, "sha256": requirements.sha256},
        "image": image_reference(wheel, image, image_digest),
        "docker_build": (
            f"docker build -f {DOCKERFILE} --build-arg AGENT_VERSION={wheel_version(wheel.path)} "
            f"--build-arg AGENT_WHEEL_SHA256={wheel.sha256} -t {image}:{image_tag(wheel)} {out}"
        ),
    }
    (out / "artifacts.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make agent-artifacts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "agent")
    parser.add_argument(
        "--artifact-base", default=DEFAULT_ARTIFACT_BASE, help="where the recipe's artifacts live"
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="the agent image's repository")
    parser.add_argument(
        "--image-digest", default=None, help="sha256:... of the pushed image (pins it by digest)"
    )
    args = parser.parse_args(argv)
    summary = build(
        args.out, artifact_base=args.artifact_base, image=args.image, image_digest=args.image_digest
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
