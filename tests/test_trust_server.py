"""The web server (issue 35, part 6) and evaluate's synthetic size (part 7): a test per finding of the probe.

Gradio's upload route is open · with the common limit of 1024 open files, 1,100 slow connections starve a second
client and fill the log with EMFILE tracebacks · thumbnail URLs carry the absolute cache path · DATASET=" "
serves the demo · `evaluate.py --synthetic 1000000000,8,2` is a MemoryError traceback. One real app for the
module, started with a soft open-file limit of 256 (hard 1024), as a login shell would give it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import time

import pytest
import requests
from catalogs import make_catalog
from gradio_http import ROOT, Shopper, start_app

SOFT, HARD = 256, 1024
LIMITED = f"""
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({SOFT}, {HARD}))
sys.path.insert(0, {str(ROOT)!r})
sys.argv[0] = {str(ROOT / "app.py")!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """(url, app log, cache folder, temp folder) of the app on a 30-product catalog, at most 8 requests at once."""
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "limited_app.py").write_text(LIMITED)
    catalog = make_catalog(tmp / "catalog", n=30)
    env = {
        **os.environ,
        "APP_LOG": str(tmp / "app.log"),
        "CACHE_DIR": str(tmp / "cache"),
        "GRADIO_TEMP_DIR": str(tmp / "gradio-tmp"),
        "MAX_REQUESTS": "8",
        "HUNT_LOG": "none",
    }
    proc, url = start_app(["--dataset", str(catalog)], env, app=tmp / "limited_app.py")
    yield url, tmp / "app.log", tmp / "cache", tmp / "gradio-tmp"
    proc.terminate()
    proc.wait(timeout=20)


def slow_clients(url: str, n: int) -> list[socket.socket]:
    """`n` connections that send half a request and then nothing (as a slow client, or an attack, does)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        if hard < n + 200:
            pytest.skip(f"this test needs {n + 200} open files; the hard limit here is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = int(url.rsplit(":", 1)[1])
    clients = []
    for _ in range(n):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET /config HTTP/1.1\r\nHost: shop\r\n")
        clients.append(client)
    return clients


def close_all(clients: list[socket.socket]) -> None:
    for client in clients:
        client.close()


def test_the_upload_route_is_refused(shop):
    url, _, _, temp = shop
    for route in ("/gradio_api/upload", "/upload"):
        res = requests.post(url + route, files={"files": ("big.bin", b"\0" * 900_000)}, timeout=10)
        assert res.status_code == 403, (route, res.status_code)
    kept = [p for p in temp.rglob("*") if p.is_file() and p.stat().st_size >= 900_000]
    assert kept == []


def test_the_soft_fd_limit_is_raised_and_a_second_client_is_served(shop):
    url, log, _, _ = shop
    assert f"open files: up to {HARD} (was {SOFT})" in log.read_text()
    clients = slow_clients(url, 300)  # more than the soft limit it started with
    try:
        assert requests.get(url + "/config", timeout=10).ok
    finally:
        close_all(clients)


def test_accept_errors_are_logged_at_most_once_a_second(shop):
    url, log, _, _ = shop
    before = log.stat().st_size
    clients = slow_clients(url, HARD + 100)  # now past the raised limit too
    try:
        time.sleep(3)
        grown = log.read_text()[before:]
    finally:
        close_all(clients)
    lines = [line for line in grown.splitlines() if "accept" in line]
    assert 1 <= len(lines) <= 5 and "Traceback" not in grown, grown[:3000]
    assert len(grown) < 10_000
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the slow clients gone, the next shopper is served
        try:
            if requests.get(url + "/config", timeout=5).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        pytest.fail("the server never recovered")


def test_requests_beyond_the_cap_are_answered_503_at_once(shop):
    url, _, _, _ = shop
    port = int(url.rsplit(":", 1)[1])
    held = []
    for _ in range(8):  # requests in flight: their bodies never come
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\n{")
        held.append(client)
    try:
        time.sleep(0.5)
        busy = requests.get(url + "/config", timeout=10)
        assert busy.status_code == 503 and busy.headers.get("retry-after")
    finally:
        close_all(held)
    deadline = time.monotonic() + 10
    while requests.get(url + "/config", timeout=10).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert requests.get(url + "/config", timeout=10).ok


def test_picture_urls_name_no_path_of_the_server(shop):
    url, _, cache, _ = shop
    gallery = Shopper(url).call("start")[1]
    sent = json.dumps(gallery)
    assert str(cache) not in sent and "/tmp" not in sent and "file=" not in sent
    items = gallery["value"] if isinstance(gallery, dict) and "value" in gallery else gallery
    assert len(items) == 10
    for item in items:
        picture = item["image"]["url"]
        assert re.fullmatch(re.escape(url) + r"/pictures/r\d+-[0-9a-f]+\.jpg", picture), picture
    res = requests.get(items[0]["image"]["url"], timeout=10)
    assert res.ok and res.headers["content-type"] == "image/jpeg" and res.content[:2] == b"\xff\xd8"
    for wrong in ("/pictures/r1-00.jpg", "/pictures/..%2Fapp.log", "/pictures/hunts"):
        assert requests.get(url + wrong, timeout=10).status_code == 404


def test_a_blank_dataset_is_one_error_line(monkeypatch, capsys):
    import app

    monkeypatch.setenv("DATASET", " ")
    with pytest.raises(SystemExit) as stop:
        app.parse_args([])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "error: DATASET is blank" in err


def test_evaluate_refuses_a_synthetic_size_it_cannot_hold(capsys):
    import evaluate

    t = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--synthetic", "1000000000,8,2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "--synthetic" in err[0] and "GB of memory" in err[0]
    assert time.perf_counter() - t < 10  # refused before anything is made
    assert evaluate.available_memory() is not None
