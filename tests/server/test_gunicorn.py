"""`batcomputer serve` as a real gunicorn process on a loopback port."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import S3
from serverkit import Server, clean_env, free_port, serve_command, start, stop

from batcomputer import apicontract
from batcomputer.server.artifacts import sha256

pytestmark = pytest.mark.timeout(180)

ROW = {"force": "Kent Police", "crime": "Shoplifting", "month": 3}


@pytest.fixture(scope="module")
def server(v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # gthread workers here; the metrics test below uses the default sync workers
    served = start(str(v1), tmp_path_factory.mktemp("serve-cache"), "--workers", "2",
                   "--threads", "2")
    try:
        yield served
    finally:
        stop(served)


def test_ready_healthy_and_predicting(server: Server) -> None:
    assert server.get("/healthz")[0] == 200
    status, body = server.get("/readyz")
    assert status == 200 and json.loads(body)["version"] == "1.0.0"
    status, result = server.predict(ROW)
    assert status == 200 and set(result) == {"not_caught", "caught"}
    status, error = server.predict({**ROW, "crime": "Jaywalking"})
    assert status == 422 and "accepted values" in error["error"]
    status, docs = server.get("/api/docs/")
    assert status == 200 and b"swagger-ui-bundle.js" in docs


def test_served_answers_are_exact_over_every_combination(server: Server, v1: Path) -> None:
    import itertools
    import pickle

    meta = json.loads((v1 / "metadata.json").read_text())
    axes = [i["values"] if i["type"] == "categorical" else range(i["minimum"], i["maximum"] + 1)
            for i in meta["schema"]["inputs"]]
    names = [i["name"] for i in meta["schema"]["inputs"]]
    rows = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
    served = []
    for start_at in range(0, len(rows), 1000):
        status, results = server.predict(rows[start_at:start_at + 1000])
        assert status == 200
        served += [[r["not_caught"], r["caught"]] for r in results]
    estimator = pickle.loads((v1 / "model.pkl").read_bytes())
    lookup = pickle.loads((v1 / "lookup.pkl").read_bytes())
    x = np.array([[float(c[r[n]]) if isinstance(c, dict) else float(r[n])
                   for n, c in lookup.items()] for r in rows])
    # Served from the fast form, checked on every combination when it was published.
    assert meta["fast_form"]["checked"].endswith(f"all {len(rows):,} combinations of inputs")
    largest = meta["fast_form"]["max_abs_diff"]
    assert 0 < largest <= 1e-6
    assert np.abs(np.array(served) - estimator.predict_proba(x)).max() <= largest + 1e-12


def worker_pids_with_requests(cache: Path) -> set[str]:
    """Processes whose own metric file counts predictions (one file per process)."""
    from prometheus_client.mmap_dict import MmapedDict

    pids = set()
    for path in cache.glob("batcomputer-metrics-*/counter_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if '"batcomputer_predictions_total"' in key and value > 0:
                pids.add(path.stem.removeprefix("counter_"))
    return pids


def metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    values = [sample.value for family in text_string_to_metric_families(text)
              for sample in family.samples
              if sample.name == name and labels.items() <= sample.labels.items()]
    assert len(values) == 1, (name, labels, values)
    return values[0]


def test_metrics_add_up_over_both_workers(v1: Path, tmp_path: Path) -> None:
    served = start(str(v1), tmp_path, "--workers", "2")
    try:
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # Keep 8 requests in flight until both workers have answered some.
            while len(worker_pids_with_requests(tmp_path)) < 2 and sent < 4000:
                statuses = list(pool.map(lambda _: served.predict(ROW)[0], range(200)))
                assert statuses == [200] * 200
                sent += 200
        pids = worker_pids_with_requests(tmp_path)
        assert len(pids) >= 2, f"only {pids} answered {sent} requests"
        for _ in range(6):  # whichever worker answers the scrape sees every worker's counts
            status, body = served.get("/metrics")
            text = body.decode()
            assert status == 200
            assert metric(text, "batcomputer_predictions_total", model="crime",
                          version="1.0.0") == sent
            assert metric(text, "batcomputer_http_requests_total", route="/api/predict",
                          status="200") == sent
            assert metric(text, "batcomputer_http_request_duration_seconds_count",
                          route="/api/predict") == sent
            assert metric(text, "batcomputer_model_info", mode="memoised") == 1
    finally:
        log = stop(served)
    assert served.process.returncode == 0, log
    assert "Traceback" not in log


def test_environment_configures_the_server(v1: Path, tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "batcomputer.cli", "serve"],
        env=clean_env(BATCOMPUTER_ARTIFACT=v1.as_uri(), BATCOMPUTER_PORT=str(port),
                      BATCOMPUTER_HOST="127.0.0.1", BATCOMPUTER_WORKERS="1",
                      BATCOMPUTER_VERSION="1.0.0", BATCOMPUTER_MODEL_NAME="crime-demo",
                      BATCOMPUTER_DIGEST=sha256((v1 / "metadata.json").read_bytes()),
                      BATCOMPUTER_CACHE_DIR=str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = Server(f"http://127.0.0.1:{port}", process, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, body = served.get("/api/info")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        info = json.loads(body)
        assert status == 200 and (info["name"], info["version"]) == ("crime-demo", "1.0.0")
    finally:
        stop(served)


def test_serves_an_http_artifact(http_root: str, tmp_path: Path) -> None:
    served = start(f"{http_root}/crime/2.0.0/", tmp_path, "--workers", "1", "--version", "2.0.0")
    try:
        status, result = served.predict({**ROW, "place": "Supermarket"})
        assert status == 200 and set(result) == {"not_caught", "caught"}
    finally:
        stop(served)


def test_serves_an_s3_artifact_with_read_only_credentials(s3: S3, s3_registry: str,
                                                         tmp_path: Path) -> None:
    served = start(f"{s3_registry}/crime/1.0.0/", tmp_path, "--workers", "1",
                   "--version", "1.0.0", **s3.env(s3.reader))
    try:
        status, result = served.predict(ROW)
        assert status == 200 and set(result) == {"not_caught", "caught"}
        info = json.loads(served.get("/api/info")[1])
        assert info["artifact"] == f"{s3_registry}/crime/1.0.0/"
    finally:
        log = stop(served)
    assert s3.reader.secret_key not in log


def test_refuses_an_s3_artifact_with_wrong_credentials(s3: S3, s3_registry: str) -> None:
    env = {**s3.env(s3.reader), "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"}
    line = refuse("--artifact", f"{s3_registry}/crime/1.0.0/", **env)
    assert "access denied to s3://models/registry/crime/1.0.0/metadata.json" in line
    assert "wrong-secret-value" not in line


def refuse(*flags: str, **env: str) -> str:
    """Run serve expecting a refusal; return its one error line."""
    result = subprocess.run(serve_command("--host", "127.0.0.1", "--port", str(free_port()),
                                          *flags),
                            env=clean_env(**env), capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output
    assert "Refusing to serve" in errors[0]
    return errors[0]


def test_refuses_a_digest_mismatch(v1: Path) -> None:
    line = refuse("--artifact", str(v1), "--digest", "sha256:" + "0" * 64)
    assert "metadata.json digest mismatch" in line


def test_refuses_another_version_from_the_environment(v1: Path) -> None:
    line = refuse(BATCOMPUTER_ARTIFACT=str(v1), BATCOMPUTER_VERSION="1.0.1")
    assert "version mismatch: asked for 1.0.1" in line


def test_refuses_a_tampered_file(artifact_copy: Callable[..., Path]) -> None:
    folder = artifact_copy(lambda f: (f / "lookup.json").write_bytes(b"tampered"))
    assert "lookup.json digest mismatch" in refuse("--artifact", str(folder))


def test_safe_mode_refuses_to_unpickle(artifact_copy: Callable[..., Path]) -> None:
    folder = artifact_copy(pickled=True)
    reason = refuse("--artifact", str(folder), BATCOMPUTER_ALLOW_PICKLE="false")
    assert "crime 1.0.0 has no pickle-free form" in reason
    assert "BATCOMPUTER_ALLOW_PICKLE=false" in reason


def test_refuses_a_missing_artifact_and_bad_settings(tmp_path: Path) -> None:
    assert "does not exist" in refuse("--artifact", str(tmp_path / "nothing"))
    assert "digest" in refuse("--artifact", str(tmp_path), "--digest", "md5:1")


def test_the_reason_is_also_the_termination_message_where_the_platform_provides_one(
        v1: Path, tmp_path: Path) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")  # the kubelet provides the file; the server never makes one
    refuse("--artifact", str(v1), "--digest", "sha256:" + "0" * 64,
           BATCOMPUTER_TERMINATION_LOG=str(termination_log))
    written = termination_log.read_text()
    assert written.startswith("Refusing to serve: metadata.json digest mismatch")
    assert "ERROR" not in written and ":" in written[:20]  # no log prefix, no timestamp
    absent = tmp_path / "absent"
    refuse("--artifact", str(v1), "--digest", "sha256:" + "0" * 64, BATCOMPUTER_TERMINATION_LOG=str(absent))
    assert not absent.exists()


def expectation(folder: Path, path: Path, version: str = "1.0.0") -> Path:
    """What the operator records for a MAJOR: the API its serving version has."""
    meta = json.loads((folder / "metadata.json").read_text())
    api = apicontract.api_of(meta["schema"])
    path.write_text(json.dumps({"fingerprint": apicontract.fingerprint(api), "api": api,
                                "version": version, "major": 1}))
    return path


def test_refuses_an_artifact_that_changes_its_majors_api(v1: Path, v2: Path, tmp_path: Path) -> None:
    """2.0.0 adds place: listed as a MAJOR 1 version (an entry edited by mistake, or a
    wrongly numbered artifact), it must not serve what MAJOR 1's apps call."""
    line = refuse(BATCOMPUTER_ARTIFACT=str(v2),
                  BATCOMPUTER_EXPECTED_API=str(expectation(v1, tmp_path / "api.json")))
    assert "2.0.0 changes the API of MAJOR 1 (adds place) that 1.0.0 serves" in line
    assert "Publish it as a new MAJOR" in line


def test_serves_an_artifact_that_keeps_the_api(v1: Path, tmp_path: Path) -> None:
    served = start(str(v1), tmp_path / "cache",
                   BATCOMPUTER_EXPECTED_API=str(expectation(v1, tmp_path / "api.json")))
    try:
        status, body = served.get("/api/info")
        assert status == 200
        assert json.loads(body)["api_fingerprint"] == json.loads(
            (tmp_path / "api.json").read_text())["fingerprint"]
    finally:
        stop(served)
    # No expectation yet (the first version of a MAJOR): it serves.
    served = start(str(v1), tmp_path / "cache2", BATCOMPUTER_EXPECTED_API=str(tmp_path / "none.json"))
    stop(served)


def chunked_post(url: str, chunks: list[bytes]) -> tuple[int, Any]:
    """POST with Transfer-Encoding: chunked (no Content-Length)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", "/api/predict", body=iter(chunks), encode_chunked=True,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_chunked_bodies_over_the_limit_get_413_unparsed(v1: Path, tmp_path: Path) -> None:
    served = start(str(v1), tmp_path / "cache", BATCOMPUTER_MAX_BODY_BYTES="2000")
    try:
        row = json.dumps(ROW).encode()
        assert chunked_post(served.url, [row[:10], row[10:]]) == (
            200, served.predict(ROW)[1])
        # Whitespace after a valid row, and a row cut by the limit: both over it.
        for chunks in ([row, b" " * 3000], [b'{"force": "' + b"x" * 2500 + b'"}']):
            status, body = chunked_post(served.url, chunks)
            assert status == 413 and "over 2000 bytes" in body["error"], body
    finally:
        stop(served)


def test_numbers_beyond_what_the_model_takes_are_422(artifact_copy: Callable[..., Path],
                                                     tmp_path: Path) -> None:
    """month without an upper bound: the estimator answers (no table), and numbers beyond
    float32 used to reach it and give 500."""
    def unbounded(folder: Path) -> None:
        meta = json.loads((folder / "metadata.json").read_text())
        for item in meta["schema"]["inputs"]:
            if item["name"] == "month":
                item.pop("maximum", None)
                item["type"] = "number"
        (folder / "metadata.json").write_text(json.dumps(meta))

    served = start(str(artifact_copy(unbounded)), tmp_path / "cache")
    try:
        assert json.loads(served.get("/api/info")[1])["prediction"]["mode"] == "estimator"
        assert served.predict({**ROW, "month": 3.4e38})[0] == 200
        for value in (3.5e38, 1e308, 10**41):
            status, body = served.predict({**ROW, "month": value})
            assert status == 422, body
            assert body["error"].startswith("month must be a number from 1 to 3.40282e+38, not ")
        status, body = served.predict([ROW, {**ROW, "month": 10**41}])
        assert status == 422 and body["error"].startswith("row 1: month")
        month = json.loads(served.get("/api/swagger.json")[1])["components"]["schemas"]["Input"][
            "properties"]["month"]
        assert (month["minimum"], month["maximum"]) == (1, 3.4028234663852886e38)
    finally:
        stop(served)


def test_slow_and_idle_clients_do_not_stop_health_checks_or_predictions(
        v1: Path, tmp_path: Path) -> None:
    """20 clients that send their body a byte a second, and 200 idle keep-alive
    connections: with sync workers two slow clients were enough to block every worker
    (and get them killed after 30 s)."""
    served = start(str(v1), tmp_path / "cache")
    port = int(served.url.rsplit(":", 1)[1])
    stop_at = time.monotonic() + 6
    sockets: list[socket.socket] = []

    def trickle() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sockets.append(sock)
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 100\r\n\r\n")
        with contextlib.suppress(OSError):
            while time.monotonic() < stop_at:
                sock.sendall(b" ")
                time.sleep(1)

    try:
        for _ in range(200):
            idle = socket.create_connection(("127.0.0.1", port))
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # then keep it open
            sockets.append(idle)
        with ThreadPoolExecutor(20) as pool:
            for _ in range(20):
                pool.submit(trickle)
            checks = 0
            while time.monotonic() < stop_at:
                assert served.get("/healthz")[0] == 200
                assert served.predict(ROW)[0] == 200
                checks += 1
                time.sleep(0.2)
        assert checks >= 10
    finally:
        for sock in sockets:
            sock.close()
        log = stop(served)
    assert "WORKER TIMEOUT" not in log
