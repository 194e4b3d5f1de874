"""Fixtures shared by the unit tests."""

import contextlib
import functools
import http.server
import threading
from pathlib import Path

import pytest


@contextlib.contextmanager
def serving(folder: Path):
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def serve():
    """The :func:`serving` context manager, for tests that publish files locally."""
    return serving
