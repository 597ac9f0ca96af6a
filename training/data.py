"""Read police.uk street-level crime CSVs, and generate realistic ones.

`read_crimes` accepts one file, a glob or a folder (searched recursively for
``*.csv``) and returns one frame of the rows that have a usable outcome, plus a
report of what was dropped and why. Bad files raise `DataError` naming the file,
the line and the problem.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa

from batcomputer.errors import UserError
from batcomputer.training import police

log = logging.getLogger(__name__)

MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
REQUIRED_COLUMNS = ("Month", "Reported by", "Location", "Crime type", "Last outcome category")
# Kept when a file has them (empty strings when not): only the features that use them need them.
OPTIONAL_COLUMNS = ("Latitude", "Longitude")


class DataError(UserError, ValueError):
    """Input data that cannot be used, with the file and line it was found at."""


@dataclass
class ReadReport:
    files: list[Path]
    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    unknown_outcomes: Counter[str] = field(default_factory=Counter)
    fingerprint: str = ""
    latin1_files: list[Path] = field(default_factory=list)
    """Files that were not UTF-8 and were read as Latin-1 (older police.uk exports)."""

    def summary(self) -> str:
        parts = [f"read {self.rows_read:,} rows from {len(self.files)} file(s)",
                 f"kept {self.rows_kept:,}"]
        if self.latin1_files:
            parts.append(f"{len(self.latin1_files)} file(s) decoded as Latin-1")
        parts += [f"dropped {n:,} {why}" for why, n in sorted(self.dropped.items())]
        return ", ".join(parts)


Source = str | Path | Sequence[str | Path]
"""Where the data is: a CSV file, a folder (searched recursively), a glob (of files or
folders), or several of these."""


def find_files(source: Source) -> list[Path]:
    """Resolve ``source`` to a sorted list of CSV files, each once. A folder, or a folder a
    glob matches (``data/2024-0[1-6]``), gives every .csv file under it."""
    if not isinstance(source, str | Path):
        files = sorted({f for each in source for f in find_files(each)})
        if not files:
            raise DataError("no data given: name CSV files, folders or globs")
        return files
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.csv") if p.is_file())
        if not files:
            raise DataError(f"{path}: folder contains no .csv files")
        return files
    if path.is_file():
        return [path]
    matches = [Path(p) for p in glob.glob(str(source), recursive=True)]
    found = sorted({f for m in matches
                    for f in ([m] if m.is_file() else m.rglob("*.csv") if m.is_dir() else [])
                    if f.is_file()})
    if not found:
        raise DataError(f"{source}: no such file, folder or matching glob"
                        if not matches else f"{source}: matches no .csv files")
    return found


def fingerprint(files: list[Path]) -> str:
    """sha256 over the sorted content digests: the same data gives the same
    fingerprint wherever it is stored and whatever its files are called."""
    return combine_digests(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)


def combine_digests(digests: Iterable[str]) -> str:
    """The fingerprint of files with these sha256 hex digests (see `fingerprint`)."""
    return "sha256:" + hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def _encoding(path: Path, report: ReadReport | None, *, warn: bool = True) -> str:
    """UTF-8 (with or without BOM), else Latin-1, which decodes any byte: some police.uk
    archives hold Windows-exported files. The first non-UTF-8 byte is logged with its
    line and file offset, and the file counted in the report."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        return "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        if warn:
            log.warning("%s:%d: byte 0x%02x at offset %d is not UTF-8; reading the file as Latin-1",
                        path, line, data[exc.start], exc.start)
        if report is not None:
            report.latin1_files.append(path)
        return "latin-1"


def _read_one(path: Path, report: ReadReport | None = None) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (expected a police.uk street-level CSV header)")
    encoding = _encoding(path, report)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[],
                                encoding=encoding, index_col=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty ({exc})") from exc
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise DataError(f"{path}:{_first_ragged_line(path, encoding)}: not a valid CSV: "
                        "a row has a different number of fields than the header") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}:1: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"a police.uk street-level file has: {', '.join(police.STREET_COLUMNS)}"
        )
    frame = frame.reindex(columns=[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS], fill_value="")
    frame = frame.apply(lambda col: col.str.strip())
    # Line numbers as in the file: header is line 1.
    frame.index = pd.RangeIndex(2, len(frame) + 2)
    bad_month = ~frame["Month"].str.match(MONTH_RE)
    if bad_month.any():
        line = int(frame.index[bad_month.to_numpy()][0])
        raise DataError(
            f"{path}:{line}: Month {frame.at[line, 'Month']!r} is not YYYY-MM "
            f"({int(bad_month.sum())} such row(s) in this file)"
        )
    for column in ("Reported by", "Crime type"):
        empty = frame[column] == ""
        if empty.any():
            line = int(frame.index[empty.to_numpy()][0])
            raise DataError(f"{path}:{line}: {column!r} is empty")
    return frame


def _first_ragged_line(path: Path, encoding: str = "utf-8") -> int | str:
    with path.open(newline="", encoding=encoding, errors="replace") as handle:
        reader = csv.reader(handle)
        width = len(next(reader, []))
        for fields in reader:
            if len(fields) != width:
                return reader.line_num
    return "?"


def read_crimes(source: Source) -> tuple[pd.DataFrame, ReadReport]:
    """Read every file and keep rows whose outcome says caught or not caught.

    Returns columns Month, Reported by, Location, Crime type, Last outcome
    category, Latitude, Longitude (empty strings where a file has none) and a
    boolean ``caught``.
    """
    files = find_files(source)
    report = ReadReport(files=files)
    frames = []
    for i, path in enumerate(files, 1):
        frames.append(_read_one(path, report))
        if i % 100 == 0 or i == len(files):
            log.info("Read %d/%d files", i, len(files))
    crimes = pd.concat(frames, ignore_index=True)
    report.rows_read = len(crimes)

    outcome = crimes["Last outcome category"]
    no_outcome = outcome == ""
    open_case = outcome.isin(police.OPEN_OUTCOMES)
    caught = outcome.isin(police.CAUGHT_OUTCOMES)
    not_caught = outcome.isin(police.NOT_CAUGHT_OUTCOMES)
    unknown = ~(no_outcome | open_case | caught | not_caught)
    report.dropped["without an outcome"] = int(no_outcome.sum())
    report.dropped["with an open outcome"] = int(open_case.sum())
    report.dropped["with an unknown outcome"] = int(unknown.sum())
    report.unknown_outcomes.update(outcome[unknown].tolist())
    if report.unknown_outcomes:
        log.warning("Dropped rows with outcomes not in the target definition: %s",
                    dict(report.unknown_outcomes.most_common(10)))

    usable = caught | not_caught
    kept = crimes[usable].assign(caught=caught[usable]).reset_index(drop=True)
    report.rows_kept = len(kept)
    report.fingerprint = fingerprint(files)
    if kept.empty:
        raise DataError(
            f"{source}: no usable rows: none of the {report.rows_read:,} rows has an outcome "
            f"that says whether a suspect was caught ({report.summary()})"
        )
    if kept["caught"].nunique() < 2:
        raise DataError(f"{source}: every usable row has the same outcome; nothing to learn")
    return kept, report


# --------------------------------------------------------------------------- generation

def _decimal(values: np.ndarray) -> pa.Array:
    """Floats as CSV text the way pandas writes them: Python's shortest round-trip form.
    Arrow writes the same digits, but never an exponent or a trailing ".0", so those
    few values are written by Python."""
    import pyarrow.compute as pc

    text = pa.array(values).cast(pa.string())
    odd = (np.abs(values) < 1e-4) | (values == np.round(values))
    if not odd.any():
        return text
    return pc.replace_with_mask(text, pa.array(odd), pa.array([repr(float(v)) for v in values[odd]]))


def _csv_rows(fields: list[pa.Array | str]) -> bytes:
    """One CSV line per row from columns of text without separators or quotes (the
    generated values have none), joined by Arrow rather than row by row in Python."""
    import pyarrow.compute as pc

    lines = pc.binary_join_element_wise(*fields, ",")
    # The lines lie end to end in the array's data buffer, between its first and last offset.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    first, last = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    text: bytes = lines.buffers()[2].to_pybytes()[first:last]
    return text


def _months(start: str, count: int) -> list[str]:
    year, month = (int(x) for x in start.split("-"))
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{month:02d}")
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return out


# (latitude, longitude) of a few city centres: generated crimes near one are more often caught.
CITIES: Final[tuple[tuple[float, float], ...]] = (
    (51.507, -0.128), (52.486, -1.890), (53.480, -2.242),  # London, Birmingham, Manchester
    (53.800, -1.549), (51.454, -2.588), (54.978, -1.618),  # Leeds, Bristol, Newcastle
)


def _urban(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A smooth logit term from the map point: up to +0.8 at a city centre, fading
    over ~50 km, centred so it barely moves the overall catch rate."""
    nearest = np.full(lat.shape, np.inf)
    for city_lat, city_lon in CITIES:
        east = (lon - city_lon) * math.cos(math.radians(city_lat))
        nearest = np.minimum(nearest, np.hypot(lat - city_lat, east))
    urban: np.ndarray = 0.8 * np.exp(-((nearest / 0.45) ** 2)) - 0.15
    return urban


def generate(out_dir: str | Path, *, seed: int = 42, months: int = 12, start: str = "2024-01",
             rows_per_file: int = 120) -> list[Path]:
    """Write deterministic police.uk-shaped street-level files, one per force and month
    (``<out>/<YYYY-MM>/<YYYY-MM>-<force>-street.csv``), as the police.uk archive lays them out.

    The chance of "caught" follows a logistic model of force, crime type, month,
    place and distance to a city centre, so a classifier has something real to learn.
    """
    if not MONTH_RE.match(start):
        raise ValueError(f"start month {start!r} is not YYYY-MM")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    forces = list(police.FORCES)
    crimes = list(police.CRIME_TYPES)
    force_effect = dict(zip(forces, rng.normal(0.0, 0.45, len(forces)), strict=True))
    crime_base = {
        "Bicycle theft": -2.6, "Burglary": -1.9, "Criminal damage and arson": -1.8,
        "Drugs": 1.6, "Other crime": -0.4, "Other theft": -2.0, "Possession of weapons": 1.1,
        "Public order": -0.6, "Robbery": -1.2, "Shoplifting": 0.3, "Theft from the person": -2.4,
        "Vehicle crime": -2.5, "Violence and sexual offences": -1.0, "Anti-social behaviour": 0.0,
    }
    crime_weight = np.array([0.25 if c == "Anti-social behaviour" else
                             (0.30 if c == "Violence and sexual offences" else 0.05) for c in crimes])
    crime_weight /= crime_weight.sum()
    place_effect = dict(zip(police.PLACES, rng.normal(0.0, 0.5, len(police.PLACES)), strict=True))
    place_effect["Supermarket"] = 0.9
    # Street names are many and each rare, as on police.uk; they become "Other".
    streets = [f"{a}{b} {c}" for a in ("Ash", "Birch", "Cedar", "Elm", "Hazel", "Holly", "Larch",
                                        "Maple", "Oak", "Rowan", "Willow", "Yew")
               for b in ("", "field", "wood", "brook", "hill", "dale", "mere", "ford")
               for c in ("Street", "Road", "Lane", "Close", "Avenue")]
    caught_outcomes = sorted(police.CAUGHT_OUTCOMES)
    not_caught_outcomes = sorted(police.NOT_CAUGHT_OUTCOMES)
    open_outcomes = sorted(police.OPEN_OUTCOMES)

    # Vectorised: every per-row value is an index into a table of strings (or effects), and
    # each file is one Arrow join of its columns. The rng draws come in the same order as
    # they always have, so the same seed gives the same rows.
    crime_effect = np.array([crime_base[c] for c in crimes])
    crime_text = pa.array(crimes)
    place_text = pa.array(["On or near " + p for p in (*police.PLACES, *streets)])
    place_logit = np.array([place_effect[p] for p in police.PLACES] + [0.0] * len(streets))
    outcome_text = pa.array(["", *caught_outcomes, *not_caught_outcomes, *open_outcomes])
    first_not_caught = 1 + len(caught_outcomes)
    first_open = first_not_caught + len(not_caught_outcomes)
    lsoa_code = pa.array([f"E01{x:06d}" for x in range(35000)])
    lsoa_name = pa.array([f"Area {x // 7:04d}{chr(65 + x % 7)}" for x in range(35000)])
    asb = crimes.index("Anti-social behaviour")
    header = (",".join(police.STREET_COLUMNS) + "\n").encode()

    written: list[Path] = []
    for month in _months(start, months):
        month_number = int(month[5:])
        season = 0.35 * math.sin((month_number - 1) / 12 * 2 * math.pi)
        folder = out / month
        folder.mkdir(parents=True, exist_ok=True)
        for force in forces:
            n = rows_per_file
            crime = rng.choice(len(crimes), size=n, p=crime_weight)
            on_place = rng.random(n) < 0.45
            place = np.where(on_place, rng.choice(len(police.PLACES), size=n),
                             len(police.PLACES) + rng.choice(len(streets), size=n))
            logit = crime_effect[crime] + force_effect[force] + season + place_logit[place]
            # The rng calls keep their order (and so every other column its values);
            # "caught" is decided once the map point it depends on is drawn.
            chance = rng.random(n)
            is_open = rng.random(n) < 0.08
            caught_outcome = 1 + rng.choice(len(caught_outcomes), size=n)
            not_caught_outcome = first_not_caught + rng.choice(len(not_caught_outcomes), size=n)
            open_outcome = first_open + rng.choice(len(open_outcomes), size=n)
            lon = rng.uniform(-4.5, 1.5, n).round(6)
            lat = rng.uniform(50.3, 55.5, n).round(6)
            lsoa = rng.integers(0, 35000, n)
            caught = chance < 1.0 / (1.0 + np.exp(-(logit + _urban(lat, lon))))
            outcome = np.where(caught, caught_outcome, not_caught_outcome)
            outcome = np.where(is_open, open_outcome, outcome)
            outcome = np.where(crime == asb, 0, outcome)
            ids = pa.array(["" if c == asb else hashlib.sha256(f"{seed}/{month}/{force}/{i}".encode())
                            .hexdigest() for i, c in enumerate(crime.tolist())])
            path = folder / f"{month}-{police.FORCES[force]}-street.csv"
            path.write_bytes(header + _csv_rows([
                ids, month, force, force, _decimal(lon), _decimal(lat), place_text.take(place),
                lsoa_code.take(lsoa), lsoa_name.take(lsoa), crime_text.take(crime),
                outcome_text.take(outcome), "\n"]))  # the last field, Context, is empty
            written.append(path)
        log.info("Generated %s (%d files)", month, len(forces))
    return written
