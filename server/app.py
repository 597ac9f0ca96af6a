"""The Flask app factory: HTTP in, HTTP out; the model does the work.

``create_app(settings, model)`` receives everything it needs. With ``model=None``
the app serves liveness and a 503 readiness (useful in tests and while loading).
Static answers (params, info, the OpenAPI document) are serialised once.
"""

from __future__ import annotations

import html
import importlib.metadata
import io
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from flask import Blueprint, Flask, Response, redirect, request, send_from_directory
from werkzeug.wrappers import Response as BaseResponse

from batcomputer.server import errors, openapi, v2
from batcomputer.server.errors import BadRequest, InvalidInput, NotReady, PayloadTooLarge
from batcomputer.server.metrics import UNMATCHED, Metrics
from batcomputer.server.model import Model
from batcomputer.server.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

JSON: Final = "application/json"
_T0: Final = "batcomputer.t0"
DOCS_INDEX: Final = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>{title}</title>
  <link rel="stylesheet" type="text/css" href="swagger-ui.css">
  <link rel="icon" type="image/png" href="favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script src="swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"""
DOCS_INIT: Final = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "../swagger.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout"
  });
};
"""


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype=JSON)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send finite numbers")


def read_body(environ: WSGIEnvironment, limit: int) -> bytes:
    """The request body, refused with 413 before anything is parsed when it is over
    ``limit`` bytes, also when it is chunked (no Content-Length: the server de-chunks it,
    and reading stops one byte past the limit)."""
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length.isdigit():
        if int(length) > limit:
            raise PayloadTooLarge(f"request body of {length} bytes; at most {limit} bytes")
        body: bytes = stream.read(int(length))
        return body
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes; at most {limit} bytes")
    return body


def parse_body(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise BadRequest("invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        raise BadRequest(f"invalid JSON: {exc}") from exc


def create_app(settings: Settings | None = None, model: Model | None = None, *,
               metrics: Metrics | None = None) -> Flask:
    settings = settings or Settings()
    metrics = metrics or Metrics()
    app = Flask("batcomputer.server")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["batcomputer"] = {"settings": settings, "model": model, "metrics": metrics}
    errors.register(app)
    _instrument(app, metrics, model.version if model else "")
    swagger = json.dumps(openapi.document(model, max_batch=settings.max_batch)) if model else ""
    app.register_blueprint(_ops(model, metrics, swagger))
    app.register_blueprint(_api(model, metrics, settings, swagger))
    app.register_blueprint(_v2(model, metrics, settings))
    if settings.cors_origins:
        from flask_cors import CORS

        CORS(app, origins=list(settings.cors_origins), methods=["GET", "POST", "OPTIONS"],
             allow_headers=["Content-Type"])
    if model is not None:
        metrics.set_model(model.name, model.version, model.mode, model.metadata_digest)
        app.wsgi_app = FastPredict(app.wsgi_app, model, metrics,  # type: ignore[method-assign]
                                   max_body=settings.max_body_bytes, max_batch=settings.max_batch)
    return app


class FastPredict:
    """WSGI middleware for the hot routes: a plain, valid ``POST /api/predict`` or Open
    Inference Protocol infer request.

    Flask's request machinery (context, routing, hooks) costs ~80 us per request,
    ten times the prediction itself. This answers the common case directly, with
    the same status, headers, body and metrics. Anything else - another route, a
    browser request with an Origin (CORS), another content type, a body it cannot
    take, any error - goes to the Flask app with the body intact, so every error
    is still produced by the one JSON error handler.
    """

    ROUTE: Final = "/api/predict"
    V2_ROUTES: Final = {"/v2/models/{name}/infer": "/v2/models/<name>/infer",
                        "/v2/models/{name}/versions/{version}/infer":
                            "/v2/models/<name>/versions/<version>/infer"}
    """The Open Inference Protocol's infer paths of this model, and their Flask rules (the
    route label of the metrics)."""

    def __init__(self, app: WSGIApplication, model: Model, metrics: Metrics, *,
                 max_body: int, max_batch: int) -> None:
        self.app = app
        self.model = model
        self.metrics = metrics
        self.counter = metrics.count_predictions(model.name, model.version)
        self.record = metrics.probability_recorder(model.labels)
        self.version = model.version
        self.max_body = max_body
        self.max_batch = max_batch
        self.v2 = {path.format(name=model.name, version=model.version): rule
                   for path, rule in self.V2_ROUTES.items()}

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH", "")
        path = environ.get("PATH_INFO", "")
        v2_rule = self.v2.get(path)
        if ((path != self.ROUTE and v2_rule is None) or environ.get("REQUEST_METHOD") != "POST"
                or (v2_rule is None and environ.get("CONTENT_TYPE") != JSON)
                or "HTTP_ORIGIN" in environ or "HTTP_INFERENCE_HEADER_CONTENT_LENGTH" in environ
                or not length.isdigit() or int(length) > self.max_body):
            return self.app(environ, start_response)
        started = time.perf_counter()
        body = environ["wsgi.input"].read(int(length))
        try:
            payload = json.loads(body, parse_constant=_reject_constant)
            if v2_rule is not None:
                asked = v2.parse_infer(payload, self.model, max_batch=self.max_batch)
                proba = self.model.probabilities(asked.rows, self.record)
                out = json.dumps(v2.infer_response(self.model, asked, proba)).encode()
                rows = len(asked.rows)
            elif type(payload) is dict:
                out = self.model.predict_one_json(payload, self.record)
                rows = 1
            elif type(payload) is list and 0 < len(payload) <= self.max_batch:
                out = self.model.predict_many_json(payload, self.record)
                rows = len(payload)
            else:
                raise BadRequest("not a plain request")
        except Exception:  # let Flask answer (and explain) it, from the same bytes
            environ["wsgi.input"] = io.BytesIO(body)
            return self.app(environ, start_response)
        start_response("200 OK", [("Content-Type", JSON), ("Content-Length", str(len(out))),
                                  (VERSION_HEADER, self.version)])
        self.counter.inc(rows)
        self.metrics.observe(v2_rule or self.ROUTE, 200, time.perf_counter() - started)
        return [out]


VERSION_HEADER: Final = "X-Model-Version"
"""On every answer: which version answered (clients and tests see a canary's share)."""


def _instrument(app: Flask, metrics: Metrics, version: str) -> None:
    @app.before_request
    def _start() -> None:
        request.environ[_T0] = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        started = request.environ.get(_T0)
        if started is not None:
            rule = request.url_rule
            metrics.observe(rule.rule if rule is not None else UNMATCHED,
                            response.status_code, time.perf_counter() - started)
        if version:
            response.headers[VERSION_HEADER] = version
        return response


def _ops(model: Model | None, metrics: Metrics, swagger: str) -> Blueprint:
    ops = Blueprint("ops", __name__)

    @ops.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "alive"})

    @ops.get("/readyz")
    def readyz() -> Response:
        if model is None:
            raise NotReady("no model loaded")
        return _json({"status": "ready", "model": model.name, "version": model.version})

    @ops.get("/metrics")
    def metrics_view() -> Response:
        return Response(metrics.render(), mimetype=None,
                        headers={"Content-Type": metrics.content_type})

    @ops.get("/")
    def root() -> BaseResponse:
        return redirect("/api/docs/")

    @ops.get("/swagger.json")
    def swagger_root() -> Response:
        if model is None:
            raise NotReady("no model loaded")
        return Response(swagger, mimetype=JSON)

    return ops


def _api(model: Model | None, metrics: Metrics, settings: Settings, swagger: str) -> Blueprint:
    api = Blueprint("api", __name__, url_prefix="/api")
    max_batch = settings.max_batch
    counter = metrics.count_predictions(model.name, model.version) if model else None
    record = metrics.probability_recorder(model.labels) if model else None
    params = json.dumps(model.params()) if model else ""
    info = json.dumps(model.info()) if model else ""

    @api.post("/predict")
    def predict() -> Response:
        if model is None or counter is None:
            raise NotReady("no model loaded")
        if not request.is_json:
            raise errors.UnsupportedMediaType(
                "send the inputs as JSON with Content-Type: application/json")
        payload = parse_body(read_body(request.environ, settings.max_body_bytes))
        if isinstance(payload, dict):
            out = model.predict_one_json(payload, record)
            counter.inc()
        elif isinstance(payload, list):
            if not payload:
                raise InvalidInput("empty batch: send at least one object")
            if len(payload) > max_batch:
                raise PayloadTooLarge(f"batch of {len(payload)} rows; at most {max_batch} rows "
                                      "per request")
            out = model.predict_many_json(payload, record)
            counter.inc(len(payload))
        else:
            raise BadRequest("expected a JSON object (one row) or a list of objects (a batch), "
                             f"with the inputs {', '.join(model.names)}")
        return Response(out, mimetype=JSON)

    def loaded(body: str) -> Response:
        """A document computed once from the model, or 503 while there is none."""
        if model is None:
            raise NotReady("no model loaded")
        return Response(body, mimetype=JSON)

    @api.get("/predict/params")
    def predict_params() -> Response:
        return loaded(params)

    @api.get("/info")
    def info_view() -> Response:
        return loaded(info)

    @api.get("/swagger.json")
    def swagger_view() -> Response:
        return loaded(swagger)

    @api.get("/docs")
    def docs_redirect() -> BaseResponse:
        return redirect("/api/docs/")

    @api.get("/docs/")
    @api.get("/docs/index.html")
    def docs() -> Response:
        title = f"{model.name} {model.version}" if model else "Batcomputer"
        return Response(DOCS_INDEX.format(title=html.escape(title)), mimetype="text/html")

    @api.get("/docs/swagger-initializer.js")
    def docs_init() -> Response:
        return Response(DOCS_INIT, mimetype="text/javascript")

    @api.get("/docs/<path:filename>")
    def docs_asset(filename: str) -> Response:
        from swagger_ui_bundle import swagger_ui_path

        return send_from_directory(str(swagger_ui_path), filename, max_age=3600)

    return api


def _v2(model: Model | None, metrics: Metrics, settings: Settings) -> Blueprint:
    """The Open Inference Protocol (KServe V2) REST API, beside /api (see v2.py)."""
    api = Blueprint("v2", __name__, url_prefix="/v2")
    counter = metrics.count_predictions(model.name, model.version) if model else None
    record = metrics.probability_recorder(model.labels) if model else None
    try:
        release = importlib.metadata.version("batcomputer")
    except importlib.metadata.PackageNotFoundError:  # a bare checkout
        release = "0+unknown"
    server = json.dumps(v2.server_metadata(release))
    metadata = json.dumps(v2.model_metadata(model)) if model else ""

    def loaded(name: str, version: str | None) -> Model:
        if model is None:
            raise NotReady("no model loaded")
        v2.check_model(model, name, version)
        return model

    @api.get("")
    def server_metadata() -> Response:
        return Response(server, mimetype=JSON)

    @api.get("/health/live")
    def live() -> Response:
        return _json({"live": True})

    @api.get("/health/ready")
    def ready() -> Response:
        if model is None:
            raise NotReady("no model loaded")
        return _json({"ready": True})

    @api.get("/models/<name>")
    @api.get("/models/<name>/versions/<version>")
    def model_metadata(name: str, version: str | None = None) -> Response:
        loaded(name, version)
        return Response(metadata, mimetype=JSON)

    @api.get("/models/<name>/ready")
    @api.get("/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None) -> Response:
        return _json({"name": loaded(name, version).name, "ready": True})

    @api.post("/models/<name>/infer")
    @api.post("/models/<name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None) -> Response:
        served = loaded(name, version)
        assert counter is not None
        # The protocol's JSON needs no Content-Type (tritonclient sends none); its binary
        # tensor extension announces itself with this header.
        if "Inference-Header-Content-Length" in request.headers:
            raise BadRequest("binary tensor data is not supported; send the data as JSON "
                             "(tritonclient: set_data_from_numpy(..., binary_data=False))")
        payload = parse_body(read_body(request.environ, settings.max_body_bytes))
        asked = v2.parse_infer(payload, served, max_batch=settings.max_batch)
        proba = served.probabilities(asked.rows, record)
        counter.inc(len(asked.rows))
        return _json(v2.infer_response(served, asked, proba))

    return api
