"""SQLite persistence for punchcard: tokens and jobs (stdlib ``sqlite3``, WAL journal).

One connection per :class:`Store`, serialised by a lock: the server's request threads, the job
watcher threads and the CLI (``token add/list/revoke``, possibly while a server runs) all go
through this class. WAL lets a second process (the CLI) write while the server holds the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from . import auth

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    salt        BLOB NOT NULL,
    hash        BLOB NOT NULL,
    kdf         TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL,
    expires_at  REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    token_id    TEXT NOT NULL REFERENCES tokens(id),
    command     TEXT NOT NULL,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    pid         INTEGER,
    exit_code   INTEGER,
    reason      TEXT,
    result      TEXT,
    has_model   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_token ON jobs (token_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
"""

ACTIVE_STATES = ("starting", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")
RESTART_REASON = "server restarted while the job was running"


class TokenError(ValueError):
    """A token name that is invalid, taken or unknown."""


class LimitExceeded(Exception):
    """The caller already has the maximum number of active jobs."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"this token already has {active} active job(s); the limit is {limit} per token")
        self.active, self.limit = active, limit


def _job_row(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["spec"] = json.loads(job["spec"])
    job["result"] = json.loads(job["result"]) if job["result"] else None
    job["has_model"] = bool(job["has_model"])
    return job


class Store:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # The file holds token hashes: readable by its owner only.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            columns = {r["name"] for r in self._db.execute("PRAGMA table_info(tokens)")}
            if "expires_at" not in columns:  # a database made before tokens could expire
                self._db.execute("ALTER TABLE tokens ADD COLUMN expires_at REAL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- tokens ---------------------------------------------------------------------------

    def add_token(self, name: str, expires_in: float | None = None) -> str:
        """Create a token named ``name`` and return it; only its hash is stored. With
        ``expires_in`` (seconds) the server refuses it from then on (401 naming the expiry)."""
        name = name.strip()
        if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
            raise TokenError(f"invalid token name {name!r}: use 1-64 letters, digits or . _ - @")
        if expires_in is not None and not expires_in > 0:
            raise TokenError(f"a token's lifetime must be positive, got {expires_in} s")
        new = auth.generate()
        now = time.time()
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO tokens (id, name, salt, hash, kdf, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (new.token_id, name, new.salt, new.digest, new.kdf, now, None if expires_in is None else now + expires_in),
                )
            except sqlite3.IntegrityError:
                raise TokenError(f"a token named {name!r} already exists") from None
        return new.token

    def list_tokens(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT t.id, t.name, t.created_at, t.revoked_at, t.expires_at,"
                " (SELECT COUNT(*) FROM jobs j WHERE j.token_id = t.id) AS jobs"
                " FROM tokens t ORDER BY t.created_at"
            ).fetchall()
        return [dict(r) for r in rows]

    def revoke_token(self, name_or_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, revoked_at FROM tokens WHERE name = ? OR id = ?", (name_or_id, name_or_id)
            ).fetchone()
            if row is None:
                raise TokenError(f"no token named {name_or_id!r}")
            if row["revoked_at"] is None:
                self._db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (time.time(), row["id"]))
        return {"id": row["id"], "name": row["name"]}

    def token_row(self, token_id: str) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(
                "SELECT id, name, salt, hash, kdf, revoked_at, expires_at FROM tokens WHERE id = ?", (token_id,)
            ).fetchone()

    # --- jobs -----------------------------------------------------------------------------

    def create_job(
        self, job_id: str, token_id: str, command: str, spec: dict[str, Any], has_model: bool, limit: int
    ) -> dict[str, Any]:
        """Insert a job in state ``starting``; raises :class:`LimitExceeded` atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                active = self._db.execute(
                    f"SELECT COUNT(*) FROM jobs WHERE token_id = ? AND state IN {ACTIVE_STATES}", (token_id,)
                ).fetchone()[0]
                if active >= limit:
                    raise LimitExceeded(active, limit)
                self._db.execute(
                    "INSERT INTO jobs (id, token_id, command, spec, state, created_at, has_model)"
                    " VALUES (?, ?, ?, ?, 'starting', ?, ?)",
                    (job_id, token_id, command, json.dumps(spec), time.time(), int(has_model)),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        job = self.get_job(job_id)
        assert job is not None
        return job

    def active_count(self, token_id: str) -> int:
        with self._lock:
            return self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE token_id = ? AND state IN {ACTIVE_STATES}", (token_id,)
            ).fetchone()[0]

    def get_job(self, job_id: str, token_id: str | None = None) -> dict[str, Any] | None:
        """The job, or ``None`` if it does not exist or (with ``token_id``) is not that token's."""
        sql, args = "SELECT * FROM jobs WHERE id = ?", [job_id]
        if token_id is not None:
            sql += " AND token_id = ?"
            args.append(token_id)
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return _job_row(row) if row else None

    def list_jobs(self, token_id: str, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM jobs WHERE token_id = ?", [token_id]
        if state:
            sql += " AND state = ?"
            args.append(state)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_job_row(r) for r in rows]

    def active_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN {ACTIVE_STATES}").fetchall()
        return [_job_row(r) for r in rows]

    def mark_running(self, job_id: str, pid: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = 'running', pid = ?, started_at = ? WHERE id = ? AND state = 'starting'",
                (pid, time.time(), job_id),
            )

    def finish(
        self,
        job_id: str,
        state: str,
        reason: str | None = None,
        exit_code: int | None = None,
        result: Any = None,
    ) -> bool:
        """Move an active job to a final state; ``False`` if it was already final."""
        assert state in FINAL_STATES
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET state = ?, reason = ?, exit_code = ?, result = ?, finished_at = ?"
                f" WHERE id = ? AND state IN {ACTIVE_STATES}",
                (state, reason, exit_code, json.dumps(result) if result is not None else None, time.time(), job_id),
            )
            return cur.rowcount == 1
