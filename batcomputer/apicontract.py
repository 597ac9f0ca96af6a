"""A model version's API, its fingerprint, and what changed between two APIs.

The API is what apps of a MAJOR depend on: the inputs (names, order, types, accepted
values or ranges) and the output labels. Shared by the training CLI (which records the
fingerprint in metadata.json), the server (which checks the API it loaded against the
one its MAJOR promises) and the operator's admission webhook.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

Api = dict[str, Any]
"""{"inputs": [{"name", "type", "values"? | "minimum"?, "maximum"?}, ...], "outputs": [labels]}"""


def api_of(schema: Mapping[str, Any]) -> Api:
    """The API part of a metadata.json schema (descriptions are documentation, not API)."""
    return {"inputs": [{k: v for k, v in dict(i).items() if k != "description"}
                       for i in schema.get("inputs", [])],
            "outputs": [str(label) for label in schema.get("outputs", [])]}


def fingerprint(api: Mapping[str, Any]) -> str:
    canonical = json.dumps(api, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What ``new`` changes relative to ``old``, in words; empty if they are the same API."""
    old_in = {i["name"]: i for i in old.get("inputs", [])}
    new_in = {i["name"]: i for i in new.get("inputs", [])}
    notes = []
    if added := [n for n in new_in if n not in old_in]:
        notes.append("adds " + ", ".join(added))
    if removed := [n for n in old_in if n not in new_in]:
        notes.append("removes " + ", ".join(removed))
    for name in (n for n in new_in if n in old_in and new_in[n] != old_in[n]):
        notes.append(_input_change(name, old_in[name], new_in[name]))
    if not notes and list(old_in) != list(new_in):
        notes.append("reorders the inputs")
    old_out, new_out = list(old.get("outputs", [])), list(new.get("outputs", []))
    if old_out != new_out:
        notes.append(f"changes the labels from {_names(old_out)} to {_names(new_out)}")
    return notes


def _input_change(name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    if old.get("type") != new.get("type"):
        return f"changes the type of {name} from {old.get('type')} to {new.get('type')}"
    if old.get("values") != new.get("values"):
        before, after = list(old.get("values") or []), list(new.get("values") or [])
        gained = [v for v in after if v not in before]
        lost = [v for v in before if v not in after]
        parts = ([f"adds {_names(gained)}"] if gained else []) + (
            [f"drops {_names(lost)}"] if lost else [])
        return f"changes the values of {name} ({', '.join(parts) or 'new order'})"
    return (f"changes the range of {name} from {_range(old)} to {_range(new)}")


def _range(entry: Mapping[str, Any]) -> str:
    return f"[{entry.get('minimum', '-inf')}, {entry.get('maximum', 'inf')}]"


def _names(values: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
