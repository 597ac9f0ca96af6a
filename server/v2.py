"""The Open Inference Protocol (KServe V2) over REST, translated to and from the model.

No web framework here: app.py routes the requests. What the protocol says
(github.com/kserve/open-inference-protocol, specification/protocol/inference_rest.md):

* every model input is a named tensor whose first dimension is the batch: categorical
  inputs are BYTES (strings), integer inputs INT8-64 or UINT8-64, numeric inputs FP16-64
  (or integers); shape ``[n]`` or ``[n, 1]``, data flat or nested in row-major order;
* the answer has two output tensors: ``probabilities`` (FP64, ``[n, labels]``, one
  column per label in the model's label order, which its ``labels`` parameter names) and
  ``label`` (BYTES, ``[n]``: the most probable label of each row);
* errors are a JSON ``{"error": ...}`` with an HTTP error status: 404 for an unknown
  model or version, 400 for a malformed request, 422 (as on /api/predict) for values the
  model cannot take, naming the row.

Tensor data only as JSON: the binary tensor extension (Triton's
``Inference-Header-Content-Length``) is refused with a message saying so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from batcomputer.server.errors import BadRequest, NotFound, PayloadTooLarge
from batcomputer.server.model import Model

PROBABILITIES: Final = "probabilities"
LABEL: Final = "label"
OUTPUTS: Final = (PROBABILITIES, LABEL)
INTEGERS: Final = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                             "UINT64"})
FLOATS: Final = frozenset({"FP16", "FP32", "FP64"})
DATATYPES: Final[dict[str, frozenset[str]]] = {
    "categorical": frozenset({"BYTES"}),
    "integer": INTEGERS,
    "number": FLOATS | INTEGERS,
}
NATURAL: Final = {"categorical": "BYTES", "integer": "INT64", "number": "FP64"}


@dataclass(frozen=True)
class InferRequest:
    rows: list[dict[str, Any]]
    id: str | None
    outputs: tuple[str, ...]


def check_model(model: Model, name: str, version: str | None) -> None:
    """404 unless the path names this server's model (and version, if it names one)."""
    if name != model.name:
        raise NotFound(f"unknown model {name!r}: this server serves {model.name!r} "
                       f"(version {model.version})")
    if version is not None and version != model.version:
        raise NotFound(f"model {name!r} has no version {version!r}: this server serves "
                       f"version {model.version}")


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "batcomputer", "version": version, "extensions": []}


def model_metadata(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "onnx_onnxv1" if model.runtime == "onnxruntime" else "sklearn_pickle",
        "inputs": [{"name": i.name, "datatype": NATURAL[i.kind], "shape": [-1]}
                   for i in model.inputs],
        "outputs": [{"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(model.labels)]},
                    {"name": LABEL, "datatype": "BYTES", "shape": [-1]}],
    }


def parse_infer(payload: object, model: Model, *, max_batch: int) -> InferRequest:
    """The rows of an inference request, or BadRequest/PayloadTooLarge saying what is wrong
    (the values themselves are the model's to judge)."""
    if not isinstance(payload, Mapping):
        raise BadRequest('expected an inference request object: {"inputs": [{"name", "shape", '
                         '"datatype", "data"}, ...]}')
    request_id = payload.get("id")
    if "id" in payload and not isinstance(request_id, str):
        raise BadRequest("id must be a string")
    _check_parameters(payload, "parameters")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(f"inputs must be a non-empty list of tensors, one per model input: "
                         f"{', '.join(model.names)}")
    columns: dict[str, list[Any]] = {}
    batch: int | None = None
    kinds = {i.name: i.kind for i in model.inputs}
    for n, tensor in enumerate(inputs):
        name, values = _column(tensor, n, kinds, max_batch)
        if name in columns:
            raise BadRequest(f"input {name!r} is given twice")
        if batch is not None and len(values) != batch:
            raise BadRequest(f"input {name!r} has {len(values)} rows, the others {batch}: "
                             "every input tensor must have the same first dimension")
        batch = len(values)
        columns[name] = values
    missing = [n for n in model.names if n not in columns]
    if missing:
        raise BadRequest(f"missing input tensor(s): {', '.join(missing)}; required: "
                         f"{', '.join(model.names)}")
    assert batch is not None
    names = list(model.names)
    rows = [dict(zip(names, values, strict=True))
            for values in zip(*(columns[n] for n in names), strict=True)]
    return InferRequest(rows=rows, id=request_id,
                        outputs=_outputs(payload["outputs"]) if "outputs" in payload else OUTPUTS)


def _column(tensor: object, n: int, kinds: Mapping[str, str],
            max_batch: int) -> tuple[str, list[Any]]:
    where = f"inputs[{n}]"
    if not isinstance(tensor, Mapping):
        raise BadRequest(f"{where} must be a tensor object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string")
    if name not in kinds:
        raise BadRequest(f"unknown input {name!r}; the model's inputs are: "
                         f"{', '.join(kinds)}")
    where = f"input {name!r}"
    parameters = _check_parameters(tensor, f"{where} parameters")
    if "binary_data_size" in parameters:
        raise BadRequest(f"{where}: binary tensor data is not supported; send the data as "
                         "JSON (tritonclient: set_data_from_numpy(..., binary_data=False))")
    datatype = tensor.get("datatype")
    kind = kinds[name]
    if not isinstance(datatype, str) or datatype not in DATATYPES[kind]:
        raise BadRequest(f"{where} is {kind}: its datatype must be "
                         f"{' or '.join(sorted(DATATYPES[kind]))}, not {datatype!r}")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not shape or len(shape) > 2
            or not all(type(d) is int and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)):
        raise BadRequest(f"{where}: shape must be [rows] or [rows, 1], not {shape!r}")
    rows = shape[0]
    if rows == 0:
        raise BadRequest(f"{where}: an empty batch; send at least one row")
    if rows > max_batch:
        raise PayloadTooLarge(f"batch of {rows} rows; at most {max_batch} rows per request")
    data = tensor.get("data")
    if not isinstance(data, list):
        raise BadRequest(f"{where}: data must be a JSON array (row-major, flat or nested)")
    values = _flatten(data, where)
    if len(values) != rows:
        raise BadRequest(f"{where}: shape {shape} has {rows} elements but data has "
                         f"{len(values)}")
    return name, values


def _flatten(data: list[Any], where: str) -> list[Any]:
    """Row-major elements of flat or nested data (at most [rows][1])."""
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            if any(isinstance(x, list | dict) for x in item):
                raise BadRequest(f"{where}: data is nested deeper than its shape")
            out.extend(item)
        else:
            out.append(item)
    return out


def _check_parameters(owner: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``owner``'s parameters (an object, when given at all)."""
    if "parameters" not in owner:
        return {}
    value = owner["parameters"]
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where} must be an object of name: string, number or boolean")
    return value


def _outputs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise BadRequest('outputs must be a list of {"name": ...}')
    names = []
    for item in value:
        name = item.get("name") if isinstance(item, Mapping) else None
        if name not in OUTPUTS:
            raise BadRequest(f"unknown output {name!r}; the model's outputs are: "
                             f"{', '.join(OUTPUTS)}")
        if isinstance(item, Mapping):
            _check_parameters(item, f"output {name!r} parameters")
        names.append(str(name))
    return tuple(dict.fromkeys(names)) or OUTPUTS


def infer_response(model: Model, request: InferRequest, proba: np.ndarray) -> dict[str, Any]:
    """The inference response for ``proba`` ([rows, labels], the model's label order)."""
    rows, width = proba.shape
    outputs = []
    for name in request.outputs:
        if name == PROBABILITIES:
            outputs.append({"name": PROBABILITIES, "datatype": "FP64", "shape": [rows, width],
                            "parameters": {"labels": json.dumps(list(model.labels))},
                            "data": proba.ravel().tolist()})
        else:
            labels = np.asarray(model.labels, dtype=object)
            outputs.append({"name": LABEL, "datatype": "BYTES", "shape": [rows],
                            "data": labels[proba.argmax(axis=1)].tolist()})
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    return response
