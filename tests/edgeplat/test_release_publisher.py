"""``edgeplat release publish``: what an operator publishes is what the agent's installer installs."""

from __future__ import annotations

import json

import pytest

from cli import main
from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import LocalObjectStore
from edge_sync.release_manifest import manifest_key
from edge_sync.slot_installer import SlotInstaller
from edgeplat.release_publisher import ArtifactFile, ReleaseExists, publish_release
from tests.support.device import TENANT, make_env
from tests.support.releases import app_release


def test_published_release_installs_on_the_agent(tmp_path, capsys):
    signer = PlatformSigner.generate()
    signer.save(tmp_path / "platform.pem")
    archive = tmp_path / "app-v7.tar.gz"
    archive.write_bytes(app_release("v7"))
    store_dir = tmp_path / "device" / "store"  # the device env's store folder
    argv = ["release", "publish", "--tenant", TENANT, "--version", "v7", "--archive", str(archive)]
    argv += ["--health-check", "./check.sh", "--probation", "0", "--store", str(store_dir)]
    argv += ["--signing-key", str(tmp_path / "platform.pem")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["artifacts"][0]["url"] == f"store:tenant={TENANT}/releases/v7/app-v7.tar.gz"

    env = make_env(tmp_path / "device")
    try:
        inst = SlotInstaller(
            tmp_path / "releases",
            cache=env.cache,
            store=env.store,
            platform_keys=signer.public_key_bytes(),
            min_free_bytes=0,
        )
        inst.install("v7", "a")
        inst.switch("a")
        assert inst.journal["committed"] == {"version": "v7", "slot": "a"}
    finally:
        env.cache.close()

    assert main(argv) == 0  # the same release again: nothing changes
    archive.write_bytes(app_release("v7-changed"))
    assert main(argv) == 2
    assert "already published with other contents" in capsys.readouterr().err


def test_an_artifact_served_elsewhere_is_named_by_its_url(tmp_path):
    store, signer = LocalObjectStore(tmp_path / "s"), PlatformSigner.generate()
    f = tmp_path / "agent.bin"
    f.write_bytes(b"\x7fELF...")
    manifest = publish_release(
        store, signer, TENANT, "v1", [ArtifactFile(f, url="https://cdn.example/agent.bin")], probation_s=60
    )
    assert manifest.artifacts[0].url == "https://cdn.example/agent.bin" and manifest.artifacts[0].size == 7
    assert [o.key for o in store.list().objects] == [manifest_key(TENANT, "v1")]  # nothing uploaded
    f.write_bytes(b"other")
    with pytest.raises(ReleaseExists):
        publish_release(store, signer, TENANT, "v1", [ArtifactFile(f, url="https://cdn.example/agent.bin")])
