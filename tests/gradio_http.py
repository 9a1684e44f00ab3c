"""A small HTTP driver for a running Gradio app: what a browser sends, including select-event data.

gradio_client cannot send event data, so events are posted to /gradio_api/queue/join with `event_data`,
`trigger_id` and a `session_hash`, and results read from the /gradio_api/queue/data server-sent events.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Shopper:
    """One browser session (session_hash) of a Gradio app at `url`."""

    def __init__(self, url: str, config: dict | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.config = config or self.http.get(f"{self.url}/config", timeout=30).json()
        self.session_hash = secrets.token_hex(6)
        self.deps = {d["api_name"]: d for d in self.config["dependencies"]}
        self.shows: dict[int, object] = {}  # component id -> what the page shows (as a browser keeps it)
        self.raw: list = []  # the last response's outputs as sent (skips included)

    def call(self, api_name: str, data: list | None = None, event_data=None, timeout: float = 60) -> list:
        """Trigger the event `api_name` as the page would; returns the output data list."""
        dep = self.deps[api_name]
        target = dep["targets"][0][0] if dep["targets"] else None
        body = {
            "data": data if data is not None else [None] * len(dep["inputs"]),
            "event_data": event_data,
            "fn_index": dep["id"],
            "trigger_id": target,
            "session_hash": self.session_hash,
        }
        r = self.http.post(f"{self.url}/gradio_api/queue/join", json=body, timeout=timeout)
        r.raise_for_status()
        event_id = r.json()["event_id"]
        with self.http.get(
            f"{self.url}/gradio_api/queue/data",
            params={"session_hash": self.session_hash},
            stream=True,
            timeout=timeout,
        ) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "process_completed":
                    if not msg.get("success", True) or msg["output"].get("error"):
                        raise RuntimeError(f"event {api_name} failed: {msg['output']}")
                    self.raw = msg["output"]["data"]
                    return self.apply(dep["outputs"], self.raw)
        raise RuntimeError(f"no result for {api_name}")

    def apply(self, outputs: list[int], data: list) -> list:
        """The outputs as the page shows them after this response: an output the server skipped (an update with
        nothing in it) keeps what the page showed before."""
        shown = []
        for component, value in zip(outputs, data):
            if value != {"__type__": "update"}:
                self.shows[component] = value
            shown.append(self.shows.get(component))
        return shown

    def pick(self, index: int, item: dict | None = None) -> list:
        """Click the product at `index` of the current gallery (item = the gallery entry the page shows)."""
        return self.call("pick", event_data={"index": index, "value": item, "selected": True})


def gallery_rows(gallery) -> list[int]:
    """Catalog rows of a gallery output, read from the thumbnail file names (r<row>-<key>.jpg)."""
    value = gallery["value"] if isinstance(gallery, dict) and "value" in gallery else gallery
    rows = []
    for item in value or []:
        path = item["image"]["path"]
        rows.append(thumb_row(path))
    return rows


def thumb_row(path: str | Path) -> int:
    """The catalog row a thumbnail file is of (its name is r<row>-<key>.jpg)."""
    return int(Path(path).stem[1:].split("-")[0])


def gallery_captions(gallery) -> list[str]:
    value = gallery["value"] if isinstance(gallery, dict) and "value" in gallery else gallery
    return [item.get("caption") for item in value or []]


def start_app(
    args: list[str], env: dict, timeout: float = 120, app: Path = ROOT / "app.py"
) -> tuple[subprocess.Popen, str]:
    """Start `python app.py ARGS` (this project's app, or `app`) on a free port; returns (process, url) once it
    answers."""
    port = free_port()
    log = open(env.get("APP_LOG", "/dev/null"), "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, str(app), *args, "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=app.parent,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}; see {env.get('APP_LOG')}")
        try:
            if requests.get(f"{url}/config", timeout=2).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("app did not start in time")
