"""The appliance under HTTP attacks (slow, half-sent and never-ending requests): how long /healthz takes meanwhile, and the cost.

`cathlab-edge run` runs in a subprocess on its simulators with the descriptor limit of a plain service (1,024).
A prober GETs /healthz on a fresh connection every 0.1 s throughout. Phases:
- quiet: 5 s, for comparison;
- header bomb: four connections each send a never-ending header, up to 128 MB each (the issue's repro);
- half-sent: 1,100 connections each start a request head and never finish it, held until the server has
  closed them all (oldest evicted at once to stay under the descriptor limit, the rest after the request
  timeout).
Per phase: worst and median /healthz latency, frames dropped, RSS and descriptors. Target: worst < 1 s.

Run: .venv/bin/python -m pytest benchmarks/bench_attack.py --benchmark-only -s
"""
from __future__ import annotations

import statistics
import threading
import time

import pytest

from api.server import REQUEST_TIMEOUT_S
from tests.live import HealthProber, Live, closed_by_server, half_sent_requests, header_bomb, raise_own_nofile

NOFILE, IDLE, BOMBS, BOMB_MB = 1024, 1100, 4, 128
WORST_HEALTHZ_S = 1.0


def _phase(live: Live, name: str, attack) -> dict:
    before = live.status()["counters"]
    rss_before = live.rss_mb()
    peak = {"rss": rss_before, "fds": live.open_fds()}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            peak["rss"] = max(peak["rss"], live.rss_mb())
            peak["fds"] = max(peak["fds"], live.open_fds())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    with HealthProber(live.url, period_s=0.1) as prober:
        detail = attack()
    done.set()
    watcher.join()
    after = live.status()["counters"]
    latencies = prober.latencies or [float("nan")]
    return {"phase": name, "seconds": round(time.monotonic() - started, 1),
            "healthz_n": len(prober.latencies), "healthz_failed": len(prober.failures),
            "healthz_p50_ms": round(1000 * statistics.median(latencies), 1),
            "healthz_worst_ms": round(1000 * max(latencies), 1),
            "frames": after["frames"] - before["frames"],
            "frames_dropped": after["frames_dropped"] - before["frames_dropped"],
            "rss_mb_before": round(rss_before, 1), "rss_mb_peak": round(peak["rss"], 1),
            "fds_peak": peak["fds"], **detail}


def _quiet() -> dict:
    time.sleep(5.0)
    return {}


def _bombs(port: int) -> dict:
    sent: list[int] = []
    threads = [threading.Thread(target=lambda: sent.append(header_bomb(port, BOMB_MB))) for _ in range(BOMBS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.0)
    return {"bomb_mb_sent_max": round(max(sent) / 2**20, 2)}


def _half_sent(port: int) -> dict:
    raise_own_nofile(IDLE + 200)
    started = time.monotonic()
    held = half_sent_requests(port, IDLE)
    opened_s = time.monotonic() - started
    time.sleep(1.0)
    evicted = closed_by_server(held)
    while closed_by_server(held) < IDLE and time.monotonic() - started < REQUEST_TIMEOUT_S + 10:
        time.sleep(0.5)
    closed = closed_by_server(held)
    for s in held:
        s.close()
    return {"open_s": round(opened_s, 2), "closed_within_1s": evicted, "closed_total": closed,
            "all_closed_s": round(time.monotonic() - started, 1)}


def test_healthz_latency_under_attack(benchmark, tmp_path):
    live = Live(tmp_path / "data", nofile=NOFILE)
    try:
        live.wait_ready()
        phases = benchmark.pedantic(
            lambda: [_phase(live, "quiet", _quiet), _phase(live, "header bomb", lambda: _bombs(live.port)),
                     _phase(live, "half-sent x1100", lambda: _half_sent(live.port))], rounds=1, iterations=1)
    finally:
        out, err = live.stop()
    for figures in phases:
        print("\n" + ", ".join(f"{k}={v}" for k, v in figures.items()))
    benchmark.extra_info.update({p["phase"]: p for p in phases})
    assert "Too many open files" not in err
    for figures in phases:
        assert figures["healthz_failed"] == 0, figures
        assert figures["healthz_worst_ms"] < 1000 * WORST_HEALTHZ_S, figures
