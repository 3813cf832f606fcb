"""Stores no patient identity: the one text check (core.identity), where it is applied, and content hashes in
place of file names. The live end-to-end proof is in test_identity_live.py."""
import io
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import TOKEN_FILE
from api.cli.analyze import analyze_main
from core.analysis.clearance.grading import parse_segments
from core.identity import MAX_TEXT, IdentityRefused, check_text, content_label
from core.ops.settings import Settings
from core.sources.folder import DirectorySource
from core.sources.stacks import load_stack
from core.store.eventlog import EventLog
from core.store.procedures import Procedures
from tests.dicom_files import write_multiframe

ISSUE_EXAMPLE = "DOE^JOHN MRN 00412345 DOB 1957-03-14"
DICOM_NAME = "DOE^JOHN_MRN00412345_XA.dcm"
NORMAL = ["baseline", "post pass 2", "L iliac", "auto", "room 2", "Rt CFV (sheath)", "10-12 mm", "pass 2/3",
          "4 x 10 ml", "intraprocedural", "completion", "accurate", "rename", "weight_kg",
          "14 x 60 mm stent", "2 x 10-12 mm", "O2 sat 98", "ROI 1", "IO", "Oxford", "grade III 50-95",
          "pass 1 2 3", "run 12 of 20", "room 12 table 3", "10 12 mm", "lol", "tPA 1 mg/h"]


@pytest.mark.parametrize("text,rule", [
    (ISSUE_EXAMPLE, "DICOM form"),
    ("DOE^JOHN", "DICOM form"),
    ("^", "DICOM form"),
    ("00412345", "6 or more digits"),
    ("acc 123456", "6 or more digits"),
    ("004 123 45", "6 or more digits"),           # an MRN typed in groups
    ("004-12-345", "date|6 or more digits"),     # either rule refuses it
    ("004.123/45", "6 or more digits"),
    ("19570314", "6 or more digits"),             # yyyymmdd
    ("1957-03-14", "date"),
    ("14.03.1957", "date"),
    ("14/03/1957", "date"),
    ("03/14/1957", "date"),
    ("14/3/57", "date"),
    ("14 Mar 1957", "date"),
    ("14-MAR-1957", "date"),
    ("Mar 14, 1957", "date"),
    ("March 1957", "date"),
    ("MRN", "identity word 'mrn'"),
    ("mrn 1234", "identity word 'mrn'"),
    ("DOB", "identity word 'dob'"),
    ("patient 3", "identity word 'patient'"),
    ("Name Smith", "identity word 'name'"),
    ("accession 12", "identity word 'accession'"),
    ("patient_name", "identity word 'patient'"),  # field names are checked by the same function
    ("date_of_birth", "identity word 'birth'"),
    ("x" * (MAX_TEXT + 1), "longer than 40"),
    ("", "empty"),
    ("   ", "empty"),
    ("a\nb", "single-line"),
    ("Müller", "single-line"),                     # ASCII only: no lookalike digits or carets
    ("０４１２３４５６", "single-line"),
    ("john@example.org", "single-line"),
    ("room 2\n", "single-line"),                 # a trailing newline passed the character set's '$'
    # Found by the red-team sweep, each accepted before:
    ("412,345", "6 or more digits"),              # a thousands comma
    ("1,234,567", "6 or more digits"),
    ("(004)12345", "6 or more digits"),           # phone-style groups
    ("12+34+56", "6 or more digits"),
    ("004 . 123 - 45", "6 or more digits"),       # three separators between groups
    ("4123   45", "6 or more digits"),
    ("OO4l2345", "6 or more digits"),             # letters that pass for digits
    ("4123O45", "6 or more digits"),
    ("O4I2345", "6 or more digits"),
    ("d.o.b. 1957", "identity word 'dob'"),       # dotted and spaced acronyms
    ("D.O.B", "identity word 'dob'"),
    ("m.r.n 4123", "identity word 'mrn'"),
    ("S S N", "identity word 'ssn'"),
    ("14-III-1957", "date"),                      # a Roman month
    ("14.III.57", "date"),
    ("14 X 1957", "date"),
    ("3rd March", "date"),                        # an ordinal day
    ("14th of Mar", "date"),
    ("3 14 57", "date"),                          # day, month, year with spaces only
    ("DOE J 14 3 57", "date"),
])
def test_identity_like_texts_are_refused_with_the_rule(text, rule):
    with pytest.raises(IdentityRefused, match=rule) as refused:
        check_text(text, "procedure label")
    assert isinstance(refused.value, ValueError)
    assert "procedure label" in str(refused.value)
    if len(text) > 3:
        assert text not in str(refused.value)     # the message is safe to log: it never quotes the text


@pytest.mark.parametrize("text", NORMAL)
def test_normal_labels_pass_unchanged(text):
    assert check_text(text) == text


def test_non_text_is_refused():
    with pytest.raises(IdentityRefused, match="must be text"):
        check_text(12345)


def test_content_label_is_a_hash_of_the_contents_not_the_name(tmp_path):
    a = tmp_path / DICOM_NAME
    a.write_bytes(b"same bytes")
    b = tmp_path / "other.dcm"
    b.write_bytes(b"same bytes")
    c = tmp_path / "third.dcm"
    c.write_bytes(b"different")
    assert content_label(a) == content_label(b) != content_label(c)
    assert content_label(a).startswith("sha256:") and len(content_label(a)) == len("sha256:") + 16
    assert content_label(tmp_path).startswith("sha256:") and content_label(tmp_path) != content_label(a)
    assert content_label(tmp_path / "missing") == "unreadable"


# -- core write paths ---------------------------------------------------------------------------------------
def test_event_log_refuses_identity_in_labels_fields_and_events(tmp_path):
    log = EventLog(tmp_path)
    procs = Procedures(log)
    log.start()
    try:
        with pytest.raises(IdentityRefused, match="procedure label"):
            procs.start(ISSUE_EXAMPLE)
        assert procs.current() is None
        proc = procs.start("L iliac")
        with pytest.raises(IdentityRefused):
            procs.set_fields(note="DOB 1957-03-14")
        with pytest.raises(IdentityRefused, match="field name"):
            procs.set_fields(patient_name="x")
        # A label reaching the log by another path (a run record, an event) is checked there too.
        with pytest.raises(IdentityRefused):
            log.record("run_label", {"run_id": "s-1", "label": ISSUE_EXAMPLE})
        with pytest.raises(IdentityRefused):
            log.record_run({"run_id": "s-1", "label": "MRN 00412345"}, key="run:s-1")
        procs.set_fields(weight_kg=70, note="post pass 2")
        log.record_run({"run_id": "s-1", "label": "baseline"}, key="run:s-1")
        assert log.flush(5)
        assert procs.current()["fields"] == {"weight_kg": 70, "note": "post pass 2"}
        assert log.run("s-1")["label"] == "baseline" and procs.get(proc["id"])["label"] == "L iliac"
    finally:
        log.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("events.sqlite3*"))
    for needle in (b"DOE^JOHN", b"00412345", b"1957-03-14", b"patient_name"):
        assert needle not in raw


def test_cli_segment_names_pass_the_check():
    assert parse_segments("common iliac:0-0.5,CFV:0.5-1")[1][0] == "CFV"
    with pytest.raises(IdentityRefused):
        parse_segments("DOE^JOHN:0-1")


# -- API ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    app = create_app(Settings(data_dir=data_dir, phantom_size=128, auto_procedure=False))
    with TestClient(app) as client:
        token = (data_dir / TOKEN_FILE).read_text().strip()
        yield client, {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("label,rule", [(ISSUE_EXAMPLE, "DICOM form"), ("MRN 00412345", "6 or more digits"),
                                        ("DOB", "identity word"), ("14 Mar 1957", "date"),
                                        ("x" * 41, "longer than 40"), ("a\tb", "single-line"),
                                        ("412,345", "6 or more digits"), ("D.O.B 1957", "identity word"),
                                        ("14-III-1957", "date"), ("OO4l2345", "6 or more digits")])
def test_api_refuses_identity_labels_with_a_clear_422(api, label, rule):
    client, headers = api
    r = client.post("/api/procedures", json={"label": label}, headers=headers)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert rule in error["msg"] and error["loc"][-1] == "label"
    assert client.get("/api/status").json()["procedure"] is None


def test_api_run_labels_are_three_words_and_never_free_text(api):
    client, headers = api
    r = client.put("/api/runs/abc-1/label", json={"label": ISSUE_EXAMPLE}, headers=headers)
    assert r.status_code == 422


def test_api_accepts_normal_labels_and_generates_the_id(api):
    client, headers = api
    for label in ("baseline", "post pass 2", "L iliac"):
        r = client.post("/api/procedures", json={"label": label}, headers=headers)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["label"] == label and len(body["id"]) == 32 and body["id"] != label
        assert client.post("/api/procedures/current/end", headers=headers).status_code == 200
    # An id in the body is not taken: the request models refuse unknown fields.
    r = client.post("/api/procedures", json={"label": "room 2", "id": "MRN00412345"}, headers=headers)
    assert r.status_code == 422


def test_schema_describes_the_rule_and_no_longer_invites_case_numbers(api):
    client, _ = api
    text = client.get("/openapi.json").text.lower()
    assert "case number" not in text
    label = client.get("/openapi.json").json()["components"]["schemas"]["ProcedureStart"]["properties"]["label"]
    schema = next(s for s in label["anyOf"] if s.get("type") == "string")
    assert schema["maxLength"] == 40 and "^" not in schema["pattern"].strip("^$")
    assert "patient identity" in label["description"]


# -- file names ---------------------------------------------------------------------------------------------
@pytest.fixture
def dicom_run(tmp_path):
    """A small XA run named the way PACS exports often are: after the patient."""
    frames = (np.arange(6 * 32 * 32) % 251).astype(np.uint8).reshape(6, 32, 32)
    path = tmp_path / DICOM_NAME
    write_multiframe(path, frames)
    return path


def test_a_stack_is_named_by_content_hash(dicom_run):
    stack = load_stack(dicom_run)
    assert stack.source == content_label(dicom_run) and "DOE" not in stack.source


def test_stack_errors_never_repeat_the_file_name(tmp_path):
    bad = tmp_path / DICOM_NAME
    bad.write_text("not a dicom")
    for path in (bad, tmp_path / "DOE^JOHN_missing.npy"):
        with pytest.raises(ValueError) as refused:
            load_stack(path, fps=15.0)
        assert "DOE" not in str(refused.value) and "00412345" not in str(refused.value)
    npy = tmp_path / "DOE^JOHN.npy"
    npy.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError) as refused:
        load_stack(npy, fps=15.0)
    assert "DOE" not in str(refused.value)


def test_analyze_output_names_the_file_by_hash(dicom_run, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    analyze_main(str(dicom_run), None, None, [], None, True, None, out=out, err=err)
    assert "DOE" not in out.getvalue() + err.getvalue() and "00412345" not in out.getvalue() + err.getvalue()
    bad = tmp_path / "DOE^JANE_MRN00999999_XA.dcm"
    bad.write_text("junk")
    out, err = io.StringIO(), io.StringIO()
    assert analyze_main(str(bad), None, None, [], None, True, None, out=out, err=err) == 2
    assert content_label(bad) in err.getvalue() and "DOE" not in err.getvalue()


def test_folder_replay_logs_hashes_not_names(tmp_path, dicom_run, caplog):
    (tmp_path / "DOE^JANE_MRN00999999.txt").write_text("not a recording")
    caplog.set_level(logging.DEBUG)
    source = DirectorySource(tmp_path, speed=None)
    assert source.name == content_label(tmp_path)
    while source.read() is not None:
        pass
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipping" in logged and "DOE" not in logged and str(tmp_path) not in logged
