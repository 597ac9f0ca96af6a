"""Benchmark `batcomputer serve` against a naive Flask + gunicorn wrapper, in one run.

    /work/main/.venv/bin/python bench/server.py [--model both] [--artifact DIR] [--duration 10]

Both servers serve the same artifact with the same number of gunicorn worker processes
(the naive wrapper: sync workers; ours: --worker-class, by default its own default,
gevent) on 127.0.0.1. The models, both 100-tree random forests trained by `batcomputer
train` on 12 months of generated data:
- reference: force, crime, month. Every combination fits in a table (memoised mode).
- continuous: force, crime, latitude, longitude. Its inputs cannot be enumerated: ours
  answers through the fast form (model.onnx, onnxruntime), the naive one through
  predict_proba.
Both servers run for the whole benchmark of a model and each figure is measured on one
right after the other, so both see the same machine. The load is closed-loop: N clients
each send a request as soon as the previous answer arrives. Request bodies cover every
valid combination of inputs in a random order (reference), or 20,000 random rows with
points on the map of England and Wales (continuous). The load generator is wrk
(apt-get install wrk), with a Python fallback that may itself be the bottleneck.

Printed: requests/s and p50/p99 latency for single rows at 1, 8 and 32 clients,
rows/s for 100-row batches at 8 clients, cold start (process start to the first
answered prediction), and memory (RSS summed over master and workers, and PSS,
which counts pages shared between processes once).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from multiprocessing import Process, Queue
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
BATCH = 100

WRK_SCRIPT = r"""
local requests = {}
local n = 0
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    requests[n] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, line)
  end
  i = math.random(n) - 1
end

function request()
  i = i % n + 1
  return requests[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"errors": %d, "status_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


# -- the workload ------------------------------------------------------------------------------


MODELS = {"reference": "force,crime,month", "continuous": "force,crime,latitude,longitude"}
# Where the generated (and the real) data's points are: England and Wales.
MAP = {"latitude": (49.9, 55.8), "longitude": (-5.7, 1.8)}
SAMPLED_ROWS = 20_000


def build_artifact(work: Path, model: str) -> Path:
    data, registry = work / "data", work / "registry"
    if not data.exists():
        run([str(BIN / "batcomputer"), "-q", "generate-data", str(data), "--seed", "7",
             "--months", "12"])
    run([str(BIN / "batcomputer"), "-q", "train", str(data), "--registry", str(registry),
         "--name", model, "--features", MODELS[model]])
    return next((registry / model).iterdir())


def all_rows(artifact: Path, seed: int) -> list[dict[str, Any]]:
    """Every valid combination of inputs, from the artifact's schema, in random order; or,
    when an input is not enumerable, SAMPLED_ROWS random rows."""
    inputs = json.loads((artifact / "metadata.json").read_text())["schema"]["inputs"]
    names = [i["name"] for i in inputs]
    rng = random.Random(seed)
    if all(i["type"] == "categorical" or i["type"] == "integer" for i in inputs):
        axes = [i["values"] if i["type"] == "categorical"
                else list(range(i["minimum"], i["maximum"] + 1)) for i in inputs]
        rows = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
        rng.shuffle(rows)
        return rows

    def value(item: dict[str, Any]) -> Any:
        if item["type"] == "categorical":
            return rng.choice(item["values"])
        if item["type"] == "integer":
            return rng.randint(item["minimum"], item["maximum"])
        low, high = MAP.get(item["name"], (item.get("minimum", 0), item.get("maximum", 1)))
        return round(rng.uniform(low, high), 6)

    return [{i["name"]: value(i) for i in inputs} for _ in range(SAMPLED_ROWS)]


def write_bodies(artifact: Path, work: Path, seed: int) -> tuple[dict[str, Path], int]:
    """Request bodies, one per line: /api/predict's (singles, batches) and the same rows as
    Open Inference Protocol requests (v2_singles, v2_batches)."""
    rows = all_rows(artifact, seed)
    inputs = json.loads((artifact / "metadata.json").read_text())["schema"]["inputs"]
    datatype = {"categorical": "BYTES", "integer": "INT64", "number": "FP64"}

    def infer(chunk: list[dict[str, Any]]) -> str:
        return json.dumps({"inputs": [{"name": i["name"], "shape": [len(chunk)],
                                       "datatype": datatype[i["type"]],
                                       "data": [r[i["name"]] for r in chunk]} for i in inputs]})

    chunks = [rows[i:i + BATCH] for i in range(0, len(rows) - BATCH + 1, BATCH)]
    bodies = {"singles": [json.dumps(r) for r in rows],
              "batches": [json.dumps(c) for c in chunks],
              "v2_singles": [infer([r]) for r in rows],
              "v2_batches": [infer(c) for c in chunks]}
    paths = {}
    for name, lines in bodies.items():
        paths[name] = work / f"{name}.jsonl"
        paths[name].write_text("".join(line + "\n" for line in lines))
    return paths, len(rows)


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, artifact: Path, port: int, workers: int, threads: int,
          log: Path, worker_class: str = "gevent") -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kind == "naive":
        env["BENCH_ARTIFACT"] = str(artifact)
        cmd = [PYTHON, "-m", "gunicorn", "--chdir", str(BENCH), "-w", str(workers),
               "-b", f"127.0.0.1:{port}", "--no-control-socket", "naive_server:app"]
    else:
        cmd = [str(BIN / "batcomputer"), "serve", "--artifact", str(artifact), "--host",
               "127.0.0.1", "--port", str(port), "--workers", str(workers), "--threads",
               str(threads), "--worker-class", worker_class]
    handle = log.open("wb")
    return subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def first_prediction(url: str, body: bytes, proc: subprocess.Popen[bytes],
                     timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            post(url, body)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.01)
    raise SystemExit(f"no answer from {url} within {timeout}s")


def post(url: str, body: bytes) -> Any:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as reply:
        return json.loads(reply.read())


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            queue.extend(int(c) for c in task.read_text().split())
    return pids


def memory_mib(pid: int) -> tuple[float, float]:
    """(sum of RSS, sum of PSS) over the process and its children, in MiB."""
    rss = pss = 0
    for p in process_tree(pid):
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Rss":
                rss += int(value.split()[0])
            elif key == "Pss":
                pss += int(value.split()[0])
    return rss / 1024, pss / 1024


# -- load generators ---------------------------------------------------------------------------


def wrk(url: str, bodies: Path, clients: int, seconds: float, work: Path) -> Load:
    script = work / "bodies.lua"
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s",
                          "-s", str(script), url, "--", str(bodies)],
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    r = json.loads(line.removeprefix("RESULT "))
    return Load(r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1000, r["p99_us"] / 1000,
                r["errors"] + r["status_errors"])


def _python_client(url: str, lines: list[str], clients: int, seconds: float,
                   out: Queue[tuple[list[float], int]]) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + seconds

    def loop(offset: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        i = offset
        while time.monotonic() < deadline:
            body = lines[i % len(lines)].encode()
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                if reply.status != 200:
                    errors[0] += 1
                if reply.getheader("Connection", "").lower() == "close":
                    conn.close()
            except OSError:
                errors[0] += 1
                conn.close()
            latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=loop, args=(random.randrange(len(lines)),))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, errors[0]))


def python_load(url: str, bodies: Path, clients: int, seconds: float, work: Path) -> Load:
    lines = bodies.read_text().splitlines()
    procs = min(clients, os.cpu_count() or 1)
    queue: Queue[tuple[list[float], int]] = Queue()
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [Process(target=_python_client, args=(url, lines, n, seconds, queue))
               for n in shares]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
    return Load(len(latencies), seconds, statistics.median(latencies or [0]) * 1000,
                p99 * 1000, sum(e for _, e in results))


# -- the run -----------------------------------------------------------------------------------


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


SCENARIOS: tuple[tuple[str, str, int], ...] = (
    ("single_c1", "singles", 1), ("single_c8", "singles", 8), ("single_c32", "singles", 32),
    ("batch_c8", "batches", 8),
)
KINDS = ("naive", "batcomputer")
V2_SCENARIOS: tuple[tuple[str, str, int], ...] = (
    ("v2_single_c8", "v2_singles", 8), ("v2_batch_c8", "v2_batches", 8),
)


def name_of(artifact: Path) -> str:
    return str(json.loads((artifact / "metadata.json").read_text())["name"])


def bench(args: argparse.Namespace, artifact: Path, bodies: dict[str, Path],
          work: Path) -> dict[str, dict[str, Any]]:
    """Start both servers, then measure each scenario on one and then the other, so that
    both see the same machine conditions (other load on a shared machine shifts both)."""
    load = wrk if shutil.which("wrk") and not args.python_load else python_load
    first_body = bodies["singles"].read_text().splitlines()[0].encode()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    try:
        for kind in KINDS:
            port = free_port()
            urls[kind] = f"http://127.0.0.1:{port}/api/predict"
            started = time.perf_counter()
            procs[kind] = start(kind, artifact, port, args.workers, args.threads,
                                work / f"{kind}.log", args.worker_class)
            first_prediction(urls[kind], first_body, procs[kind])
            results[kind]["cold_s"] = time.perf_counter() - started
        for kind in KINDS:
            load(urls[kind], bodies["singles"], 8, args.warmup, work)
        for name, which, clients in SCENARIOS:
            runs: dict[str, list[Load]] = {kind: [] for kind in KINDS}
            for _ in range(args.repeat):
                for kind in KINDS:
                    run = load(urls[kind], bodies[which], clients, args.duration, work)
                    runs[kind].append(run)
                    print(f"  {name:10} {kind:11} {run.rps:9,.0f} req/s  p50 {run.p50_ms:7.2f} ms"
                          f"  p99 {run.p99_ms:7.2f} ms  (load average {os.getloadavg()[0]:.2f})",
                          flush=True)
            for kind in KINDS:  # the median run by throughput
                results[kind][name] = sorted(runs[kind], key=lambda r: r.rps)[len(runs[kind]) // 2]
        # The Open Inference Protocol route of ours, right after, on the same rows.
        v2_url = urls["batcomputer"].replace("/api/predict", f"/v2/models/{name_of(artifact)}/infer")
        for name, which, clients in V2_SCENARIOS:
            run = load(v2_url, bodies[which], clients, args.duration, work)
            results["batcomputer"][name] = run
            print(f"  {name:10} {'batcomputer':11} {run.rps:9,.0f} req/s  p50 {run.p50_ms:7.2f} ms"
                  f"  p99 {run.p99_ms:7.2f} ms  (load average {os.getloadavg()[0]:.2f})",
                  flush=True)
        for kind in KINDS:
            results[kind]["memory"] = memory_mib(procs[kind].pid)
            results[kind]["sample"] = post(urls[kind], first_body)
    finally:
        for proc in procs.values():
            stop(proc)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "both"], default="both",
                        help="which model to build and measure (default both)")
    parser.add_argument("--artifact", type=Path, help="measure this artifact folder instead")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up load")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (both servers)")
    parser.add_argument("--worker-class", default="gevent", choices=["gevent", "sync", "gthread"],
                        help="worker model of batcomputer serve (default: its default, gevent)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per gthread worker of batcomputer serve")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each figure this many times and report the median")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request order")
    parser.add_argument("--python-load", action="store_true", help="use the Python load "
                                                                   "generator even if wrk exists")
    args = parser.parse_args()

    models = [*MODELS] if args.model == "both" else [args.model]
    reports = []
    with tempfile.TemporaryDirectory(prefix="batcomputer-bench-") as tmp:
        work = Path(tmp)
        for model in ([None] if args.artifact else models):
            artifact = args.artifact or build_artifact(work, str(model))
            bodies, combos = write_bodies(artifact, work, args.seed)
            meta = json.loads((artifact / "metadata.json").read_text())
            generator = "wrk" if shutil.which("wrk") and not args.python_load else "python"
            fast = meta.get("fast_form", {})
            form = fast.get("refused") or f"largest difference {fast['max_abs_diff']:.2g}"
            print(f"\nArtifact: {artifact} ({meta['name']} {meta['version']}, "
                  f"{meta['training']['estimator']} {meta['training']['params']}; fast form: "
                  f"{form})")
            print(f"Workload: {combos:,} request rows in random order; {args.workers} "
                  f"gunicorn workers each (naive: sync; batcomputer: "
                  f"{args.worker_class}"
                  f"{f' x {args.threads} threads' if args.worker_class == 'gthread' else ''}); "
                  f"load generator {generator}; {args.duration:g}s per figure, median of "
                  f"{args.repeat}; {os.cpu_count()} CPUs; load average before: "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
            reports.append((meta["name"], bench(args, artifact, bodies, work)))
    for name, results in reports:
        print(f"\n== {name} ==")
        report(results)
    return 0


def report(results: dict[str, dict[str, Any]]) -> None:
    naive, ours = results["naive"], results["batcomputer"]
    differs = max(abs(naive["sample"][k] - ours["sample"][k]) for k in naive["sample"])
    rows: list[tuple[str, float, float, str, str]] = []

    def ratio_row(label: str, a: float, b: float, target: str = "", higher: bool = True) -> None:
        ratio = b / a if higher else a / b
        rows.append((label, a, b, f"{ratio:.1f}x", target))

    for clients in (1, 8, 32):
        key = f"single_c{clients}"
        ratio_row(f"single row, {clients} clients: req/s", naive[key].rps, ours[key].rps,
                  ">= 10x" if clients == 8 else "")
        rows.append(("  p50 / p99 ms", naive[key].p50_ms, ours[key].p50_ms, "",
                     f"p99 {naive[key].p99_ms:.2f} -> {ours[key].p99_ms:.2f}"
                     + (" (target < 5 ms)" if clients == 8 else "")))
    ratio_row("100-row batches, 8 clients: rows/s", naive["batch_c8"].rps * BATCH,
              ours["batch_c8"].rps * BATCH, ">= 10x")
    for label, key, per in (("V2 infer, single row, 8 clients: req/s", "single_c8", 1),
                            ("V2 infer, 100-row batches, 8 clients: rows/s", "batch_c8", BATCH)):
        v2 = ours.get(f"v2_{key}")
        if v2 is not None:  # the naive wrapper has no V2: its /api/predict is the baseline
            rows.append((label, naive[key].rps * per, v2.rps * per,
                         f"{v2.rps / naive[key].rps:.1f}x",
                         f"/api/predict {ours[key].rps * per:,.0f}; p99 {v2.p99_ms:.2f} ms"))
    ratio_row("cold start to first prediction: s", naive["cold_s"], ours["cold_s"], "",
              higher=False)
    ratio_row("memory, RSS summed over processes: MiB", naive["memory"][0], ours["memory"][0],
              "ours <= naive", higher=False)
    ratio_row("memory, PSS (shared pages once): MiB", naive["memory"][1], ours["memory"][1],
              "", higher=False)
    print(f"\n{'':42} {'naive':>12} {'batcomputer':>12} {'ratio':>8}  target / note")
    for label, a, b, ratio, note in rows:
        print(f"{label:42} {a:12,.2f} {b:12,.2f} {ratio:>8}  {note}")
    errors = {kind: sum(v.errors for v in r.values() if isinstance(v, Load))
              for kind, r in results.items()}
    print(f"\nErrors (non-200 or socket): {errors}; answers to a sample row differ by "
          f"{differs:.2g}")
    c8 = ours["single_c8"]
    print("Targets: single c8 {}x {}, batch {}x {}, p99 c8 {:.2f} ms {}, RSS {}".format(
        round(c8.rps / naive["single_c8"].rps, 1),
        "met" if c8.rps >= 10 * naive["single_c8"].rps else "NOT MET",
        round(ours["batch_c8"].rps / naive["batch_c8"].rps, 1),
        "met" if ours["batch_c8"].rps >= 10 * naive["batch_c8"].rps else "NOT MET",
        c8.p99_ms, "met" if c8.p99_ms < 5 else "NOT MET",
        "met" if ours["memory"][0] <= naive["memory"][0] else "NOT MET"))


if __name__ == "__main__":
    sys.exit(main())
