"""Features: from police.uk rows to the model's inputs, the lookup and the API schema.

The lookup (``lookup.pkl``) is an ordered mapping feature name -> either a dict
(categorical: value -> integer code) or the string ``"numeric"``. Its order is
the column order of the model's input matrix. The schema (in metadata.json) says
the same thing in JSON, with the accepted range of numeric inputs; it is what
decides whether two models have the same API.

Features of kind "number" come from columns police.uk may leave empty (crimes
without a map point): rows without a valid value cannot be encoded, so training
drops them (`usable_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

NUMERIC: Final = "numeric"
OTHER: Final = "Other"
Lookup = dict[str, dict[str, int] | str]
Schema = list[dict[str, Any]]


def _place(location: pd.Series) -> pd.Series:
    """'On or near Supermarket' -> 'Supermarket'; empty or 'No Location' -> 'Other'."""
    place = location.str.removeprefix("On or near ").str.strip()
    return place.mask(place.isin(["", "No Location", "No location"]), OTHER)


def _number(text: pd.Series) -> pd.Series:
    """Text -> float64; empty or not a number -> NaN, which `usable_rows` rejects."""
    import pandas as pd

    return pd.to_numeric(text, errors="coerce").astype("float64")


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    kind: str  # "categorical", "integer" or "number"
    column: str
    """The police.uk column it is extracted from."""
    extract: Callable[[pd.DataFrame], pd.Series]
    minimum: float | None = None
    maximum: float | None = None
    rare_to_other: bool = False


FEATURES: Final[dict[str, Feature]] = {
    f.name: f
    for f in (
        Feature("force", "Police force that recorded the crime (police.uk 'Reported by')",
                "categorical", "Reported by", lambda d: d["Reported by"]),
        Feature("crime", "Crime type (police.uk 'Crime type')",
                "categorical", "Crime type", lambda d: d["Crime type"]),
        Feature("month", "Month of the year the crime was recorded, 1-12",
                "integer", "Month", lambda d: d["Month"].str[5:7].astype(int), minimum=1, maximum=12),
        Feature("place", "Kind of place, from police.uk 'Location' ('On or near <place>'); "
                "rare places are 'Other'",
                "categorical", "Location", lambda d: _place(d["Location"]), rare_to_other=True),
        Feature("latitude", "Latitude of the crime's anonymised map point (police.uk 'Latitude'), "
                "WGS84 degrees",
                "number", "Latitude", lambda d: _number(d["Latitude"]), minimum=-90, maximum=90),
        Feature("longitude", "Longitude of the crime's anonymised map point "
                "(police.uk 'Longitude'), WGS84 degrees",
                "number", "Longitude", lambda d: _number(d["Longitude"]), minimum=-180, maximum=180),
    )
}
DEFAULT_FEATURES: Final[tuple[str, ...]] = ("force", "crime", "month")


def parse_feature_names(text: str | Sequence[str]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in (text.split(",") if isinstance(text, str) else text))
    unknown = [n for n in names if n not in FEATURES]
    if unknown or not names:
        raise ValueError(f"unknown feature(s) {unknown}; choose from {', '.join(FEATURES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"feature listed twice in {','.join(names)}")
    return names


def extract(crimes: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Raw feature values (strings, ints or floats), one column per feature."""
    import pandas as pd

    # The values' own arrays (not numpy copies: Python objects for strings, which pandas
    # would turn back into strings), under a fresh index.
    return pd.DataFrame({n: FEATURES[n].extract(crimes).array for n in names})


def usable_rows(raw: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """Which rows hold a finite number within the declared range for every "number"
    feature, and how many do not, keyed like the reader's counts ("without a valid
    latitude/longitude"). No key when no such feature is selected, so models of
    the other features record the same data summary as before."""
    import numpy as np

    checked = [n for n in raw.columns if FEATURES[n].kind == "number"]
    usable = np.ones(len(raw), dtype=bool)
    for name in checked:
        feature = FEATURES[name]
        values = raw[name].to_numpy(dtype=np.float64)
        usable &= np.isfinite(values)
        if feature.minimum is not None:
            usable &= values >= feature.minimum
        if feature.maximum is not None:
            usable &= values <= feature.maximum
    if not checked:
        return usable, {}
    return usable, {f"without a valid {'/'.join(checked)}": int((~usable).sum())}


def build_lookup(raw: pd.DataFrame, *, min_share: float = 0.005, max_values: int = 30) -> Lookup:
    """Codes are given in sorted value order, so the same data gives the same lookup.
    Values of a ``rare_to_other`` feature that make up less than ``min_share`` of
    the rows (or beyond the ``max_values`` most frequent) become 'Other'."""
    lookup: Lookup = {}
    for name in raw.columns:
        if FEATURES[name].kind != "categorical":
            lookup[name] = NUMERIC
            continue
        lookup[name] = lookup_from_counts(name, raw[name].value_counts(), len(raw),
                                          min_share=min_share, max_values=max_values)
    return lookup


def lookup_from_counts(name: str, counts: pd.Series, rows: int, *, min_share: float = 0.005,
                       max_values: int = 30) -> dict[str, int]:
    """A categorical feature's codes from its values' row counts (see `build_lookup`)."""
    min_count = max(1, int(min_share * rows))
    if FEATURES[name].rare_to_other:
        frequent = counts[counts >= min_count].sort_index(kind="stable")
        frequent = frequent.sort_values(ascending=False, kind="stable").head(max_values - 1)
        values = sorted(set(frequent.index) | {OTHER})
    else:
        values = sorted(counts.index)
    return {str(v): i for i, v in enumerate(values)}


def encode(raw: pd.DataFrame, lookup: Lookup) -> np.ndarray:
    """The model's input matrix (float64, columns in lookup order)."""
    import numpy as np

    columns = []
    for name, codes in lookup.items():
        column = raw[name]
        if isinstance(codes, dict):
            fallback = codes.get(OTHER)
            mapped = column.map(codes)
            if fallback is not None:
                mapped = mapped.fillna(fallback)
            if mapped.isna().any():
                missing = sorted(column[mapped.isna()].unique())[:5]
                raise ValueError(f"{name}: values not in lookup: {missing}")
            columns.append(mapped.to_numpy(dtype=np.float64))
        else:
            columns.append(column.to_numpy(dtype=np.float64))
    return np.column_stack(columns)


def schema(lookup: Lookup, labels: Sequence[str]) -> dict[str, Any]:
    """The model's API in JSON: inputs in order with their type and accepted values,
    and the output labels. Two models with equal schemas are API-compatible."""
    inputs: Schema = []
    for name, codes in lookup.items():
        feature = FEATURES.get(name)
        entry: dict[str, Any] = {"name": name}
        if feature is not None:
            entry["description"] = feature.description
        if isinstance(codes, dict):
            entry.update(type="categorical", values=list(codes))
        else:
            entry["type"] = feature.kind if feature else "number"
            if feature is not None and feature.minimum is not None:
                entry["minimum"] = feature.minimum
            if feature is not None and feature.maximum is not None:
                entry["maximum"] = feature.maximum
        inputs.append(entry)
    return {"inputs": inputs, "outputs": list(labels)}
