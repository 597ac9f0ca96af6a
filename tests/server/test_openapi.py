"""The generated OpenAPI document is valid and says what the model accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_spec_validator import validate

from batcomputer.server.artifacts import fetch_verified
from batcomputer.server.model import Model, load_model
from batcomputer.server.openapi import document
from batcomputer.server.settings import Settings


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_document_is_valid_openapi(server_registry: Path, version: str) -> None:
    model = load_model(fetch_verified(Settings(artifact=str(server_registry / "crime" / version))))
    doc = document(model, max_batch=1000)
    validate(doc)  # raises on an invalid document
    schema = doc["components"]["schemas"]["Input"]
    assert schema["required"] == list(model.names)
    assert schema["additionalProperties"] is False


def test_inputs_have_enums_ranges_and_examples(model_v1: Model) -> None:
    doc = document(model_v1, max_batch=7)
    properties = doc["components"]["schemas"]["Input"]["properties"]
    params = model_v1.params()
    assert properties["crime"]["type"] == "string"
    assert properties["crime"]["enum"] == params["crime"]["values"]
    assert properties["crime"]["example"] in params["crime"]["values"]
    assert properties["month"] == {"description": params["month"]["description"],
                                   "type": "integer", "minimum": 1, "maximum": 12, "example": 1}
    example = doc["components"]["schemas"]["Input"]["example"]
    assert model_v1.predict_one(example)  # the example is a valid request
    outputs = doc["components"]["schemas"]["Prediction"]
    assert outputs["required"] == ["not_caught", "caught"]
    body = doc["paths"]["/api/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][1]["maxItems"] == 7
    responses = doc["paths"]["/api/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422"} <= set(responses)


def test_a_broken_document_would_be_caught(model_v1: Model) -> None:
    doc = document(model_v1, max_batch=10)
    doc["paths"]["/api/predict"]["post"]["responses"]["200"].pop("description")
    with pytest.raises(Exception, match="is not valid under any of the"):
        validate(doc)
