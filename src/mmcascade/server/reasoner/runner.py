"""Run an app with uvicorn in a background thread (tests, notebooks, examples).

``mmcascade serve reasoner`` runs uvicorn in the foreground instead.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

__all__ = ["serve_in_thread"]


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL (``http://host:port``).

    ``port=0`` picks a free port. For tests, notebooks and examples; ``mmcascade serve`` runs in the foreground.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it
    # every response stalls ~40 ms (Nagle waiting for the client's delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    try:
        _wait_started(server, thread, f"{host}:{port}")
        yield f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread, address: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on {address} did not start")
        time.sleep(0.005)
