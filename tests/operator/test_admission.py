"""The admission review, with artifacts as bytes (the real webhook is in tests/e2e)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from batcomputer.operator import admission

SCHEMA = {"inputs": [{"name": "crime", "type": "categorical", "values": ["a", "b"]}],
          "outputs": ["caught", "not_caught"]}
PLACE = {**SCHEMA, "inputs": [*SCHEMA["inputs"], {"name": "place", "type": "categorical",
                                                  "values": ["x"]}]}


FILES = {name: "sha256:" + "0" * 64 for name in ("model.onnx", "lookup.json", "flags.json",
                                                  "model.pkl", "lookup.pkl", "flags.pkl")}
PICKLED = {k: v for k, v in FILES.items() if k.endswith(".pkl")}


def meta(version: str, schema: dict[str, Any] = SCHEMA, files: dict[str, str] = FILES) -> bytes:
    return json.dumps({"name": "crime", "version": version, "schema": schema,
                       "files": files}).encode()


REGISTRY = {f"http://r/{v}/metadata.json": meta(v) for v in ("1.0.0", "1.1.0", "1.2.0-rc.1")}
REGISTRY["http://r/1.2.0/metadata.json"] = meta("1.2.0", PLACE)
REGISTRY["http://r/other/metadata.json"] = meta("1.3.0")
REGISTRY["http://r/old/metadata.json"] = meta("1.1.0", files=PICKLED)


def fetch(url: str) -> bytes:
    if url not in REGISTRY:
        raise OSError(f"404 for {url}")
    return REGISTRY[url]


def model(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "crime"}, "spec": {"versions": list(entries)}}


def entry(version: str, artifact: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"version": version, "artifact": artifact or f"http://r/{version}/", **extra}


def test_a_new_patch_or_minor_with_the_same_api_is_allowed() -> None:
    result = admission.review(model(entry("1.0.0")), model(entry("1.1.0")), fetch)
    assert result.problems == [] and result.warnings == []
    assert admission.review(model(entry("1.1.0")), model(entry("1.2.0-rc.1")), fetch).problems == []


def test_a_minor_that_changes_the_api_is_refused_with_what_to_do() -> None:
    result = admission.review(model(entry("1.1.0"), entry("2.0.0", "pvc://c/2.0.0")),
                              model(entry("1.2.0"), entry("2.0.0", "pvc://c/2.0.0")), fetch)
    assert result.problems == ["1.2.0 changes the API of MAJOR 1 (adds place) that 1.1.0 serves: "
                               "publish it as 3.0.0 and list it as its own entry beside MAJOR 1"]


def test_the_artifact_must_be_the_version_the_entry_names() -> None:
    result = admission.review(None, model(entry("1.1.0", "http://r/other/")), fetch)
    assert result.problems == ["1.1.0 (http://r/other/): the artifact is version 1.3.0, not 1.1.0; "
                               "list it as 1.3.0 or fix the artifact location"]


def test_a_digest_pin_must_match() -> None:
    good = "sha256:" + hashlib.sha256(REGISTRY["http://r/1.0.0/metadata.json"]).hexdigest()
    assert admission.review(None, model(entry("1.0.0", digest=good)), fetch).problems == []
    bad = admission.review(None, model(entry("1.0.0", digest="sha256:" + "0" * 64)), fetch)
    assert "does not match its metadata.json" in bad.problems[0] and good in bad.problems[0]


def test_what_cannot_be_read_is_allowed_with_a_warning() -> None:
    result = admission.review(model(entry("1.0.0")),
                              model(entry("1.1.0", "pvc://store/1.1.0"), entry("2.0.0", "http://r/gone/"),
                                    entry("3.0.0", "s3://models/r/3.0.0/")),
                              fetch)
    assert result.problems == []
    assert [w.split(":")[0] for w in result.warnings] == ["1.1.0 (pvc", "2.0.0 (http", "3.0.0 (s3"]
    assert "its server checks it before it serves" in result.warnings[1]
    assert "not checked at admission" in result.warnings[2]


def test_unchanged_entries_are_not_fetched_again() -> None:
    calls: list[str] = []

    def counting(url: str) -> bytes:
        calls.append(url)
        return fetch(url)

    body = model(entry("1.0.0"))
    assert admission.review(body, {**body, "metadata": {"name": "crime", "labels": {"a": "b"}}},
                            counting).problems == []
    assert calls == []


def test_an_artifact_that_needs_pickles_is_refused_unless_the_entry_allows_them() -> None:
    result = admission.review(None, model(entry("1.1.0", "http://r/old/")), fetch)
    assert result.problems == [
        "1.1.0 (http://r/old/): the artifact has no pickle-free form (model.onnx, lookup.json, "
        "flags.json), and its server would have to unpickle model.pkl, which runs code from "
        "the file: republish it with the training CLI, or set allowPickle: true on this entry "
        "if you trust it"]
    allowed = model(entry("1.1.0", "http://r/old/", allowPickle=True))
    assert admission.review(None, allowed, fetch).problems == []
    # Taking the permission back is a change, reviewed again.
    again = admission.review(allowed, model(entry("1.1.0", "http://r/old/")), fetch)
    assert len(again.problems) == 1
