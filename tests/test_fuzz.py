"""Hostile input, tried by a machine: schemathesis reads the service's own OpenAPI schema
(/openapi.json) and generates requests for every operation it lists, valid ones and ones built to
break it (wrong types, missing and unknown fields, numbers out of range, ids too long, bodies
that are not JSON), sent over real HTTP to `towerflow serve` in its own process over a temp
TOWERFLOW_HOME, with a token set (TOWERFLOW_API_TOKEN).

What must hold for every generated request: no 5xx; every 4xx is a JSON body whose "field"
names what was wrong; a request the schema forbids is refused (4xx); without the token, or with
a wrong one, every operation but /healthz answers 401. The budget is a count of examples per
operation and generation mode, drawn deterministically (`derandomize`), so a run in CI is the
same run every time."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings  # schemathesis brings hypothesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from models.serving.middleware import MAX_BODY
from tests.test_serving import Client, home, start_serve, stop  # noqa: F401 (home: the trained home fixture)

TOKEN = "fuzz-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# per operation and generation mode; TOWERFLOW_FUZZ_EXAMPLES=2000 for a longer hunt
EXAMPLES = int(os.environ.get("TOWERFLOW_FUZZ_EXAMPLES", "60"))
OPEN = {"/healthz"}  # liveness: answers without the token, by design (models/serving/middleware.py)


@schemathesis.check
def json_4xx_names_the_field(ctx, response, case):
    """Every 4xx is JSON {"error": str, "field": str} with a non-empty field."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"{response.status_code} is not JSON: {response.content[:200]!r}") from e
    if not isinstance(body, dict) or not body.get("field") or not isinstance(body.get("error"), str):
        raise AssertionError(f"{response.status_code} does not name the field: {body!r}")
    return True


@pytest.fixture(scope="module")
def served(home):  # noqa: F811 (the fixture imported above)
    """`towerflow serve` with a token, in a subprocess; yields its port."""
    proc, port, log = start_serve(home, token=TOKEN, log_name="serve-fuzz")
    yield port
    stop(proc)
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


def _operations(port: int) -> list:
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json", headers=AUTH)
    return [result.ok() for result in schema.get_all_operations()]


def test_the_schema_needs_the_token_and_lists_every_endpoint(served):
    assert Client(served).call("GET", "/openapi.json")[0] == 401
    ops = _operations(served)
    assert {"/recommend", "/similar", "/feedback", "/healthz", "/readyz", "/metrics"} <= {op.path for op in ops}
    # a body the endpoint parses by hand is published (requests.openapi_body), or the fuzzer could not
    # send a valid one
    assert all(op.body for op in ops if op.method.upper() == "POST"), [op.label for op in ops if not op.body]


CHECKS = [not_a_server_error, negative_data_rejection, json_4xx_names_the_field]


def _fuzz(op, mode: GenerationMode, base: str, counts: Counter, statuses: Counter) -> None:
    """`EXAMPLES` generated cases of one operation in one mode, each sent with the token (checked
    by CHECKS), without it and with a wrong one."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def fuzz(case):
        response = case.call_and_validate(base_url=base, headers=AUTH, checks=CHECKS)
        counts[(op.label, mode.value)] += 1
        statuses[(op.label, response.status_code)] += 1
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            anon = case.call(base_url=base, headers=headers)
            if op.path in OPEN:
                assert anon.status_code < 500
            else:
                assert anon.status_code == 401, (op.label, anon.status_code, anon.content[:200])
                assert json.loads(anon.content)["field"] == "Authorization"

    fuzz()


def test_generated_requests_never_get_a_5xx_and_every_4xx_names_the_field(served):
    counts: Counter = Counter()
    statuses: Counter = Counter()
    for op in _operations(served):
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if op.body else [])
        for mode in modes:
            _fuzz(op, mode, f"http://127.0.0.1:{served}", counts, statuses)
    print("\nschemathesis cases per operation and mode:")
    for (label, mode), n in sorted(counts.items()):
        print(f"  {label:<22} {mode:<9} {n:>4}")
    print(
        "status codes seen (with the token): " + ", ".join(f"{k[0]} {k[1]}: {v}" for k, v in sorted(statuses.items()))
    )
    print(f"total: {sum(counts.values())} cases, each also sent without the token and with a wrong one")
    assert all(n >= 1 for n in counts.values()) and len(counts) >= 9  # 6 operations, 3 with a body


def test_every_body_taking_operation_refuses_an_oversize_body(served):
    client = Client(served, TOKEN)
    posts = [op.path for op in _operations(served) if op.method.upper() == "POST"]
    assert posts
    big = b'{"k": 1, "pad": "' + b"x" * MAX_BODY + b'"}'
    for path in posts:
        status, body = client.call("POST", path, raw=big, headers={"Content-Type": "application/json"})
        assert status == 413 and body["field"] == "body", (path, status, body)


def test_feedback_refuses_a_request_id_it_never_issued(served):
    body = {"request_id": "never-issued", "item_id": "i001", "action": "click"}
    status, answer = Client(served, TOKEN).call("POST", "/feedback", body)
    assert 400 <= status < 500 and answer["field"] == "request_id", (status, answer)
