"""The attack catalogue against real API processes: every attack gets its 4xx/429/503 JSON answer, memory stays
bounded and the service stays up (bench/attacks.py writes the same catalogue to bench/results/)."""

from __future__ import annotations

import pytest

from bench.attacks import RSS_LIMIT_MB, run


@pytest.mark.slow
@pytest.mark.timeout(900)  # three API processes start on a loaded 2-core machine
def test_every_attack_is_answered_and_bounded(tmp_path):
    result = run(tmp_path)
    by_name = {o["attack"]: o for o in result["outcomes"]}
    failed = [o for o in result["outcomes"] if not o["ok"]]
    assert failed == [] and result["server_errors"] == 0
    assert by_name["100000x1 PNG to /score"]["rss_delta_mb"] < RSS_LIMIT_MB
    for name in ("chunked 5 GiB to /score/batch", "chunked 5 GiB to /generate"):
        assert float(by_name[name]["note"].split()[0]) < 64, by_name[name]  # MiB read before the 413
    assert all(o["json_body"] for o in result["outcomes"] if o["error"])
