from __future__ import annotations

from batcomputer import apicontract

BASE = {"inputs": [{"name": "crime", "type": "categorical", "values": ["burglary", "drugs"],
                    "description": "what happened"},
                   {"name": "month", "type": "integer", "minimum": 1, "maximum": 12}],
        "outputs": ["caught", "not_caught"]}


def test_descriptions_are_not_api_and_the_fingerprint_is_stable() -> None:
    described = apicontract.api_of(BASE)
    assert "description" not in described["inputs"][0]
    edited = {**BASE, "inputs": [{**BASE["inputs"][0], "description": "reworded"}, BASE["inputs"][1]]}
    assert apicontract.fingerprint(apicontract.api_of(edited)) == apicontract.fingerprint(described)
    assert apicontract.fingerprint(described).startswith("sha256:")
    assert apicontract.changes(described, apicontract.api_of(edited)) == []


def test_changes_are_said_in_words() -> None:
    old = apicontract.api_of(BASE)
    new = apicontract.api_of({
        "inputs": [{"name": "crime", "type": "categorical", "values": ["burglary", "theft"]},
                   {"name": "month", "type": "integer", "minimum": 1, "maximum": 24},
                   {"name": "place", "type": "categorical", "values": ["a"]}],
        "outputs": ["caught"]})
    assert apicontract.changes(old, new) == [
        "adds place",
        "changes the values of crime (adds theft, drops drugs)",
        "changes the range of month from [1, 12] to [1, 24]",
        "changes the labels from caught, not_caught to caught",
    ]
    assert apicontract.fingerprint(old) != apicontract.fingerprint(new)


def test_order_is_api() -> None:
    old = apicontract.api_of(BASE)
    swapped = {**old, "inputs": list(reversed(old["inputs"]))}
    assert apicontract.changes(old, swapped) == ["reorders the inputs"]
    assert apicontract.fingerprint(old) != apicontract.fingerprint(swapped)
