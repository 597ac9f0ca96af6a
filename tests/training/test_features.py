"""Features of kind "number" (latitude, longitude): extract, encode, schema and usable rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from batcomputer.training import features


def crimes(lat: list[str], lon: list[str]) -> pd.DataFrame:
    n = len(lat)
    return pd.DataFrame({"Reported by": ["Kent Police"] * n, "Crime type": ["Burglary"] * n,
                         "Month": ["2024-03"] * n, "Location": ["On or near Supermarket"] * n,
                         "Latitude": lat, "Longitude": lon})


def test_latitude_and_longitude_extract_and_encode_as_float64() -> None:
    raw = features.extract(crimes(["51.2", "", "north"], ["0.1", "-1.5", "2"]),
                           ("force", "latitude", "longitude"))
    assert raw["latitude"].tolist()[0] == 51.2 and raw["latitude"].isna().tolist() == [False, True, True]
    assert raw["longitude"].tolist() == [0.1, -1.5, 2.0]
    lookup = features.build_lookup(raw)
    assert lookup["latitude"] == lookup["longitude"] == features.NUMERIC
    x = features.encode(raw.iloc[:1], lookup)
    assert x.dtype == np.float64 and x.tolist() == [[0.0, 51.2, 0.1]]


def test_schema_states_the_range_of_numbers() -> None:
    lookup: features.Lookup = {"latitude": features.NUMERIC, "longitude": features.NUMERIC}
    latitude, longitude = features.schema(lookup, ["not_caught", "caught"])["inputs"]
    assert latitude == {"name": "latitude", "type": "number", "minimum": -90, "maximum": 90,
                        "description": features.FEATURES["latitude"].description}
    assert (longitude["type"], longitude["minimum"], longitude["maximum"]) == ("number", -180, 180)
    assert "WGS84" in latitude["description"] and "anonymised" in latitude["description"]


def test_rows_without_a_valid_map_point_are_not_usable() -> None:
    frame = crimes(["51.2", "", "n/a", "91", "-90", "inf", "52"],
                   ["0.1", "0.1", "0.1", "0.1", "180", "0.1", "-181"])
    usable, dropped = features.usable_rows(features.extract(frame, ("latitude", "longitude")))
    assert usable.tolist() == [True, False, False, False, True, False, False]
    assert dropped == {"without a valid latitude/longitude": 5}
    usable, dropped = features.usable_rows(features.extract(frame, ("latitude",)))
    assert usable.tolist() == [True, False, False, False, True, False, True]
    assert dropped == {"without a valid latitude": 4}


def test_other_features_drop_nothing() -> None:
    frame = crimes(["", "x"], ["", ""])
    usable, dropped = features.usable_rows(features.extract(frame, features.DEFAULT_FEATURES))
    assert usable.all() and dropped == {}
