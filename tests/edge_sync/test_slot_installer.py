"""The A/B slot installer: verified downloads, atomic switch, health check, probation, revert, crash safety."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from edge_sync.bandwidth import BandwidthBudget
from edge_sync.cache import DeviceCache
from edge_sync.identity import PlatformSigner
from edge_sync.install_errors import InstallError, InstallPending
from edge_sync.objectstore import ObjectStore, StoreUnavailable
from edge_sync.release_manifest import decode, manifest_key
from edge_sync.slot_installer import STEPS, SlotInstaller, run_check
from tests.support.device import KEY, make_env
from tests.support.releases import app_release, publish, tarball


class Killed(BaseException):
    """The agent dies here (not an Exception: nothing in the installer may catch it)."""


class CountingStore(ObjectStore):
    """Counts ranged reads and can drop the connection after ``fail_after`` of them."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.url = inner, inner.url
        self.range_bytes = 0
        self.fail_after: int | None = None

    def get_range(self, key, start, length):
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise StoreUnavailable("connection reset (test)")
            self.fail_after -= 1
        data = self.inner.get_range(key, start, length)
        self.range_bytes += len(data)
        return data

    def put_if_absent(self, key, data):
        return self.inner.put_if_absent(key, data)

    def put(self, key, data):
        self.inner.put(key, data)

    def get(self, key):
        return self.inner.get(key)

    def head(self, key):
        return self.inner.head(key)

    def list(self, prefix="", *, after=None, limit=1000):
        return self.inner.list(prefix, after=after, limit=limit)

    def delete(self, key):
        self.inner.delete(key)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(tmp_path):
    e = make_env(tmp_path)
    e.store = CountingStore(e.store)
    yield e
    e.cache.close()


@pytest.fixture
def signer():
    return PlatformSigner.generate()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make(env, signer, clock):
    def build(**kw):
        kw.setdefault("min_free_bytes", 0)
        kw.setdefault("chunk_bytes", 4096)
        return SlotInstaller(
            env.root / "releases",
            cache=env.cache,
            store=env.store,
            platform_keys=signer.public_key_bytes(),
            wall=clock,
            **kw,
        )

    return build


def update_rows(env) -> list[tuple]:
    """(version, update_state, update_version, update_reason) of the health rows the installer recorded."""
    rows = env.cache.pending("health").to_pylist()
    return [
        (r["version"], r["update_state"], r["update_version"], r["update_reason"])
        for r in rows
        if r["update_state"]
    ]


def current_version(inst: SlotInstaller) -> str | None:
    link = inst.root / "current"
    return (link / "VERSION").read_text() if link.exists() else None


def test_install_switch_commit_reports_each_step(env, signer, make):
    publish(env.store, signer, "v1", app_release("v1"))
    inst = make()
    inst.install("v1", "a")
    inst.switch("a")
    assert current_version(inst) == "v1"
    assert inst.running() == ("v1", "a")
    assert inst.journal["committed"] == {"version": "v1", "slot": "a"}
    states = [(r[1], r[2]) for r in update_rows(env)]
    assert states == [("downloading", "v1"), ("installed", "v1"), ("activated", "v1"), ("committed", "v1")]
    assert not any((inst.root / "downloads").iterdir())  # the slot holds the bytes now


def test_blue_green_switch_and_rollback_need_no_download(env, signer, make):
    for v in ("v1", "v2"):
        publish(env.store, signer, v, app_release(v))
    inst = make()
    inst.install("v1", "a")
    inst.switch("a")
    inst.install("v2", "b")  # staging: the running slot is untouched
    assert current_version(inst) == "v1"
    fetched = env.store.range_bytes
    inst.switch("b")
    assert current_version(inst) == "v2"
    inst.switch("a")  # the rollback: back to the slot that still holds v1
    assert current_version(inst) == "v1"
    assert env.store.range_bytes == fetched
    with pytest.raises(InstallError, match="runs v1") as exc:
        inst.install("v3", "a")
    assert exc.value.reason == "active_slot"


def test_hash_mismatch_is_refused_and_nothing_installed(env, signer, make):
    payload = app_release("v1")
    publish(env.store, signer, "v1", payload, sha256="0" * 64)
    inst = make()
    with pytest.raises(InstallError) as exc:
        inst.install("v1", "a")
    assert exc.value.reason == "hash_mismatch"
    assert inst.slots() == {} and inst.journal["pending"] is None
    assert not any((inst.root / "downloads").iterdir())  # bad bytes are not kept to resume from
    assert update_rows(env)[-1][1:3] == ("failed", "v1")
    assert "hash_mismatch" in update_rows(env)[-1][3]


@pytest.mark.parametrize("how", ["other_key", "tampered"])
def test_bad_signature_is_refused(env, signer, make, how):
    payload = app_release("v1")
    if how == "other_key":
        publish(env.store, PlatformSigner.generate(), "v1", payload)
    else:
        publish(env.store, signer, "v1", payload)
        key = manifest_key("t1", "v1")
        raw = env.store.get(key).replace(b'"probation_s": 0.0', b'"probation_s": 1.0')
        env.store.put(key, raw)
    inst = make()
    with pytest.raises(InstallError) as exc:
        inst.install("v1", "a")
    assert exc.value.reason == "bad_signature"
    assert env.store.range_bytes == 0  # nothing downloaded for an unsigned release
    assert inst.slots() == {}


def test_disk_full_is_refused_before_downloading(env, signer, make):
    publish(env.store, signer, "v1", app_release("v1"))
    inst = make(free_bytes=lambda path: 100)
    with pytest.raises(InstallError) as exc:
        inst.install("v1", "a")
    assert exc.value.reason == "disk_full" and "100 are free" in str(exc.value)
    assert env.store.range_bytes == 0


def test_interrupted_download_resumes_where_it_stopped(env, signer, make):
    payload = tarball(
        {"VERSION": "v1", "blob": secrets.token_bytes(40_000), "check.sh": "#!/bin/sh\n"}, {"check.sh": 0o755}
    )
    publish(env.store, signer, "v1", payload)
    inst = make(chunk_bytes=4096)
    env.store.fail_after = 3
    with pytest.raises(InstallPending, match="interrupted at 12288"):
        inst.install("v1", "a")
    assert inst.fetcher.missing_bytes(_artifact(env, signer)) == len(payload) - 12288
    env.store.fail_after = None
    inst = make(chunk_bytes=4096)  # even across an agent restart
    inst.install("v1", "a")
    assert env.store.range_bytes == len(payload)  # every byte fetched once
    inst.switch("a")
    assert current_version(inst) == "v1"


def test_download_allowance_spreads_the_download_over_syncs(env, signer, make):
    payload = tarball({"VERSION": "v1", "blob": secrets.token_bytes(20_000)})
    publish(env.store, signer, "v1", payload, check=False)
    inst = make(chunk_bytes=4096, budget=BandwidthBudget(bytes_per_sync=8192))
    syncs = 0
    while True:
        syncs += 1
        try:
            inst.install("v1", "a")
            break
        except InstallPending as exc:
            assert "allowance" in str(exc)
    assert syncs == -(-len(payload) // 8192)
    assert env.store.range_bytes == len(payload)
    assert [r[1] for r in update_rows(env)] == ["downloading", "installed"]  # one row per step, not per sync


def test_failing_health_check_reverts_and_is_not_retried(env, signer, make):
    publish(env.store, signer, "v1", app_release("v1"))
    publish(env.store, signer, "v2", app_release("v2", healthy=False))
    inst = make()
    inst.install("v1", "a")
    inst.switch("a")
    inst.install("v2", "b")
    with pytest.raises(InstallError) as exc:
        inst.switch("b")
    assert exc.value.reason == "health_check"
    assert current_version(inst) == "v1" and inst.journal["committed"]["version"] == "v1"
    last = update_rows(env)[-1]
    assert last[:3] == ("v1", "reverted", "v2") and "exited 1: broken" in last[3]
    with pytest.raises(InstallError) as again:
        inst.switch("b")
    assert again.value.reason == "reverted_before"


def test_probation_commits_after_its_period_or_reverts_on_a_later_failure(env, signer, make, clock):
    publish(env.store, signer, "v1", app_release("v1"))
    publish(env.store, signer, "v2", app_release("v2"), probation_s=60)
    healthy = {"v2": True}

    def check(command, cwd, env_, timeout):
        if env_["EDGE_SYNC_VERSION"] == "v2" and not healthy["v2"]:
            return False, "v2 stopped answering"
        return run_check(command, cwd, env_, timeout)

    inst = make(check=check)
    inst.install("v1", "a")
    inst.switch("a")
    inst.install("v2", "b")
    inst.switch("b")
    assert inst.in_probation() and inst.tick() is None
    clock.t += 30
    healthy["v2"] = False
    assert inst.tick() == "reverted"
    assert current_version(inst) == "v1"
    # the same version, published anew, is refused: it was reverted here
    clock.t += 1000
    assert inst.tick() is None


def test_probation_passes_then_commits(env, signer, make, clock):
    publish(env.store, signer, "v1", app_release("v1"), probation_s=60)
    inst = make()
    inst.install("v1", "a")
    inst.switch("a")
    assert inst.tick() is None
    clock.t += 61
    assert inst.tick() == "committed"
    assert inst.journal == {**inst.journal, "committed": {"version": "v1", "slot": "a"}, "pending": None}


def test_crash_loop_in_probation_reverts(env, signer, make):
    publish(env.store, signer, "v1", app_release("v1"))
    publish(env.store, signer, "v2", app_release("v2"), probation_s=600, max_restarts=2)
    inst = make()
    inst.install("v1", "a")
    inst.switch("a")
    inst.install("v2", "b")
    inst.switch("b")
    for _ in range(2):  # two restarts are tolerated
        inst = make()
        assert inst.running() == ("v2", "b")
    inst = make()  # the third is a crash loop
    assert inst.running() == ("v1", "a")
    last = update_rows(env)[-1]
    assert last[1:3] == ("reverted", "v2") and last[3].startswith("crash_loop")


def _artifact(env, signer):
    raw = env.store.get(manifest_key("t1", "v1"))
    return decode(raw, platform_keys=signer.public_key_bytes(), tenant_id="t1", version="v1").artifacts[0]


def _consistent(inst: SlotInstaller) -> None:
    """``current`` is absent or points at a complete slot that is committed or in probation."""
    slot = inst.active_slot()
    pending, committed = inst.journal["pending"], inst.journal["committed"]
    if slot is None:
        assert committed is None
        return
    assert inst.slot_version(slot) is not None
    assert (inst.root / "current" / "VERSION").read_text() == inst.slot_version(slot)
    if pending is None:
        assert committed == {"version": inst.slot_version(slot), "slot": slot}
    else:
        assert pending["step"] == "activated" and pending["slot"] == slot
    assert not any(p.name.startswith(".") for p in (inst.root / "slots").iterdir())


@pytest.mark.parametrize("healthy", [True, False], ids=["healthy", "unhealthy"])
@pytest.mark.parametrize("step", STEPS)
def test_killed_at_every_step_comes_back_consistent(env, signer, make, step, healthy):
    publish(env.store, signer, "v1", app_release("v1"))
    publish(env.store, signer, "v2", app_release("v2", healthy=healthy), probation_s=60)
    make().install("v1", "a")
    first = make()
    first.switch("a")

    def die(at):
        if at == step:
            raise Killed(at)

    inst = make(step_hook=die)
    killed = False
    try:
        inst.install("v2", "b")
        inst.switch("b")
    except Killed:
        killed = True
    except InstallError:
        assert not healthy
    inst = make()  # the agent starts again
    _consistent(inst)
    assert inst.running()[0] in ("v1", "v2")
    # and the downlink's next pull (probation tick, then the release) finishes the job
    try:
        inst.tick()
        if inst.slot_version("b") != "v2":
            inst.install("v2", "b")
        inst.switch("b")
    except InstallError as exc:
        assert not healthy and exc.reason in ("health_check", "reverted_before")
    _consistent(inst)
    assert inst.running()[0] == ("v2" if healthy else "v1")
    if healthy and killed:
        assert inst.in_probation() or inst.journal["committed"]["version"] == "v2"


def test_sigkill_mid_install_and_mid_switch(tmp_path, env, signer, make):
    """A real SIGKILL of a process installing, at two boundaries; a new process recovers."""

    publish(env.store, signer, "v1", app_release("v1"))
    publish(env.store, signer, "v2", app_release("v2"), probation_s=60)
    make().install("v1", "a")
    make().switch("a")
    env.cache.close()
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from edge_sync.cache import DeviceCache
        from edge_sync.objectstore import LocalObjectStore
        from edge_sync.slot_installer import SlotInstaller
        from tests.support.device import KEY
        at = sys.argv[1]
        cache = DeviceCache.open({str(env.root / "cache.db")!r}, tenant_id="t1", device_id="dev-1", key=KEY)
        def hook(step):
            if step == at:
                os.kill(os.getpid(), signal.SIGKILL)
        inst = SlotInstaller({str(env.root / "releases")!r}, cache=cache, store=LocalObjectStore({str(env.root / "store")!r}),
                             platform_keys=bytes.fromhex({signer.public_key_bytes().hex()!r}), min_free_bytes=0,
                             chunk_bytes=4096, step_hook=hook)
        inst.install("v2", "b")
        inst.switch("b")
        """
    )
    for at in ("slot_built", "switched"):
        done = subprocess.run(
            [sys.executable, "-c", script, at], cwd=os.getcwd(), capture_output=True, timeout=120
        )
        assert done.returncode == -9, done.stderr.decode()[-2000:]
        env.cache = DeviceCache.open(env.root / "cache.db", tenant_id="t1", device_id="dev-1", key=KEY)
        inst = make()
        _consistent(inst)
        expected = "v1" if at == "slot_built" else "v2"
        assert inst.running()[0] == expected
        if at == "switched":
            assert inst.in_probation()
        env.cache.close()
    env.cache = DeviceCache.open(env.root / "cache.db", tenant_id="t1", device_id="dev-1", key=KEY)


def test_a_damaged_slot_in_probation_is_reverted(env, signer, make):
    publish(env.store, signer, "v1", app_release("v1"))
    publish(env.store, signer, "v2", app_release("v2"), probation_s=60)
    inst = make()
    inst.install("v1", "a")
    inst.switch("a")
    inst.install("v2", "b")
    inst.switch("b")
    (inst.slot_dir("b") / "release.json").write_bytes(b"{}")  # tampered on disk
    assert inst.tick() == "reverted"
    assert inst.running() == ("v1", "a")
    assert update_rows(env)[-1][3].startswith("slot_damaged")


@pytest.mark.parametrize("member", ["../escape", "sub/../../escape"])
def test_an_archive_member_escaping_the_slot_is_refused(env, signer, make, member):
    publish(env.store, signer, "v1", tarball({"VERSION": "v1", member: "x"}), check=False)
    inst = make()
    with pytest.raises(InstallError) as exc:
        inst.install("v1", "a")
    assert exc.value.reason == "bad_archive"
    assert inst.slots() == {} and inst.journal["pending"] is None
    assert not (inst.root / "escape").exists() and not list((inst.root / "slots").iterdir())
    assert update_rows(env)[-1][1] == "failed"


def test_an_absolute_archive_member_stays_inside_the_slot(env, signer, make, tmp_path):
    target = tmp_path / "outside"
    publish(env.store, signer, "v1", tarball({"VERSION": "v1", str(target): "x"}), check=False)
    inst = make()
    inst.install("v1", "a")
    assert not target.exists()
    assert (inst.slot_dir("a") / str(target).lstrip("/")).read_text() == "x"
