"""Fuzzing the real `batcomputer serve` (gunicorn, 2 workers of the default class) of two
models: the reference one (force, crime, month: memoised) and a continuous one (force,
crime, latitude, longitude: every row asks onnxruntime).

* Schemathesis reads the server's own OpenAPI document (/api/swagger.json) and sends, to
  every operation, its coverage cases (boundaries, wrong types, missing and extra
  properties, other methods and content types) and Hypothesis-generated valid (positive)
  and invalid (negative) requests; every response goes through all of its checks
  (no 5xx, status, content type and body as documented, invalid data rejected, valid data
  accepted).
* A Hypothesis property sends POST /api/predict arbitrary JSON values, rows with the real
  input names and odd values, batches mixing valid and invalid rows, and bytes that are not
  JSON: always a 200 with predictions or a 4xx with a JSON error, never a 5xx.

Deterministic (derandomized, a fixed seed) and without an example database on disk.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

pytestmark = pytest.mark.timeout(300)

SEED = 20260501
FUZZ_EXAMPLES = 200  # per operation and generation mode, after the coverage cases
RAW_EXAMPLES = 2000  # bodies the property test sends to POST /api/predict, per model
# What the API documents for a request it refuses (see server/openapi.py): invalid data may
# get any of these, and never a 5xx.
REFUSALS = [400, 405, 413, 415, 422]
HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
          HealthCheck.large_base_example]


@dataclass
class Served:
    """A running `batcomputer serve` of one model, and what the tests saw of it."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    inputs: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(served: Served) -> str:
    served.process.send_signal(signal.SIGTERM)
    try:
        served.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()
    return served.log.read_text(errors="replace")


def serve(name: str, artifact: Path, folder: Path) -> Served:
    """`batcomputer serve` with 2 workers of the default class; its log goes to a file
    (thousands of requests would fill a pipe nobody reads)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCOMPUTER_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["BATCOMPUTER_CACHE_DIR"] = str(folder / "cache")
    log = folder / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "batcomputer.cli", "serve", "--artifact", str(artifact),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    served = Served(name, f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(served.url + "/readyz", timeout=5).status_code == 200:
                return served
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    stop(served)
    raise AssertionError(f"serve did not become ready in 90s:\n{log.read_text()}")


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis' caches (unicode tables, constants) in a temporary folder, not ./.hypothesis."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module", params=["reference", "continuous"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    artifact: Path = request.getfixturevalue("v1" if request.param == "reference" else "continuous")
    running = serve(request.param, artifact, tmp_path_factory.mktemp(f"fuzz-{request.param}"))
    try:
        info = requests.get(running.url + "/api/info", timeout=5).json()
        assert info["prediction"]["runtime"] == "onnxruntime", info["prediction"]
        assert info["prediction"]["mode"] == ("memoised" if request.param == "reference"
                                              else "estimator"), info["prediction"]
        running.inputs, running.labels = info["inputs"], info["labels"]
        yield running
    finally:
        log = stop(running)
    assert running.process.returncode == 0, log
    for sign in ("Traceback", "Unhandled error", "WORKER TIMEOUT", "exited with code"):
        assert sign not in log, log


@pytest.fixture(scope="module")
def api_schema(served: Served) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES, "deterministic": True,
                       "database": "none"},
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
        # An inference request's tensors must agree with each other (one per input, the same
        # batch size, data that fills its shape), which a JSON schema cannot say: requests
        # valid by the schema alone may get a 400 or 422 there, never a 5xx.
        "operations": [{"include-path-regex": "/infer$",
                        "checks": {"positive_data_acceptance": {
                            "expected-statuses": [200, 400, 413, 422]}}}],
    })
    return schemathesis.openapi.from_url(served.url + "/api/swagger.json", config=config)


def fuzz(operation: schemathesis.APIOperation[Any, Any, Any, Any], mode: GenerationMode,
         call: Callable[[schemathesis.Case[Any], str], None]) -> None:
    """Hypothesis-generated requests of one kind (valid or invalid) for one operation."""
    @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=HEALTH)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        call(case, mode.value)

    run()


def test_schemathesis_finds_nothing_wrong(served: Served, api_schema: schemathesis.BaseSchema,
                                         request: pytest.FixtureRequest) -> None:
    """Every operation of the document: its coverage cases, then valid and invalid
    generated requests, each checked by every schemathesis check."""
    statuses: Counter[int] = Counter()
    cases: Counter[str] = Counter()

    def call(case: schemathesis.Case[Any], phase: str) -> None:
        response = case.call_and_validate(base_url=served.url, session=session, timeout=10)
        statuses[response.status_code] += 1
        cases[phase] += 1

    session = requests.Session()
    request.addfinalizer(session.close)
    operations = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    v2 = [f"{verb} /v2/models/crime{version}{suffix}" for version in ("", "/versions/1.0.0")
          for verb, suffix in (("GET", ""), ("GET", "/ready"), ("POST", "/infer"))]
    assert {op.label for op in operations} == {
        "POST /api/predict", "GET /api/predict/params", "GET /api/info", "GET /healthz",
        "GET /readyz", "GET /metrics", "GET /v2", "GET /v2/health/live", "GET /v2/health/ready",
        *v2}
    for operation in operations:
        for case in api_schema.iter_coverage_cases(
                operation, generation_modes=list(GenerationMode),
                generation_config=api_schema.config.generation_for(operation=operation,
                                                                   phase="coverage")):
            call(case, "coverage")
        # An operation without parameters or body has nothing to make invalid.
        has_input = operation.body or any(True for _ in operation.iter_parameters())
        for mode in GenerationMode if has_input else [GenerationMode.POSITIVE]:
            fuzz(operation, mode, call)
    print(f"\n{served.name}: schemathesis sent {cases.total()} requests "
          f"({', '.join(f'{n} {phase}' for phase, n in cases.items())}), "
          f"statuses {dict(sorted(statuses.items()))}")
    assert not [status for status in statuses if status >= 500]
    assert cases["negative"] >= FUZZ_EXAMPLES // 2 and statuses[200] >= FUZZ_EXAMPLES
    assert {400, 405, 415, 422} <= set(statuses)


# Raw bodies for POST /api/predict.

ODD_NUMBERS = st.sampled_from([
    10**42, -10**42, 2**63, -2**63 - 1, 2**64, 1e308, -1e308, 1.7976931348623157e308, -0.0, 0.0,
    3.5e38, -3.5e38, 3.4028234663852886e38, 3.4028235e38, 5e-324, 1e-45, 0.5, 1.5, 12.000000000000002,
    0.9999999999999999, 90.00000000000001, -180.00000000000003])
ODD_STRINGS = st.sampled_from(["", " ", "\x00", "\ud800", "\udfff", "Kent Police ", "kent police",
                               "KENT POLICE", "Kent\u00a0Police", "1", "3", "NaN", "null",
                               "\U0001f4a5" * 3, "a" * 5000])
SCALARS = (st.none() | st.booleans() | st.integers() | ODD_NUMBERS | st.floats() | st.text()
           | ODD_STRINGS)
JSON_VALUES = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | ODD_STRINGS, children, max_size=4), max_leaves=12)


def valid_value(item: dict[str, Any]) -> st.SearchStrategy[Any]:
    if item["type"] == "categorical":
        return st.sampled_from(item["values"])
    low, high = item["minimum"], item["maximum"]
    integers = st.integers(math.ceil(low), math.floor(high))
    if item["type"] == "integer":
        return integers | integers.map(float)
    return integers | st.floats(low, high, allow_nan=False) | st.sampled_from([low, high, -0.0])


@dataclass
class Body:
    """One request: its bytes, Content-Type, the value encoded (if any) and whether every
    row of it is valid (then it must be answered 200)."""

    data: bytes
    content_type: str | None = "application/json"
    value: Any = None
    valid: bool = False


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON bytes; non-ASCII written raw in UTF-8 (lone surrogates as invalid UTF-8)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def bodies(inputs: list[dict[str, Any]]) -> st.SearchStrategy[Body]:
    names = [item["name"] for item in inputs]
    valid_row = st.fixed_dictionaries({item["name"]: valid_value(item) for item in inputs})
    mixed_row = st.fixed_dictionaries(
        {item["name"]: valid_value(item) | ODD_NUMBERS | ODD_STRINGS | JSON_VALUES for item in inputs},
        optional={"extra": JSON_VALUES, **{n.upper(): JSON_VALUES for n in names}})
    partial_row = st.dictionaries(st.sampled_from(names) | st.text(max_size=6),
                                  SCALARS | st.one_of(*(valid_value(i) for i in inputs)), max_size=6)
    row = mixed_row | partial_row | valid_row
    valid = (valid_row | st.lists(valid_row, min_size=1, max_size=8)).map(
        lambda value: Body(encode(value, True), value=value, valid=True))
    values = (row | st.lists(row | JSON_VALUES, max_size=8) | JSON_VALUES)
    encoded = st.builds(lambda value, ascii_only, content_type: Body(encode(value, ascii_only),
                                                                     content_type, value),
                        values, st.booleans(),
                        st.sampled_from(["application/json"] * 6 + [
                            "application/json; charset=utf-8", "application/merge-patch+json",
                            "text/plain", "application/x-www-form-urlencoded", None]))
    cut = valid_row.map(json.dumps).flatmap(
        lambda text: st.integers(0, len(text) - 1).map(lambda i: Body(text[:i].encode())))
    raw = st.binary(max_size=64).map(Body)
    return valid | encoded | cut | raw


def check_answer(served: Served, body: Body, reply: requests.Response) -> None:
    request = f"POST /api/predict {body.content_type} {body.data[:300]!r}"
    status = reply.status_code
    assert status == 200 or 400 <= status < 500, f"{status} for {request}: {reply.text[:500]}"
    try:
        answer = reply.json()
    except ValueError:
        raise AssertionError(f"not JSON: {status} {reply.text[:300]!r} for {request}") from None
    if status != 200:
        assert not body.valid, f"valid rows refused: {status} {answer} for {request}"
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), (answer, request)
        assert answer["error"].strip(), (answer, request)
        return
    predictions = answer if isinstance(answer, list) else [answer]
    if isinstance(body.value, list):
        assert isinstance(answer, list) and len(answer) == len(body.value), (answer, request)
    elif isinstance(body.value, dict):
        assert isinstance(answer, dict), (answer, request)
    for prediction in predictions:
        assert isinstance(prediction, dict) and list(prediction) == served.labels, (answer, request)
        assert all(0 <= p <= 1 for p in prediction.values()), (answer, request)
        assert abs(sum(prediction.values()) - 1) < 1e-5, (answer, request)


def test_raw_bodies_get_predictions_or_a_4xx_error(served: Served, request: pytest.FixtureRequest) -> None:
    session = requests.Session()
    request.addfinalizer(session.close)
    statuses: Counter[int] = Counter()
    valid = {item["name"]: item["values"][0] if item["type"] == "categorical" else item["maximum"]
             for item in served.inputs}
    numeric = [item["name"] for item in served.inputs if item["type"] != "categorical"]

    @settings(max_examples=RAW_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=HEALTH)
    @given(body=bodies(served.inputs))
    @example(body=Body(b"[" * 100_000 + b"]" * 100_000))  # too deep for the JSON parser
    @example(body=Body(b" " * (1024**2 + 1)))  # over the body limit
    @example(body=Body(json.dumps([valid] * 1001).encode(), value=[valid] * 1001))  # batch too large
    @example(body=Body(b'{"month": NaN, "latitude": Infinity}'))
    @example(body=Body(b"\xff\xfe{}"))
    @example(body=Body(b""))
    @example(body=Body(b"[]", value=[]))
    @example(body=Body(b"null"))
    @example(body=Body(json.dumps(valid).encode(), value=valid, valid=True))
    @example(body=Body(json.dumps({**valid, **dict.fromkeys(numeric, 10**42)}).encode()))
    @example(body=Body(json.dumps({**valid, **dict.fromkeys(numeric, 1e308)}).encode()))
    @example(body=Body(json.dumps({**valid, **dict.fromkeys(numeric, 3.5e38)}).encode()))
    @example(body=Body(json.dumps([valid, {**valid, numeric[0]: -1e308}, 7]).encode()))
    def post(body: Body) -> None:
        headers = {"Content-Type": body.content_type} if body.content_type else {}
        reply = session.post(served.url + "/api/predict", data=body.data, headers=headers, timeout=10)
        statuses[reply.status_code] += 1
        check_answer(served, body, reply)

    post()
    print(f"\n{served.name}: {statuses.total()} raw bodies to POST /api/predict, "
          f"statuses {dict(sorted(statuses.items()))}")
    assert statuses.total() >= RAW_EXAMPLES // 2
    assert {200, 400, 413, 415, 422} <= set(statuses)
