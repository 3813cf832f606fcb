"""The fleet link with the real parts: a Mosquitto broker (TLS, passwords, ACL) and PostgreSQL.

In-process here: the appliance's publisher on a real event log, the ingester, the cursor, retention and the
impostor. The outage, SIGKILL and ingester-restart proof is tests/test_fleet_faults.py.
"""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from core.fleet import config as fleet_config
from core.fleet.ingest import Ingester
from core.fleet.publisher import Publisher, read_cursor
from core.store import database
from core.store.eventlog import EventLog
from tests.fleet_parts import Mosquitto, Postgres, have_parts

pytestmark = pytest.mark.skipif(have_parts() is not None, reason=have_parts() or "")

USERS = {"ingest": "ingest-pw", "box1": "box1-pw", "box2": "box2-pw"}


@pytest.fixture(scope="module")
def pg():
    server = Postgres()
    server.start()
    yield server
    server.close()


@pytest.fixture
def broker():
    server = Mosquitto(USERS, cert_users=("box1",))
    server.start()
    yield server
    server.close()


def _broker(server: Mosquitto, user: str, tmp_path, password: str | None = None):
    pw = tmp_path / f"{user}.pw"
    pw.write_text((password or USERS[user]) + "\n")
    return fleet_config.parse_broker(server.url, username=user, password_file=pw, ca_file=server.ca_file)


def _cert_broker(server: Mosquitto, user: str):
    """``user`` logs in by client certificate alone (its CN is the user name the ACL knows)."""
    cert, key = server.client_certs[user]
    return fleet_config.parse_broker(server.cert_url, ca_file=server.ca_file, client_cert=cert, client_key=key)


def wait_for(cond, timeout: float, what: str, state=lambda: "") -> None:
    """``state()`` says what things looked like instead, for the failure message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} {state()}")


class Ingesting:
    """An ingester on a thread, stopped at exit."""

    def __init__(self, broker, dsn, client_id="ingest-a") -> None:
        self.ingester = Ingester(broker, dsn, group="g", client_id=client_id)
        self.thread = threading.Thread(target=self.ingester.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.ingester.connected.wait(20), self.ingester.problem
        return self.ingester

    def __exit__(self, *exc):
        self.ingester.stop()
        self.thread.join(10)


def pg_ids(dsn: str, aid: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM cathlab_events WHERE appliance_id = %s "
                                           "ORDER BY event_id", (aid,))]


def log_ids(event_log: EventLog) -> list[int]:
    return [r[0] for r in event_log.query("SELECT id FROM events ORDER BY id", ())]


def test_events_reach_postgres_once_and_cursor_is_durable(broker, pg, tmp_path):
    dsn = pg.new_db()
    event_log = EventLog(tmp_path / "data")
    event_log.start()
    for i in range(300):
        event_log.record("tick", {"i": i})
    assert event_log.flush(5)
    with Ingesting(_broker(broker, "ingest", tmp_path), dsn):
        pub = Publisher(event_log, _cert_broker(broker, "box1"), site="s1", room="r1", appliance_id="box1",
                        status_interval_s=0.5)
        pub.start()
        wait_for(lambda: pub.link == "up", 10, "the link")
        for i in range(200):
            event_log.record("tock", {"i": i})
        assert event_log.flush(5)
        wait_for(lambda: pg_ids(dsn, "box1") == log_ids(event_log), 20, "every event in PostgreSQL")
        wait_for(lambda: pub.backlog == 0 and pub.stored_cursor == log_ids(event_log)[-1], 10, "backlog 0")
        wait_for(lambda: _appliance_row(dsn, "box1") is not None, 10, "the status row")
        pub.stop()
        # stop() marks it offline (retained), as the last will would
        wait_for(lambda: _appliance_row(dsn, "box1")[:3] == ("s1", "r1", False), 10, "the offline status")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT kind, data, procedure_id, t_wall IS NOT NULL FROM cathlab_events "
                           "WHERE appliance_id = 'box1' AND kind = 'tock' ORDER BY event_id LIMIT 1").fetchone()
    assert row == ("tock", {"i": 0}, None, True)
    event_log.flush(5)
    event_log.close()
    conn = database.connect(tmp_path / "data" / "events.sqlite3")
    assert read_cursor(conn) == max(pg_ids(dsn, "box1"))
    conn.close()


def _appliance_row(dsn, aid):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT site, room, online, backlog FROM cathlab_appliances WHERE appliance_id = %s",
                            (aid,)).fetchone()


def test_impostor_and_wrong_password_are_refused_and_nothing_arrives(broker, pg, tmp_path):
    dsn = pg.new_db()
    event_log = EventLog(tmp_path / "data")
    event_log.start()
    for i in range(20):
        event_log.record("tick", {"i": i})
    assert event_log.flush(5)
    with Ingesting(_broker(broker, "ingest", tmp_path), dsn):
        # box1's credentials, box2's id: the ACL refuses each PUBLISH (MQTT 5 PUBACK "not authorized").
        impostor = Publisher(event_log, _broker(broker, "box1", tmp_path), site="s1", room=None,
                             appliance_id="box2", hold_s=0.5)
        impostor.start()
        wait_for(lambda: impostor.refusals > 0, 20, "the refusal", lambda: impostor.snapshot())
        assert "refused to take events" in impostor.last_refusal and "'box2'" in impostor.last_refusal
        impostor.stop()
        wrong = Publisher(event_log, _broker(broker, "box1", tmp_path, password="nope"), site="s1", room=None,
                          appliance_id="box1")
        wrong.start()
        wait_for(lambda: wrong.link == "refused", 20, "the refused login", lambda: wrong.snapshot())
        assert "refused the connection" in wrong.problem
        wrong.stop()
        time.sleep(0.5)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM cathlab_events").fetchone()[0] == 0
    event_log.close()
    conn = database.connect(tmp_path / "data" / "events.sqlite3")
    assert read_cursor(conn) == 0
    conn.close()


def test_no_ingester_session_keeps_events_in_the_log(broker, pg, tmp_path):
    event_log = EventLog(tmp_path / "data")
    event_log.start()
    event_log.record("tick", {})
    assert event_log.flush(5)
    pub = Publisher(event_log, _broker(broker, "box1", tmp_path), site="s1", room=None, appliance_id="box1",
                    hold_s=0.5)
    pub.start()
    wait_for(lambda: pub.refusals > 0, 20, "no subscriber", lambda: pub.snapshot())
    assert "no subscriber" in pub.last_refusal
    assert pub.cursor == 0
    pub.stop()
    event_log.close()


def test_appliance_id_generated_once_and_kept(tmp_path):
    first = fleet_config.appliance_id(tmp_path, None)
    assert first.startswith("ce-") and fleet_config.appliance_id(tmp_path, None) == first
    assert fleet_config.appliance_id(tmp_path, "box7") == "box7"
    with pytest.raises(fleet_config.FleetConfigError):
        fleet_config.appliance_id(tmp_path, "a/b")
    with pytest.raises(fleet_config.FleetConfigError):
        fleet_config.parse_broker("http://x")
    b = fleet_config.parse_broker("mqtts://h")
    assert (b.host, b.port, b.tls) == ("h", 8883, True)


def test_retention_spares_unforwarded_events_by_age_but_not_by_size(tmp_path):
    now = [1_700_000_000 * 10**9]
    event_log = EventLog(tmp_path / "data", wall_clock_ns=lambda: now[0])
    event_log.start()
    event_log.keep_unforwarded(True)
    for i in range(50):
        event_log.record("old", {"i": i, "pad": "x" * 2000}, procedure_id=None)
    assert event_log.flush(5)
    now[0] += 400 * 86400 * 10**9
    event_log.set_retention(max_age_days=365, max_bytes=None)
    event_log.enforce_retention()
    assert len([e for e in event_log.events(limit=1000) if e["kind"] == "old"]) == 50   # never forwarded
    event_log.set_retention(max_age_days=None, max_bytes=40_000)
    result = event_log.enforce_retention()
    assert result["unforwarded_lost"] > 0
    assert any(a["kind"] == "fleet_backlog_lost" for a in event_log.alarms)
    assert event_log.flush(5)
    kinds = [e["kind"] for e in event_log.events(limit=1000)]
    assert "retention" in kinds and "alarm" in kinds
    event_log.close()


def test_fleet_report_per_site_and_room(pg, capsys):
    import json

    from psycopg.types.json import Jsonb

    from api.cli.main import main
    from core.fleet.ingest import migrate

    dsn = pg.new_db()
    with psycopg.connect(dsn) as conn:
        migrate(conn)
        rows = [("b1", 1, "s1", "r1", "p1", "run", {"run_id": "1", "contrast": False, "duration_s": 4.0}),
                ("b1", 2, "s1", "r1", "p1", "run", {"run_id": "1", "contrast": True, "duration_s": 5.0}),  # newest
                ("b1", 3, "s1", "r1", "p1", "injection", {"delivered_volume_ml": 12.5}),
                ("b1", 4, "s1", "r1", "p1", "clearance", {"grade": "normal"}),
                ("b2", 1, "s1", "r2", "p2", "run", {"run_id": "9", "contrast": False, "duration_s": 2.0})]
        for aid, eid, site, room, pid, kind, data in rows:
            conn.execute("INSERT INTO cathlab_events (appliance_id, event_id, site, room, procedure_id, t_wall, "
                         "kind, data) VALUES (%s,%s,%s,%s,%s,now(),%s,%s)", (aid, eid, site, room, pid, kind,
                                                                           Jsonb(data)))
        conn.execute("INSERT INTO cathlab_appliances VALUES ('b2','s1','r2',false,'0.1',7,now(),%s)",
                     (Jsonb({"backlog_oldest_wall": "2026-01-01T00:00:00Z"}),))
    assert main(["fleet-report", "--db", dsn, "--json"]) == 0
    report = {r["room"]: r for r in json.loads(capsys.readouterr().out)}
    assert report["r1"]["procedures"] == 1 and report["r1"]["contrast_runs"] == 1
    assert report["r1"]["fluoro_time_s"] == 5.0 and report["r1"]["contrast_ml"] == 12.5
    assert report["r1"]["clearance_grades"] == {"normal": 1}
    assert report["r2"]["boxes_offline"] == 1 and report["r2"]["backlog"] == 7
    assert report["r2"]["oldest_backlog_wall"] == "2026-01-01T00:00:00Z"
    assert main(["fleet-report", "--db", dsn, "--since", "2000-01-01"]) == 0
    assert "r2" in capsys.readouterr().out


def test_doctor_says_plainly_when_the_broker_refuses(broker, tmp_path):
    from core.fleet.check import check_broker
    from core.ops.settings import Settings

    def settings(user, password, aid, ca=True):
        pw = tmp_path / "pw"
        pw.write_text(password)
        return Settings(data_dir=tmp_path / "d", fleet_broker=broker.url, fleet_username=user,
                        fleet_password_file=pw, fleet_ca_file=broker.ca_file if ca else None, appliance_id=aid)
    ok = check_broker(settings("box1", "box1-pw", "box1"))
    assert ok.status == "ok", ok
    bad = check_broker(settings("box1", "wrong", "box1"))
    assert bad.status == "FAIL" and "refused the credentials of user 'box1'" in bad.detail
    impostor = check_broker(settings("box1", "box1-pw", "box2"))
    assert impostor.status == "FAIL" and "publish as appliance 'box2'" in impostor.detail
    no_ca = check_broker(settings("box1", "box1-pw", "box1", ca=False))
    assert no_ca.status == "FAIL" and "TLS" in no_ca.detail
    assert check_broker(Settings(data_dir=tmp_path / "d")).status == "ok"
    cert, key = broker.client_certs["box1"]
    by_cert = check_broker(Settings(data_dir=tmp_path / "d", fleet_broker=broker.cert_url, fleet_client_cert=cert,
                                    fleet_client_key=key, fleet_ca_file=broker.ca_file, appliance_id="box1"))
    assert by_cert.status == "ok", by_cert
    no_cert = check_broker(Settings(data_dir=tmp_path / "d", fleet_broker=broker.cert_url,
                                    fleet_ca_file=broker.ca_file, appliance_id="box1"))
    assert no_cert.status == "FAIL" and "without a client certificate" in no_cert.detail, no_cert


def test_appliance_forwards_its_log_and_shows_the_link(broker, pg, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.appliance.appliance import Appliance
    from core.ops.settings import Settings

    dsn = pg.new_db()
    pw = tmp_path / "pw"
    pw.write_text("box1-pw")
    settings = Settings(data_dir=tmp_path / "d", video="none", fleet_broker=broker.url, fleet_username="box1",
                        fleet_password_file=pw, fleet_ca_file=broker.ca_file, appliance_id="box1", site="s1",
                        room="r1")
    with Ingesting(_broker(broker, "ingest", tmp_path), dsn), TestClient(create_app(settings)) as client:
        status = lambda: client.get("/api/status").json()["fleet"]   # noqa: E731
        wait_for(lambda: status()["link"] == "up", 10, "the link")
        wait_for(lambda: status()["backlog"] == 0 and len(pg_ids(dsn, "box1")) >= 1, 15, "the events forwarded")
        # The injector simulator keeps adding events: compare at a moment both sides agree.
        wait_for(lambda: status()["last_forwarded_id"] == max(pg_ids(dsn, "box1")), 10, "the last forwarded id")
        metrics = client.get("/metrics").text
        assert "cathlab_fleet_link_up 1.0" in metrics and "cathlab_fleet_backlog " in metrics
        assert "cathlab_fleet_last_forwarded_id " in metrics
    assert Appliance(Settings(data_dir=tmp_path / "e", video="none")).status()["fleet"] == {
        "enabled": False, "link": "off", "problem": None, "backlog": None, "last_forwarded_id": None}


def test_ingester_skips_a_refused_row_and_keeps_the_rest(pg):
    import json
    from types import SimpleNamespace

    from core.fleet.ingest import migrate

    dsn = pg.new_db()
    ing = Ingester(fleet_config.parse_broker("mqtt://localhost"), dsn, client_id="unit")
    ing._conn = psycopg.connect(dsn)
    migrate(ing._conn)

    def msg(eid, wall):
        return SimpleNamespace(topic="cathlab/v1/s1/box1/events", payload=json.dumps(
            {"schema": "cathlab.event/1", "id": eid, "t_wall": wall, "kind": "k", "data": {}}).encode())
    ok = "2026-12-04T10:00:00.000000Z"
    ing._commit([msg(1, ok), msg(2, "not a time"), msg(3, ok), SimpleNamespace(topic="x", payload=b"?")])
    ing._commit([msg(1, ok)])
    assert pg_ids(dsn, "box1") == [1, 3]
    assert (ing.inserted, ing.skipped, ing.duplicates) == (2, 2, 1)
    ing._conn.close()


def test_a_broker_closing_before_it_accepts_is_named_in_the_status(broker, tmp_path):
    """The certificate listener without a client certificate drops the connection after the TLS handshake: the
    status says so (paho's reason alone is "Unspecified error")."""
    from core.fleet.link import FleetLink
    from core.ops.settings import Settings

    event_log = EventLog(tmp_path / "d")
    event_log.start()
    link = FleetLink(Settings(data_dir=tmp_path / "d", fleet_broker=broker.cert_url, fleet_ca_file=broker.ca_file,
                              appliance_id="box1"), event_log)
    link.start()
    try:
        wait_for(lambda: link.snapshot()["problem"] is not None, 10, "the problem")
        snap = link.snapshot()
        assert snap["link"] == "down"
        assert "closed the connection before accepting it (without a client certificate)" in snap["problem"], snap
    finally:
        link.stop()
        event_log.close()


def test_unusable_fleet_files_leave_the_box_running_and_say_why(tmp_path):
    from core.fleet.link import FleetLink
    from core.ops.settings import Settings

    event_log = EventLog(tmp_path / "d")
    event_log.start()
    no_ca = FleetLink(Settings(data_dir=tmp_path / "d", fleet_broker="mqtts://localhost:1",
                               fleet_ca_file=tmp_path / "missing.pem"), event_log)
    no_ca.start()
    assert no_ca.snapshot()["link"] == "down" and "missing.pem" in no_ca.snapshot()["problem"]
    no_pw = FleetLink(Settings(data_dir=tmp_path / "d", fleet_broker="mqtt://localhost:1", fleet_username="u",
                               fleet_password_file=tmp_path / "missing.pw"), event_log)
    no_pw.start()
    assert "cannot be read" in no_pw.snapshot()["problem"]
    no_ca.stop()
    no_pw.stop()
    event_log.close()
