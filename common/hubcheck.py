"""Fail fast, with a clear message, when the Hugging Face Hub is needed but cannot be reached."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

HUB_TIMEOUT_S = float(os.environ.get("HUB_CONNECT_TIMEOUT", "5"))


class HubUnavailableError(RuntimeError):
    """The Hub is needed for this call but is offline or unreachable."""


def hub_offline_reason(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be used right now (offline mode, DNS, no route), or None when it answers a TCP connect."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"


def require_hub(what: str) -> None:
    """Raise HubUnavailableError naming `what` when the Hub cannot be reached, instead of retrying for minutes."""
    reason = hub_offline_reason()
    if reason:
        raise HubUnavailableError(f"{what} needs the Hugging Face Hub, which is unavailable: {reason}")
