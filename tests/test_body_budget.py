"""Bounded memory for request bodies: a budget of body bytes in flight answers the request past it 503 JSON with
Retry-After before reading its body (declared or chunked), and `/score/batch` bodies go to temporary files."""

from __future__ import annotations

import pytest

from bench.body_budget import run
from services.limits import BodyBudget


def test_the_budget_admits_a_lone_body_of_any_size_and_refuses_what_does_not_fit_beside_others():
    budget = BodyBudget(100)
    assert budget.take(150) and not budget.take(1) and budget.take(0)
    budget.give(150)
    assert budget.take(60) and budget.take(40) and not budget.take(1)
    budget.give(60)
    assert budget.take(60) and budget.used == 100


@pytest.mark.slow
def test_eight_concurrent_maximum_size_batches_stay_on_disk_and_a_ninth_is_refused_before_its_body(tmp_path):
    result = run(tmp_path, concurrent=8, body_limit=64 * 2**20)
    assert result.body_bytes > 60 * 2**20
    assert result.admitted_statuses == [202] * 8
    assert (result.extra_status, result.extra_error) == (503, "too_many_bodies_in_flight")
    assert int(result.extra_retry_after) > 0
    assert result.chunked_status == 503
    assert result.rss_rise_mb < 500, result  # 8 bodies held in memory would be 512 MiB and more
