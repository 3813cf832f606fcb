"""Event log speed: durable events/s and commit latency, single vs batched; record() cost on the frame path.

Run: .venv/bin/python -m pytest benchmarks/bench_eventlog.py --benchmark-only -s
Figures land in each benchmark's extra_info (and are printed). Durable = WAL + synchronous=FULL, on the
filesystem under pytest's tmp_path, so the numbers are the fsync cost of that disk.
"""
from __future__ import annotations

import threading
import time

import pytest

from core.store.eventlog import EventLog

EVENT = {"run_id": "abc-12", "frames": 180, "pulse_rate": 15.0, "volume_ml": 10.0}


@pytest.fixture
def log(tmp_path):
    log = EventLog(tmp_path / "d")
    log.start()
    yield log
    log.close()


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _report(benchmark, **figures):
    benchmark.extra_info.update(figures)
    print("\n" + ", ".join(f"{k}={v}" for k, v in figures.items()))


def test_single_event_commits(benchmark, log):
    """One event per transaction: record, then wait until it is durable."""
    def one():
        log.record("sample", EVENT)
        assert log.flush(5)

    benchmark.pedantic(one, rounds=300, warmup_rounds=10)
    stats = log.stats()
    _report(benchmark, durable_events_per_s=round(1 / benchmark.stats.stats.mean),
            commit_latency_p99_ms=round(stats["commit_latency_p99_ms"], 3),
            round_trip_p99_ms=round(_pct(benchmark.stats.stats.data, 0.99) * 1e3, 3))


@pytest.mark.parametrize("batch", [100, 1000])
def test_batched_commits(benchmark, log, batch):
    """``batch`` events queued together land in one transaction."""
    def many():
        for _ in range(batch):
            log.record("sample", EVENT)
        assert log.flush(10)

    benchmark.pedantic(many, rounds=30, warmup_rounds=2)
    stats = log.stats()
    _report(benchmark, batch=batch, durable_events_per_s=round(batch / benchmark.stats.stats.mean),
            commit_latency_p99_ms=round(stats["commit_latency_p99_ms"], 3))


def test_record_cost_on_the_frame_path_while_the_writer_commits(benchmark, log):
    """What a frame thread pays per record() while another thread keeps the writer busy (2,000 events/s)."""
    stop = threading.Event()

    def load():
        while not stop.is_set():
            for _ in range(20):
                log.record("telemetry", EVENT)
            time.sleep(0.01)

    pump = threading.Thread(target=load, daemon=True)
    pump.start()
    samples = []
    try:
        def timed_record():
            t0 = time.perf_counter_ns()
            log.record("frame_event", EVENT)
            samples.append(time.perf_counter_ns() - t0)

        benchmark.pedantic(timed_record, rounds=20_000, iterations=1)
    finally:
        stop.set()
        pump.join()
    assert log.flush(10)
    _report(benchmark, record_p50_us=round(_pct(samples, 0.5) / 1e3, 2),
            record_p99_us=round(_pct(samples, 0.99) / 1e3, 2),
            record_max_us=round(max(samples) / 1e3, 1), committed=log.stats()["committed"])


def test_open_of_a_large_log(benchmark, tmp_path):
    """start() on a 200,000-event database: migration check plus the quick_check that finds damaged pages."""
    build = EventLog(tmp_path / "big", batch_max=20_000)
    build.start()
    for i in range(200_000):
        build.record("sample", dict(EVENT, i=i))
    assert build.flush(120)
    build.close()

    def open_close():
        log = EventLog(tmp_path / "big")
        log.start()
        log.close()

    benchmark.pedantic(open_close, rounds=5)
    size_mb = sum(p.stat().st_size for p in (tmp_path / "big").glob("events.sqlite3*")) / 1e6
    _report(benchmark, db_mb=round(size_mb, 1), open_s=round(benchmark.stats.stats.mean, 3))
