"""police.uk street-level CSV rows for the reader tests (tests/training)."""

from __future__ import annotations

from pathlib import Path

from batcomputer.training import police

HEADER = ",".join(police.STREET_COLUMNS)


def write(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def row(month: str = "2024-03", force: str = "Kent Police", crime: str = "Burglary",
        outcome: str = "Offender given a caution", location: str = "On or near Supermarket") -> str:
    return ",".join(["abc", month, force, force, "0.1", "51.2", location, "E01000001",
                     "Area 1", crime, outcome, ""])
