"""PURE: where a live child differs from what the operator applied.

Only the fields the operator sets are compared (the desired object is the shape):
fields added by the API server (defaults, status, managedFields) or by other tools
are not drift. Lists whose items all have a ``name`` (containers, env, ports,
volumes) are matched by name, other lists compared whole. A value the API server
normalises (``0.5`` CPU stored as ``500m``) shows as a difference here; the caller
then applies, and server-side apply leaves such an object unchanged (same
resourceVersion), which tells a normalisation apart from a hand edit.
"""

from __future__ import annotations

from typing import Any


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """Dotted paths (``spec.template.spec.containers[server].image``) where ``live``
    does not hold what ``desired`` says."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in desired.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in live:
                out.append(where)
            else:
                out += differences(value, live[key], where)
        return out
    if isinstance(desired, list):
        if not isinstance(live, list):
            return [path]
        if desired and all(isinstance(item, dict) and "name" in item for item in desired):
            by_name = {item.get("name"): item for item in live if isinstance(item, dict)}
            out = []
            for item in desired:
                where = f"{path}[{item['name']}]"
                found = by_name.get(item["name"])
                out += [where] if found is None else differences(item, found, where)
            return out
        if len(desired) != len(live):
            return [path]
        out = []
        for i, (want, have) in enumerate(zip(desired, live, strict=True)):
            out += differences(want, have, f"{path}[{i}]")
        return out
    return [] if _same(desired, live) else [path]


def _same(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # "8080" in a manifest and 8080 stored (and the reverse) are the same value.
    return not isinstance(want, bool) and not isinstance(have, bool) and str(want) == str(have)
