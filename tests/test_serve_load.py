"""Bounded loopback load test (bench/serve_load.py): 50 concurrent same-size requests, twice.

Batching must merge them (fewer pipeline calls than requests), every request must be answered exactly once
with its own seed, nothing rejected or timed out, and the process's memory must not grow between rounds.
"""

from __future__ import annotations

import pytest

from bench_scripts import load_bench

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def test_fifty_concurrent_requests_are_batched_none_lost_memory_flat():
    report = load_bench("serve_load").run(requests=50, rounds=2, size=64, steps=1, max_batch=16, max_queue=64,
                                          timeout=240)
    assert report["answered_ok"] == report["requests"] == 100, report
    assert report["all_seeds_match"] and report["answered_once"], report
    assert report["rejected_503"] == 0 and report["timed_out"] == 0 and report["queue_depth_after"] == 0
    assert report["pipeline_calls"] <= report["requests"] // 4, report  # merged, at least 4 per call on average
    first_round, second_round = report["rss_mb_after_warmup_then_each_round"][1:]
    assert second_round - first_round < 64, report  # MB; a leak of ~100 KB per request would show here
