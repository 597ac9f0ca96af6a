"""PURE: what the admin commands change in a BatModel, and how its state is shown.

`promote_patch` and `rollback_patch` return merge patches of the BatModel's spec (the
operator then does the work, as for any spec change); `rollback_patch` takes the version,
artifact and digest to go back to from `status.history`, so nobody re-types them.
`render_status` is what `batcomputer status` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batcomputer.operator import history


class AdminError(ValueError):
    """The command cannot be carried out on this BatModel; the message says why."""


def _versions(bm: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(v) for v in (bm.get("spec") or {}).get("versions") or []]


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def promote_patch(bm: Mapping[str, Any], version: str) -> dict[str, Any]:
    listed = [str(v.get("version")) for v in _versions(bm)]
    if version not in listed:
        raise AdminError(f"{version} is not listed in {bm['metadata']['name']}'s spec.versions "
                         f"({', '.join(listed)}); add it first")
    return {"spec": {"promoted": version}}


def rollback_patch(bm: Mapping[str, Any], major: int | None = None) -> tuple[dict[str, Any], str]:
    """Back to the version that served before: the stable endpoint's (``major=None``) or
    one MAJOR's. Returns the patch and a sentence saying what it does."""
    name = bm["metadata"]["name"]
    entries = (bm.get("status") or {}).get("history") or []
    where = "the stable endpoint" if major is None else f"MAJOR {major}"
    back = history.previous(entries, history.STABLE if major is None else history.target(major))
    if back is None:
        raise AdminError(f"{name}: no earlier version served {where} (status.history has none)")
    version = str(back["version"])
    versions = _versions(bm)
    spec = bm.get("spec") or {}
    entry = {"version": version, "artifact": back.get("artifact")}
    if back.get("digest"):
        entry["digest"] = back["digest"]
    if back.get("allowPickle"):
        entry["allowPickle"] = True
    if not entry["artifact"]:
        raise AdminError(f"{name}: history does not say where {version} was served from")
    listed = {str(v.get("version")) for v in versions}
    changed = version not in listed
    if changed:
        # Replace the entry of that MAJOR (or add it back, if it was retired).
        versions = [v for v in versions if _major(str(v.get("version"))) != _major(version)] + [entry]
        versions.sort(key=lambda v: _major(str(v["version"])))
    patch: dict[str, Any] = {"spec": {}}
    if changed:
        patch["spec"]["versions"] = versions
    promoted = spec.get("promoted")
    if major is None or (promoted and _major(str(promoted)) == _major(version) and changed):
        patch["spec"]["promoted"] = version
    if not patch["spec"]:
        raise AdminError(f"{name}: {where} already serves {version}")
    what = f"{where} of {name} back to {version}"
    if changed:
        what += f" (from {entry['artifact']})"
    return patch, what


CANARY_ANNOTATION = "batcomputer.io/canary"


def canary_patch(bm: Mapping[str, Any], action: str) -> dict[str, Any]:
    """Decide a running canary by hand: promote (complete it now) or abort."""
    running = [c for c in (bm.get("status") or {}).get("canaries") or [] if c.get("phase") == "Running"]
    if not running:
        raise AdminError(f"{bm['metadata']['name']} has no canary running")
    return {"metadata": {"annotations": {CANARY_ANNOTATION: action}}}


def render_status(bm: Mapping[str, Any], history_lines: int = 8) -> str:
    meta, st = bm["metadata"], bm.get("status") or {}
    conditions = {c["type"]: c for c in st.get("conditions") or []}
    lines = [f"BatModel {meta['namespace']}/{meta['name']}   promoted {st.get('promoted', '?')}, "
             f"stable endpoint serves {st.get('serving') or 'nothing yet'}"]
    if st.get("observedGeneration") != meta.get("generation"):
        lines.append(f"  (status is for generation {st.get('observedGeneration')}; "
                     f"the spec is at {meta.get('generation')})")
    rows = [("VERSION", "MAJOR", "PHASE", "READY", "SERVING", "ENDPOINT")]
    for v in st.get("versions") or []:
        rows.append((v["version"], str(v["major"]), v["phase"],
                     f"{v.get('readyReplicas', 0)}/{v.get('replicas', 0)}", v.get("serving") or "-",
                     v.get("endpoint", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if st.get("v2Endpoint"):
        lines.append(f"  Open Inference Protocol (V2): {st['v2Endpoint']} (each MAJOR's Service: "
                     f"the same path)")
    for v in st.get("versions") or []:
        if v["phase"] != "Ready":
            lines.append(f"  {v['version']}: {v['reason']}: {v['message']}")
    for c in st.get("canaries") or []:
        lines.append(f"  canary MAJOR {c['major']}: {c['current']} -> {c['candidate']} {c['phase']}, "
                     f"{c.get('message', '')}")
        if c.get("figures"):
            lines.append("    last step: " + ", ".join(f"{k} {v}" for k, v in c["figures"].items()))
    for kind in ("Ready", "Progressing", "Degraded"):
        if kind in conditions:
            c = conditions[kind]
            lines.append(f"  {kind}={c['status']} {c['reason']}: {c.get('message', '')}")
    recent = (st.get("history") or [])[-history_lines:]
    if recent:
        lines.append("  history (latest last):")
        for e in recent:
            until = e.get("until") or "now"
            left = f", {e['left']}" if e.get("left") else ""
            lines.append(f"    {e['target']:<7} {e['version']:<12} {e['since']} -> {until}  "
                         f"({e['how']}{left})")
    return "\n".join(lines)
