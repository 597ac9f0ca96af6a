"""Benchmark training: today's in-memory path against the streaming one, in one run.

    nice -n 10 .venv/bin/python bench/training.py [--rows 1000000,10000000] [--data /tmp/...]
        [--baseline REV|none]

For each size it generates police.uk-shaped data (12 months x 44 forces, `generate-data`,
timed), then trains the reference model (force, crime, month; 100-tree random forest, seed
42) from the same files with each engine, each in its own process, one after the other:
- memory: `data.read_crimes` + `train.train` (every row in a pandas frame; what
  `batcomputer train --engine memory` runs, and what `train` ran before streaming);
- stream: `aggregate.collect` + `train.train_set` (`batcomputer train`'s default).
Both are timed from process start to hold-out metrics (imports, reading, features,
fitting, scoring), with the peak resident memory of the process (ru_maxrss from wait4).
Then both run as the whole command, `batcomputer -q train --engine E`, which adds the fast
form's check and the publishing: their cost depends on the model (a 100-tree forest with
a leaf per combination, about 1.4 million nodes, pickled; its fast form is the table of its
6,864 answers), not on the rows, except that the memory engine checks up to 100,000 hold-out
rows where the stream engine checks its hold-out combinations.

And, first, `batcomputer -q train` as it was when streaming was asked for (issue 17: "40 s
and 523 MB at 1.06 million rows"), the baseline the goal is set against: the package at
commit BASELINE, exported from this checkout's history and run with this venv. The memory
engine is that path's reader and trainer, but it has since shared the stream engine's
faster features and threaded forest, so both are printed.

Printed: the figures per size and engine, both engines' hold-out metrics (rows drawn
differently, so they agree within noise, not to the digit), and the projection for the
80-million-row police.uk archive from the stream engine's measured rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASELINE = "f8e85e6"
"""The commit whose `train` is the path issue 17 measured (it only changed generate-data)."""
PYTHON = sys.executable
BIN = Path(PYTHON).parent
REPO = Path(__file__).resolve().parents[1]
ARCHIVE_ROWS = 80_000_000
FILES = 12 * 44


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``argv`` and return its wall time, its own peak RSS (bytes) and its stdout."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: exec the command with stdout to the pipe
        os.close(read)
        os.dup2(write, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execve(argv[0], argv, os.environ if env is None else env)
    os.close(write)
    started = time.perf_counter()
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    os.close(read)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv)} failed with status {status}")
    return wall, usage.ru_maxrss * 1024, b"".join(chunks).decode()


def worker(engine: str, data: str) -> None:
    """Read and train with one engine; print the metrics as JSON."""
    from batcomputer.training import aggregate, train
    from batcomputer.training import data as reader

    config = train.TrainConfig()
    if engine == "memory":
        crimes, report = reader.read_crimes(data)
        trained = train.train(crimes, config)
    else:
        report = reader.ReadReport(files=[])
        trained = train.train_set(aggregate.collect(data, config, report), config)
    print(json.dumps({"rows_read": report.rows_read, "metrics": trained.metrics,
                      "aggregation": trained.aggregation}))


def baseline_package(rev: str, root: Path) -> Path:
    """The package at ``rev``, laid out as installed (training, server and operator inside
    batcomputer), for PYTHONPATH: it comes before this venv's own editable install (with
    ``python -P``, so that a checkout in the working folder does not come first)."""
    out = root / f"baseline-{rev}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    src = out / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "batcomputer", "training",
                              "server", "operator"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    package = out / "batcomputer"
    src.joinpath("batcomputer").rename(package)
    for sub in ("training", "server", "operator"):
        src.joinpath(sub).rename(package / sub)
    (out / ".complete").write_text(rev)
    return out


def baseline_env(package: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(package)}
    found = subprocess.run([PYTHON, "-P", "-c", "import batcomputer.training.train as t; "
                            "print(t.__file__)"], env=env, check=True, capture_output=True,
                           text=True).stdout.strip()
    if not found.startswith(str(package)):
        raise SystemExit(f"the baseline imports {found}, not the package in {package}")
    return env


def generate(rows: int, root: Path) -> tuple[Path, float]:
    per_file = max(1, round(rows / FILES))
    folder = root / f"rows-{per_file * FILES}"
    if (folder / ".complete").exists():
        return folder, float("nan")
    started = time.perf_counter()
    subprocess.run([str(BIN / "batcomputer"), "-q", "generate-data", str(folder),
                    "--rows-per-file", str(per_file)], check=True)
    (folder / ".complete").write_text("")
    return folder, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000",
                        help="comma-separated data sizes (rows, before dropping)")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "batcomputer-bench"),
                        help="where generated data is kept between runs")
    parser.add_argument("--memory-up-to", type=int, default=None, metavar="ROWS",
                        help="skip the memory engine above this many rows")
    parser.add_argument("--baseline", default=BASELINE, metavar="REV",
                        help=f"the commit whose train to compare with (default {BASELINE}); "
                             "'none' to skip it")
    parser.add_argument("--baseline-up-to", type=int, default=2_000_000, metavar="ROWS",
                        help="run the baseline up to this many rows (default 2,000,000: "
                             "the goal is set at 1 million; it grows as rows do)")
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    root = Path(args.data)
    results: list[dict[str, Any]] = []
    print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}", flush=True)
    for rows in (int(r) for r in args.rows.split(",")):
        folder, gen_seconds = generate(rows, root)
        size = sum(f.stat().st_size for f in folder.rglob("*.csv"))
        print(f"\n{rows:,} rows: {folder} ({size / 1e6:,.0f} MB); generate-data "
              + ("reused" if gen_seconds != gen_seconds else f"{gen_seconds:.1f} s"), flush=True)
        baseline_wall = None
        if args.baseline != "none" and rows <= args.baseline_up_to:
            package = baseline_package(args.baseline, root)
            with tempfile.TemporaryDirectory() as registry:
                baseline_wall, rss, _ = measure(
                    [PYTHON, "-P", "-c", "import sys; from batcomputer.cli import main; "
                     "sys.exit(main(sys.argv[1:]))", "-q", "train", str(folder),
                     "--registry", registry], env=baseline_env(package))
            print(f"  {args.baseline} (the path issue 17 measured) whole `batcomputer train` "
                  f"{baseline_wall:7.1f} s  peak RSS {rss / 2**20:7,.0f} MiB", flush=True)
        engines = ["memory", "stream"]
        if args.memory_up_to is not None and rows > args.memory_up_to:
            engines = ["stream"]
        for engine in engines:
            wall, rss, out = measure([PYTHON, __file__, "--worker", engine, str(folder)])
            found = json.loads(out.strip().splitlines()[-1])
            m = found["metrics"]
            results.append({"rows": found["rows_read"], "engine": engine, "wall": wall, "rss": rss})
            print(f"  {engine:<7} read+train {wall:7.1f} s  peak RSS {rss / 2**20:7,.0f} MiB  "
                  f"{found['rows_read'] / wall:>10,.0f} rows/s  hold-out: accuracy {m['accuracy']:.4f} "
                  f"ROC AUC {m['roc_auc']:.4f} log loss {m['log_loss']:.4f} "
                  f"({m['rows_test']:,} rows)", flush=True)
        for engine in engines:
            with tempfile.TemporaryDirectory() as registry:
                wall, rss, _ = measure([str(BIN / "batcomputer"), "-q", "train", str(folder),
                                        "--registry", registry, "--engine", engine])
            print(f"  {engine:<7} whole `batcomputer train` (+ fast form, publish) {wall:7.1f} s  "
                  f"peak RSS {rss / 2**20:7,.0f} MiB"
                  + (f"  ({baseline_wall / wall:.1f}x faster than {args.baseline})"
                     if baseline_wall else ""), flush=True)
        by_engine = {r["engine"]: r for r in results if r["rows"] == found["rows_read"]}
        if len(by_engine) == 2:
            print(f"  stream is {by_engine['memory']['wall'] / by_engine['stream']['wall']:.1f}x "
                  f"faster, with {by_engine['memory']['rss'] / by_engine['stream']['rss']:.1f}x "
                  "less peak memory", flush=True)
    largest = max((r for r in results if r["engine"] == "stream"), key=lambda r: r["rows"])
    rate = largest["rows"] / largest["wall"]
    print(f"\nProjection for the police.uk archive ({ARCHIVE_ROWS:,} rows) at the stream engine's "
          f"{rate:,.0f} rows/s (measured at {largest['rows']:,} rows): "
          f"{ARCHIVE_ROWS / rate / 60:.1f} min, peak RSS near the measured "
          f"{largest['rss'] / 2**20:,.0f} MiB (bounded by combinations, not rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
