"""The served model: the triad (model, lookup, flags), input checks and prediction.

No web framework here. The model is evaluated by one of two runtimes:

* onnxruntime, when the artifact has the fast form (model.onnx, checked against the
  estimator when it was published; its largest difference is in metadata.json
  ``fast_form``). Nothing is unpickled: the inputs and labels come from lookup.json
  and flags.json.
* scikit-learn's ``predict_proba`` on the unpickled model.pkl, the last resort, only
  where pickles are allowed (``Settings.allow_pickle``).

Prediction has two modes, chosen at load time:

* memoised: every input is categorical or a bounded integer and the input space
  has at most ``memo_limit`` combinations. The runtime is run once over the whole
  grid (in chunks) and a request becomes an index computation and a table lookup.
* estimator: anything else asks the runtime (single row or one vectorised call per
  batch).
"""

from __future__ import annotations

import array
import io
import itertools
import json
import logging
import math
import multiprocessing
import pickle
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, Final

import numpy as np

from batcomputer import apicontract
from batcomputer.server.artifacts import PICKLE_FREE, PICKLED, Artifact, ArtifactError
from batcomputer.server.errors import InvalidInput

log = logging.getLogger("batcomputer.server")

MAX_RANGE: Final = 1_000_000  # an integer input with a wider range is not enumerated
GRID_CHUNK: Final = 65_536
SHOWN_VALUES: Final = 20
# Up to this many combinations, every answer is also kept as JSON text (~60 bytes each).
RENDER_LIMIT: Final = 250_000

Row = dict[str, float]

FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
"""scikit-learn's trees compare inputs as float32: a number beyond this cannot be given to
the model (it refuses it, or it overflows to infinity), so an unbounded numeric input
takes at most this in either direction."""


@dataclass(frozen=True)
class Input:
    """One model input, in lookup order."""

    name: str
    kind: str  # "categorical", "integer" or "number"
    description: str = ""
    codes: Mapping[str, int] = field(default_factory=dict)
    minimum: float | None = None
    maximum: float | None = None

    @property
    def bounded_integer(self) -> bool:
        return (self.kind == "integer" and isinstance(self.minimum, int)
                and isinstance(self.maximum, int) and self.minimum <= self.maximum
                and self.maximum - self.minimum < MAX_RANGE)

    def grid(self) -> tuple[list[Any], list[float]] | None:
        """All accepted values and the model input of each, or None if unbounded."""
        if self.kind == "categorical":
            return list(self.codes), [float(c) for c in self.codes.values()]
        if self.bounded_integer:
            assert isinstance(self.minimum, int) and isinstance(self.maximum, int)
            values = list(range(self.minimum, self.maximum + 1))
            return values, [float(v) for v in values]
        return None

    def describe(self) -> dict[str, Any]:
        """What /api/predict/params says about this input (and, without the description,
        its part of the API)."""
        out: dict[str, Any] = {"type": self.kind}
        if self.description:
            out["description"] = self.description
        if self.kind == "categorical":
            out["values"] = list(self.codes)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out

    @property
    def low(self) -> float:
        """The lowest number the model can take: the declared minimum, else float32's."""
        return self.minimum if self.minimum is not None else -FLOAT32_MAX

    @property
    def high(self) -> float:
        return self.maximum if self.maximum is not None else FLOAT32_MAX

    def encode(self, value: object, where: str) -> float:
        """The model's input for ``value``, or InvalidInput saying what to send."""
        if self.kind == "categorical":
            if not isinstance(value, str):
                raise InvalidInput(f"{where}{self.name} must be a string, one of the accepted "
                                   f"values, not {_kind(value)}")
            code = self.codes.get(value)
            if code is None:
                raise InvalidInput(f"{where}{self.name}: unknown value {_show(value)}; "
                                   f"accepted values: {self._accepted()}")
            return float(code)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{where}{self.name} must be {self._range_text()}, "
                               f"not {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{where}{self.name} must be a finite number")
        if self.kind == "integer" and isinstance(value, float) and not value.is_integer():
            raise InvalidInput(f"{where}{self.name} must be {self._range_text()}, "
                               f"not {value!r}")
        if not self.low <= value <= self.high:
            raise InvalidInput(f"{where}{self.name} must be {self._range_text()}, "
                               f"not {_short(repr(value))}")
        return float(value)

    def _range_text(self) -> str:
        kind = "an integer" if self.kind == "integer" else "a number"
        return f"{kind} from {self.low:g} to {self.high:g}"

    def _accepted(self) -> str:
        values = list(self.codes)
        shown = ", ".join(json.dumps(v) for v in values[:SHOWN_VALUES])
        if len(values) > SHOWN_VALUES:
            shown += f" and {len(values) - SHOWN_VALUES} more (GET /api/predict/params)"
        return shown


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value: str, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 4] + '..."'


class Model:
    """A loaded, verified model that validates inputs and predicts.

    Built with either a fitted ``estimator`` or a precomputed ``table`` holding
    ``predict_proba`` of every combination of inputs (see `tabulate`).
    """

    def __init__(self, *, name: str, version: str, inputs: Sequence[Input],
                 labels: Sequence[str], metadata: Mapping[str, Any], estimator: Any = None,
                 table: np.ndarray | None = None, estimator_class: str = "",
                 uri: str = "", metadata_digest: str = "", runtime: str = "") -> None:
        if (estimator is None) == (table is None):
            raise ValueError("a Model needs exactly one of an estimator and a table")
        self.name = name
        self.version = version
        self.inputs = tuple(inputs)
        self.labels = tuple(labels)
        self.metadata = dict(metadata)
        self.uri = uri
        self.metadata_digest = metadata_digest
        self.estimator_class = estimator_class or _qualname(estimator)
        self.runtime = runtime or (ONNX if isinstance(estimator, OnnxRuntime) else SKLEARN)
        self.names = tuple(i.name for i in self.inputs)
        self.combinations = space_size(self.inputs)
        self._estimator: Any = estimator
        self._table = table
        self._plan: tuple[tuple[str, dict[Any, int], bool], ...] = ()
        self._json: bytes = b""
        self._json_at: array.array[int] = array.array("q")
        self._bins: np.ndarray | None = None
        if table is not None:
            self._bins = probability_bins(table)
            if table.shape != (self.combinations, len(self.labels)):
                raise ValueError(f"table shape {table.shape} does not match the inputs")
            self._plan = _index_plan(self.inputs)
            if len(table) <= RENDER_LIMIT:
                self._render(table)

    def _render(self, table: np.ndarray) -> None:
        """Every answer as JSON, in one bytes object; answer i is
        ``_json[_json_at[i]:_json_at[i + 1]]`` (json.dumps output, byte for byte)."""
        answers = [json.dumps(dict(zip(self.labels, row, strict=True))).encode()
                   for row in table.tolist()]
        self._json_at = array.array("q", itertools.accumulate((len(a) for a in answers),
                                                              initial=0))
        self._json = b"".join(answers)

    # -- prediction --------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return "memoised" if self._table is not None else "estimator"

    def predict_one(self, row: object) -> Row:
        """One JSON object -> {label: probability}."""
        table = self._table
        if table is not None:
            return dict(zip(self.labels, table[self._index(row, "")].tolist(), strict=True))
        return self._rows(self._estimator.predict_proba(np.array([self.encode(row)])))[0]

    def predict_many(self, rows: Sequence[object]) -> list[Row]:
        """A list of JSON objects -> a list of results, in one vectorised step."""
        return self._answers(rows, "row ")

    def predict_one_json(self, row: object, record: Record | None = None) -> bytes:
        """``json.dumps(predict_one(row))``, encoded; from the rendered answers if any.
        ``record`` gets the answer's probability bins (see `probability_bins`)."""
        if self._json:
            index = self._index(row, "")
            at = self._json_at
            if record is not None and self._bins is not None:
                record(self._bins[index:index + 1])
            return self._json[at[index]:at[index + 1]]
        if record is None:
            return json.dumps(self.predict_one(row)).encode()
        answers = self._answers([row], "", record)
        return json.dumps(answers[0]).encode()

    def predict_many_json(self, rows: Sequence[object], record: Record | None = None) -> bytes:
        """``json.dumps(predict_many(rows))``, encoded; from the rendered answers if any."""
        if self._json:
            answers, at = self._json, self._json_at
            parts = []
            indices = []
            for number, row in enumerate(rows):
                index = self._index(row, f"row {number}: ")
                indices.append(index)
                parts.append(answers[at[index]:at[index + 1]])
            if record is not None and self._bins is not None:
                record(self._bins[indices])
            return b"[" + b", ".join(parts) + b"]"
        if record is None:
            return json.dumps(self.predict_many(rows)).encode()
        return json.dumps(self._answers(rows, "row ", record)).encode()

    def _answers(self, rows: Sequence[object], where: str, record: Record | None = None) -> list[Row]:
        """Predictions of rows through the table or the estimator, recording their bins."""
        return self._rows(self.probabilities(rows, record, where))

    def probabilities(self, rows: Sequence[object], record: Record | None = None,
                      where: str = "row ") -> np.ndarray:
        """[rows, labels] probabilities (label order) of a batch, in one vectorised step;
        InvalidInput names the row (``where`` + its index; "" for a single row)."""
        table = self._table
        if table is not None:
            proba = table[[self._index(row, f"{where}{n}: " if where else "")
                           for n, row in enumerate(rows)]]
        else:
            x = np.array([self.encode(row, f"{where}{n}: " if where else "")
                          for n, row in enumerate(rows)], dtype=np.float64)
            proba = np.asarray(self._estimator.predict_proba(x), dtype=np.float64)
        if record is not None:
            record(probability_bins(proba))
        return proba

    def _index(self, row: object, where: str) -> int:
        """The table index of a row, or InvalidInput."""
        index = self._fast_index(row)
        if index is None:
            self.encode(row, where)  # raises the precise error
            index = self._fast_index(row)
            assert index is not None
        return index

    def _fast_index(self, row: object) -> int | None:
        """The table index of a valid row, None when anything is off (then encode explains)."""
        if type(row) is not dict or len(row) != len(self._plan):
            return None
        index = 0
        try:
            for name, offsets, numeric in self._plan:
                value = row[name]
                if numeric and value.__class__ is bool:  # True == 1 in a dict lookup
                    return None
                index += offsets[value]
        except (KeyError, TypeError):
            return None
        return index

    def _rows(self, proba: np.ndarray) -> list[Row]:
        labels = self.labels
        return [dict(zip(labels, p, strict=True)) for p in proba.tolist()]

    def encode(self, row: object, where: str = "") -> list[float]:
        """Validate one row and return the model's input vector."""
        if not isinstance(row, dict):
            raise InvalidInput(f"{where}expected a JSON object with the inputs "
                               f"{', '.join(self.names)}, not {_kind(row)}")
        missing = [n for n in self.names if n not in row]
        if missing:
            raise InvalidInput(f"{where}missing input(s): {', '.join(missing)}; required: "
                               f"{', '.join(self.names)}")
        extra = [k for k in row if k not in self.names]
        if extra:
            shown = ", ".join(_show(str(k), 40) for k in extra[:5])
            raise InvalidInput(f"{where}unexpected input(s): {shown}; accepted: "
                               f"{', '.join(self.names)}")
        return [item.encode(row[item.name], where) for item in self.inputs]

    # -- description -------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {item.name: item.describe() for item in self.inputs}

    @property
    def api(self) -> apicontract.Api:
        """The API as served: inputs from the lookup, in order, and the labels."""
        return {"inputs": [{"name": i.name, **{k: v for k, v in i.describe().items()
                                                if k != "description"}} for i in self.inputs],
                "outputs": list(self.labels)}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "api": self.api,
            "api_fingerprint": apicontract.fingerprint(self.api),
            "artifact": self.uri,
            "metadata_digest": self.metadata_digest,
            "estimator": self.estimator_class,
            "inputs": [{"name": i.name, **i.describe()} for i in self.inputs],
            "labels": list(self.labels),
            "prediction": {"mode": self.mode, "combinations": self.combinations,
                           "runtime": self.runtime},
            "metadata": self.metadata,
        }


PROBABILITY_BINS: Final = 10
"""Predicted probabilities are counted in 10 bins of width 0.1, per label."""


def probability_bins(proba: np.ndarray) -> np.ndarray:
    """Bin index (0-9) of each predicted probability: [rows, labels] uint8."""
    return np.minimum((np.asarray(proba, dtype=np.float64) * PROBABILITY_BINS).astype(np.int64),
                      PROBABILITY_BINS - 1).astype(np.uint8)


Record = Callable[[np.ndarray], None]


ONNX: Final = "onnxruntime"
SKLEARN: Final = "scikit-learn"


def needed_files(metadata: Mapping[str, Any], *, allow_pickle: bool = True) -> tuple[str, ...]:
    """The files to fetch and load: the pickle-free form when the artifact has it, else the
    pickles (where allowed)."""
    files = metadata.get("files", {})
    if all(f in files for f in PICKLE_FREE):
        return PICKLE_FREE
    if not allow_pickle:
        fast = metadata.get("fast_form", {})
        why = (f" (its fast form was refused at publish: {fast['refused']})"
               if isinstance(fast, Mapping) and fast.get("refused") else "")
        raise ArtifactError(
            f"{metadata.get('name')} {metadata.get('version')} has no pickle-free form "
            f"({', '.join(PICKLE_FREE)}){why}, and this server does not unpickle "
            "(BATCOMPUTER_ALLOW_PICKLE=false): republish it with the training CLI, or "
            "allow pickles for this version (BatModel spec.versions[].allowPickle: true)")
    return PICKLED


def load_model(artifact: Artifact, *, name: str | None = None, memo_limit: int = 2_000_000,
               isolate: bool = False, allow_pickle: bool = True) -> Model:
    """Load the verified artifact (see `needed_files`), check it and get it ready to serve.

    When the input space has at most ``memo_limit`` combinations the model is
    tabulated and dropped. With ``isolate`` that happens in a forked child
    process, so this process never imports the runtime (scikit-learn is about
    120 MiB of memory in every gunicorn worker).
    """
    files = needed_files(artifact.metadata, allow_pickle=allow_pickle)
    missing = [f for f in files if f not in artifact.files]
    if missing:
        raise ArtifactError(f"{', '.join(missing)} not fetched from {artifact.uri}")
    if files == PICKLE_FREE:
        lookup, flags = _json(artifact, "lookup.json"), _json(artifact, "flags.json")
    else:
        lookup, flags = _unpickle(artifact, "lookup.pkl"), _unpickle(artifact, "flags.pkl")
    lookup_file, flags_file = files[1], files[2]
    if not isinstance(lookup, Mapping) or not lookup:
        raise ArtifactError(f"{lookup_file} at {artifact.uri} is not a non-empty mapping")
    if (not isinstance(flags, list | tuple) or not flags
            or not all(isinstance(f, str) for f in flags)):
        raise ArtifactError(f"{flags_file} at {artifact.uri} is not a list of labels")
    inputs = build_inputs(lookup, artifact.metadata)
    labels = [str(f) for f in flags]
    runtime = ONNX if files == PICKLE_FREE else SKLEARN
    model = partial(Model, name=name or artifact.name, version=artifact.version, inputs=inputs,
                    labels=labels, metadata=artifact.metadata, uri=artifact.uri,
                    metadata_digest=artifact.metadata_digest, runtime=runtime)
    size = space_size(inputs)
    if size is not None and 0 < size <= memo_limit:
        started = time.perf_counter()
        build = _in_child if isolate else _tabulate_artifact
        table, estimator_class = build(artifact, inputs, len(flags), runtime)
        log.info("Memoised %s input combinations with %s in %.2fs", f"{size:,}", runtime,
                 time.perf_counter() - started)
        return model(table=table, estimator_class=estimator_class)
    estimator = _load_estimator(artifact, len(inputs), len(flags), runtime)
    return model(estimator=estimator, estimator_class=_estimator_class(artifact, estimator))


def _estimator_class(artifact: Artifact, estimator: Any) -> str:
    """The scikit-learn class the model was (the ONNX form says it in metadata.json)."""
    if isinstance(estimator, OnnxRuntime):
        return str(artifact.metadata.get("training", {}).get("estimator", "")) or "onnx"
    return _qualname(estimator)


class OnnxRuntime:
    """``predict_proba`` of the fast form (model.onnx), evaluated by onnxruntime on one
    thread (gunicorn's workers are the parallelism)."""

    OUTPUT: Final = "probabilities"

    def __init__(self, data: bytes, uri: str) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: they become ArtifactErrors
        try:
            self._session = onnxruntime.InferenceSession(data, options,
                                                         providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"model.onnx at {uri} cannot be loaded: {exc}") from exc
        feeds = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(feeds) != 1 or self.OUTPUT not in outputs:
            raise ArtifactError(f"model.onnx at {uri} must take one input tensor and give "
                                f"'{self.OUTPUT}' (it takes {len(feeds)} and gives {outputs})")
        self._feed = feeds[0].name
        self._dtype = np.float32 if feeds[0].type == "tensor(float)" else np.float64
        width = feeds[0].shape[1] if len(feeds[0].shape) == 2 else None
        self.n_features_in_ = width if isinstance(width, int) else None

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Each row rescaled to sum to 1 in float64 (float32 sums are 1 to within 3e-8),
        exactly as the publisher computed them when it checked the form."""
        out = self._session.run([self.OUTPUT], {self._feed: np.asarray(x, dtype=self._dtype)})
        proba = np.asarray(out[0], dtype=np.float64)
        total = proba.sum(axis=1, keepdims=True)
        rescaled: np.ndarray = np.divide(proba, total, out=proba, where=total > 0)
        return rescaled


def _load_estimator(artifact: Artifact, n_inputs: int, n_labels: int, runtime: str) -> Any:
    if runtime == ONNX:
        return _load_onnx(artifact, n_inputs, n_labels)
    return _load_pickled(artifact, n_inputs, n_labels)


def _load_onnx(artifact: Artifact, n_inputs: int, n_labels: int) -> OnnxRuntime:
    runtime = OnnxRuntime(artifact.files["model.onnx"], artifact.uri)
    if runtime.n_features_in_ is not None and runtime.n_features_in_ != n_inputs:
        raise ArtifactError(f"lookup.json has {n_inputs} inputs but model.onnx takes "
                            f"{runtime.n_features_in_}")
    try:
        columns = runtime.predict_proba(np.zeros((1, n_inputs))).shape[1]
    except Exception as exc:
        raise ArtifactError(f"model.onnx at {artifact.uri} cannot predict: {exc}") from exc
    if columns != n_labels:
        raise ArtifactError(f"flags.json has {n_labels} labels but model.onnx gives "
                            f"{columns} probabilities")
    return runtime


def _load_pickled(artifact: Artifact, n_inputs: int, n_labels: int) -> Any:
    estimator = _unpickle(artifact, "model.pkl")
    if not callable(getattr(estimator, "predict_proba", None)):
        raise ArtifactError(f"model.pkl at {artifact.uri} ({type(estimator).__name__}) "
                            "has no predict_proba")
    classes = getattr(estimator, "classes_", None)
    if classes is not None and len(classes) != n_labels:
        raise ArtifactError(f"flags.pkl has {n_labels} labels but the model has "
                            f"{len(classes)} classes")
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is not None and n_features != n_inputs:
        raise ArtifactError(f"lookup.pkl has {n_inputs} inputs but the model takes "
                            f"{n_features}")
    reset_n_jobs(estimator)
    return estimator


def _tabulate_artifact(artifact: Artifact, inputs: Sequence[Input], n_labels: int,
                       runtime: str) -> tuple[np.ndarray, str]:
    estimator = _load_estimator(artifact, len(inputs), n_labels, runtime)
    table = tabulate(estimator, inputs)
    if table.shape[1] != n_labels:
        raise ArtifactError(f"predict_proba gives {table.shape[1]} columns for {n_labels} labels")
    return table, _estimator_class(artifact, estimator)


def _child(artifact: Artifact, inputs: Sequence[Input], n_labels: int, runtime: str,
           conn: Connection) -> None:
    try:
        conn.send(("ok", _tabulate_artifact(artifact, inputs, n_labels, runtime)))
    except ArtifactError as exc:
        conn.send(("error", str(exc)))
    except BaseException as exc:
        conn.send(("error", f"tabulating the model failed: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _in_child(artifact: Artifact, inputs: Sequence[Input], n_labels: int,
              runtime: str) -> tuple[np.ndarray, str]:
    """`_tabulate_artifact` in a forked process; only the table comes back."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(artifact, inputs, n_labels, runtime, sender),
                              name="batcomputer-tabulate")
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        status, payload = "error", "the process tabulating the model died"
    finally:
        receiver.close()
        process.join()
    if status != "ok":
        raise ArtifactError(f"{payload} (exit code {process.exitcode})"
                            if process.exitcode else str(payload))
    table, estimator_class = payload
    table.setflags(write=False)
    return table, estimator_class


def tabulate(estimator: Any, inputs: Sequence[Input]) -> np.ndarray:
    """predict_proba of every combination of inputs, row ``i`` being the combination
    whose grid positions are ``np.unravel_index(i, shape)`` (C order)."""
    grids = [item.grid() for item in inputs]
    if any(g is None for g in grids):
        raise ValueError("an input is unbounded: the input space cannot be tabulated")
    shape = tuple(len(g[0]) for g in grids if g is not None)
    columns = [np.asarray(g[1], dtype=np.float64) for g in grids if g is not None]
    total = math.prod(shape)
    table: np.ndarray | None = None
    for start in range(0, total, GRID_CHUNK):
        stop = min(start + GRID_CHUNK, total)
        positions = np.unravel_index(np.arange(start, stop), shape)
        x = np.column_stack([col[pos] for col, pos in zip(columns, positions, strict=True)])
        proba = np.asarray(estimator.predict_proba(x), dtype=np.float64)
        if table is None:
            table = np.empty((total, proba.shape[1]), dtype=np.float64)
        table[start:stop] = proba
    assert table is not None
    return table


def space_size(inputs: Sequence[Input]) -> int | None:
    """How many combinations of inputs there are, None if an input is unbounded."""
    size = 1
    for item in inputs:
        grid = item.grid()
        if grid is None:
            return None
        size *= len(grid[0])
    return size


def _index_plan(inputs: Sequence[Input]) -> tuple[tuple[str, dict[Any, int], bool], ...]:
    """Per input: its name, accepted value -> offset in the table, and whether it is
    numeric. A row's table index is the sum of its values' offsets."""
    grids = [item.grid() for item in inputs]
    shape = [len(g[0]) for g in grids if g is not None]
    plan = []
    for d, (item, grid) in enumerate(zip(inputs, grids, strict=True)):
        assert grid is not None
        stride = math.prod(shape[d + 1:])
        plan.append((item.name, {v: i * stride for i, v in enumerate(grid[0])},
                     item.kind != "categorical"))
    return tuple(plan)


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}" if obj is not None else ""


def build_inputs(lookup: Mapping[str, Any], metadata: Mapping[str, Any]) -> list[Input]:
    """Inputs in lookup order; types and ranges of numeric inputs from the metadata schema."""
    schema_inputs = metadata.get("schema", {}).get("inputs", [])
    described = {i.get("name"): i for i in schema_inputs if isinstance(i, dict)}
    inputs = []
    for name, codes in lookup.items():
        if not isinstance(name, str):
            raise ArtifactError(f"the lookup has a non-string input name {name!r}")
        entry = described.get(name, {})
        description = str(entry.get("description", ""))
        if isinstance(codes, Mapping):
            if not all(isinstance(k, str) and isinstance(v, int | np.integer)
                       for k, v in codes.items()):
                raise ArtifactError(f"the lookup: {name} must map strings to integer codes")
            inputs.append(Input(name, "categorical", description,
                                codes={k: int(v) for k, v in codes.items()}))
            continue
        kind = "integer" if entry.get("type") == "integer" else "number"
        minimum, maximum = entry.get("minimum"), entry.get("maximum")
        inputs.append(Input(name, kind, description, minimum=_bound(minimum),
                            maximum=_bound(maximum)))
    return inputs


def _bound(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def reset_n_jobs(estimator: Any) -> None:
    """n_jobs=-1 makes every predict call start a thread pool: use one thread."""
    get_params = getattr(estimator, "get_params", None)
    if get_params is None:
        return
    try:
        keys = [k for k in get_params(deep=True) if k == "n_jobs" or k.endswith("__n_jobs")]
        if keys:
            estimator.set_params(**dict.fromkeys(keys))
    except Exception as exc:  # a third-party estimator with unusual params
        log.warning("Could not reset n_jobs on %s: %s", type(estimator).__name__, exc)


def _json(artifact: Artifact, name: str) -> Any:
    try:
        return json.loads(artifact.files[name])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{name} at {artifact.uri} is not valid JSON: {exc}") from exc


def _unpickle(artifact: Artifact, name: str) -> Any:
    """Unpickle verified bytes; a scikit-learn version mismatch is a refusal, not a warning.

    (The warning class is matched by name so that unpickling the plain-data lookup and
    flags does not import scikit-learn.)"""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = pickle.load(io.BytesIO(artifact.files[name]))
    except Exception as exc:
        raise ArtifactError(f"{name} at {artifact.uri} cannot be unpickled: "
                            f"{type(exc).__name__}: {exc}") from exc
    for warning in caught:
        if type(warning.message).__name__ == "InconsistentVersionWarning":
            message = warning.message
            raise ArtifactError(
                f"{name} at {artifact.uri} was pickled with scikit-learn "
                f"{getattr(message, 'original_sklearn_version', '?')}; this server has "
                f"{getattr(message, 'current_sklearn_version', '?')}")
    return obj
