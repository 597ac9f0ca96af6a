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
            **_v2_paths(model),
        },
        "components": {"schemas": {
            **_v2_schemas(model, max_batch),
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


V2_ERRORS = {
    "400": "A malformed inference request: a tensor with an unknown name, a wrong datatype "
           "or shape, data that does not fill its shape, inputs of different batch sizes",
    "404": "No such model or version on this server",
    "413": "The body or the batch is too large",
    "415": "The Content-Type is not application/json",
    "422": "A value the model cannot take; the message names the row",
}
V2_DATATYPES = {"categorical": ["BYTES"],
                "integer": ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                            "UINT64"],
                "number": ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8",
                           "UINT16", "UINT32", "UINT64"]}


def _v2_paths(model: Model) -> dict[str, Any]:
    """The Open Inference Protocol (KServe V2) routes, for this model and version."""
    name, version = model.name, model.version
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

    def answers(ok: str, schema: str | None = None, codes: tuple[str, ...] = ("404",)) -> dict[str, Any]:
        out: dict[str, Any] = {"200": {"description": ok}}
        if schema:
            out["200"]["content"] = {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{schema}"}}}
        for code in codes:
            out[code] = {"description": V2_ERRORS[code], "content": error}
        return out

    infer = {
        "summary": f"Open Inference Protocol: predict with {name} (inputs as named tensors)",
        "tags": ["Open Inference Protocol (V2)"],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/InferenceRequest"}}}},
        "responses": answers("Probabilities ([rows, labels]) and the most probable label",
                             "InferenceResponse", tuple(V2_ERRORS)),
    }
    tag = ["Open Inference Protocol (V2)"]
    paths: dict[str, Any] = {
        "/v2": {"get": {"summary": "Server metadata", "operationId": "v2ServerMetadata",
                        "tags": tag, "responses": {"200": {"description": "name, version, "
                                                                           "extensions"}}}},
        "/v2/health/live": {"get": {"summary": "Server liveness", "operationId": "v2Live",
                                    "tags": tag,
                                    "responses": {"200": {"description": '{"live": true}'}}}},
        "/v2/health/ready": {"get": {"summary": "Server readiness", "operationId": "v2Ready",
                                     "tags": tag,
                                     "responses": {"200": {"description": '{"ready": true}'},
                                                   "503": {"description": "Not ready"}}}},
    }
    for base, suffix in ((f"/v2/models/{name}", ""),
                         (f"/v2/models/{name}/versions/{version}", "Version")):
        paths[base] = {"get": {"summary": "Model metadata: inputs and outputs as tensors",
                               "operationId": f"v2ModelMetadata{suffix}", "tags": tag,
                               "responses": answers("Model metadata")}}
        paths[f"{base}/ready"] = {"get": {"summary": "Model readiness",
                                          "operationId": f"v2ModelReady{suffix}", "tags": tag,
                                          "responses": answers('{"name": ..., "ready": true}')}}
        paths[f"{base}/infer"] = {"post": {**infer, "operationId": f"v2Infer{suffix}"}}
    return paths


def _v2_schemas(model: Model, max_batch: int) -> dict[str, Any]:
    tensors = []
    for item in model.inputs:
        element = _input_schema(item)
        element.pop("description", None)
        element.pop("example", None)
        tensors.append({
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "description": f"The input {item.name}: one element per row",
            "properties": {
                "name": {"type": "string", "enum": [item.name]},
                "shape": {"type": "array", "minItems": 1, "maxItems": 2,
                          "items": {"type": "integer", "minimum": 1, "maximum": max_batch},
                          "description": "[rows] or [rows, 1]"},
                "datatype": {"type": "string", "enum": V2_DATATYPES[item.kind]},
                "data": {"type": "array", "minItems": 1, "maxItems": max_batch,
                         "items": element},
                "parameters": {"type": "object"},
            },
        })
    example = {"inputs": [{"name": i.name, "shape": [1],
                           "datatype": {"categorical": "BYTES", "integer": "INT64"}.get(i.kind, "FP64"),
                           "data": [_input_schema(i)["example"]]} for i in model.inputs]}
    return {
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "items": {"oneOf": tensors},
                           "description": "One tensor per model input, all of the same batch "
                                          f"size: {', '.join(model.names)}"},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string", "enum": ["probabilities", "label"]},
                                   "parameters": {"type": "object"}}}},
            },
            "example": example,
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name", "shape", "datatype", "data"],
                    "properties": {"name": {"type": "string"},
                                   "shape": {"type": "array", "items": {"type": "integer"}},
                                   "datatype": {"type": "string"},
                                   "parameters": {"type": "object"},
                                   "data": {"type": "array"}}}},
            },
        },
    }
