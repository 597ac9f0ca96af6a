"""Every endpoint and every error class, through Flask's test client."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from batcomputer.server.app import create_app
from batcomputer.server.model import Model
from batcomputer.server.settings import Settings

ROW = {"force": "Kent Police", "crime": "Shoplifting", "month": 3}


@pytest.fixture
def app(model_v1: Model) -> Flask:
    return create_app(Settings(max_body_bytes=64 * 1024, max_batch=50), model_v1)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, body: Any, **kwargs: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post("/api/predict", data=data, **kwargs)


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert "Traceback" not in body["error"]
    return str(body["error"])


# -- endpoints ------------------------------------------------------------------------------


def test_predict_one_row(client: FlaskClient, model_v1: Model) -> None:
    response = post(client, ROW)
    assert response.status_code == 200
    result = response.get_json()
    assert list(result) == ["not_caught", "caught"]
    assert result == model_v1.predict_one(ROW)
    assert abs(sum(result.values()) - 1) < 1e-9


def test_predict_batch_keeps_order(client: FlaskClient, model_v1: Model) -> None:
    rows = [ROW, {**ROW, "month": 11}, {**ROW, "crime": "Burglary"}]
    response = post(client, rows)
    assert response.status_code == 200
    assert response.get_json() == [model_v1.predict_one(r) for r in rows]


def test_json_with_charset_is_accepted(client: FlaskClient) -> None:
    assert post(client, ROW, content_type="application/json; charset=utf-8").status_code == 200


def test_params(client: FlaskClient, model_v1: Model) -> None:
    params = client.get("/api/predict/params").get_json()
    assert list(params) == ["force", "crime", "month"]
    assert params["crime"]["type"] == "categorical"
    assert "Shoplifting" in params["crime"]["values"]
    assert (params["month"]["minimum"], params["month"]["maximum"]) == (1, 12)


def test_info(client: FlaskClient) -> None:
    info = client.get("/api/info").get_json()
    assert (info["name"], info["version"]) == ("crime", "1.0.0")
    assert info["metadata_digest"].startswith("sha256:")
    assert info["metadata"]["schema"]["outputs"] == ["not_caught", "caught"]


def test_model_name_setting_renames_the_served_model(v1: Any) -> None:
    from batcomputer.server.artifacts import fetch_verified
    from batcomputer.server.model import load_model

    settings = Settings(artifact=str(v1), model_name="crime-demo")
    model = load_model(fetch_verified(settings), name=settings.model_name)
    info = create_app(settings, model).test_client().get("/api/info").get_json()
    assert (info["name"], info["metadata"]["name"]) == ("crime-demo", "crime")


def test_swagger_at_both_paths(client: FlaskClient) -> None:
    api = client.get("/api/swagger.json")
    assert api.status_code == 200
    assert api.get_json() == client.get("/swagger.json").get_json()
    assert api.get_json()["info"]["version"] == "1.0.0"


def test_swagger_ui_is_served_locally(client: FlaskClient) -> None:
    assert client.get("/api/docs").status_code in (301, 302, 308)
    assert client.get("/").headers["Location"].endswith("/api/docs/")
    page = client.get("/api/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "swagger-ui-bundle.js" in html and "//" not in html.split("<body>")[1]
    init = client.get("/api/docs/swagger-initializer.js").get_data(as_text=True)
    assert '"../swagger.json"' in init and "petstore" not in init
    bundle = client.get("/api/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.get_data()) > 100_000
    assert client.get("/api/docs/swagger-ui.css").status_code == 200
    assert "petstore" not in client.get("/api/docs/index.html").get_data(as_text=True)
    error_of(client.get("/api/docs/../../../etc/passwd"), 404)


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["version"] == "1.0.0"


def test_without_a_model_only_liveness_succeeds() -> None:
    client = create_app(Settings(), None).test_client()
    assert client.get("/healthz").status_code == 200
    assert "no model" in error_of(client.get("/readyz"), 503)
    error_of(post(client, ROW), 503)
    for path in ("/api/info", "/api/predict/params", "/api/swagger.json", "/swagger.json"):
        error_of(client.get(path), 503)


def test_metrics_count_requests_and_predictions(client: FlaskClient) -> None:
    post(client, ROW)
    post(client, [ROW, ROW, ROW])
    post(client, {"nope": 1})
    client.get("/nowhere")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'batcomputer_http_requests_total{route="/api/predict",status="200"} 2.0' in text
    assert 'batcomputer_http_requests_total{route="/api/predict",status="422"} 1.0' in text
    assert 'batcomputer_http_requests_total{route="<unmatched>",status="404"} 1.0' in text
    assert 'batcomputer_predictions_total{model="crime",version="1.0.0"} 4.0' in text
    assert 'batcomputer_http_request_duration_seconds_count{route="/api/predict"} 3.0' in text
    assert 'batcomputer_model_info{' in text and 'mode="memoised"' in text


def test_no_cors_headers_by_default(client: FlaskClient) -> None:
    response = post(client, ROW, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_configured_cors_origins(model_v1: Model) -> None:
    app = create_app(Settings(cors_origins=("https://app.example",)), model_v1)
    client = app.test_client()
    allowed = post(client, ROW, headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = post(client, ROW, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


# -- errors ---------------------------------------------------------------------------------


def test_invalid_json(client: FlaskClient) -> None:
    assert error_of(post(client, '{"force": '), 400).startswith("invalid JSON")
    assert error_of(post(client, b"\xff\xfe\xfa"), 400).startswith("invalid JSON")
    assert error_of(post(client, ""), 400).startswith("invalid JSON")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(client: FlaskClient, constant: str) -> None:
    body = '{"force": "Kent Police", "crime": "Shoplifting", "month": ' + constant + "}"
    assert constant in error_of(post(client, body), 400)


def test_huge_number_literal_is_not_finite(client: FlaskClient) -> None:
    body = '{"force": "Kent Police", "crime": "Shoplifting", "month": 1e999}'
    assert "finite" in error_of(post(client, body), 422)


def test_deeply_nested_json(client: FlaskClient) -> None:
    assert "invalid JSON" in error_of(post(client, "[" * 10_000 + "]" * 10_000), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_wrong_content_type(client: FlaskClient, content_type: str | None) -> None:
    response = client.post("/api/predict", data=json.dumps(ROW), content_type=content_type)
    assert "Content-Type: application/json" in error_of(response, 415)


@pytest.mark.parametrize("body", ["3", '"Kent Police"', "null", "true"])
def test_body_must_be_an_object_or_a_list(client: FlaskClient, body: str) -> None:
    assert "expected a JSON object" in error_of(post(client, body), 400)


def test_unknown_category_lists_accepted_values(client: FlaskClient) -> None:
    message = error_of(post(client, {**ROW, "crime": "Jaywalking"}), 422)
    assert 'unknown value "Jaywalking"' in message and '"Shoplifting"' in message


@pytest.mark.parametrize(("body", "fragment"), [
    ({**ROW, "month": "3"}, "month must be an integer from 1 to 12"),
    ({**ROW, "month": True}, "not a boolean"),
    ({**ROW, "month": 99}, "month must be an integer from 1 to 12, not 99"),
    ({**ROW, "crime": 7}, "crime must be a string"),
    ({**ROW, "crime": {"name": "Shoplifting"}}, "not an object"),
    ({**ROW, "force": ["Kent Police"]}, "not an array"),
    ({"force": "Kent Police", "crime": "Shoplifting"}, "missing input(s): month"),
    ({**ROW, "weapon": "bat"}, 'unexpected input(s): "weapon"'),
    ([ROW, "not a row"], "row 1: expected a JSON object"),
    ([ROW, [ROW]], "row 1: expected a JSON object"),
    ([], "empty batch"),
])
def test_invalid_inputs_are_422(client: FlaskClient, body: Any, fragment: str) -> None:
    assert fragment in error_of(post(client, body), 422)


def test_oversized_batch_is_413(client: FlaskClient) -> None:
    assert "at most 50 rows" in error_of(post(client, [ROW] * 51), 413)
    assert post(client, [ROW] * 50).status_code == 200


def test_oversized_body_is_413_json(client: FlaskClient) -> None:
    body = json.dumps({**ROW, "padding": "x" * 70_000})
    assert "at most 65536 bytes" in error_of(post(client, body), 413)


def test_unknown_route_and_method(client: FlaskClient) -> None:
    error_of(client.get("/api/nothing"), 404)
    response = client.get("/api/predict")
    assert "not allowed" in error_of(response, 405)
    assert "POST" in response.headers["Allow"]


def test_unexpected_failure_is_a_json_500_without_details(model_v1: Model,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(Settings(), model_v1)

    def broken(row: object) -> bytes:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(model_v1, "predict_one_json", broken)
    assert error_of(post(app.test_client(), ROW), 500) == "internal server error"


@pytest.mark.parametrize("body", [
    "{}", "[{}]", '{"force": null, "crime": null, "month": null}', '[[[]]]', '[1, 2, 3]',
    '{"force": "Kent Police", "crime": "Shoplifting", "month": -0.0}',
    '{"force": "Kent Police", "crime": "Shoplifting", "month": 3, "month": 4}',
    '{"force": "\\ud800", "crime": "Shoplifting", "month": 3}',
    '{"force": "Kent Police", "crime": "Shoplifting", "month": 12.000000000000001}',
    '{"force": "Kent Police", "crime": "Shoplifting", "month": 123456789012345678901234567890}',
    '{"force": ' + '"' + "A" * 10_000 + '", "crime": "Shoplifting", "month": 3}',
    '{"__proto__": {}, "force": "Kent Police"}',
])
def test_odd_bodies_never_give_500(client: FlaskClient, body: str) -> None:
    response = post(client, body)
    assert 200 <= response.status_code < 500
    if response.status_code != 200:
        error_of(response, response.status_code)


@pytest.mark.parametrize("body", [ROW, [ROW, {**ROW, "month": 12}]])
def test_fast_path_and_flask_answer_the_same(client: FlaskClient, body: Any) -> None:
    fast = post(client, body)  # exactly application/json: the WSGI fast path
    flask = post(client, body, content_type="application/json; charset=utf-8")  # Flask's view
    browser = post(client, body, headers={"Origin": "https://app.example"})  # Flask too
    for other in (flask, browser):
        assert (fast.status_code, fast.mimetype, fast.get_data()) == \
            (other.status_code, other.mimetype, other.get_data())
    assert fast.headers["Content-Length"] == str(len(fast.get_data()))


def test_predicted_probabilities_are_counted_per_label_in_bins(app: Flask, model_v1: Model) -> None:
    """What a canary's predictions are compared on: the same counts by either path."""
    from batcomputer.server.app import FastPredict
    from batcomputer.server.metrics import Metrics

    rows = [ROW, {**ROW, "month": 7}, {**ROW, "crime": "Drugs"}]
    expected: dict[tuple[str, str], float] = {}
    for answer in model_v1.predict_many(rows + [ROW]):
        for label, p in answer.items():
            key = (label, f"{min(int(p * 10), 9) / 10:.1f}")
            expected[key] = expected.get(key, 0) + 1
    client = app.test_client()
    post(client, rows)
    post(client, ROW)
    text = client.get("/metrics").get_data(as_text=True)
    for (label, low), count in expected.items():
        assert f'batcomputer_prediction_probability_total{{bin="{low}",label="{label}"}} {count}' in text
    # The fast WSGI path counts the same way.
    metrics = Metrics()
    fast = FastPredict(app.wsgi_app, model_v1, metrics, max_body=65536, max_batch=50)
    for body in (rows, ROW):
        data = json.dumps(body).encode()
        environ = {"PATH_INFO": "/api/predict", "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json",
                   "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data)}
        fast(environ, lambda status, headers: None)
    text = metrics.render().decode()
    for (label, low), count in expected.items():
        assert f'batcomputer_prediction_probability_total{{bin="{low}",label="{label}"}} {count}' in text


def test_every_answer_says_which_version_gave_it(client: FlaskClient) -> None:
    assert post(client, ROW).headers["X-Model-Version"] == "1.0.0"
    assert post(client, {"nope": 1}).headers["X-Model-Version"] == "1.0.0"
    assert client.get("/api/info").headers["X-Model-Version"] == "1.0.0"
