"""Store and forward: the appliance's committed events, in id order, to the fleet broker (MQTT 5, QoS 1).

The event log itself is the outbox. A durable cursor (table ``fleet_cursor``, written through the log's writer)
holds the highest id that the broker acknowledged together with every id before it; only a PUBACK moves it. Many
messages are in flight at once (the backlog drains at thousands a second); the cursor advances to the highest
contiguous acknowledged id. After a crash the events past the cursor go again: the ingester's write is idempotent.

A stable client id and a persistent session (clean start off, a long session expiry) let the broker and the
client keep QoS 1 messages in flight across reconnects. A retained status message (every ``status_interval_s``)
and a last will (offline) tell the fleet whether the box is there. Nothing here ever blocks the frame path:
the log's subscriber callback only sets an event.
"""
from __future__ import annotations

import collections
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from importlib import metadata

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.fleet.client import mqtt_client
from core.fleet.config import EVENT_SCHEMA, STATUS_SCHEMA, Broker, events_topic, status_topic
from core.store import database, schema
from core.store.eventlog import EventLog
from core.store.records import utc_iso

log = logging.getLogger("cathlab.fleet")

SESSION_EXPIRY_S = 7 * 86400          # the broker keeps the session (and QoS 1 state) a week offline
NO_SUBSCRIBERS = 0x10                 # PUBACK "no matching subscribers": nobody would store it; keep it
_EVENT_COLUMNS = schema.event_columns(schema.SCHEMA_VERSION)


def _version() -> str:
    try:
        return metadata.version("cathlab-edge")
    except metadata.PackageNotFoundError:
        return "unknown"


def read_cursor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT last_id FROM fleet_cursor WHERE name = ?", (schema.FLEET_CURSOR,)).fetchone()
    return row[0] if row else 0


class Publisher:
    """``start()`` after the log started, ``snapshot()`` from any thread, ``stop()`` before the log closes."""

    def __init__(self, event_log: EventLog, broker: Broker, *, site: str, room: str | None, appliance_id: str,
                 status_extra: Callable[[], dict] = dict, window: int = 2000, read_batch: int = 200,
                 status_interval_s: float = 10.0, cursor_every_s: float = 0.2, hold_s: float = 5.0,
                 keepalive_s: int = 30, reconnect_max_s: int = 30) -> None:
        self.log = event_log
        self.broker = broker
        self.site, self.room, self.appliance_id = site, room, appliance_id
        self.topic = events_topic(site, appliance_id)
        self.status_topic = status_topic(site, appliance_id)
        self._status_extra = status_extra
        self._window, self._read_batch = window, read_batch
        self._status_every, self._cursor_every, self._hold_s = status_interval_s, cursor_every_s, hold_s
        self._keepalive, self._reconnect_max = keepalive_s, reconnect_max_s
        self._version = _version()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acks: collections.deque = collections.deque()   # (mid, reason value) from the network thread
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._client: mqtt.Client | None = None
        self._conn: sqlite3.Connection | None = None
        # Owned by the publisher thread.
        self._pending: dict[int, int] = {}        # mid -> event id
        self._order: collections.deque = collections.deque()   # event ids in the order sent
        self._acked: set[int] = set()
        self._sent_upto = 0
        self._hold_until = 0.0
        self._status_due = 0.0
        # Read by snapshot().
        self.cursor = 0
        self.stored_cursor = 0
        self.link = "down"
        self.problem: str | None = None
        self.backlog: int | None = None
        self.backlog_oldest_wall: str | None = None
        self.forwarded = 0
        self.connects = 0
        self.refusals = 0                  # PUBACKs that did not take an event (denied, no subscriber)
        self.last_refusal: str | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Raises OSError or ValueError for TLS files that cannot be used (nothing is started then)."""
        self._client = self._make_client()
        self._conn = database.connect(self.log.db_path, timeout=5.0)
        self._conn.execute("PRAGMA query_only=ON")
        self.cursor = self.stored_cursor = self._sent_upto = read_cursor(self._conn)
        self.log.keep_unforwarded(True)
        self._unsubscribe = self.log.subscribe(lambda _event: self._wake.set())
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self._keepalive,
                                   clean_start=False, properties=self._connect_props())
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="fleet-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Forward what is committed (within ``timeout``, while the link is up), store the cursor, mark the box
        offline (retained), disconnect."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout / 2
        rows = self.log.query("SELECT MAX(id) FROM events", ())
        last = rows[0][0] if rows and rows[0][0] is not None else 0
        self._wake.set()
        while self.link == "up" and self.cursor < last and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 0.5)
        if self._unsubscribe is not None:
            self._unsubscribe()
        client = self._client
        if client.is_connected():
            info = client.publish(self.status_topic, self._status_payload(online=False), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout / 2)
            except (RuntimeError, ValueError):
                pass
        client.disconnect()
        client.loop_stop()
        database.close_quietly(self._conn)
        self._thread = None

    def snapshot(self) -> dict:
        return {"enabled": True, "link": self.link, "broker": self.broker.url, "appliance_id": self.appliance_id,
                "site": self.site, "room": self.room, "backlog": self.backlog,
                "backlog_oldest_wall": self.backlog_oldest_wall, "last_forwarded_id": self.cursor,
                "forwarded": self.forwarded, "problem": self.problem}

    # ------------------------------------------------------------------ MQTT client
    def _make_client(self) -> mqtt.Client:
        b = self.broker
        client = mqtt_client(b, f"cathlab-edge-{self.appliance_id}")
        client.max_inflight_messages_set(self._window)
        client.reconnect_delay_set(1, self._reconnect_max)
        client.will_set(self.status_topic, self._status_payload(online=False), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    @staticmethod
    def _connect_props() -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        return props

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.link = "refused"
            self.problem = f"broker {self.broker.url} refused the connection: {reason}"
            log.error("fleet: %s", self.problem)
            return
        self.link, self.problem = "up", None
        self.connects += 1
        log.info("fleet: connected to %s (session present: %s)", self.broker.url, flags.session_present)
        self._status_due = 0.0
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        if self.link == "up":
            self.link = "down"
            self.problem = f"disconnected from {self.broker.url}: {reason}"
            log.warning("fleet: %s", self.problem)
        elif self.link == "down":
            # Closed before any CONNACK: with TLS 1.3 a listener that wants a client certificate (or refuses
            # this one) accepts the handshake and drops the connection right after; paho says only "Unspecified".
            cert = "with" if self.broker.client_cert else "without"
            problem = (f"broker {self.broker.url} closed the connection before accepting it ({cert} a client "
                       f"certificate): {reason}; `cathlab-edge doctor` says what to fix")
            if problem != self.problem:
                log.error("fleet: %s", problem)
            self.problem = problem

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        self._acks.append((mid, reason.value))
        self._wake.set()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        next_cursor = next_backlog = 0.0
        try:
            while not self._stop.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                now = time.monotonic()
                self._take_acks(now)
                if self.link == "up" and now >= self._hold_until:
                    self._fill()
                if self.cursor != self.stored_cursor and now >= next_cursor:
                    self._store_cursor()
                    next_cursor = now + self._cursor_every
                if now >= next_backlog:
                    self._count_backlog()
                    next_backlog = now + 1.0
                if self.link == "up" and now >= self._status_due:
                    self._status_due = now + self._status_every
                    self._client.publish(self.status_topic, self._status_payload(online=True), qos=1, retain=True)
            self._take_acks(time.monotonic())
            if self.cursor != self.stored_cursor:
                self._store_cursor()
        except Exception:   # a bug here must not pass silently: the backlog just grows, the page says why
            log.exception("fleet publisher crashed")
            self.link, self.problem = "down", "fleet publisher crashed (see log); events stay in the log"

    def _fill(self) -> None:
        while len(self._pending) < self._window:
            room = min(self._read_batch, self._window - len(self._pending))
            rows = self._conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events e WHERE e.id > ? ORDER BY e.id "
                                      "LIMIT ?", (self._sent_upto, room)).fetchall()
            for row in rows:
                info = self._client.publish(self.topic, self._event_payload(row), qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    return   # queue trouble in the client: try again at the next wake
                self._pending[info.mid] = row[0]
                self._order.append(row[0])
                self._sent_upto = row[0]
            if len(rows) < room:
                return
            time.sleep(0.001)   # hand the interpreter to the frame thread between chunks of a backlog

    def _event_payload(self, row: tuple) -> bytes:
        eid, pid, mono, wall, kind, data = row
        head = json.dumps({"schema": EVENT_SCHEMA, "appliance_id": self.appliance_id, "site": self.site,
                           "room": self.room, "id": eid, "procedure_id": pid, "t_mono_ns": mono, "t_wall": wall,
                           "kind": kind})
        # The stored data is JSON already: splice it in instead of decoding and encoding it again.
        return (head[:-1] + ', "data": ' + data + "}").encode()

    def _take_acks(self, now: float) -> None:
        refused = None
        while self._acks:
            mid, code = self._acks.popleft()
            eid = self._pending.pop(mid, None)
            if eid is None:
                continue   # a status message, or one sent before a reset
            if code >= 0x80 or code == NO_SUBSCRIBERS:
                refused = code
            else:
                self._acked.add(eid)
        if refused is not None:
            self._refused(refused, now)
            return
        last = None
        while self._order and self._order[0] in self._acked:
            last = self._order.popleft()
            self._acked.discard(last)
            self.forwarded += 1
        if last is not None:
            self.cursor = last

    def _refused(self, code: int, now: float) -> None:
        if code == NO_SUBSCRIBERS:
            self.link = "no_subscriber"
            self.problem = (f"broker {self.broker.url} has no subscriber for {self.topic} (no fleet-ingest session);"
                            " events stay in the log")
        else:
            self.link = "denied"
            self.problem = (f"broker {self.broker.url} refused to take events on {self.topic} "
                            f"({mqtt.ReasonCode(PacketTypes.PUBACK, identifier=code)}): is appliance_id "
                            f"{self.appliance_id!r} the one this user may publish as?")
        self.refusals += 1
        self.last_refusal = self.problem
        log.error("fleet: %s", self.problem)
        # Start again from the durable cursor after a pause; acks of what is still in flight are ignored.
        self._pending.clear()
        self._order.clear()
        self._acked.clear()
        self._sent_upto = self.cursor
        self._hold_until = now + self._hold_s

        def resume() -> None:
            if self.link in ("denied", "no_subscriber") and self._client.is_connected():
                self.link = "up"
            self._wake.set()
        timer = threading.Timer(self._hold_s, resume)
        timer.daemon = True
        timer.start()

    def _store_cursor(self) -> None:
        value = self.cursor

        def apply(conn, _event) -> None:
            conn.execute("INSERT INTO fleet_cursor (name, last_id) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                         "SET last_id = MAX(last_id, excluded.last_id)", (schema.FLEET_CURSOR, value))
        self.log.write(apply, procedure_id=None)
        self.stored_cursor = value

    def _count_backlog(self) -> None:
        try:
            row = self._conn.execute("SELECT COUNT(*), MIN(t_wall) FROM events WHERE id > ?",
                                     (self.cursor,)).fetchone()
        except sqlite3.Error as exc:
            log.warning("fleet: counting the backlog failed: %s", exc)
            return
        self.backlog, self.backlog_oldest_wall = row[0], row[1]

    def _status_payload(self, *, online: bool) -> bytes:
        status = {"schema": STATUS_SCHEMA, "appliance_id": self.appliance_id, "site": self.site, "room": self.room,
                  "online": online, "version": self._version, "t_wall": utc_iso(time.time_ns())}
        if online:
            status.update(backlog=self.backlog, backlog_oldest_wall=self.backlog_oldest_wall,
                          last_forwarded_id=self.cursor)
            try:
                status.update(self._status_extra())
            except Exception:
                log.exception("fleet: status_extra failed")
        return json.dumps(status).encode()
