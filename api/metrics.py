"""The Prometheus mapping: each value the appliance counts, named and typed here, exposed by prometheus-client.

The appliance decides what it counts (``Appliance.metrics()``) and the stream hub counts its clients; this
module says which of those values only ever grow (counters, exposed with ``_total`` so ``rate()`` handles
restarts) and which go up and down (gauges). The types are a table, not a guess from the name. A collector reads
the values at scrape time; prometheus-client writes the text format and adds its process, platform and garbage
collector metrics. Non-numeric or missing values are left out rather than invented.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

PREFIX = "cathlab_"
# The text format generate_latest writes (legacy names); prometheus-client's CONTENT_TYPE_LATEST says 1.0.0.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
COUNTER, GAUGE = "counter", "gauge"

# Every value reported, by its key in Appliance.metrics() (and the hub's, below): (type, help).
TYPES: dict[str, tuple[str, str]] = {
    "frames": (COUNTER, "video frames analysed"),
    "pulses": (COUNTER, "X-ray pulses seen in the video"),
    "frames_dropped": (COUNTER, "frames the video source dropped"),
    "frames_rejected": (COUNTER, "frames refused (unusable pixels, or time going backwards)"),
    "frame_errors": (COUNTER, "frames whose analysis failed"),
    "runs": (COUNTER, "runs recorded"),
    "contrast_runs": (COUNTER, "runs recorded with contrast"),
    "last_frame_age_s": (GAUGE, "seconds since the last frame"),
    "serial_crc_errors": (COUNTER, "serial frames with a bad CRC"),
    "serial_framing_errors": (COUNTER, "serial frames that did not decode"),
    "serial_bytes_discarded": (COUNTER, "serial bytes discarded while resynchronising"),
    "serial_packets_recovered": (COUNTER, "intact packets taken from the tail of a damaged frame"),
    "serial_unknown_types": (COUNTER, "packets of an unknown type"),
    "serial_unsupported_versions": (COUNTER, "packets of an unsupported protocol version"),
    "serial_malformed": (COUNTER, "packets with a malformed payload"),
    "serial_seq_gaps": (COUNTER, "gaps in the packet sequence numbers"),
    "serial_packets_missed": (COUNTER, "packets lost in sequence gaps"),
    "serial_duplicates": (COUNTER, "retransmitted packets already received"),
    "serial_reconnects": (COUNTER, "injector link reconnections"),
    "serial_protocol_violations": (COUNTER, "implausible values from the injector"),
    "serial_callback_errors": (COUNTER, "serial message handlers that raised"),
    "serial_write_errors": (COUNTER, "failed writes to the serial port"),
    "eventlog_committed": (COUNTER, "events committed to the event log"),
    "eventlog_pending": (GAUGE, "events waiting to be committed"),
    "eventlog_dropped": (COUNTER, "events dropped because the queue was full"),
    "eventlog_duplicates": (COUNTER, "events already in the log"),
    "eventlog_rejected": (COUNTER, "events the log could not store"),
    "eventlog_callback_errors": (COUNTER, "event subscribers that raised"),
    "eventlog_commit_latency_p99_ms": (GAUGE, "99th percentile of recent commit latencies, ms"),
    "eventlog_last_commit_ms": (GAUGE, "latency of the last commit, ms"),
    "eventlog_db_bytes": (GAUGE, "size of the event log database and its WAL, bytes"),
    "eventlog_writable": (GAUGE, "1 when the event log can commit"),
    "run_images_saved": (COUNTER, "run images written to disk for a restart"),
    "run_images_failed": (COUNTER, "run image writes that failed on the disk"),
    "run_images_skipped_low_space": (COUNTER, "run images not written: low disk space"),
    "run_images_not_kept": (COUNTER, "measured runs whose images are not kept for a restart"),
    "run_images_bytes": (GAUGE, "size of the run images kept on disk, bytes"),
    "fleet_link_up": (GAUGE, "1 while the fleet broker takes the appliance's events"),
    "fleet_backlog": (GAUGE, "events in the log not yet acknowledged by the fleet broker"),
    "fleet_last_forwarded_id": (GAUGE, "highest event id forwarded with all before it"),
    "fleet_forwarded": (COUNTER, "events the fleet broker acknowledged since start"),
    "api_stream_clients": (GAUGE, "open /api/stream connections"),
    "api_stream_slow_disconnects": (COUNTER, "stream clients disconnected for falling behind"),
    "api_stream_status_messages": (COUNTER, "status messages sent on the stream"),
    "api_stream_event_messages": (COUNTER, "event messages sent on the stream"),
    "api_stream_sample_errors": (COUNTER, "status reads for the stream that failed"),
}
# Keys made per message type and per violation kind: counters, one family each.
PREFIX_TYPES: dict[str, tuple[str, str]] = {
    "serial_packets_by_type_": (COUNTER, "packets received of type"),
    "serial_protocol_violations_by_kind_": (COUNTER, "implausible values of kind"),
}
_INVALID = re.compile(r"[^a-zA-Z0-9_]")
log = logging.getLogger("cathlab.metrics")


def metric_name(key: str) -> str:
    name = _INVALID.sub("_", key.strip()).strip("_").lower() or "unnamed"
    if name[0].isdigit():
        name = "_" + name
    return PREFIX + name


def type_of(key: str) -> tuple[str | None, str]:
    """(COUNTER or GAUGE, help) of ``key``; (None, ...) for a key the table does not know."""
    if key in TYPES:
        return TYPES[key]
    for prefix, (kind, text) in PREFIX_TYPES.items():
        if key.startswith(prefix):
            return kind, f"{text} {key[len(prefix):]}"
    return None, key.replace("_", " ")


def families(values: Mapping[str, object]) -> Iterator[Metric]:
    """One family per numeric value, typed by the table. A key it does not know is exposed untyped rather than
    guessed: a new value must be typed here."""
    seen: set[str] = set()
    for key in sorted(values):
        value = values[key]
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            continue
        kind, text = type_of(key)
        name = metric_name(key)
        if kind == COUNTER:
            name = name.removesuffix("_total")   # the library adds it
        if name in seen:   # two keys that sanitise to one name: keep the first rather than emit a duplicate family
            continue
        seen.add(name)
        if kind == COUNTER:
            yield CounterMetricFamily(name, text, value=value)
        elif kind == GAUGE:
            yield GaugeMetricFamily(name, text, value=value)
        else:
            yield UnknownMetricFamily(name, text, value=value)


def appliance_values(appliance, hub) -> dict[str, object]:
    """What the appliance counts, and the stream hub's own counts."""
    values = dict(appliance.metrics())
    values.update({"api_stream_clients": hub.clients, "api_stream_slow_disconnects": hub.dropped_clients,
                   "api_stream_status_messages": hub.status_messages,
                   "api_stream_event_messages": hub.event_messages,
                   "api_stream_sample_errors": hub.sample_errors})
    return values


class ApplianceCollector(Collector):
    """Reads the values at each scrape (no copy to keep in step)."""

    def __init__(self, read: Callable[[], Mapping[str, object]]) -> None:
        self._read = read
        self._untyped: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        for family in families(self._read()):
            if family.type == "unknown" and family.name not in self._untyped:
                self._untyped.add(family.name)   # once, not at every scrape
                log.warning("metric %s has no type in api/metrics.py: exposed untyped", family.name)
            yield family


def new_registry(read: Callable[[], Mapping[str, object]]) -> CollectorRegistry:
    """A registry of its own per app (tests build many apps in one process), with the default collectors."""
    registry = CollectorRegistry(auto_describe=False)   # collect() only at scrape time, not at registration
    registry.register(ApplianceCollector(read))
    for default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(default)
    return registry


def scrape(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
