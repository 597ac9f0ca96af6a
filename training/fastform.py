"""The fast form of a model: ONNX, converted at publish time and checked before it is published.

Why ONNX evaluated by onnxruntime: it covers every classifier the CLI offers (skl2onnx
converts forests, histogram gradient boosting and linear models), the server needs no
scikit-learn and no pickle to load it, and one call costs microseconds where
``predict_proba`` costs milliseconds (bench/server.py measures both on the same model).

A model whose inputs take finitely many values (categories, bounded integers: at most
GRID_LIMIT combinations, which the check already evaluates one by one) is published as the
table of its answers (`table_onnx`): exact, whatever the estimator, and small. The reference
forest is 1.4 million nodes: as trees it was 53 MB and onnxruntime took 600 MB (peaking at
730 MB) to load it, in the publisher and in every server; as a table it is 166 KB.

Other forests (random-forest, extra-trees) are converted by `forest_onnx`, which writes the graph
skl2onnx writes for them from the trees' arrays at once: a forest trained on many rows has a
leaf per combination of inputs in every tree (over a million nodes for the reference model),
and skl2onnx, which walks them node by node in Python, took 7 s and 1 GB more for it.

Exactness. scikit-learn's trees compare ``float32(x) <= t`` with a float64 threshold
``t``. For a float32 ``x`` that is the same as ``x <= t32``, with ``t32`` the largest
float32 not above ``t``. So a tree model is converted with float32 inputs from a copy whose
thresholds are rounded *down* to float32: the ONNX trees then take exactly the decisions
scikit-learn takes (the usual round-to-nearest would not). Their leaves are summed in
float32, a difference near 1e-7. Linear models are converted in float64 (near 1e-15).
Histogram gradient boosting compares float64 inputs in scikit-learn and float32 ones in
ONNX: two continuous inputs closer than one float32 step (about 4e-6 at latitude 52) can
fall on either side of a split, so the check may refuse its fast form.

Whatever the form, it is checked: the largest difference between the two on the hold-out
rows and on a sample of the input space (every combination, when they are few) is recorded
in metadata.json, and a form above the tolerance is not published.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from batcomputer.training.features import Lookup

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

FILE: Final = "model.onnx"
TOLERANCE: Final = 1e-6
SAMPLE_ROWS: Final = 20_000
"""Random inputs checked when the input space is too large to check whole."""
GRID_LIMIT: Final = 200_000
"""Every combination of inputs is checked when there are at most this many."""
HOLDOUT_ROWS: Final = 100_000
"""At most this many hold-out rows are checked (the first ones: the split is seeded)."""
OUTPUT: Final = "probabilities"


@dataclass(frozen=True)
class FastForm:
    """The outcome of converting and checking: the ONNX bytes, or why there are none."""

    onnx: bytes | None
    record: dict[str, Any]
    """What metadata.json says about it (``fast_form``)."""

    @property
    def refused(self) -> str | None:
        reason = self.record.get("refused")
        return str(reason) if reason else None


def build(model: Any, lookup: Lookup, schema_inputs: Sequence[dict[str, Any]],
          x_train: np.ndarray, x_test: np.ndarray, *, tolerance: float = TOLERANCE,
          seed: int = 0) -> FastForm:
    """Convert ``model`` and check it against ``predict_proba``; the first candidate
    form (see `_candidates`) within ``tolerance`` wins."""
    import numpy as np
    import onnxruntime

    sample, sampled = input_sample(lookup, schema_inputs, x_train, seed=seed)
    x = np.vstack([x_test[:HOLDOUT_ROWS], sample])
    expected = np.asarray(model.predict_proba(x), dtype=np.float64)
    grids = input_grids(lookup, schema_inputs)
    table = None
    if grids is not None and len(sample) == math.prod(len(g) for g in grids):
        table = expected[len(x) - len(sample):]  # every combination, in `input_sample`'s order
    base: dict[str, Any] = {
        "format": "onnx", "runtime": "onnxruntime", "onnxruntime": onnxruntime.__version__,
        "tolerance": tolerance,
        "rows_checked": len(x), "checked": f"{min(len(x_test), HOLDOUT_ROWS):,} hold-out rows "
                                           f"and {sampled}"}
    failures = []
    converters = []
    for precision, convert in _candidates(model, x.shape[1], grids, table):
        try:
            data, converter = convert()
            converters.append(converter)
            found = predict(data, x)
        except Exception as exc:  # a converter or runtime refusal is a reason, not a crash
            failures.append(f"{precision}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if found.shape != expected.shape:
            failures.append(f"{precision}: gives {found.shape[1]} columns, not "
                            f"{expected.shape[1]}")
            continue
        diff = float(np.max(np.abs(found - expected))) if len(x) else 0.0
        if diff <= tolerance:
            log.info("Fast form (ONNX, %s inputs): largest difference %.3g on %s rows",
                     precision, diff, f"{len(x):,}")
            return FastForm(data, {**base, "converter": converter, "file": FILE,
                                   "input": precision, "max_abs_diff": diff})
        failures.append(f"{precision}: largest difference {diff:.3g} is above the "
                        f"tolerance {tolerance:g}")
    return FastForm(None, {**base, "converter": ", ".join(dict.fromkeys(converters)),
                           "refused": "; ".join(failures)})


def predict(data: bytes, x: np.ndarray) -> np.ndarray:
    """Probabilities from the ONNX form, as the server computes them."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.float32 if feed.type == "tensor(float)" else np.float64
    out = session.run([OUTPUT], {feed.name: x.astype(dtype)})[0]
    proba = np.asarray(out, dtype=np.float64)
    total = proba.sum(axis=1, keepdims=True)  # float32 sums are 1 to within 3e-8
    rescaled: np.ndarray = np.divide(proba, total, out=proba, where=total > 0)
    return rescaled


Conversion = Callable[[], tuple[bytes, str]]
"""Converts when called: the ONNX bytes and the converter's name, for metadata.json."""


def _candidates(model: Any, n_inputs: int, grids: list[list[float]] | None = None,
                table: np.ndarray | None = None) -> Iterator[tuple[str, Conversion]]:
    """The model's table, when ``table`` holds ``predict_proba`` of every combination of
    ``grids`` and each grid is a run of consecutive integers (see `table_onnx`). Else tree
    models in float32 (thresholds rounded down), others in float64; then the other. A binary
    forest is converted by `forest_onnx` (the same graph as skl2onnx's, built from the
    trees' arrays), any other model by skl2onnx. Each conversion happens only when the one
    before it failed."""
    if grids is not None and table is not None and all(map(_consecutive, grids)):
        yield "float64", lambda: (table_onnx(grids, table, model.classes_), TABLE_CONVERTER)
    if _binary_forest(model):
        yield "float32", lambda: (forest_onnx(model, n_inputs), FOREST_CONVERTER)
        yield "float64", lambda: _convert(model, n_inputs, "float64")
        return
    if next(_split_thresholds(model), None) is not None:
        yield "float32", lambda: _convert(_floor_thresholds(model), n_inputs, "float32")
        yield "float64", lambda: _convert(model, n_inputs, "float64")
    else:
        yield "float64", lambda: _convert(model, n_inputs, "float64")
        yield "float32", lambda: _convert(model, n_inputs, "float32")


def _convert(model: Any, n_inputs: int, precision: str) -> tuple[bytes, str]:
    import skl2onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor = FloatTensorType if precision == "float32" else DoubleTensorType
    onx = convert_sklearn(model, initial_types=[("inputs", tensor([None, n_inputs]))],
                          options={"zipmap": False}, name="batcomputer")
    data: bytes = onx.SerializeToString()
    return data, f"skl2onnx {skl2onnx.__version__}"


CHUNK: Final = 1 << 16
FOREST_CONVERTER: Final = "batcomputer forest_onnx (skl2onnx's TreeEnsembleClassifier graph)"


def _binary_forest(model: Any) -> bool:
    """A fitted forest of scikit-learn decision trees with one output and two integer classes
    (what the CLI's random-forest and extra-trees are)."""
    import numpy as np

    classes = getattr(model, "classes_", None)
    estimators = getattr(model, "estimators_", None)
    return (isinstance(estimators, list) and len(estimators) > 0
            and all(hasattr(e, "tree_") for e in estimators)
            and getattr(model, "n_outputs_", None) == 1
            and isinstance(classes, np.ndarray) and len(classes) == 2
            and np.issubdtype(classes.dtype, np.integer))


def forest_onnx(model: Any, n_inputs: int) -> bytes:
    """A binary forest as one ONNX TreeEnsembleClassifier with float32 inputs: node for node
    what skl2onnx 1.20 writes (same attributes, same values; a test holds them equal), with
    split thresholds rounded down to float32 (see the module's note on exactness), but built
    from the trees' arrays at once instead of node by node in Python."""
    import numpy as np
    from onnx import AttributeProto, TensorProto, helper

    trees = [e.tree_ for e in model.estimators_]
    sizes = np.array([t.node_count for t in trees], dtype=np.int64)
    tree_ids = np.repeat(np.arange(len(trees), dtype=np.int64), sizes)
    node_ids = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
    left = np.concatenate([t.children_left for t in trees]).astype(np.int64)
    right = np.concatenate([t.children_right for t in trees]).astype(np.int64)
    branch = (left > node_ids) | (right > node_ids)
    feature = np.where(branch, np.concatenate([t.feature for t in trees]), 0).astype(np.int64)
    threshold = np.concatenate([t.threshold for t in trees])
    threshold = np.where(branch, floor_float32(np.where(branch, threshold, 0.0)), 0.0)
    leaf = ~branch
    # Leaves' class weights: P(class 1) / trees, as skl2onnx computes it (counts normalised).
    value = np.concatenate([t.value[:, 0, :] for t in trees])[leaf]
    total = value.sum(axis=1)
    factor = (1.0 / len(trees)) / np.where(total != 0.0, total, 1.0)
    weights = value[:, 1] * factor

    # Built in place: each of these attributes holds a value per node, and a copy of a
    # million-node model (which make_node/make_graph would make) is hundreds of MB.
    onx = helper.make_model(
        helper.make_graph(
            [], "batcomputer",
            [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, [None, n_inputs])],
            [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
             helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 2])]),
        ir_version=10, producer_name="batcomputer",
        opset_imports=[helper.make_opsetid("ai.onnx.ml", 1), helper.make_opsetid("", 21)])
    node = onx.graph.node.add(op_type="TreeEnsembleClassifier", domain="ai.onnx.ml",
                              name="TreeEnsembleClassifier", input=["inputs"],
                              output=["label", OUTPUT])

    def attribute(name: str, kind: AttributeProto.AttributeType, values: Any) -> None:
        attr = node.attribute.add(name=name, type=kind)
        field: Any = {AttributeProto.INTS: attr.ints, AttributeProto.FLOATS: attr.floats,
                      AttributeProto.STRINGS: attr.strings}[kind]
        for start in range(0, len(values), CHUNK):  # bounded lists of Python objects
            part = values[start:start + CHUNK]
            field.extend(part.tolist() if isinstance(part, np.ndarray) else part)

    ints, floats = AttributeProto.INTS, AttributeProto.FLOATS
    n_leaves, n_nodes = int(leaf.sum()), len(branch)
    # In name order, as skl2onnx writes them.
    attribute("class_ids", ints, np.zeros(n_leaves, dtype=np.int64))
    attribute("class_nodeids", ints, node_ids[leaf])
    attribute("class_treeids", ints, tree_ids[leaf])
    attribute("class_weights", floats, weights)
    attribute("classlabels_int64s", ints, [int(c) for c in model.classes_])
    attribute("nodes_falsenodeids", ints, np.where(branch, right, 0))
    attribute("nodes_featureids", ints, feature)
    attribute("nodes_hitrates", floats, np.ones(n_nodes))
    attribute("nodes_missing_value_tracks_true", ints, np.zeros(n_nodes, dtype=np.int64))
    attribute("nodes_modes", AttributeProto.STRINGS, np.where(branch, b"BRANCH_LEQ", b"LEAF"))
    attribute("nodes_nodeids", ints, node_ids)
    attribute("nodes_treeids", ints, tree_ids)
    attribute("nodes_truenodeids", ints, np.where(branch, left, 0))
    attribute("nodes_values", floats, threshold)
    node.attribute.add(name="post_transform", type=AttributeProto.STRING, s=b"NONE")
    data: bytes = onx.SerializeToString()
    return data


TABLE_CONVERTER: Final = "batcomputer table_onnx (predict_proba of every combination of inputs)"


def _consecutive(grid: Sequence[float]) -> bool:
    return len(grid) > 0 and all(v == grid[0] + i for i, v in enumerate(grid))


def table_onnx(grids: Sequence[Sequence[float]], table: np.ndarray, classes: Any) -> bytes:
    """A model whose inputs take finitely many values, as the table of its answers.

    ``grids`` are each input's values, each a run of consecutive integers (category codes,
    bounded integers); ``table`` is ``predict_proba`` of every combination, in
    ``itertools.product(*grids)`` order. The graph computes a row's place in the table
    (``sum((x - first) * stride)``) and gathers its probabilities and label: the estimator's
    own float64 numbers, whatever its kind or size (the reference forest is 1.4 million
    nodes, 53 MB and 600 MB of onnxruntime session; its table is 6,864 rows, 110 KB). A row
    with a value outside its grid (not a whole number, out of range, NaN) gets NaN
    probabilities and label -1: the table knows nothing about it, and the server refuses
    such values before they get here.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    sizes = [len(g) for g in grids]
    strides = [math.prod(sizes[j + 1:]) for j in range(len(sizes))]
    n = len(table)
    proba = np.vstack([np.asarray(table, dtype=np.float64),
                       np.full((1, table.shape[1]), np.nan)])
    labels = np.append(np.asarray(classes, dtype=np.int64)[np.argmax(table, axis=1)], -1)

    def const(name: str, value: Any) -> Any:
        return helper.make_node("Constant", [], [name],
                                value=numpy_helper.from_array(np.asarray(value), name))

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        return helper.make_node(op, inputs, [output], **attrs)

    nodes = [
        const("first", np.array([g[0] for g in grids], dtype=np.float64)),
        const("sizes", np.array(sizes, dtype=np.float64)),
        const("strides", np.array(strides, dtype=np.float64)),
        const("zero", np.array(0.0)),
        const("missing", np.array(n, dtype=np.int64)),
        const("axis", np.array([1], dtype=np.int64)),
        const("table", proba),
        const("table_labels", labels),
        node("Sub", ["inputs", "first"], "place"),  # each value's place in its grid
        node("GreaterOrEqual", ["place", "zero"], "not_below"),
        node("Less", ["place", "sizes"], "not_above"),
        node("Floor", ["place"], "floored"),
        node("Equal", ["floored", "place"], "whole"),
        node("And", ["not_below", "not_above"], "in_range"),
        node("And", ["in_range", "whole"], "on_grid"),
        node("Cast", ["on_grid"], "on_grid_number", to=TensorProto.DOUBLE),
        node("ReduceMin", ["on_grid_number", "axis"], "row_number", keepdims=0),
        node("Cast", ["row_number"], "row_on_grid", to=TensorProto.BOOL),
        node("Where", ["on_grid", "place", "zero"], "safe_place"),
        node("MatMul", ["safe_place", "strides"], "index_number"),  # exact: below 2**53
        node("Cast", ["index_number"], "index_found", to=TensorProto.INT64),
        node("Where", ["row_on_grid", "index_found", "missing"], "index"),
        node("Gather", ["table", "index"], OUTPUT, axis=0),
        node("Gather", ["table_labels", "index"], "label", axis=0),
    ]
    graph = helper.make_graph(
        nodes, "batcomputer",
        [helper.make_tensor_value_info("inputs", TensorProto.DOUBLE, [None, len(grids)])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None, table.shape[1]])])
    onx = helper.make_model(graph, ir_version=10, producer_name="batcomputer",
                            opset_imports=[helper.make_opsetid("", 21)])
    data: bytes = onx.SerializeToString()
    return data


def _trees(model: Any) -> Iterator[Any]:
    """Every fitted scikit-learn decision tree (``tree_``) inside ``model``."""
    import numpy as np

    if hasattr(model, "tree_"):
        yield model
    for step in getattr(model, "steps", ()):  # a Pipeline
        yield from _trees(step[1])
    estimators = getattr(model, "estimators_", None)
    if isinstance(estimators, list | np.ndarray):
        for estimator in np.ravel(np.asarray(estimators, dtype=object)):
            yield from _trees(estimator)


def _split_thresholds(model: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(thresholds, which are splits) of every tree inside ``model``, as editable views:
    scikit-learn's decision trees (``tree_``) and histogram gradient boosting's
    predictors (``_predictors``)."""
    for tree in _trees(model):
        yield tree.tree_.threshold, tree.tree_.children_left != -1
    for step in [model, *(s[1] for s in getattr(model, "steps", ()))]:
        for predictors in getattr(step, "_predictors", ()):
            for predictor in predictors:
                nodes = predictor.nodes
                yield nodes["num_threshold"], nodes["is_leaf"] == 0


def _floor_thresholds(model: Any) -> Any | None:
    """A copy of a tree model whose split thresholds are float32 values, rounded down:
    for float32 inputs it decides exactly alike. None if ``model`` has no trees."""
    if next(_split_thresholds(model), None) is None:
        return None
    twin = copy.deepcopy(model)
    for thresholds, split in _split_thresholds(twin):
        if split.any():
            thresholds[split] = floor_float32(thresholds[split])
    return twin


def floor_float32(values: np.ndarray) -> np.ndarray:
    """The largest float32 not above each value, as float64."""
    import numpy as np

    rounded = values.astype(np.float32)
    above = rounded.astype(np.float64) > values
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded.astype(np.float64)


def input_sample(lookup: Lookup, schema_inputs: Sequence[dict[str, Any]], x_train: np.ndarray,
                 *, seed: int = 0, rows: int = SAMPLE_ROWS) -> tuple[np.ndarray, str]:
    """Inputs the model may be asked about, and what they are in words: every combination
    when the input space has at most GRID_LIMIT of them, else ``rows`` random ones (each
    numeric input drawn from its whole declared range, from values seen in training and
    from their float32 neighbours, where tree splits sit)."""
    import numpy as np

    grids = input_grids(lookup, schema_inputs)
    if grids is not None:
        size = math.prod(len(g) for g in grids)
        every = np.array(list(itertools.product(*grids)),
                         dtype=np.float64).reshape(size, len(grids))
        return every, f"all {size:,} combinations of inputs"
    described = {i.get("name"): i for i in schema_inputs}
    rng = np.random.default_rng(seed)
    columns = []
    for j, name in enumerate(lookup):
        grid = _grid(lookup[name], described.get(name, {}))
        if grid is not None:
            columns.append(rng.choice(np.asarray(grid, dtype=np.float64), rows))
        else:
            columns.append(_numeric_sample(rng, described.get(name, {}), x_train[:, j], rows))
    return np.column_stack(columns), f"{rows:,} sampled inputs"


def input_grids(lookup: Lookup, schema_inputs: Sequence[dict[str, Any]]
                ) -> list[list[float]] | None:
    """Each input's values (category codes, integers from minimum to maximum), when every
    input takes finitely many and their combinations are at most GRID_LIMIT."""
    described = {i.get("name"): i for i in schema_inputs}
    grids = [_grid(codes, described.get(name, {})) for name, codes in lookup.items()]
    found = [g for g in grids if g is not None]
    if len(found) < len(grids) or math.prod(len(g) for g in found) > GRID_LIMIT:
        return None
    return found


def _grid(codes: dict[str, int] | str, entry: dict[str, Any]) -> list[float] | None:
    if isinstance(codes, dict):
        return [float(c) for c in codes.values()]
    low, high = entry.get("minimum"), entry.get("maximum")
    if entry.get("type") == "integer" and isinstance(low, int) and isinstance(high, int):
        return [float(v) for v in range(low, high + 1)] if high - low < GRID_LIMIT else None
    return None


def _numeric_sample(rng: np.random.Generator, entry: dict[str, Any], seen: np.ndarray,
                    rows: int) -> np.ndarray:
    import numpy as np

    seen = seen[np.isfinite(seen)] if len(seen) else np.zeros(1)
    low = entry.get("minimum", float(seen.min()) - 1.0)
    high = entry.get("maximum", float(seen.max()) + 1.0)
    third = rows // 3
    uniform = rng.uniform(low, high, rows - 2 * third)
    picked = rng.choice(seen, 2 * third)
    nudged = picked[third:].astype(np.float32)
    nudged = np.nextafter(nudged, np.where(rng.random(third) < 0.5, np.float32(np.inf),
                                            np.float32(-np.inf))).astype(np.float64)
    values = np.concatenate([uniform, picked[:third], nudged])
    if entry.get("type") == "integer":
        values = np.round(values)
    clipped: np.ndarray = np.clip(values, low, high)
    return clipped
