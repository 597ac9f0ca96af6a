"""Per-row randomness that does not depend on the order of rows or files: keys and draws.

Every row gets a 64-bit key from what it is, not where it is read: a hash of its Crime ID
(police.uk gives every crime with an outcome one), or, for a row without one, of its file's
content digest and line. A draw is a hash of the key and the seed, so the same data and seed
put the same rows in the hold-out set and the training sample on any machine, in any file
layout, read in any batch size, and a row's fate is decided before any aggregation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

ID_WIDTH: Final = 64
"""police.uk Crime IDs are 64 hex digits: keys of IDs this wide take the fast path."""
HOLD_OUT: Final = 0x5BD1E995
SAMPLE: Final = 0x27D4EB2F


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit (uint64, wrapping)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        mixed: np.ndarray = x ^ (x >> np.uint64(31))
        return mixed


def _hash_fixed(words: np.ndarray, length: int) -> np.ndarray:
    """Hash rows of uint64 words (a string's bytes, zero-padded), column by column."""
    out = np.full(len(words), np.uint64(length))
    for j in range(words.shape[1]):
        out = _mix(out ^ words[:, j])
    return out


def hash_strings(values: pa.Array) -> np.ndarray:
    """A uint64 hash of each string (UTF-8 bytes). Vectorised: strings of `ID_WIDTH` bytes
    are read in place as 8 words each; other lengths are padded one length at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = values.cast(pa.binary())
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.empty(len(values), dtype=np.uint64)
    for length in np.unique(lengths):
        where = np.flatnonzero(lengths == length)
        chosen = values.take(pa.array(where)) if len(where) < len(values) else values
        padded = -(-int(length) // 8) * 8
        offsets = np.frombuffer(chosen.buffers()[1], dtype=np.int32)[chosen.offset:]
        start = int(offsets[0])
        data = chosen.buffers()[2] or b""
        raw = np.frombuffer(data, dtype=np.uint8)[start:start + len(where) * int(length)]
        matrix = np.zeros((len(where), padded), dtype=np.uint8)
        if length:
            matrix[:, :length] = raw.reshape(len(where), int(length))
        out[where] = _hash_fixed(matrix.view(np.uint64), int(length))
    return out


def row_keys(crime_ids: pa.Array, file_key: int, lines: np.ndarray) -> np.ndarray:
    """Each row's key: its Crime ID's hash, or its file's and line's when it has none."""
    import pyarrow.compute as pc

    keys = hash_strings(crime_ids)
    no_id = pc.equal(crime_ids, "").to_numpy(zero_copy_only=False)
    if no_id.any():
        keys[no_id] = place_keys(file_key, lines[no_id])
    return keys


def place_keys(file_key: int | np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The keys of rows without a Crime ID: a hash of their file's key (one, or one per
    row) and their line (never 0, which marks a row that has an ID where keys are gathered)."""
    keys = _mix(np.asarray(file_key, dtype=np.uint64)
                ^ _mix(lines.astype(np.int64).astype(np.uint64)))
    keys[keys == 0] = 1
    return keys


def uniform(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A draw in [0, 1) per key, independent across ``stream``s and seeds."""
    salt = _mix(np.array([(seed & 0xFFFFFFFF) << 32 | stream], dtype=np.uint64))[0]
    return (_mix(keys ^ salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hold_out(keys: np.ndarray, seed: int, test_size: float) -> np.ndarray:
    """True for the rows of the hold-out set: a share ``test_size`` of rows, drawn per row."""
    return uniform(keys, seed, HOLD_OUT) < test_size
