"""punchcard: a remote job server for distkeras (HTTP API, bearer tokens, SQLite) and its client.

``Client`` and ``PunchcardError`` are importable from here without FastAPI; the server lives in
``distkeras.punchcard.server`` (needs the ``punchcard`` extra: fastapi, uvicorn, python-multipart).
"""

from .client import Client, PunchcardError

__all__ = ["Client", "PunchcardError"]
