"""The OpenAPI 3 document of a model's API, generated from its inputs and labels."""

from __future__ import annotations

from typing import Any

from batcomputer.server.model import Input, Model

OPENAPI_VERSION = "3.0.3"
ERROR_STATUSES = {
    "400": "The body is not JSON, or not an object or a list of objects",
    "413": "The body or the batch is too large",
    "415": "The Content-Type is not application/json",
    "422": ("An input is missing, unexpected, of the wrong type, not an accepted value or out "
            "of range; in a batch the message names the row"),
    "503": "The model is not loaded",
}


def _input_schema(item: Input) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    if item.description:
        schema["description"] = item.description
    if item.kind == "categorical":
        values = list(item.codes)
        schema.update(type="string", enum=values, example=values[0] if values else "")
    else:
        # The range the model can take (float32's where none is declared): beyond it, 422.
        schema.update(type="integer" if item.kind == "integer" else "number",
                      minimum=item.low, maximum=item.high,
                      example=item.minimum if item.minimum is not None else 0)
    return schema


def document(model: Model, *, max_batch: int) -> dict[str, Any]:
    """An OpenAPI 3.0 document: paths, the input object (enum, required, types,
    ranges, examples) and the output object (one probability per label)."""
    example_in = {item.name: _input_schema(item)["example"] for item in model.inputs}
    share = round(1 / len(model.labels), 6) if model.labels else 0
    example_out = dict.fromkeys(model.labels, share)
    ref_in = {"$ref": "#/components/schemas/Input"}
    ref_out = {"$ref": "#/components/schemas/Prediction"}
    errors = {code: {"description": text,
                     "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/Error"}}}}
              for code, text in ERROR_STATUSES.items()}
    json_object = {"application/json": {"schema": {"type": "object"}}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{model.name} prediction API",
            "version": model.version,
            "description": (f"Predictions of the model {model.name} {model.version}. Labels: "
                            f"{', '.join(model.labels)}."),
        },
        "paths": {
            "/api/predict": {"post": {
                "summary": "Predict one row (an object) or a batch (a list of objects)",
                "operationId": "predict",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"oneOf": [ref_in, {"type": "array", "items": ref_in,
                                                  "minItems": 1, "maxItems": max_batch}]},
                    "examples": {"one": {"value": example_in},
                                 "batch": {"value": [example_in, example_in]}},
                }}},
                "responses": {
                    "200": {"description": "One probability per label, or a list of them",
                            "content": {"application/json": {
                                "schema": {"oneOf": [ref_out, {"type": "array",
                                                               "items": ref_out}]},
                                "example": example_out}}},
                    **errors,
                },
            }},
            "/api/predict/params": {"get": {
                "summary": "The accepted values of every input",
                "operationId": "params",
                "responses": {"200": {"description": "Input name -> type and accepted values",
                                      "content": json_object}},
            }},
            "/api/info": {"get": {
                "summary": "Model name, version and metadata",
                "operationId": "info",
                "responses": {"200": {"description": "Model information",
                                      "content": json_object}},
            }},
            "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz",
                                 "responses": {"200": {"description": "The process is alive"}}}},
            "/readyz": {"get": {"summary": "Readiness", "operationId": "readyz",
                                "responses": {
                                    "200": {"description": "The model is loaded and verified"},
                                    "503": {"description": "Not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {
                                                           "schema": {"type": "string"}}}}}}},
        },
        "components": {"schemas": {
            "Input": {
                "type": "object",
                "required": list(model.names),
                "additionalProperties": False,
                "properties": {item.name: _input_schema(item) for item in model.inputs},
                "example": example_in,
            },
            "Prediction": {
                "type": "object",
                "required": list(model.labels),
                "additionalProperties": False,
                "properties": {label: {"type": "number", "minimum": 0, "maximum": 1,
                                       "description": f"Probability of {label}"}
                               for label in model.labels},
                "example": example_out,
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string",
                                         "description": "What is wrong and how to fix it"}},
            },
        }},
    }
