"""The status API in-process (TestClient) against the real appliance on its simulators."""
import asyncio
import json
import re
import struct
import time
from html import escape

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api import metrics
from api.app import MAX_BODY_BYTES, MAX_VALIDATION_ERRORS, create_app
from api.auth import TOKEN_FILE
from api.routes import events as events_routes
from api.routes.page import CLEARANCE_WAITING, render
from core.analysis.clearance.measure import MAX_CENTERLINE_POINTS
from core.ops.settings import Settings
from tests.waiting import wait_for


def wait_until(client: TestClient, predicate, seconds: float, path: str = "/api/status"):
    """The first answer of GET ``path`` that satisfies ``predicate`` within ``seconds``."""
    last = {}

    def answer():
        last["body"] = body = client.get(path).json()
        return body if predicate(body) else None
    return wait_for(answer, seconds, interval=0.1, explain=lambda: f"last {path}: {last.get('body')}")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One appliance on its simulators for the module, with one finished X-ray run recorded."""
    data_dir = tmp_path_factory.mktemp("data")
    # No automatic procedure: the lifecycle tests decide when one is open.
    app = create_app(Settings(data_dir=data_dir, phantom_size=256, auto_procedure=False))
    with TestClient(app) as client:
        wait_until(client, lambda s: s["last_runs"] and s["injector"]["link"] == "up", 20)
        token = (data_dir / TOKEN_FILE).read_text().strip()
        yield client, token, data_dir


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# -- reads --------------------------------------------------------------------------------------------------
def test_status_has_the_documented_shape(live):
    client, _, _ = live
    s = client.get("/api/status").json()
    assert set(s) >= {"injector", "xray", "run", "last_runs", "procedure", "counters", "alarms"}
    inj = s["injector"]
    assert inj["link"] == "up" and inj["device"]["model"]
    assert {"state", "flow_ml_s", "volume_ml", "pressure_kpa"} <= set(inj)
    assert isinstance(s["xray"]["on"], bool) and "pulse_rate" in s["xray"]
    assert s["counters"]["frames"] > 0 and s["counters"]["serial"]["crc_errors"] == 0
    assert s["alarms"] == []


def test_status_is_live(live):
    client, _, _ = live
    first = client.get("/api/status").json()["counters"]["frames"]
    later = wait_until(client, lambda s: s["counters"]["frames"] > first + 5, 3)
    assert later["uptime_s"] > 0


def test_runs_list_and_one_run(live):
    client, _, _ = live
    runs = client.get("/api/runs").json()["runs"]
    assert runs, "a finished run should be recorded"
    run = runs[-1]
    assert run["duration_s"] > 0 and run["frames"] > 0 and run["pulse_rate"] == pytest.approx(15, abs=0.5)
    one = client.get(f"/api/runs/{run['run_id']}")
    assert one.status_code == 200 and one.json()["run_id"] == run["run_id"]
    assert client.get("/api/runs", params={"limit": 1}).json()["runs"] == [runs[-1]]


def test_unknown_and_malformed_ids(live):
    client, _, _ = live
    r = client.get("/api/runs/zz-999")
    assert r.status_code == 404 and "zz-999" in r.json()["detail"]
    assert client.get("/api/procedures/0123456789abcdef").status_code == 404
    bad = client.get("/api/runs/" + "x" * 200)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "run_id"]
    assert client.get("/api/runs/a%20b").status_code == 422


def test_procedures_list_and_one(live):
    client, token, _ = live
    if client.get("/api/status").json()["procedure"] is None:
        assert client.post("/api/procedures", json={"label": "list"}, headers=auth(token)).status_code == 201
    procs = client.get("/api/procedures").json()["procedures"]
    assert procs and procs[0]["open"] is True
    one = client.get(f"/api/procedures/{procs[0]['id']}").json()
    assert one["id"] == procs[0]["id"] and "clearance" in one


def test_events_page_in_id_order(live):
    client, _, _ = live
    page = client.get("/api/events", params={"limit": 3}).json()
    ids = [e["id"] for e in page["events"]]
    assert ids == sorted(ids) and len(ids) == 3 and page["next"] == ids[-1]
    assert page["events"][0]["kind"] == "appliance_start"
    assert set(page["events"][0]) == {"id", "procedure_id", "t_mono_ns", "t_wall", "kind", "data"}
    following = client.get("/api/events", params={"after": page["next"], "limit": 1000}).json()
    assert following["events"][0]["id"] > page["next"]
    kinds = {e["kind"] for e in page["events"] + following["events"]}
    assert {"serial_link", "injector_hello", "xray_on", "xray_off"} <= kinds
    end = following["next"]
    assert client.get("/api/events", params={"after": end}).json() == {"events": [], "next": end}


def test_an_events_page_is_bounded_in_bytes_and_paging_still_reaches_every_event(tmp_path):
    # 1,000 clearance results (~30 kB each) were one 30 MB answer: 100 clients that asked for it and never
    # read held 230 MB and dropped 137 frames (red team). A page now stops after ~256 kB; `next` goes on.
    # Its own appliance: the other tests look for their events in the first page.
    with TestClient(create_app(Settings(data_dir=tmp_path, phantom_size=128, auto_procedure=False))) as client:
        _page_through_bulky_events(client)


def test_event_pages_are_built_two_at_a_time_and_few_wait():
    # 100 pages asked for at once ran 40 at a time in the thread pool and starved the frame thread of the GIL
    # (109 frames dropped, red team); queued without a bound they would fill the in-flight budget /healthz shares.
    async def scenario():
        gate = events_routes.PageGate(wait_s=0.2)
        building = [await gate.enter() for _ in range(events_routes.PAGES_AT_ONCE)]
        waiting = [asyncio.ensure_future(gate.enter()) for _ in range(events_routes.PAGES_WAITING)]
        await asyncio.sleep(0)
        refused_at_once = await asyncio.wait_for(gate.enter(), 0.05)    # no room even to wait
        gate.leave()                                                    # one page done: one waiter goes on
        results = await asyncio.gather(*waiting)
        return building, refused_at_once, results

    building, refused_at_once, results = asyncio.run(scenario())
    assert building == [True] * events_routes.PAGES_AT_ONCE and refused_at_once is False
    assert results.count(True) == 1 and results.count(False) == events_routes.PAGES_WAITING - 1


def test_stream_replays_are_bounded_in_bytes_and_read_two_at_a_time():
    # 32 streams reconnecting with Last-Event-ID: 0 replayed 1,000 events each at once: 41 frames dropped and
    # 146 MB held (red team).
    import threading

    from api.app import replay_reader

    class Device:
        def __init__(self):
            self.now = self.most = 0
            self.lock = threading.Lock()

        def events(self, after, limit):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            time.sleep(0.05)   # a slow read (the load under test): overlapping reads would show in self.most
            with self.lock:
                self.now -= 1
            return [{"id": after + k + 1, "kind": "bulky", "data": {"pad": "x" * 30_000}} for k in range(limit)]

    device = Device()
    read = replay_reader(device)
    pages = []
    threads = [threading.Thread(target=lambda: pages.append(read(0, 1000))) for _ in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert device.most == events_routes.PAGES_AT_ONCE
    assert all(len(json.dumps(p)) < events_routes.MAX_PAGE_BYTES + 40_000 and p[0]["id"] == 1 for p in pages)


def _page_through_bulky_events(client) -> None:
    start = client.get("/api/events", params={"limit": 1000}).json()
    while start["events"]:
        start = client.get("/api/events", params={"after": start["next"], "limit": 1000}).json()
    log = client.app.state.appliance.log
    for k in range(40):
        log.record("bulky_result", {"k": k, "stations": [[float(i), float(i) / 3.0] for i in range(1200)]})
    assert log.flush(10)
    after, seen, largest = start["next"], [], 0
    while True:
        r = client.get("/api/events", params={"after": after, "limit": 1000})
        page = r.json()
        if not page["events"]:
            break
        largest = max(largest, len(r.content))
        seen += [e["data"]["k"] for e in page["events"] if e["kind"] == "bulky_result"]
        after = page["next"]
    assert seen == list(range(40))
    assert 30_000 < largest < 400_000, largest


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "after=-1", "after=1e3",
                                   "after=99999999999999999999"])
def test_bad_queries_are_422_with_a_message(live, query):
    client, _, _ = live
    r = client.get("/api/events?" + query)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail[0]["loc"][0] == "query" and detail[0]["msg"]


def test_healthz_ok(live):
    client, _, _ = live
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True, "reasons": []}


def scrape(client: TestClient) -> dict[str, Metric]:
    """The families of one /metrics answer, by name (a counter's without its ``_total``)."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(r.text)}


def test_metrics_prometheus_text(live):
    client, _, _ = live
    families = scrape(client)
    kinds = {name: family.type for name, family in families.items()}
    assert kinds["cathlab_frames"] == "counter"
    assert kinds["cathlab_serial_crc_errors"] == "counter"
    assert kinds["cathlab_eventlog_commit_latency_p99_ms"] == "gauge"
    assert kinds["cathlab_runs"] == "counter"
    assert kinds["cathlab_api_stream_clients"] == "gauge"
    # Typed wrongly from their names before (gauges): they only ever grow.
    assert kinds["cathlab_serial_bytes_discarded"] == "counter"
    assert metrics.type_of("serial_packets_by_type_state")[0] == "counter"   # no STATE packet here yet
    # prometheus-client's own collectors come along.
    assert kinds["process_cpu_seconds"] == "counter" and "process_resident_memory_bytes" in kinds
    assert "python_info" in kinds
    values = {sample.name: sample.value for family in families.values() for sample in family.samples}
    assert values["cathlab_frames_total"] > 0 and values["cathlab_runs_total"] >= 1


def test_every_metric_has_its_intended_type(live):
    client, _, _ = live
    state = client.app.state
    reported = {key: value for key, value in metrics.appliance_values(state.appliance, state.hub).items()
                if isinstance(value, (int, float))}
    assert "serial_bytes_discarded" in reported and "eventlog_db_bytes" in reported
    untyped = [key for key in reported if metrics.type_of(key)[0] is None]
    assert untyped == [], f"type these in api/metrics.py TYPES: {untyped}"
    families = scrape(client)
    for key in reported:
        name = metrics.metric_name(key).removesuffix("_total")
        assert families[name].type == metrics.type_of(key)[0], key
    assert not [name for name, family in families.items() if family.type == "unknown"]


def test_counters_never_decrease_between_scrapes(live):
    client, _, _ = live

    def counters() -> dict[str, float]:
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in scrape(client).values() if family.type == "counter" for sample in family.samples}

    first = counters()
    frames = first[("cathlab_frames_total", ())]
    wait_until(client, lambda s: s["counters"]["frames"] > frames, 5)   # the appliance counts on meanwhile
    second = counters()
    assert first.keys() <= second.keys()
    assert [key for key in first if second[key] < first[key]] == []
    assert second[("cathlab_frames_total", ())] > first[("cathlab_frames_total", ())]


def test_page_is_server_rendered_and_self_contained(live):
    client, _, _ = live
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'id="link" class="badge up">UP<' in html          # current values are in the HTML itself
    assert "$" not in html.split("<script")[0]              # every template slot was filled
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "no external resources"
    assert "default-src 'none'" in r.headers["content-security-policy"]  # and the browser is told so
    assert " style=" not in html                                        # nothing inline for the CSP to block
    for asset in ("style.css", "app.js"):
        a = client.get(f"/static/{asset}")
        assert a.status_code == 200 and len(a.text) > 500
        assert "http://" not in a.text and "https://" not in a.text
    assert client.get("/static/secret.txt").status_code == 404
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load from a CDN
    assert client.get("/openapi.json").json()["info"]["title"] == "cathlab-edge"
    assert client.get("/static/..%2fapp.py").status_code == 404


def test_the_empty_clearance_panel_says_the_baseline_is_chosen_automatically(live):
    client, _, _ = live
    script = client.get("/static/app.js").text
    assert json.dumps(CLEARANCE_WAITING) in script                      # the live page says the same
    page = render(dict(client.get("/api/status").json(), clearance=None))
    assert f'id="clearance-note">{escape(CLEARANCE_WAITING)}<' in page
    assert "label a baseline" not in page + script


# -- writes ---------------------------------------------------------------------------------------------------
WRITES = [("post", "/api/procedures", {"label": "x"}), ("post", "/api/procedures/current/end", None),
          ("put", "/api/procedures/current/patient", {"weight_kg": 70, "creatinine_mg_dl": 1.0}),
          ("put", "/api/runs/abc-1/label", {"label": "baseline"}), ("put", "/api/rois", {"rois": None}),
          ("put", "/api/centerline", {"points": None}),
          ("post", "/api/procedures/current/injections", {"volume_ml": 5})]


@pytest.mark.parametrize("method,path,body", WRITES)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-of-the-right-length-000000000000",
                                    "Basic dXNlcjpwYXNz", "Bearer", "bearer  ", "Token {token}"])
def test_writes_without_the_right_token_are_401(live, method, path, body, header):
    client, token, _ = live
    headers = {} if header is None else {"Authorization": header.format(token=token)}
    before = client.get("/api/status").json()["procedure"]
    r = client.request(method, path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/status").json()["procedure"] == before


def test_token_prefix_or_extension_is_401(live):
    client, token, _ = live
    for wrong in (token[:-1], token + "x", token.upper() if token != token.upper() else token.lower()):
        assert client.post("/api/procedures/current/end", headers=auth(wrong)).status_code == 401


def test_procedure_lifecycle_with_the_token(live):
    client, token, _ = live
    h = auth(token)
    open_now = client.get("/api/status").json()["procedure"]
    if open_now is None:
        client.post("/api/procedures", json={}, headers=h)
    conflict = client.post("/api/procedures", json={"label": "room 2"}, headers=h)
    assert conflict.status_code == 409 and "still open" in conflict.json()["detail"]

    ended = client.post("/api/procedures/current/end", headers=h)
    assert ended.status_code == 200 and ended.json()["open"] is False
    assert client.post("/api/procedures/current/end", headers=h).status_code == 404
    assert client.put("/api/procedures/current/patient", json={"weight_kg": 70, "creatinine_mg_dl": 2.0},
                      headers=h).status_code == 404

    started = client.post("/api/procedures", json={"label": "room 2"}, headers=h)
    assert started.status_code == 201
    proc = started.json()
    assert proc["label"] == "room 2" and proc["open"] is True
    assert client.get("/api/status").json()["procedure"]["id"] == proc["id"]
    assert client.get(f"/api/procedures/{proc['id']}").json()["label"] == "room 2"


def test_patient_parameters(live):
    client, token, _ = live
    h = auth(token)
    if client.get("/api/status").json()["procedure"] is None:
        client.post("/api/procedures", json={}, headers=h)
    r = client.put("/api/procedures/current/patient", json={"weight_kg": 70, "creatinine_mg_dl": 2.0}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["max_contrast_ml"] == 175.0                   # docs/domain.md contrast limit: 70 kg, 2.0 mg/dl
    proc = client.get("/api/status").json()["procedure"]
    assert proc["fields"]["weight_kg"] == 70 and proc["fields"]["creatinine_mg_dl"] == 2.0
    assert proc["totals"]["max_contrast_ml"] == 175.0
    assert client.get(f"/api/procedures/{proc['id']}").json()["totals"]["max_contrast_ml"] == 175.0


def test_hand_injections_count_toward_the_contrast_limit(live):
    client, token, _ = live
    h = auth(token)
    if client.get("/api/status").json()["procedure"] is None:
        client.post("/api/procedures", json={}, headers=h)
    client.put("/api/procedures/current/patient", json={"weight_kg": 70, "creatinine_mg_dl": 2.0}, headers=h)
    before = client.get("/api/status").json()["procedure"]["totals"]
    r = client.post("/api/procedures/current/injections",
                    json={"volume_ml": 12.5, "concentration_mg_ml": 240, "at": "2026-12-04T10:00:00+01:00"}, headers=h)
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["contrast_ml_hand"] == pytest.approx(before["contrast_ml_hand"] + 12.5)
    assert t["contrast_ml_injector"] == before["contrast_ml_injector"]
    assert t["contrast_ml"] == pytest.approx(t["contrast_ml_injector"] + t["contrast_ml_hand"])
    # The limit compares all contrast, the injector's and the hand-given.
    assert t["contrast_pct"] == pytest.approx(100 * t["contrast_ml"] / 175.0, abs=0.1)
    r = client.post("/api/procedures/current/injections", json={"volume_ml": 3, "concentration_mg_ml": None,
                                                                 "at": None}, headers=h)
    assert r.status_code == 201 and r.json()["iodine_g"] is None      # 3 ml of unknown strength
    proc = client.get("/api/status").json()["procedure"]
    assert proc["totals"]["contrast_ml_hand"] == pytest.approx(t["contrast_ml_hand"] + 3)
    assert client.get(f"/api/procedures/{proc['id']}").json()["totals"]["contrast_ml_hand"] == pytest.approx(
        t["contrast_ml_hand"] + 3)
    events = client.get("/api/events", params={"limit": 1000}).json()["events"]
    hand = [e for e in events if e["kind"] == "injection" and e["data"].get("source") == "hand"]
    assert [e["data"]["delivered_volume_ml"] for e in hand][-2:] == [12.5, 3.0]
    assert hand[-2]["data"]["concentration_mg_ml"] == 240 and hand[-2]["data"]["at"].startswith("2026-12-04T10:00")
    for bad in ({"volume_ml": 0}, {"volume_ml": 600}, {"volume_ml": 5, "concentration_mg_ml": -1},
                {"volume_ml": 5, "at": "yesterday"}, {"volume_ml": 5, "at": "2026-12-04T10:00:00"},
                {"volume_ml": 5, "at": "2099-01-01T00:00:00+00:00"},
                {"volume_ml": 5, "extra": 1}):
        assert client.post("/api/procedures/current/injections", json=bad, headers=h).status_code == 422, bad


@pytest.mark.parametrize("body,where", [
    ({"weight_kg": -1, "creatinine_mg_dl": 1.0}, "weight_kg"),
    ({"weight_kg": 70, "creatinine_mg_dl": 0}, "creatinine_mg_dl"),
    ({"weight_kg": "heavy", "creatinine_mg_dl": 1.0}, "weight_kg"),
    ({"weight_kg": "70", "creatinine_mg_dl": 1.0}, "weight_kg"),
    ({"weight_kg": 70, "creatinine_mg_dl": True}, "creatinine_mg_dl"),
    ({"weight_kg": 70}, "creatinine_mg_dl"),
    ({"weight_kg": 70, "creatinine_mg_dl": 1.0, "name": "Doe"}, "name"),
])
def test_bad_patient_values_are_422_naming_the_field(live, body, where):
    client, token, _ = live
    r = client.put("/api/procedures/current/patient", json=body, headers=auth(token))
    assert r.status_code == 422
    assert any(where in map(str, d["loc"]) for d in r.json()["detail"]), r.json()


def test_malformed_json_is_422(live):
    client, token, _ = live
    r = client.put("/api/rois", content=b'{"rois": [1, 2', headers={**auth(token), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


def test_label_a_run(live):
    client, token, _ = live
    h = auth(token)
    run_id = client.get("/api/runs").json()["runs"][-1]["run_id"]
    r = client.put(f"/api/runs/{run_id}/label", json={"label": "baseline"}, headers=h)
    assert r.status_code == 200 and r.json() == {"run_id": run_id, "label": "baseline"}
    assert client.put(f"/api/runs/{run_id}/label", json={"label": "final"}, headers=h).status_code == 422
    missing = client.put("/api/runs/zz-404/label", json={"label": "completion"}, headers=h)
    assert missing.status_code == 404 and "zz-404" in missing.json()["detail"]
    wait_until(client, lambda p: any(e["kind"] == "run_label" and e["data"]["run_id"] == run_id
                                     for e in p["events"]), 3, "/api/events?limit=1000")


@pytest.mark.parametrize("body", [{"rois": [[10, 10, 0, 5]]}, {"rois": [[1, 2, 3]]}, {"rois": [[-1, 0, 4, 4]]},
                                  {"rois": "all"}, {"rois": [[0, 0, 4, 4]] * 17}, {}])
def test_bad_rois_are_422(live, body):
    client, token, _ = live
    assert client.put("/api/rois", json=body, headers=auth(token)).status_code == 422


@pytest.mark.parametrize("body", [{"points": [[1, 2]]}, {"points": [[1, 2], [3]]}, {"points": [[0, 0], [1, 1]],
                                  "diameter_px": 0}, {"points": [[0, 0], ["a", 1]]}, {"diameter_px": 3}])
def test_bad_centerlines_are_422(live, body):
    client, token, _ = live
    assert client.put("/api/centerline", json=body, headers=auth(token)).status_code == 422


def test_rois_accepted(live):
    client, token, _ = live
    h = auth(token)
    r = client.put("/api/rois", json={"rois": [[100, 60, 24, 24]]}, headers=h)
    assert r.status_code == 200 and r.json() == {"rois": [[100, 60, 24, 24]]}
    assert client.put("/api/rois", json={"rois": None}, headers=h).status_code == 200
    wait_until(client, lambda p: any(e["kind"] == "rois_set" for e in p["events"]), 3, "/api/events?limit=1000")


# -- an unhealthy appliance -----------------------------------------------------------------------------------
def test_healthz_503_with_reasons_when_the_injector_is_missing(tmp_path):
    settings = Settings(data_dir=tmp_path, phantom_size=64, serial=str(tmp_path / "no-such-port"))
    with TestClient(create_app(settings)) as client:
        r = wait_for(lambda: (r := client.get("/healthz")).status_code == 503 and r, 5)
        body = r.json()
        assert body["ok"] is False and any("injector link" in reason for reason in body["reasons"])
        status = client.get("/api/status").json()
        assert status["injector"]["link"] == "down"
        # No clearance without runs: the image is a 404 that says so (its PNG is checked under load in
        # test_analysis_worker.py, once the demo procedure has measured one).
        assert status["clearance"] is None
        r = client.get("/api/clearance/latest.png")
        assert r.status_code == 404 and r.json()["detail"] == "no clearance measured yet"


def test_metric_rendering_rules():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.ApplianceCollector(lambda: {
        "frames": 3, "last_frame_age_s": 0.5, "weird name-1": 2, "eventlog_commit_latency_p99_ms": float("nan"),
        "skipped": None, "eventlog_writable": True, "serial_protocol_violations_by_kind_volume_backwards": 1}))
    text = generate_latest(registry).decode()
    assert "# TYPE cathlab_frames_total counter\ncathlab_frames_total 3.0\n" in text
    assert "# TYPE cathlab_last_frame_age_s gauge\ncathlab_last_frame_age_s 0.5\n" in text
    assert "# TYPE cathlab_serial_protocol_violations_by_kind_volume_backwards_total counter\n" in text
    # A value the table does not type is shown untyped, not guessed from its name.
    assert "# TYPE cathlab_weird_name_1 untyped\ncathlab_weird_name_1 2.0\n" in text
    assert "cathlab_eventlog_commit_latency_p99_ms NaN" in text
    assert "skipped" not in text and "cathlab_eventlog_writable 1.0" in text


def test_oversized_bodies_are_413_before_auth_or_parsing(live):
    client, token, _ = live
    big = b'{"rois": null, "pad": "' + b"x" * (2 << 20) + b'"}'
    r = client.put("/api/rois", content=big, headers={**auth(token), "Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b"x" * 65536
    r = client.put("/api/rois", content=chunks(), headers={**auth(token), "Content-Type": "application/json"})
    assert r.status_code == 413
    # The largest legitimate body passes (and is judged on its content: the most points allowed, an unknown
    # field -> 422 for that field alone).
    points = [[float(i), float(i)] for i in range(MAX_CENTERLINE_POINTS)]
    r = client.put("/api/centerline", json={"points": points, "diameter_px": 10.0, "x": 1}, headers=auth(token))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "x"]


def test_a_body_built_to_be_refused_costs_little(live):
    # 90,000 unknown keys in 1 MiB: 2.6 s of event-loop time and a 9.6 MB answer listing every one (red team).
    client, token, _ = live
    many = b'{"label": null' + b"".join(b', "k%d": 0' % i for i in range(90_000)) + b"}"
    r = client.post("/api/procedures", content=many, headers={**auth(token), "Content-Type": "application/json"})
    assert r.status_code == 413
    # Within the limit: refused for each unknown key, but the answer lists the first 20 and says how many.
    fits = b'{"label": null' + b"".join(b', "k%d": 0' % i for i in range(5_000)) + b"}"
    assert len(fits) < MAX_BODY_BYTES
    r = client.post("/api/procedures", content=fits, headers={**auth(token), "Content-Type": "application/json"})
    assert r.status_code == 422 and len(r.json()["detail"]) == MAX_VALIDATION_ERRORS
    assert r.headers["X-Validation-Errors"] == "5000" and len(r.content) < 4096
    # The largest legitimate body, pretty-printed with long floats, is far inside the limit.
    points = [[1234.56789012345, 1234.56789012345]] * MAX_CENTERLINE_POINTS
    assert len(json.dumps({"points": points, "diameter_px": 10.5}, indent=4)) < MAX_BODY_BYTES // 2


def test_an_roi_outside_the_frame_is_422(live):
    client, token, _ = live
    r = client.put("/api/rois", json={"rois": [[300, 300, 5, 5]]}, headers=auth(token))  # the frame is 256x256
    assert r.status_code == 422 and "inside" in r.json()["detail"][0]["msg"]


# Last in the module: it waits for the scripted baseline venogram (X-ray 8-14 s after start) to be recorded.
def test_a_contrast_run_has_its_curves_and_a_peak_opacity_png(live):
    client, _, _ = live
    contrast = wait_for(lambda: [r for r in client.get("/api/runs").json()["runs"] if r.get("contrast")], 25,
                        interval=0.2, explain=lambda: "no contrast run recorded")
    run = client.get(f"/api/runs/{contrast[-1]['run_id']}").json()
    assert run["injection_delay_s"] == pytest.approx(1.0, abs=0.15)   # injection 1 s after X-ray on
    roi = run["rois"][0]
    assert roi["curve"] and roi["arrival_s"] < roi["peak_s"] < roi["washout_s"]
    r = client.get(f"/api/runs/{run['run_id']}/image.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    # The peak image covers the measured field: the collimated field once found, else the whole 256x256 frame.
    width, height = struct.unpack(">II", r.content[16:24])
    fields = [e["data"]["crop"] for e in client.get("/api/events?limit=1000").json()["events"]
              if e["kind"] == "video_field"]
    assert (width, height) in [(256, 256)] + [(c[2], c[3]) for c in fields]
    # A fluoroscopy-only run keeps no peak image (the fixture waited for the scripted fluoroscopy run 0).
    plain = [x for x in client.get("/api/runs").json()["runs"] if not x.get("contrast")]
    assert plain and client.get(f"/api/runs/{plain[0]['run_id']}/image.png").status_code == 404
    assert client.get("/api/runs/nope-0/image.png").status_code == 404

    # With a baseline recorded, an operator's centreline is taken (and automatic again with null).
    h = auth(live[1])
    r = client.put("/api/centerline", json={"points": [[128, 20], [128, 230]], "diameter_px": 12}, headers=h)
    assert r.status_code == 200, r.text
    assert client.put("/api/centerline", json={"points": None}, headers=h).status_code == 200


# After the contrast-run test: waiting for a contrast run earlier would move the procedure tests past the
# baseline run.
def test_the_automatic_rois_reason_is_shown_with_the_roi(live):
    client, _, _ = live
    status = wait_until(client, lambda s: any(r["contrast"] and r.get("roi") for r in s["last_runs"]), 40)
    brief = next(r for r in status["last_runs"] if r["contrast"] and r.get("roi"))
    assert brief["roi_auto"] is True and "venous segment" in brief["roi_reason"]
    record = client.get(f"/api/runs/{brief['run_id']}").json()["rois"][0]
    assert (record["roi"], record["auto"], record["reason"]) == (brief["roi"], True, brief["roi_reason"])
    x, y, w, h = brief["roi"]
    text = f"run {brief['run_id']} · ROI {x},{y} {w}×{h} px · automatic: {brief['roi_reason']}"
    page = render(dict(status, run=None, last_runs=[brief]))
    assert f'id="tdc-roi">{escape(text)}<' in page
    script = client.get("/static/app.js").text             # the live page words it the same way
    assert "`${where} · automatic: ${reason}`" in script and "ROI ${x},${y} ${w}×${h} px" in script
    assert "run ${brief.run_id} · " in script
