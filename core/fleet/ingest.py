"""The central side: events from the broker into PostgreSQL, exactly once in the table.

An MQTT shared subscription (``$share/{group}/cathlab/v1/+/+/events``) spreads the appliances' events over the
ingesters of a group. A message is acknowledged (manual ack) only after its row is committed, and the row's
primary key (appliance_id, event_id) with ``ON CONFLICT DO NOTHING`` turns a redelivery into a no-op: at least
once from the broker plus an idempotent write is exactly once in the table. A persistent session with a stable
client id lets the broker keep what arrives while an ingester is away.

The appliance id is taken from the topic, never from the payload: the broker's ACL decides who may publish
under an id, so an impostor's payload cannot claim another box.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg.types.json import Jsonb

from core.fleet.client import mqtt_client
from core.fleet.config import TOPIC_ROOT, Broker, split_topic

log = logging.getLogger("cathlab.fleet")

SESSION_EXPIRY_S = 7 * 86400

# Migration n brings the central schema from n-1 to n (version in cathlab_schema). Append only.
MIGRATIONS = (
    """
    CREATE TABLE cathlab_events (
        appliance_id text NOT NULL,
        event_id     bigint NOT NULL,
        site         text,
        room         text,
        procedure_id text,
        t_wall       timestamptz NOT NULL,
        kind         text NOT NULL,
        data         jsonb NOT NULL,
        ingested_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (appliance_id, event_id)
    );
    CREATE INDEX cathlab_events_t_wall ON cathlab_events (t_wall);
    CREATE INDEX cathlab_events_kind ON cathlab_events (kind, t_wall);
    CREATE TABLE cathlab_appliances (
        appliance_id text PRIMARY KEY,
        site         text,
        room         text,
        online       boolean NOT NULL,
        version      text,
        backlog      bigint,
        last_seen    timestamptz NOT NULL,
        status       jsonb NOT NULL
    );
    """,
)

_INSERT = ("INSERT INTO cathlab_events (appliance_id, event_id, site, room, procedure_id, t_wall, kind, data) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")
_UPSERT_STATUS = (
    "INSERT INTO cathlab_appliances (appliance_id, site, room, online, version, backlog, last_seen, status) "
    "VALUES (%s, %s, %s, %s, %s, %s, now(), %s) ON CONFLICT (appliance_id) DO UPDATE SET site = excluded.site, "
    "room = excluded.room, online = excluded.online, version = COALESCE(excluded.version, "
    "cathlab_appliances.version), backlog = COALESCE(excluded.backlog, cathlab_appliances.backlog), "
    "last_seen = excluded.last_seen, status = excluded.status")


def migrate(conn: psycopg.Connection) -> int:
    """Create or bring the central tables up to date (in one transaction, under an advisory lock, so two
    ingesters starting together do not race). Returns the version found."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7418210)")
        conn.execute("CREATE TABLE IF NOT EXISTS cathlab_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM cathlab_schema").fetchone()
        found = row[0] if row else 0
        if found > len(MIGRATIONS):
            raise RuntimeError(f"database schema version {found} is newer than this cathlab-edge "
                               f"({len(MIGRATIONS)}); upgrade it")
        for script in MIGRATIONS[found:]:
            conn.execute(script)
        if row is None:
            conn.execute("INSERT INTO cathlab_schema (version) VALUES (%s)", (len(MIGRATIONS),))
        else:
            conn.execute("UPDATE cathlab_schema SET version = %s", (len(MIGRATIONS),))
    return found


def _message(topic: str, payload: bytes) -> tuple[str, str, dict] | None:
    """(site, appliance id from the topic, the JSON object), or None for a message that is neither."""
    where = split_topic(topic)
    if where is None:
        return None
    try:
        msg = json.loads(payload)
    except ValueError:
        return None
    return (where[0], where[1], msg) if isinstance(msg, dict) else None


def event_row(topic: str, payload: bytes) -> tuple | None:
    """The cathlab_events row of one message, or None if it is not a version-1 event."""
    found = _message(topic, payload)
    if found is None:
        return None
    site, aid, msg = found
    if not str(msg.get("schema", "")).startswith("cathlab.event/1"):
        return None
    try:
        return (aid, int(msg["id"]), site, msg.get("room"), msg.get("procedure_id"), msg["t_wall"],
                str(msg["kind"]), Jsonb(msg.get("data", {})))
    except (ValueError, KeyError, TypeError):
        return None


def status_row(topic: str, payload: bytes) -> tuple | None:
    """The cathlab_appliances row of one status message, or None."""
    found = _message(topic, payload)
    if found is None:
        return None
    site, aid, msg = found
    try:
        backlog = msg.get("backlog")
        return (aid, site, msg.get("room"), bool(msg.get("online")), msg.get("version"),
                int(backlog) if backlog is not None else None, Jsonb(msg))
    except (ValueError, TypeError):
        return None


class Ingester:
    """``run()`` until ``stop()``: receive, commit in batches, then acknowledge each message of the batch."""

    def __init__(self, broker: Broker, dsn: str, *, group: str = "cathlab", client_id: str,
                 batch_max: int = 1000, batch_wait_s: float = 0.02) -> None:
        self.broker, self.dsn, self.group, self.client_id = broker, dsn, group, client_id
        self._batch_max, self._batch_wait = batch_max, batch_wait_s
        self._inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self.connected = threading.Event()
        self.problem: str | None = None
        self.inserted = 0
        self.duplicates = 0
        self.skipped = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self._conn = psycopg.connect(self.dsn)
        migrate(self._conn)
        client = self._client()
        try:
            while not self._stop.is_set():
                batch = self._take()
                if batch:
                    self._commit(batch)
                    for msg in batch:
                        client.ack(msg.mid, msg.qos)
        finally:
            client.disconnect()
            client.loop_stop()
            self._conn.close()

    def _client(self) -> mqtt.Client:
        b = self.broker
        client = mqtt_client(b, self.client_id, manual_ack=True)
        client.reconnect_delay_set(1, 5)   # central: come back soon after a broker restart
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self.connected.clear()
        client.on_message = lambda _c, _u, msg: self._inbox.put(msg)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        client.connect_async(b.host, b.port, keepalive=30, clean_start=False, properties=props)
        client.loop_start()
        return client

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.problem = f"broker {self.broker.url} refused the connection: {reason}"
            log.error("fleet-ingest: %s", self.problem)
            return
        self.problem = None
        # Again on every connect: harmless when the session kept them, needed when it did not.
        client.subscribe([(f"$share/{self.group}/{TOPIC_ROOT}/+/+/events", 1), (f"{TOPIC_ROOT}/+/+/status", 1)])
        self.connected.set()
        log.info("fleet-ingest: connected to %s as %s (session present: %s)", self.broker.url, self.client_id,
                 flags.session_present)

    def _take(self) -> list:
        try:
            batch = [self._inbox.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self._batch_wait
        while len(batch) < self._batch_max:
            try:
                batch.append(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list) -> None:
        """One transaction for the batch; retried until PostgreSQL takes it (nothing is acked before)."""
        events, statuses = [], []
        for msg in batch:
            is_status = msg.topic.endswith("/status")
            row = status_row(msg.topic, msg.payload) if is_status else event_row(msg.topic, msg.payload)
            if row is None:
                self.skipped += 1
                log.warning("fleet-ingest: skipped a malformed message on %s", msg.topic)
            else:
                (statuses if is_status else events).append(row)
        refused = 0
        delay = 0.5
        while True:
            try:
                done = self._write(events, statuses)
                break
            except psycopg.OperationalError as exc:
                log.error("fleet-ingest: PostgreSQL write failed (%s); retrying in %.1f s", exc, delay)
                if self._stop.wait(delay):
                    raise
                delay = min(10.0, delay * 2)
                if self._conn.closed:
                    try:
                        self._conn = psycopg.connect(self.dsn)
                    except psycopg.OperationalError:
                        pass
            except psycopg.Error as exc:
                # A row PostgreSQL refuses on its own merits (a bad time stamp) must not block the rest forever:
                # one transaction per row, and what is refused is logged, counted and acknowledged.
                log.error("fleet-ingest: a batch was refused (%s); writing its rows one by one", exc)
                done = 0
                for row in events:
                    try:
                        done += self._write([row], [])
                    except psycopg.OperationalError:
                        raise
                    except psycopg.Error as row_exc:
                        refused += 1
                        log.error("fleet-ingest: skipped event %s of %s: %s", row[1], row[0], row_exc)
                for row in statuses:
                    try:
                        self._write([], [row])
                    except psycopg.OperationalError:
                        raise
                    except psycopg.Error as row_exc:
                        log.error("fleet-ingest: skipped a status of %s: %s", row[0], row_exc)
                break
        done = max(done, 0)   # rowcount is -1 where the driver cannot tell
        self.inserted += done
        self.skipped += refused
        self.duplicates += max(0, len(events) - done - refused)

    def _write(self, events: list, statuses: list) -> int:
        """Insert ``events`` and upsert ``statuses`` in one transaction; returns the events inserted."""
        done = 0
        with self._conn.transaction():
            with self._conn.cursor() as cur:
                if events:
                    cur.executemany(_INSERT, events)
                    done = cur.rowcount
                for row in statuses:
                    cur.execute(_UPSERT_STATUS, row)
        return done
