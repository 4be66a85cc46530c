"""The local Dagster instance that ``prepare_home`` writes: platform warnings reach the run's event log."""

from __future__ import annotations

import logging

import dagster as dg

from cli.environment import prepare_home


def test_platform_warnings_logged_in_a_run_show_in_its_event_log(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEPLAT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    prepare_home()

    @dg.op
    def maintenance() -> None:
        logging.getLogger("edgeplat.sync.compaction").warning(
            "maintenance child died (SIGSEGV), attempt 1 of 3"
        )
        logging.getLogger("edge_sync.uploader").info("uploaded 3 batches")
        logging.getLogger("edgeplat.sync.compaction").debug("a detail below the captured level")
        logging.getLogger("botocore.endpoint").warning("a third-party record stays out")

    @dg.job
    def job() -> None:
        maintenance()

    with dg.DagsterInstance.get() as instance:
        assert instance.managed_python_loggers == ["edgeplat", "edge_sync"]
        result = job.execute_in_process(instance=instance)
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert "maintenance child died (SIGSEGV), attempt 1 of 3" in messages
    assert "uploaded 3 batches" in messages
    assert not any("below the captured level" in m or "third-party" in m for m in messages)
