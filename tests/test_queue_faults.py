"""Queue faults with real processes (bench/queue_faults.py's scenarios, asserted): a job longer than the
visibility timeout is done once while its worker lives; a SIGKILLed worker's job is reclaimed and done; a Redis
crash and restart (AOF) under load loses no accepted job and ends no worker."""

from __future__ import annotations

import pytest

from bench.queue_faults import QueueOptions, lease_scenario, outage_scenario

pytestmark = pytest.mark.slow


def test_long_job_with_three_idle_workers_is_done_once_and_a_killed_workers_job_is_reclaimed(tmp_path):
    result = lease_scenario(tmp_path, compute_s=8.0, workers=4, options=QueueOptions(visibility_timeout_s=2.0))
    assert (result.long_job_status, result.long_job_deliveries) == ("done", 1)
    assert (result.killed_job_status, result.killed_job_deliveries) == ("done", 2)
    assert result.killed_job_done_after_s >= 2.0  # not before its lease ran out
    assert result.worker_exits == 0


def test_redis_crash_and_restart_under_load_loses_nothing(tmp_path):
    result = outage_scenario(tmp_path, workers=3, submit_s=6.0, down_at_s=1.5, down_for_s=2.5)
    assert result.refused > 0, "Redis was never seen down"
    assert result.accepted > 20
    assert result.lost == 0 and result.failed == 0
    assert result.completed == result.accepted
    assert result.redelivered > 0, "no batch ended while Redis was down: the outage hit idle workers only"
    assert result.worker_exits == 0
