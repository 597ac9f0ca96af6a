"""The Open Inference Protocol (KServe V2) REST routes: the protocol's shapes and errors
with Flask's test client, then real clients of the protocol (tritonclient's HTTP client and
the Open Inference Protocol's own generated REST client) against the real gunicorn server,
which must answer exactly as /api/predict does."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from flask.testing import FlaskClient
from serverkit import Server, start, stop

from batcomputer.server.app import create_app
from batcomputer.server.artifacts import fetch_verified
from batcomputer.server.model import Model, load_model
from batcomputer.server.settings import Settings

ROWS = [{"force": "Kent Police", "crime": "Shoplifting", "month": 3},
        {"force": "Surrey Police", "crime": "Drugs", "month": 12},
        {"force": "Kent Police", "crime": "Burglary", "month": 1}]


def tensors(model: Model, rows: list[dict[str, Any]], **override: Any) -> list[dict[str, Any]]:
    kind = {"categorical": "BYTES", "integer": "INT64", "number": "FP64"}
    return [{"name": i.name, "shape": [len(rows)], "datatype": kind[i.kind],
             "data": [r[i.name] for r in rows], **override.get(i.name, {})}
            for i in model.inputs]


@pytest.fixture(scope="module")
def client(model_v1: Model) -> FlaskClient:
    return create_app(Settings(max_batch=10), model_v1).test_client()


def infer(client: FlaskClient, body: Any, path: str = "/v2/models/crime/infer") -> tuple[int, Any]:
    reply = client.post(path, json=body)
    return reply.status_code, reply.get_json()


def test_health_and_metadata(client: FlaskClient, model_v1: Model) -> None:
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    server = client.get("/v2").get_json()
    assert server["name"] == "batcomputer" and server["extensions"] == []
    for path in ("/v2/models/crime", "/v2/models/crime/versions/1.0.0"):
        meta = client.get(path).get_json()
        assert meta == {
            "name": "crime", "versions": ["1.0.0"], "platform": "onnx_onnxv1",
            "inputs": [{"name": "force", "datatype": "BYTES", "shape": [-1]},
                       {"name": "crime", "datatype": "BYTES", "shape": [-1]},
                       {"name": "month", "datatype": "INT64", "shape": [-1]}],
            "outputs": [{"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
                        {"name": "label", "datatype": "BYTES", "shape": [-1]}]}
        assert client.get(path + "/ready").get_json() == {"name": "crime", "ready": True}


def test_infer_answers_as_api_predict(client: FlaskClient, model_v1: Model) -> None:
    status, body = infer(client, {"id": "r-1", "inputs": tensors(model_v1, ROWS)})
    assert status == 200
    assert (body["model_name"], body["model_version"], body["id"]) == ("crime", "1.0.0", "r-1")
    proba, label = body["outputs"]
    assert proba["name"] == "probabilities" and proba["datatype"] == "FP64"
    assert proba["shape"] == [3, 2] and json.loads(proba["parameters"]["labels"]) == ["not_caught",
                                                                                      "caught"]
    expected = client.post("/api/predict", json=ROWS).get_json()
    assert proba["data"] == [p for row in expected for p in (row["not_caught"], row["caught"])]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [3],
                     "data": [max(row, key=row.get) for row in expected]}
    # The same with nested data ([rows, 1]), another integer type, one output asked for,
    # and a version in the path; no id, no id back.
    nested = tensors(model_v1, ROWS, month={"datatype": "INT32", "shape": [3, 1],
                                            "data": [[r["month"]] for r in ROWS]})
    status, again = infer(client, {"inputs": nested, "outputs": [{"name": "probabilities"}]},
                          "/v2/models/crime/versions/1.0.0/infer")
    assert status == 200 and "id" not in again
    assert [o["name"] for o in again["outputs"]] == ["probabilities"]
    assert again["outputs"][0]["data"] == proba["data"]


@pytest.mark.parametrize(("path", "message"), [
    ("/v2/models/other/infer", "unknown model 'other': this server serves 'crime' (version 1.0.0)"),
    ("/v2/models/crime/versions/1.0.1/infer",
     "model 'crime' has no version '1.0.1': this server serves version 1.0.0"),
    ("/v2/models/other", "unknown model 'other'"),
    ("/v2/models/crime/versions/2.0.0/ready", "has no version '2.0.0'"),
])
def test_an_unknown_model_or_version_is_a_404(client: FlaskClient, model_v1: Model, path: str,
                                              message: str) -> None:
    reply = (client.post(path, json={"inputs": tensors(model_v1, ROWS)}) if path.endswith("infer")
             else client.get(path))
    assert reply.status_code == 404 and message in reply.get_json()["error"]


@pytest.mark.parametrize(("change", "status", "message"), [
    ({"inputs": []}, 400, "inputs must be a non-empty list of tensors, one per model input: "
                          "force, crime, month"),
    ({"inputs": "x"}, 400, "inputs must be a non-empty list"),
    ({"id": 7}, 400, "id must be a string"),
    ({"id": None}, 400, "id must be a string"),
    ({"outputs": None}, 400, "outputs must be a list"),
    ({"drop": "month"}, 400, "missing input tensor(s): month"),
    ({"twice": "force"}, 400, "input 'force' is given twice"),
    ({"extra": {"name": "colour", "shape": [3], "datatype": "BYTES", "data": ["a"] * 3}}, 400,
     "unknown input 'colour'; the model's inputs are: force, crime, month"),
    ({"month": {"datatype": "FP32"}}, 400, "input 'month' is integer: its datatype must be INT16"),
    ({"month": {"datatype": ["INT64"]}}, 400, "input 'month' is integer: its datatype must be"),
    ({"force": {"datatype": "INT64"}}, 400, "input 'force' is categorical: its datatype must be "
                                            "BYTES, not 'INT64'"),
    ({"month": {"shape": [3, 2]}}, 400, "input 'month': shape must be [rows] or [rows, 1]"),
    ({"month": {"shape": [4]}}, 400, "input 'month': shape [4] has 4 elements but data has 3"),
    ({"month": {"shape": [0], "data": []}}, 400, "an empty batch"),
    ({"month": {"shape": [2], "data": [1, 2]}}, 400, "input 'month' has 2 rows, the others 3"),
    ({"month": {"data": [[[1]], [2], [3]]}}, 400, "nested deeper than its shape"),
    ({"month": {"parameters": {"binary_data_size": 24}}}, 400, "binary tensor data is not supported"),
    ({"outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'; the model's outputs are: "
                                             "probabilities, label"),
    ({"month": {"data": [3, 13, 1]}}, 422, "row 1: month must be an integer from 1 to 12, not 13"),
    ({"crime": {"data": ["Drugs", "Drugs", "Jaywalking"]}}, 422, "row 2: crime: unknown value"),
    ({"force": {"data": ["Kent Police", 5, "Kent Police"]}}, 422, "row 1: force must be a string"),
    ({"rows": 11}, 413, "batch of 11 rows; at most 10 rows per request"),
])
def test_bad_requests_get_protocol_shaped_errors(client: FlaskClient, model_v1: Model,
                                                 change: dict[str, Any], status: int,
                                                 message: str) -> None:
    rows = ROWS * 4 if change.get("rows") else ROWS
    inputs = tensors(model_v1, rows[:change.get("rows", 3)],
                     **{k: v for k, v in change.items() if k in model_v1.names})
    if "drop" in change:
        inputs = [t for t in inputs if t["name"] != change["drop"]]
    if "twice" in change:
        inputs += [t for t in inputs if t["name"] == change["twice"]]
    if "extra" in change:
        inputs.append(change["extra"])
    body: dict[str, Any] = {"inputs": inputs}
    body.update({k: v for k, v in change.items() if k in ("inputs", "id", "outputs")})
    got, answer = infer(client, body)
    assert got == status, answer
    assert set(answer) == {"error"} and message in answer["error"], answer["error"]


def test_not_json_is_refused(client: FlaskClient) -> None:
    reply = client.post("/v2/models/crime/infer", data=b"\x00\x01",
                        headers={"Inference-Header-Content-Length": "2"})
    assert reply.status_code == 400 and "binary tensor data is not supported" in reply.get_json()["error"]
    reply = client.post("/v2/models/crime/infer", data=b"{", content_type="application/json")
    assert reply.status_code == 400 and "invalid JSON" in reply.get_json()["error"]
    assert client.post("/v2/models/crime/infer", json=[1]).status_code == 400


def test_the_openapi_document_has_the_v2_routes(client: FlaskClient) -> None:
    doc = client.get("/api/swagger.json").get_json()
    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/crime",
            "/v2/models/crime/ready", "/v2/models/crime/infer",
            "/v2/models/crime/versions/1.0.0", "/v2/models/crime/versions/1.0.0/ready",
            "/v2/models/crime/versions/1.0.0/infer"} <= set(doc["paths"])
    tensor = doc["components"]["schemas"]["InferenceRequest"]["properties"]["inputs"]["items"]
    assert [t["properties"]["name"]["enum"] for t in tensor["oneOf"]] == [["force"], ["crime"],
                                                                         ["month"]]


# -- real clients against the real server ---------------------------------------------------


@pytest.fixture(scope="module", params=["reference", "continuous"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Model]]:
    artifact: Path = request.getfixturevalue("v1" if request.param == "reference" else "continuous")
    server = start(str(artifact), tmp_path_factory.mktemp("v2-cache"), "--workers", "2")
    try:
        yield server, load_model(fetch_verified(Settings(artifact=str(artifact))))
    finally:
        stop(server)


def sample_rows(model: Model, n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        row: dict[str, Any] = {}
        for item in model.inputs:
            if item.kind == "categorical":
                row[item.name] = rng.choice(list(item.codes))
            elif item.kind == "integer":
                row[item.name] = rng.randint(int(item.low), int(item.high))
            else:
                row[item.name] = round(rng.uniform(50.0, 55.5) if item.name == "latitude"
                                       else rng.uniform(-5.0, 1.5), 6)
        out.append(row)
    return out


def api_predict(server: Server, rows: list[dict[str, Any]]) -> np.ndarray:
    answer = requests.post(server.url + "/api/predict", json=rows, timeout=10).json()
    return np.array([[row["not_caught"], row["caught"]] for row in answer])


def test_tritonclient_gets_the_same_probabilities(served: tuple[Server, Model]) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    server, model = served
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("crime") and client.is_model_ready("crime", "1.0.0")
    meta = client.get_model_metadata("crime")
    assert [i["name"] for i in meta["inputs"]] == list(model.names)
    numpy_types = {"BYTES": object, "INT64": np.int64, "FP64": np.float64}
    for rows in (sample_rows(model, 1), sample_rows(model, 100, seed=2)):
        inputs = []
        for item in meta["inputs"]:
            tensor = triton.InferInput(item["name"], [len(rows)], item["datatype"])
            tensor.set_data_from_numpy(np.array([r[item["name"]] for r in rows],
                                                dtype=numpy_types[item["datatype"]]),
                                       binary_data=False)
            inputs.append(tensor)
        for outputs in (None, [triton.InferRequestedOutput("probabilities", binary_data=False)]):
            result = client.infer("crime", inputs, model_version="1.0.0", outputs=outputs,
                                  request_id="t-1")
            assert result.get_response()["id"] == "t-1"
            assert np.array_equal(result.as_numpy("probabilities"), api_predict(server, rows))
        labels = result = client.infer("crime", inputs).as_numpy("label")
        assert labels is not None and len(labels) == len(rows)
    for call, status in ((lambda: client.infer("nope", inputs), "404"),
                         (lambda: client.infer("crime", inputs, model_version="9.0.0"), "404"),
                         (lambda: client.infer("crime", inputs[:1]), "400")):
        with pytest.raises(InferenceServerException) as error:
            call()
        assert error.value.status() == status and error.value.message()
    # tritonclient sends binary tensors by default: refused with what to do instead.
    binary = triton.InferInput(meta["inputs"][0]["name"], [1], "BYTES")
    binary.set_data_from_numpy(np.array([rows[0][meta["inputs"][0]["name"]]], dtype=object))
    with pytest.raises(InferenceServerException, match="binary tensor data is not supported"):
        client.infer("crime", [binary, *inputs[1:]])


def test_the_open_inference_protocol_client_gets_the_same_probabilities(
        served: tuple[Server, Model]) -> None:
    from open_inference.openapi.client import OpenInferenceClient
    from open_inference.openapi.core.api_error import ApiError
    from open_inference.openapi.errors import BadRequestError
    from open_inference.openapi.types import InferenceRequest, RequestInput

    server, model = served
    client = OpenInferenceClient(base_url=server.url)
    client.check_server_readiness()
    client.check_model_readiness("crime")
    meta = client.read_model_version_metadata("crime", "1.0.0")
    assert meta.name == "crime" and meta.versions == ["1.0.0"]
    for rows in (sample_rows(model, 1, seed=3), sample_rows(model, 100, seed=4)):
        request = InferenceRequest(inputs=[
            RequestInput(name=item.name, shape=[len(rows)], datatype=item.datatype,
                         data=[r[item.name] for r in rows]) for item in meta.inputs])
        answer = client.model_infer("crime", request=request)
        (proba,) = [o for o in answer.outputs if o.name == "probabilities"]
        assert proba.shape == [len(rows), 2]
        got = np.array(proba.data.__root__, dtype=np.float64).reshape(len(rows), 2)
        assert np.array_equal(got, api_predict(server, rows))
        versioned = client.model_version_infer("crime", "1.0.0", request=request)
        assert versioned.outputs == answer.outputs and versioned.model_version == "1.0.0"
    with pytest.raises(ApiError) as missing:
        client.model_infer("nope", request=request)
    assert missing.value.status_code == 404 and "unknown model 'nope'" in str(missing.value.body)
    bad = InferenceRequest(inputs=[RequestInput(name=meta.inputs[0].name, shape=[2], datatype="BYTES",
                                                data=["x"])])
    with pytest.raises(BadRequestError):
        client.model_infer("crime", request=bad)


def test_the_fast_path_and_flask_answer_alike(model_v1: Model) -> None:
    """A plain infer request skips Flask (as /api/predict does); a browser's (with an Origin)
    goes through it: the same bytes either way, and the same metrics."""
    client = create_app(Settings(), model_v1).test_client()
    body = {"id": "x", "inputs": tensors(model_v1, ROWS)}
    for path in ("/v2/models/crime/infer", "/v2/models/crime/versions/1.0.0/infer"):
        fast = client.post(path, json=body)
        flask = client.post(path, json=body, headers={"Origin": "https://app.example"})
        assert fast.status_code == flask.status_code == 200
        assert fast.get_data() == flask.get_data()
        assert fast.headers["X-Model-Version"] == flask.headers["X-Model-Version"] == "1.0.0"
    text = client.get("/metrics").get_data(as_text=True)
    for rule in ("/v2/models/<name>/infer", "/v2/models/<name>/versions/<version>/infer"):
        assert f'route="{rule}",status="200"}} 2.0' in text, text
