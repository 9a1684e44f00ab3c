"""The upload side of issue 35: a test per finding of the probe.

Part 3, downloads that cannot hang and cannot be turned against this machine: a trickling server holds a
download past --download-timeout · Ctrl-C waits for a read · no overall budget · redirects followed to loopback
and ftp:// · private addresses fetched · no cap per host. The servers here are real local HTTP servers; one of
them, on 127.0.0.2, stands in for a shop on the internet where a test says so.

Part 4, never take what is not ours: --overwrite deletes a dataset with columns image and id written by another
tool, or one whose description mentions upload_ds.py · runs named x and x-embeddings both write.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import datasets
import pytest
from conftest import pattern
from helpers import run_in_process
from PIL import Image
from shop_files import photo

import intake.download as download_mod
from intake.download import DownloadOptions, address_problem, download_all

ROOT = Path(__file__).resolve().parent.parent
PHOTO = photo(1)


class Server:
    """A local HTTP server on `host`: /p.png a photo, /trickle a body of one byte every half second (a query is
    ignored), /trickle-head its headers so, /to-inner and /to-ftp redirects, /slow-N.png a photo after 0.3 s.
    Counts hits and the most /slow- requests it served at once; `trickling` holds the paths whose trickle began."""

    def __init__(self, host: str, inner: str = "") -> None:
        self.hits: dict[str, int] = {}
        self.busy = self.most = 0
        self.trickling: set[str] = set()  # a path (query and all) each, so an earlier test's trickle is told apart
        lock, server = threading.Lock(), self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                slow = self.path.startswith("/slow-")
                with lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                    server.busy += slow
                    server.most = max(server.most, server.busy)
                with contextlib.suppress(OSError):  # the client went away
                    self.answer(slow, lock)

            def answer(self, slow, lock):
                if self.path == "/trickle-head":
                    self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
                    self.drip()
                    return
                if self.path in ("/to-inner", "/to-ftp"):
                    self.send_response(302)
                    where = f"{inner}/p.png" if self.path == "/to-inner" else "ftp://127.0.0.2/p.png"
                    self.send_header("Location", where)
                    self.end_headers()
                    return
                if slow:
                    time.sleep(0.3)
                    with lock:  # before the client has all of it (and may start another)
                        server.busy -= 1
                elif self.path.split("?")[0] == "/trickle":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    self.drip()
                    return
                elif self.path != "/p.png":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(PHOTO)))
                self.end_headers()
                self.wfile.write(PHOTO)

            def drip(self):
                for _ in range(120):  # a minute: far past any timeout the tests give
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    server.trickling.add(self.path)
                    time.sleep(0.5)

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def servers():
    inner = Server("127.0.0.1")
    outer = Server("127.0.0.2", inner=inner.base)
    yield outer, inner
    outer.close()
    inner.close()


def fetch_one(url: str, tmp_path: Path, **options) -> str | None:
    """The reason `url` was not downloaded (None when it was)."""
    opts = DownloadOptions(**{"retries": 0, "allow_private": True, **options})
    return download_all([url], tmp_path / "cache", opts, progress=False)[url][1]


def outer_is_public(monkeypatch) -> None:
    """Let 127.0.0.2 stand in for a public shop; every other address is judged as always."""
    judge = download_mod.address_problem
    monkeypatch.setattr(download_mod, "address_problem", lambda ip: None if ip == "127.0.0.2" else judge(ip))


@pytest.mark.parametrize("path", ["/trickle", "/trickle-head"])
def test_a_server_trickling_a_byte_a_second_is_cut_at_the_download_timeout(servers, path, tmp_path):
    outer, _ = servers
    t = time.monotonic()
    reason = fetch_one(outer.base + path, tmp_path, timeout=1.5)
    took = time.monotonic() - t
    assert reason is not None and "timed out after 1.5 s" in reason
    assert took < 1.5 + 3  # the server would trickle for a minute


def test_a_tls_handshake_trickling_a_byte_a_second_is_cut_at_the_download_timeout(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:  # the start of a TLS record of 16 KB, then a byte every half second
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            conn.sendall(b"\x16\x03\x03\x40\x00")
            for _ in range(120):
                time.sleep(0.5)
                conn.sendall(b"a")

    threading.Thread(target=serve, daemon=True).start()
    t = time.monotonic()
    reason = fetch_one(f"https://127.0.0.1:{listener.getsockname()[1]}/p.png", tmp_path, timeout=1.5)
    assert reason is not None and "timed out after 1.5 s" in reason
    assert time.monotonic() - t < 1.5 + 3
    listener.close()


@pytest.mark.parametrize(
    "ip, kind",
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),  # the cloud metadata address
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.4", "private"),
        ("fd00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a public"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_addresses_that_are_not_public_are_refused(ip, kind):
    problem = address_problem(ip)
    assert (problem is None) if kind is None else (kind in problem)


def test_a_private_address_is_refused_unless_allowed(servers, tmp_path):
    _, inner = servers
    url = inner.base + "/p.png"
    before = inner.hits.get("/p.png", 0)
    reason = fetch_one(url, tmp_path, allow_private=False)
    assert "refused" in reason and "127.0.0.1 is a loopback address" in reason and "--allow-private-urls" in reason
    assert inner.hits.get("/p.png", 0) == before  # not even asked
    localhost = fetch_one(url.replace("127.0.0.1", "localhost"), tmp_path / "2", allow_private=False)
    assert "refused" in localhost and "loopback" in localhost  # a name is judged by what it resolves to
    assert fetch_one(url, tmp_path, allow_private=True) is None


def test_redirects_to_loopback_or_ftp_are_refused(servers, tmp_path, monkeypatch):
    outer, inner = servers
    outer_is_public(monkeypatch)
    before = inner.hits.get("/p.png", 0)
    to_inner = fetch_one(outer.base + "/to-inner", tmp_path, allow_private=False)
    assert "refused" in to_inner and "127.0.0.1 is a loopback address" in to_inner
    assert inner.hits.get("/p.png", 0) == before
    to_ftp = fetch_one(outer.base + "/to-ftp", tmp_path, allow_private=True)
    assert "redirected to a ftp: address, refused" in to_ftp
    assert fetch_one(outer.base + "/p.png", tmp_path, allow_private=False) is None  # the 'public' shop itself


def test_at_most_four_connections_per_host(servers, tmp_path):
    outer, _ = servers
    outer.most = 0
    urls = [f"{outer.base}/slow-{i}.png" for i in range(12)]
    results = download_all(urls, tmp_path, DownloadOptions(workers=12, allow_private=True), progress=False)
    assert all(path is not None for path, _ in results.values())
    assert outer.most == 4


def test_download_budget_covers_the_whole_run_and_reports_what_is_left(servers, tiny_model, tmp_path, capsys):
    import upload_ds

    outer, _ = servers
    (tmp_path / "local.png").write_bytes(PHOTO)
    rows = [f"t{i},{outer.base}/trickle?{i}" for i in range(6)]
    (tmp_path / "t.csv").write_text("id,image\nlocal,local.png\n" + "\n".join(rows) + "\n")
    flags = ["--products", tmp_path / "t.csv", "--repo", "me/shop", "--model", tiny_model, "--no-push"]
    more = ["--out", tmp_path / "out", "--allow-private-urls", "--download-timeout", "60", "--download-budget", "2"]
    t = time.monotonic()
    assert upload_ds.main([str(f) for f in flags + more]) == 0
    assert time.monotonic() - t < 60  # each download alone could have taken a minute
    out = capsys.readouterr().out
    assert "summary: 1 products, 6 skipped" in out
    assert out.count("the download budget (--download-budget 2 s) ran out") == 6


def test_a_private_url_in_a_table_is_skipped_with_the_reason(servers, tiny_model, tmp_path, capsys):
    import upload_ds

    _, inner = servers
    (tmp_path / "local.png").write_bytes(PHOTO)
    (tmp_path / "t.csv").write_text(f"id,image\nlocal,local.png\nlan,{inner.base}/p.png\n")
    flags = ["--products", tmp_path / "t.csv", "--repo", "me/shop", "--model", tiny_model, "--no-push"]
    assert upload_ds.main([str(f) for f in [*flags, "--out", tmp_path / "out"]]) == 0
    out = capsys.readouterr().out
    assert "summary: 1 products, 1 skipped" in out and "127.0.0.1 is a loopback address" in out
    assert upload_ds.main([str(f) for f in [*flags, "--out", tmp_path / "out2", "--allow-private-urls"]]) == 0
    assert "summary: 2 products, 0 skipped" in capsys.readouterr().out


# upload_ds.py as its __main__ runs it, with Ctrl-C acting as a terminal's does (a runner in the background starts
# children with SIGINT ignored)
INTERRUPTIBLE_UPLOAD = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = ["upload_ds.py", *sys.argv[1:]]
sys.path.insert(0, ".")
import upload_ds
from common.cli import run
sys.exit(run(upload_ds.main, interrupted=upload_ds.RESUME_HINT))
"""


def test_ctrl_c_during_a_download_acts_within_a_second(servers, tiny_model, tmp_path):
    outer, _ = servers
    (tmp_path / "t.csv").write_text(f"id,image\nslow,{outer.base}/trickle?ctrl-c\n")
    flags = ["--products", tmp_path / "t.csv", "--repo", "me/shop", "--model", tiny_model, "--no-push"]
    more = ["--out", tmp_path / "out", "--allow-private-urls", "--download-timeout", "120"]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE_UPLOAD, *map(str, flags + more)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        while "/trickle?ctrl-c" not in outer.trickling:  # this upload's own read has begun
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        time.sleep(0.3)  # inside the read now
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        took = time.monotonic() - t
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted")
    assert took < 3, took  # the read would have gone on for two minutes


# ------------------------------------------------------------------------------ part 4: never take what is not ours
def upload_into(out: Path, repo: str, tiny_model: str, tmp_path: Path, monkeypatch, capsys, *more: str):
    """upload_ds.py (in this process) of three pictures as `repo` into `out`, not pushed."""
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray(pattern(40, 32, i)).save(folder / f"item{i}.png")
    argv = [folder, "--repo", repo, "--model", tiny_model, "--no-push", "--out", out, *more]
    return run_in_process("upload_ds", argv, {}, monkeypatch, capsys)


def foreign_dataset(path: Path, description: str = "") -> None:
    """A dataset another tool saved with save_to_disk: the same two columns as our images dataset."""
    features = datasets.Features({"image": datasets.Image(), "id": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [PHOTO], "id": ["theirs"]}, features=features)
    ds.info.description = description
    ds.save_to_disk(str(path))


@pytest.mark.parametrize("description", ["", '{"source": "upload_ds.py"}', "made like upload_ds.py does"])
def test_overwrite_never_takes_a_dataset_without_our_mark(description, tiny_model, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    foreign_dataset(out / "shop", description)
    res = upload_into(out, "me/shop", tiny_model, tmp_path, monkeypatch, capsys, "--overwrite")
    assert res.returncode == 2 and "lacks our mark" in res.stderr and res.stderr.count("\n") == 1
    assert datasets.load_from_disk(str(out / "shop"))["id"] == ["theirs"]


def test_adopt_replaces_a_dataset_from_before_the_mark(tiny_model, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    foreign_dataset(out / "shop", '{"source": "upload_ds.py"}')  # as upload_ds.py wrote it before the mark
    refused = upload_into(out, "me/shop", tiny_model, tmp_path, monkeypatch, capsys, "--overwrite")
    assert refused.returncode == 2 and "add --adopt" in refused.stderr
    assert upload_into(out, "me/shop", tiny_model, tmp_path, monkeypatch, capsys, "--adopt").returncode == 2
    res = upload_into(out, "me/shop", tiny_model, tmp_path, monkeypatch, capsys, "--overwrite", "--adopt")
    assert res.returncode == 0, res.stderr
    assert len(datasets.load_from_disk(str(out / "shop"))) == 3
    again = upload_into(out, "me/shop", tiny_model, tmp_path, monkeypatch, capsys, "--overwrite")
    assert again.returncode == 0, again.stderr  # ours now: it carries the mark


@pytest.mark.parametrize("held, repo", [(["x", "x-embeddings"], "me/x-embeddings"), (["x-embeddings"], "me/x")])
def test_runs_whose_names_overlap_cannot_both_write(held, repo, tiny_model, tmp_path, monkeypatch, capsys):
    from common.saving import out_lock

    out = tmp_path / "out"
    out.mkdir()
    with out_lock(out, held):  # as a run of the other name holds it, from start to end
        res = upload_into(out, repo, tiny_model, tmp_path, monkeypatch, capsys)
    assert res.returncode == 2 and "is writing x-embeddings" in res.stderr and f"pid {os.getpid()}" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written, and the locks went with their holders
