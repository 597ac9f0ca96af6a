"""Read police.uk CSVs as a stream of bounded batches: `data.read_crimes`' rules at Arrow's speed.

`scan` reads the files in order with pyarrow's CSV reader and yields their usable rows
(their outcome says caught or not caught) as pandas frames of at least `ROWS` rows, with the
reader's columns, ``caught`` and ``row_key``. While one file is processed, a second thread
hashes, checks and parses the next (police.uk files are one force and month, a few MB;
a file above `READ_AHEAD` is parsed `BLOCK_SIZE` bytes at a time instead). Files read ahead
are checked in groups of about `ROWS` rows, so that each step's fixed cost is paid once per
group rather than once per file, each row keeping its file's line, key and rules. Memory is
a group of files or a couple of blocks, whatever the number of rows, so the whole archive
streams through.

The rules are `data.read_crimes`' and the tests hold the two readers to the same counts:
UTF-8 with or without a BOM, else Latin-1 (logged and counted); CRLF or LF; quoted fields,
commas and newlines inside them; every field stripped; empty outcomes, open outcomes and
unknown outcomes dropped and counted; the same fingerprint. A bad file raises `DataError`
with the file, the line and the problem, and when one file breaks several rules the
message is the one `read_crimes` gives (a bad month first, then an empty force or crime
type), so the checks are collected over the whole file and raised at its end. Rows with too
few fields are read as if padded with empty fields, as pandas does; rows with too many
make the file invalid.

``row_key`` identifies a row whatever the files are called and wherever they are stored:
a hash of its Crime ID, or, for a row without one, of its file's content digest and line.
The hold-out split and the training sample are drawn from it (see `split`).
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from batcomputer.training import data, police, split
from batcomputer.training.data import DataError, ReadReport

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

BLOCK_SIZE: Final = 8 << 20
"""Bytes of CSV per batch: Arrow parses a few blocks at once, so memory stays near
a small multiple of this."""
CHUNK: Final = 1 << 20
ROWS: Final = 25_000
"""Usable rows per yielded frame (at least, unless the data runs out)."""
READ_AHEAD_FILES: Final = 2
"""Files opened ahead at once, each by its own thread."""
READ_AHEAD: Final = 64 << 20
"""Files up to this size are parsed whole, ahead, in a second thread; larger ones in
`BLOCK_SIZE` batches as they are processed, so memory stays bounded for any file."""
COLUMNS: Final[tuple[str, ...]] = ("Crime ID", *data.REQUIRED_COLUMNS, *data.OPTIONAL_COLUMNS)
CHECKED: Final[frozenset[str]] = frozenset(
    ("Crime ID", "Month", "Reported by", "Crime type", "Last outcome category"))
"""The columns every batch is checked on (month, force, crime type, outcome) or keyed by."""
MONTH_PATTERN: Final = r"^\d{4}-(0[1-9]|1[0-2])$"
assert data.MONTH_RE.pattern == MONTH_PATTERN


@dataclass
class Progress:
    """Logs files and rows read, the rate and the time left, at most every ``every`` seconds."""

    total_bytes: int
    files: int
    label: str = "Read"
    every: float = 5.0
    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)

    def update(self, done_bytes: int, files_done: int, rows_read: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        left = (self.total_bytes - done_bytes) * elapsed / done_bytes if done_bytes else float("nan")
        eta = "done" if final else f"ETA {left:,.0f} s"
        log.info("%s %d/%d files, %s rows in %.0f s (%s rows/s, %.0f MB/s), %s", self.label,
                 files_done, self.files, f"{rows_read:,}", elapsed, f"{rows_read / elapsed:,.0f}",
                 done_bytes / elapsed / 1e6, eta)


@dataclass
class _FileChecks:
    """The first line breaking each rule in one file (raised at the file's end, in
    `read_crimes`' order), and how many rows have a bad month."""

    bad_month: tuple[int, str] | None = None
    bad_months: int = 0
    empty: dict[str, int] = field(default_factory=dict)
    short_rows: list[list[str]] = field(default_factory=list)

    def raise_first(self, path: Path) -> None:
        if self.bad_month is not None:
            line, value = self.bad_month
            raise DataError(f"{path}:{line}: Month {value!r} is not YYYY-MM "
                            f"({self.bad_months} such row(s) in this file)")
        for column in ("Reported by", "Crime type"):
            if column in self.empty:
                raise DataError(f"{path}:{self.empty[column]}: {column!r} is empty")


def _digest_and_encoding(path: Path) -> tuple[str, str, str]:
    """The file's sha256, the encoding to read it with (UTF-8, else Latin-1, which `scan`
    logs and counts, in file order, as `data` does) and its first line of text (the
    header), in one pass."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    first = b""
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
            if len(first) < CHUNK:
                first += chunk
            if utf8 and not (chunk.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    encoding = "utf-8" if utf8 else "latin-1"
    text = first.decode("utf-8" if utf8 else "latin-1", errors="replace").removeprefix("\ufeff")
    return digest.hexdigest(), encoding, text


def _header(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)), [])


def _reader(source: Any, encoding: str, checks: _FileChecks, width: int,
            columns: tuple[str, ...] = COLUMNS) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def invalid(row: Any) -> str:
        if row.actual_columns > row.expected_columns:
            return "error"
        fields = _header(row.text)
        checks.short_rows.append(fields + [""] * (width - len(fields)))
        return "skip"

    return pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=BLOCK_SIZE, encoding=encoding),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
        convert_options=pacsv.ConvertOptions(
            include_columns=list(columns), include_missing_columns=True,
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=False, quoted_strings_can_be_null=False))


OUTCOME_SETS: Final[dict[str, frozenset[str]]] = {
    "caught": police.CAUGHT_OUTCOMES, "not_caught": police.NOT_CAUGHT_OUTCOMES,
    "open": police.OPEN_OUTCOMES}
NO_OUTCOME: Final = len(OUTCOME_SETS)
UNKNOWN: Final = NO_OUTCOME + 1
ID: Final = "_crime_id"
PLACE_KEY: Final = "_place_key"


@functools.cache
def _outcome_table() -> tuple[pa.Array, np.ndarray]:
    """Every known outcome ("" for none) and its kind: the index of its set in
    `OUTCOME_SETS`, or `NO_OUTCOME`; a last entry, `UNKNOWN`, for what is not found (-1)."""
    import pyarrow as pa

    values = ["", *(v for outcomes in OUTCOME_SETS.values() for v in sorted(outcomes))]
    kinds = [NO_OUTCOME, *(i for i, outcomes in enumerate(OUTCOME_SETS.values())
                           for _ in outcomes), UNKNOWN]
    return pa.array(values), np.array(kinds, dtype=np.int8)


class _Scan:
    """The state of one scan: the report, and the counts its final checks need."""

    def __init__(self, files: list[Path], report: ReadReport, progress: Progress | None,
                 columns: tuple[str, ...]) -> None:
        self.files, self.report, self.progress = files, report, progress
        self.columns = columns
        self.digests: list[str] = []
        self.caught = self.not_caught = 0
        self.done_bytes = 0

    def batch(self, table: pa.RecordBatch, lines: np.ndarray, keys: np.ndarray,
              owner: np.ndarray, checks: Sequence[_FileChecks]) -> pa.RecordBatch | None:
        """Check, count and key the rows of ``table`` (one or several files' rows: row r is
        line ``lines[r]`` of file ``owner[r]``, whose key is ``keys[r]`` and whose checks
        are ``checks[owner[r]]``); its usable rows, with the columns asked for."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = table.num_rows
        if n == 0:
            return None
        # A column a file does not have is read as nulls: it is empty.
        column = {c: pc.fill_null(pc.utf8_trim_whitespace(table[c]), "")
                  for c in COLUMNS if c in CHECKED or c in self.columns}
        month_ok = pc.match_substring_regex(column["Month"], MONTH_PATTERN).to_numpy(zero_copy_only=False)
        if not month_ok.all():
            bad = np.flatnonzero(~month_ok)
            for f, first, count in zip(*_first_per_owner(owner, bad), strict=True):
                checks[f].bad_months += count
                if checks[f].bad_month is None:
                    checks[f].bad_month = (int(lines[first]), column["Month"][first].as_py())
        for name in ("Reported by", "Crime type"):
            empty = pc.equal(column[name], "").to_numpy(zero_copy_only=False)
            if empty.any():
                for f, first, _ in zip(*_first_per_owner(owner, np.flatnonzero(empty)), strict=True):
                    checks[f].empty.setdefault(name, int(lines[first]))
        outcome = column["Last outcome category"]
        values, kinds = _outcome_table()
        found = pc.index_in(outcome, value_set=values).fill_null(-1).to_numpy(zero_copy_only=False)
        code = kinds[found]  # -1, not found, is the last entry: unknown
        no_outcome = code == NO_OUTCOME
        kind = {k: code == i for i, k in enumerate(OUTCOME_SETS)}
        unknown = code == UNKNOWN
        report = self.report
        report.rows_read += n
        report.dropped["without an outcome"] += int(no_outcome.sum())
        report.dropped["with an open outcome"] += int(kind["open"].sum())
        report.dropped["with an unknown outcome"] += int(unknown.sum())
        if unknown.any():
            report.unknown_outcomes.update(outcome.filter(pa.array(unknown)).to_pylist())
        usable = kind["caught"] | kind["not_caught"]
        kept = int(usable.sum())
        report.rows_kept += kept
        caught = kind["caught"][usable]
        self.caught += int(caught.sum())
        self.not_caught += kept - int(caught.sum())
        if not kept:
            return None
        mask = pa.array(usable)
        ids = column["Crime ID"].filter(mask)
        # Rows without a Crime ID are keyed by file and line here; the IDs are hashed for
        # many files at once (`_frame`).
        no_id = pc.equal(ids, "").to_numpy(zero_copy_only=False)
        by_place = np.zeros(kept, dtype=np.uint64)
        if no_id.any():
            rows = np.flatnonzero(usable)[no_id]
            by_place[no_id] = split.place_keys(keys[rows], lines[rows])
        return pa.RecordBatch.from_pydict({**{c: column[c].filter(mask) for c in self.columns},
                                           "caught": caught, ID: ids, PLACE_KEY: by_place})

    def process(self, group: list[_Opened], done_files: int) -> Iterator[pa.RecordBatch]:
        """The usable rows of a group of files read ahead, checked together (the fixed cost
        of each step is paid once per group, not per file), or of one large file, block by
        block; then each file's own rules, in file order."""
        import pyarrow as pa

        checks = [opened.checks for opened in group]
        file_keys = [np.uint64(int(opened.digest[:16], 16)) for opened in group]
        self.digests.extend(opened.digest for opened in group)
        if group[0].batches is None:  # a large file: its blocks as they are parsed
            assert len(group) == 1
            line = 2  # the header is line 1
            for table in _batches(group[0]):
                n = table.num_rows
                rows = self.batch(table, np.arange(line, line + n), np.full(n, file_keys[0]),
                                  np.zeros(n, dtype=np.intp), checks)
                line += n
                if self.progress is not None:
                    self.progress.update(self.done_bytes + group[0].position(), done_files,
                                         self.report.rows_read)
                if rows is not None:
                    yield rows
        else:
            tables = [t for opened in group for t in opened.batches or () if t.num_rows]
            sizes = [sum(t.num_rows for t in opened.batches or ()) for opened in group]
            if tables:
                whole = pa.Table.from_batches(tables).combine_chunks().to_batches()[0]
                lines = np.concatenate([np.arange(2, 2 + n) for n in sizes])
                rows = self.batch(whole, lines, np.repeat(np.array(file_keys), sizes),
                                  np.repeat(np.arange(len(group)), sizes), checks)
                if rows is not None:
                    yield rows
        for k, opened in enumerate(group):
            yield from self._short_rows(opened, file_keys[k])
            opened.checks.raise_first(opened.path)
            self.done_bytes += opened.size
            if self.progress is not None:
                self.progress.update(self.done_bytes, done_files + k + 1, self.report.rows_read)

    def _short_rows(self, opened: _Opened, file_key: np.uint64) -> Iterator[pa.RecordBatch]:
        """Rows with too few fields, padded; their lines are not known here (Arrow reports
        none when parsing in parallel), so they get distinct negative ones for the key, and
        a broken rule is reported by `read_crimes`' own reader, which knows them."""
        import pyarrow as pa

        short_rows, checks = opened.checks.short_rows, opened.checks
        if not short_rows:
            return
        where = {name: i for i, name in enumerate(opened.header)}
        short = pa.RecordBatch.from_pydict(
            {c: pa.array([r[where[c]] for r in short_rows] if c in where
                         else [None] * len(short_rows), pa.string())
             for c in opened.columns})
        n = len(short_rows)
        rows = self.batch(short, np.arange(-n, 0), np.full(n, file_key),
                          np.zeros(n, dtype=np.intp), [checks])
        if checks.bad_month or checks.empty:
            data._read_one(opened.path)
        if rows is not None:
            yield rows


def _first_per_owner(owner: np.ndarray, rows: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """For rows (in order) owned by files: each file, its first row and how many it has."""
    files, first, counts = np.unique(owner[rows], return_index=True, return_counts=True)
    return files.tolist(), rows[first].tolist(), counts.tolist()


@dataclass
class _Opened:
    """A file checked up to its header, and its batches when they were read ahead."""

    path: Path
    size: int
    digest: str
    encoding: str
    header: list[str]
    checks: _FileChecks
    columns: tuple[str, ...] = COLUMNS
    """The columns parsed (the others are skipped by the parser)."""
    batches: list[pa.RecordBatch] | None = None
    source: Any = None

    def position(self) -> int:
        """How far reading has got (the reader reads ahead, so up to a block early)."""
        if self.batches is not None or self.source is None or self.source.closed:
            return self.size
        return min(int(self.source.tell()), self.size)


def _open(path: Path, columns: tuple[str, ...] = COLUMNS) -> _Opened:
    """Digest, encoding and header of a file, and its batches if it is small enough to read
    ahead (`scan` runs this for the next file while the current one is processed)."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: file is empty (expected a police.uk street-level CSV header)")
    digest, encoding, text = _digest_and_encoding(path)
    header = _header(text)
    if not header or header == [""]:
        raise DataError(f"{path}: file is empty (no columns in its header)")
    missing = [c for c in data.REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path}:1: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"a police.uk street-level file has: {', '.join(police.STREET_COLUMNS)}")
    opened = _Opened(path, size, digest, encoding, header, _FileChecks(), columns)
    if size <= READ_AHEAD:
        opened.batches = list(_batches(opened))
    return opened


def _batches(opened: _Opened) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    opened.source = source = pa.OSFile(str(opened.path))
    try:
        reader = _reader(source, opened.encoding, opened.checks, len(opened.header),
                         opened.columns)
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
    except pa.ArrowInvalid as exc:
        line = data._first_ragged_line(opened.path, opened.encoding)
        raise DataError(f"{opened.path}:{line}: not a valid CSV: "
                        "a row has a different number of fields than the header") from exc
    finally:
        source.close()


def _frame(batches: list[pa.RecordBatch]) -> pd.DataFrame:
    """One frame of several files' batches, their rows keyed (`split.row_keys`): one
    conversion to pandas and one pass of hashing, not one per file."""
    import pyarrow as pa

    table = pa.Table.from_batches(batches)
    ids = table[ID].combine_chunks()
    keys = split.hash_strings(ids)
    by_place = table[PLACE_KEY].to_numpy()
    no_id = by_place != 0
    keys[no_id] = by_place[no_id]
    frame: pd.DataFrame = table.drop_columns([ID, PLACE_KEY]).to_pandas()
    frame["row_key"] = keys
    return frame


def scan(source: data.Source, report: ReadReport | None = None, *,
         progress: bool = False, label: str = "Read", warn: bool = True,
         columns: Sequence[str] = COLUMNS[1:]) -> Iterator[pd.DataFrame]:
    """Yield the usable rows of every file, batch by batch, filling ``report`` (counts,
    drops, Latin-1 files, fingerprint) as `data.read_crimes` does; its errors are raised
    when the data turns out to be unusable, after the last batch. Without ``warn``, what
    `read_crimes` would log as a warning is only counted (for a second pass). The frames
    hold ``columns`` (by default every column the reader keeps), ``caught`` and
    ``row_key``; the columns every check needs are read whatever ``columns`` says."""
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"not a column of the reader: {', '.join(unknown)}")
    files = data.find_files(source)
    report = report if report is not None else ReadReport(files=files)
    report.files = files
    for reason in ("without an outcome", "with an open outcome", "with an unknown outcome"):
        report.dropped.setdefault(reason, 0)
    meter = Progress(sum(f.stat().st_size for f in files), len(files), label) if progress else None
    kept = tuple(c for c in COLUMNS if c in columns)
    parsed = tuple(c for c in COLUMNS if c in CHECKED or c in kept)
    state = _Scan(files, report, meter, kept)
    # Small files (police.uk has one per force and month) are yielded together, so that
    # each frame's fixed costs downstream are paid per ~ROWS rows, not per file.
    pending: list[pa.RecordBatch] = []
    held = 0
    # Threads open (hash, check, parse) the next files while these are processed: most of
    # either job runs outside the GIL, so both cores are busy. Files read ahead are
    # processed in groups of about ROWS rows, in file order.
    group: list[_Opened] = []
    group_rows = done = 0

    def drain(groups: list[list[_Opened]]) -> Iterator[pd.DataFrame]:
        nonlocal pending, held, done
        for each in groups:
            for batch in state.process(each, done):
                pending.append(batch)
                held += batch.num_rows
                if held >= ROWS:
                    yield _frame(pending)
                    pending, held = [], 0
            done += len(each)

    with ThreadPoolExecutor(READ_AHEAD_FILES, thread_name_prefix="csv-read-ahead") as pool:
        ahead = deque(pool.submit(_open, path, parsed) for path in files[:READ_AHEAD_FILES])
        for i in range(len(files)):
            try:
                opened = ahead.popleft().result()
            except Exception:
                yield from drain([group] if group else [])  # the files before a bad one fail first
                raise
            if i + READ_AHEAD_FILES < len(files):
                ahead.append(pool.submit(_open, files[i + READ_AHEAD_FILES], parsed))
            if opened.encoding == "latin-1":  # logged and counted in file order
                data._encoding(opened.path, report, warn=warn)
            if opened.batches is None:  # a large file: on its own, after the group before it
                groups = [g for g in (group, [opened]) if g]
            else:
                group.append(opened)
                group_rows += sum(t.num_rows for t in opened.batches)
                if group_rows < ROWS and i + 1 < len(files):
                    continue
                groups = [group]
            yield from drain(groups)
            group, group_rows = [], 0
    if pending:
        yield _frame(pending)
    if meter is not None:
        meter.update(state.done_bytes, len(files), report.rows_read, final=True)
    report.fingerprint = data.combine_digests(state.digests)
    if warn and report.unknown_outcomes:
        log.warning("Dropped rows with outcomes not in the target definition: %s",
                    dict(Counter(report.unknown_outcomes).most_common(10)))
    if not report.rows_kept:
        raise DataError(
            f"{source}: no usable rows: none of the {report.rows_read:,} rows has an outcome "
            f"that says whether a suspect was caught ({report.summary()})")
    if not (state.caught and state.not_caught):
        raise DataError(f"{source}: every usable row has the same outcome; nothing to learn")
