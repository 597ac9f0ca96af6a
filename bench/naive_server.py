"""The baseline: the straightforward Flask wrapper most model servers start as.

It loads the pickles at import (in every gunicorn worker) and calls
``predict_proba`` on every request, one row or one vectorised batch. Run with
``BENCH_ARTIFACT=<artifact folder> gunicorn -w 2 --chdir bench naive_server:app``.
It does only what is needed to answer the same requests as the real server.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, jsonify, request

ARTIFACT = Path(os.environ["BENCH_ARTIFACT"])
model = pickle.loads((ARTIFACT / "model.pkl").read_bytes())
lookup = pickle.loads((ARTIFACT / "lookup.pkl").read_bytes())
flags = pickle.loads((ARTIFACT / "flags.pkl").read_bytes())

app = Flask(__name__)


def encode(row: dict[str, Any]) -> list[float]:
    return [float(codes[row[name]]) if isinstance(codes, dict) else float(row[name])
            for name, codes in lookup.items()]


@app.post("/api/predict")
def predict() -> Any:
    data = request.get_json()
    rows = data if isinstance(data, list) else [data]
    proba = model.predict_proba(np.array([encode(r) for r in rows]))
    results = [dict(zip(flags, p, strict=True)) for p in proba.tolist()]
    return jsonify(results if isinstance(data, list) else results[0])


@app.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")
