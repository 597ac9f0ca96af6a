"""PURE: `status.history`, what served each MAJOR and the stable endpoint, and when.

An entry opens when a target starts serving a version (what its ready pods run, as
`status` computes it, not what the spec asks for) and closes when another version
takes over or the target goes away. Entries keep the artifact and digest the version
was served from, so a rollback can name it again without anyone re-typing it. The
list is bounded (oldest closed entries go first) and lives in the BatModel's status,
so it survives operator restarts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

STABLE: Final = "stable"
MAX_ENTRIES: Final = 30


def target(major: int) -> str:
    return f"v{major}"


def _entry(target_: str, version: str, since: str, how: str,
           spec_versions: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    source = spec_versions.get(version, {})
    entry: dict[str, Any] = {"target": target_, "version": version, "since": since, "how": how}
    if source.get("artifact"):
        entry["artifact"] = source["artifact"]
    if source.get("digest"):
        entry["digest"] = source["digest"]
    if source.get("allowPickle"):
        entry["allowPickle"] = True
    return entry


def update(history: Sequence[Mapping[str, Any]], serving: Mapping[str, str],
           spec_versions: Mapping[str, Mapping[str, Any]], now: str,
           limit: int = MAX_ENTRIES, how: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """``serving``: target ("v1", "v2", "stable") -> the version it serves now ("" for
    none). ``spec_versions``: version -> its spec entry (artifact, digest). ``how``: target
    -> how a version that starts serving it now got there, when the caller knows better
    (a canary)."""
    out = [dict(e) for e in history]
    open_ = {e["target"]: e for e in out if not e.get("until")}
    for name, entry in open_.items():
        now_serving = serving.get(name, "")
        if now_serving == entry["version"]:
            continue
        entry["until"] = now
        entry["left"] = (f"replaced by {now_serving}" if now_serving
                         else "retired" if name not in serving else "no ready pods")
    for name, version in serving.items():
        if not version:
            continue
        current = open_.get(name)
        if current is not None and current["version"] == version and not current.get("until"):
            continue
        previous = next((e for e in reversed(out) if e["target"] == name), None)
        if previous is None:
            how_ = "first served"
        elif name != STABLE or previous["version"].split(".")[0] == version.split(".")[0]:
            how_ = "rolled out" if name != STABLE else "rolled out within its MAJOR"
        else:
            how_ = "promoted"
        out.append(_entry(name, version, now, (how or {}).get(name, how_), spec_versions))
    closed = [e for e in out if e.get("until")]
    while len(out) > limit and closed:
        out.remove(closed.pop(0))
    return out


def previous(history: Sequence[Mapping[str, Any]], target_: str) -> Mapping[str, Any] | None:
    """The last version that served ``target_`` before the one serving it now."""
    entries: list[Mapping[str, Any]] = [e for e in history if e["target"] == target_]
    current = next((e for e in reversed(entries) if not e.get("until")), None)
    for entry in reversed(entries):
        if entry is not current and entry.get("until") and (
                current is None or entry["version"] != current["version"]):
            return dict(entry)
    return None
