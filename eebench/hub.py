"""Hub reachability: when the hub's host does not resolve, switch the hub libraries to offline mode
before they are imported, so cached files are used and a missing one fails at once instead of after
a minute of retries."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def settle_offline_mode(timeout: float = 2.0) -> bool:
    """Set HF_HUB_OFFLINE=1 when the hub cannot be reached; returns whether we are offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        socket.getaddrinfo(host, 443)
        return False
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        return True
    finally:
        socket.setdefaulttimeout(old)
