"""schemathesis against /openapi.json of `cathlab-edge run` (real uvicorn, simulators): no 5xx, no undocumented
status code, no response that violates its documented schema or content type, for requests that fit the schema
and requests that do not, with and without the token. /api/stream is left out (an endless response;
tests/test_api_stream.py covers it).

Operations are driven through schemathesis' Hypothesis strategies directly: its lazy-fixture pytest plugin does
not work with pytest 9 (request.node._nodeid), and the server has to be up before the schema can be loaded.
"""
import os

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.test_api_stream import start_server, stop_server

# Per operation, mode and token case; CATHLAB_SCHEMATHESIS_EXAMPLES=500 for a deep run.
EXAMPLES = int(os.environ.get("CATHLAB_SCHEMATHESIS_EXAMPLES", "10"))
# /healthz answers 503 by design when the appliance is unhealthy (documented; status codes are still checked).
EXCLUDED = {"/healthz": [not_a_server_error]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    proc, url = start_server(data_dir)
    yield url, (data_dir / "api-token").read_text().strip()
    stop_server(proc)


def operations(url: str):
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    return [op for op in ops if op.path != "/api/stream"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_api_conforms_to_its_schema(server, mode, with_token):
    url, token = server
    headers = {"Authorization": f"Bearer {token}"} if with_token else {}
    ops = operations(url)
    assert {f"{op.method.upper()} {op.path}" for op in ops} >= {
        "GET /api/status", "GET /api/runs", "GET /api/runs/{run_id}", "GET /api/runs/{run_id}/image.png",
        "GET /api/procedures", "GET /api/procedures/{procedure_id}", "GET /api/events", "GET /healthz",
        "GET /metrics", "POST /api/procedures", "POST /api/procedures/current/end",
        "PUT /api/procedures/current/patient", "PUT /api/runs/{run_id}/label", "PUT /api/rois",
        "PUT /api/centerline"}
    failures = []
    for op in ops:
        @hypothesis.given(case=op.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def check(case):
            case.call_and_validate(base_url=url, headers=headers, excluded_checks=EXCLUDED.get(op.path, []) + [
                # The appliance judges what a schema cannot say (a centreline folding onto itself, an ROI
                # outside the frame) and answers 422 with the reason: valid-looking data may be refused.
                positive_data_acceptance])

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            continue  # no request of this mode exists for the operation (e.g. nothing to make invalid)
        except Exception as exc:  # collected so one run reports every failing operation
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)
