from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from crimecsv import HEADER, row, write

from batcomputer.training import data, police


def test_generate_is_police_uk_shaped_and_deterministic(tmp_path: Path) -> None:
    a = data.generate(tmp_path / "a", seed=3, months=2, rows_per_file=10)
    b = data.generate(tmp_path / "b", seed=3, months=2, rows_per_file=10)
    assert len(a) == 2 * len(police.FORCES) == 88
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert a[0].relative_to(tmp_path / "a").as_posix() == "2024-01/2024-01-avon-and-somerset-street.csv"
    frame = pd.read_csv(a[0], dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == police.STREET_COLUMNS
    outcomes = set(frame["Last outcome category"]) - {""}
    assert outcomes <= police.CAUGHT_OUTCOMES | police.NOT_CAUGHT_OUTCOMES | police.OPEN_OUTCOMES
    asb = frame[frame["Crime type"] == "Anti-social behaviour"]
    assert (asb["Last outcome category"] == "").all()


def test_other_seed_gives_other_data(tmp_path: Path) -> None:
    a = data.generate(tmp_path / "a", seed=1, months=1, rows_per_file=5)
    b = data.generate(tmp_path / "b", seed=2, months=1, rows_per_file=5)
    assert a[0].read_bytes() != b[0].read_bytes()


def test_reads_file_folder_and_glob_the_same(crime_data: Path) -> None:
    by_folder, report = data.read_crimes(crime_data)
    by_glob, _ = data.read_crimes(str(crime_data / "*" / "*.csv"))
    assert len(by_folder) == len(by_glob) == report.rows_kept
    one_file = sorted(crime_data.rglob("*.csv"))[0]
    single, single_report = data.read_crimes(one_file)
    assert single_report.files == [one_file] and 0 < len(single) < len(by_folder)


def test_drops_and_counts_rows_without_a_usable_outcome(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv",
                 row(), row(outcome="Investigation complete; no suspect identified"),
                 row(crime="Anti-social behaviour", outcome=""),
                 row(outcome="Under investigation"), row(outcome="Abducted by aliens"))
    crimes, report = data.read_crimes(path)
    assert list(crimes["caught"]) == [True, False]
    assert report.rows_read == 5 and report.rows_kept == 2
    assert report.dropped == {"without an outcome": 1, "with an open outcome": 1,
                              "with an unknown outcome": 1}
    assert report.unknown_outcomes == {"Abducted by aliens": 1}


def test_fingerprint_ignores_names_and_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", row())
    b = write(tmp_path / "b.csv", row(force="Essex Police"))
    (tmp_path / "other").mkdir()
    c = write(tmp_path / "other" / "zzz.csv", row())
    assert data.fingerprint([a, b]) == data.fingerprint([b, c])
    assert data.fingerprint([a]) != data.fingerprint([b])


@pytest.mark.parametrize(("content", "message"), [
    ("", "file is empty"),
    ("Month,Crime type\n2024-01,Burglary\n", "x.csv:1: missing column(s) 'Reported by'"),
    (HEADER + "\n" + row() + "\n" + row(month="March 2024") + "\n",
     "x.csv:3: Month 'March 2024' is not YYYY-MM"),
    (HEADER + "\n" + row(force="") + "\n", "x.csv:2: 'Reported by' is empty"),
    (HEADER + "\n" + row() + "\n" + row() + ",extra,fields\n", "x.csv:3: not a valid CSV"),
    (HEADER + "\n" + row(crime="Anti-social behaviour", outcome="") + "\n", "no usable rows"),
    (HEADER + "\n" + row() + "\n" + row() + "\n", "same outcome"),
])
def test_bad_data_names_file_line_and_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(data.DataError, match=r".*" + message.replace("(", r"\(").replace(")", r"\)")):
        data.read_crimes(path)


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="no such file"):
        data.read_crimes(tmp_path / "nope" / "*.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="no .csv files"):
        data.read_crimes(tmp_path / "empty")


def test_a_header_only_file_says_what_was_read(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv")
    with pytest.raises(data.DataError) as raised:
        data.read_crimes(path)
    assert "(read 0 rows from 1 file(s), kept 0" in str(raised.value)
    assert "{report" not in str(raised.value)


def test_latin1_files_are_read_and_counted_with_the_first_odd_byte_located(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = write(tmp_path / "a.csv", row(), row(outcome="Investigation complete; no suspect identified"))
    odd = tmp_path / "b.csv"
    text = "\n".join([HEADER, row(location="On or near Café"), row(), ""])
    odd.write_bytes(text.encode("latin-1"))
    bom = tmp_path / "c.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join([HEADER, row(), ""]).encode())
    crimes, report = data.read_crimes(tmp_path)
    assert "On or near Café" in set(crimes["Location"])
    assert report.latin1_files == [odd] and "1 file(s) decoded as Latin-1" in report.summary()
    offset = text.encode("latin-1").index(b"\xe9")
    assert f"b.csv:2: byte 0xe9 at offset {offset} is not UTF-8" in caplog.text
    assert report.rows_read == 5 and good in report.files


def test_latitude_and_longitude_are_kept_stripped_and_optional(tmp_path: Path) -> None:
    with_point = write(tmp_path / "a.csv", row().replace(",51.2,", ", 51.2 ,"),
                       row(outcome="Investigation complete; no suspect identified"))
    crimes, _ = data.read_crimes(with_point)
    assert crimes["Latitude"].tolist() == ["51.2", "51.2"]
    assert crimes["Longitude"].tolist() == ["0.1", "0.1"]
    columns = [c for c in police.STREET_COLUMNS if c not in ("Latitude", "Longitude")]
    without = tmp_path / "b.csv"
    frame = pd.read_csv(with_point, dtype=str, keep_default_na=False)[columns]
    frame.to_csv(without, index=False)
    crimes, report = data.read_crimes(without)
    assert report.rows_kept == 2 and list(crimes["caught"]) == [True, False]
    assert crimes["Latitude"].tolist() == crimes["Longitude"].tolist() == ["", ""]
    both, _ = data.read_crimes(tmp_path)
    assert both["Latitude"].tolist() == ["51.2", "51.2", "", ""]


def test_generated_crimes_near_a_city_are_caught_more_often(crime_data: Path) -> None:
    crimes, _ = data.read_crimes(crime_data)
    lat, lon = crimes["Latitude"].astype(float), crimes["Longitude"].astype(float)
    london = np.hypot(lat - 51.507, (lon + 0.128) * 0.62) < 0.3
    birmingham = np.hypot(lat - 52.486, (lon + 1.890) * 0.61) < 0.3
    near = london | birmingham
    assert crimes["caught"][near].mean() > crimes["caught"][~near].mean() + 0.05


def test_data_may_be_several_sources_and_globs_of_folders(crime_data: Path,
                                                          tmp_path: Path) -> None:
    """Issue 19: `data/2024-0[1-2]` (a glob of folders) and the shell's expansion of it into
    several arguments both name the CSVs under those folders, each once."""
    months = [crime_data / "2024-01", crime_data / "2024-02"]
    expected = sorted(f for m in months for f in m.rglob("*.csv"))
    assert data.find_files(f"{crime_data}/2024-0[1-2]") == expected
    assert data.find_files([str(m) for m in months]) == expected
    assert data.find_files([months[0], f"{crime_data}/2024-0[1-2]/*.csv", months[1]]) == expected
    (tmp_path / "2024-01").mkdir()
    (tmp_path / "2024-01" / "notes.txt").write_text("not data")
    with pytest.raises(data.DataError, match="2024-0.: matches no .csv files"):
        data.find_files(f"{tmp_path}/2024-0?")
    with pytest.raises(data.DataError, match="no such file, folder or matching glob"):
        data.find_files(f"{tmp_path}/1999-*")
