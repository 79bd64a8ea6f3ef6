"""Run jobs as subprocesses, each in its own session (process group) and work directory.

Layout of ``workdir/jobs/<job-id>/``: ``spec.json``, ``argv.json``, ``input/model.keras``
(an uploaded model, server-chosen name), ``out/`` (the job's ``--out``: ``model.keras``,
``history.json``, ``curves.png``), ``stdout.log`` and ``stderr.log``.

Every job is started with ``start_new_session=True`` so it leads its own process group; a
watcher thread waits for it *without reaping it* (``waitid(WNOWAIT)``), kills whatever is left
in the group (a Spark JVM, a forked helper) while the leader is still a zombie, so the group
id cannot have been reused, then reaps it and records the outcome. Cancelling sends SIGTERM to
the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .store import RESTART_REASON, Store

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
STOP_REASON = "server stopped while the job was running"
CANCEL_REASON = "cancelled by its owner"
# Environment variables a job must not inherit from the server.
SCRUBBED_ENV = ("DISTKERAS_PUNCHCARD_TOKEN",)


def tail_lines(path: Path, n: int, max_bytes: int = 4 * 1024 * 1024) -> list[str]:
    """The last ``n`` lines of a text file (reading at most ``max_bytes`` from its end).

    Carriage-return progress updates (tqdm) are collapsed to their latest state.
    """
    if n <= 0 or not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines[-n:]


def last_json_object(path: Path) -> Any:
    """The job's result: the last stdout line that parses as a JSON object."""
    for line in reversed(tail_lines(path, 50)):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a live process from /proc, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class JobRunner:
    def __init__(self, store: Store, workdir: Path, python: str | None = None, grace_s: float = 5.0) -> None:
        self.store = store
        self.workdir = Path(workdir)
        self.jobs_dir = self.workdir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self.grace_s = grace_s
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._done: dict[str, threading.Event] = {}
        self._cancelled: set[str] = set()
        self._stopping = False
        self._lock = threading.Lock()

    # --- paths ----------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID_RE.match(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        return self.jobs_dir / job_id

    def remove_job_dir(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # --- lifecycle ------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """On startup: jobs left active by a previous server are marked failed and their
        leftover processes (recognised by process group and working directory) killed."""
        failed = []
        for job in self.store.active_jobs():
            if job["pid"]:
                self._kill_orphan_group(int(job["pid"]), self.job_dir(job["id"]))
            if self.store.finish(job["id"], "failed", reason=RESTART_REASON):
                failed.append(job["id"])
        return failed

    def _kill_orphan_group(self, pgid: int, job_dir: Path) -> None:
        proc = Path("/proc")
        if not proc.is_dir():
            return
        ours = False
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            stat = _proc_stat(int(entry.name))
            if stat is None or stat[1] != pgid:
                continue
            try:
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if cwd == job_dir or job_dir in cwd.parents:
                ours = True
                break
        if ours:
            _killpg(pgid, signal.SIGKILL)

    def start(self, job_id: str, argv: list[str]) -> int:
        """Start a job created in the store (state ``starting``); returns its pid."""
        job_dir = self.job_dir(job_id)
        (job_dir / "out").mkdir(parents=True, exist_ok=True)
        (job_dir / "argv.json").write_text(json.dumps(argv))
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = self._pythonpath(env.get("PYTHONPATH", ""))
        env["DISTKERAS_JOB_ID"] = job_id
        with open(job_dir / "stdout.log", "ab") as out, open(job_dir / "stderr.log", "ab") as err:
            with self._lock:
                if self._stopping:
                    raise RuntimeError("the server is shutting down")
                proc = subprocess.Popen(
                    argv,
                    cwd=job_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
                self._procs[job_id] = proc
                self._done[job_id] = threading.Event()
        self.store.mark_running(job_id, proc.pid)
        threading.Thread(target=self._watch, args=(job_id, proc), name=f"job-{job_id[:8]}", daemon=True).start()
        return proc.pid

    def _pythonpath(self, current: str) -> str:
        """The job runs in its own directory: relative PYTHONPATH entries are made absolute and,
        when jobs use this interpreter, the directory holding this ``distkeras`` is added so the
        job runs the same code as the server (a source checkout works like an installed one)."""
        entries = [os.path.abspath(p) for p in current.split(os.pathsep) if p]
        if self.python == sys.executable:
            import distkeras

            root = str(Path(distkeras.__file__).resolve().parent.parent)
            if root not in entries:
                entries.append(root)
        return os.pathsep.join(entries)

    def _watch(self, job_id: str, proc: subprocess.Popen[bytes]) -> None:
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        with self._lock:
            # The leader is a zombie (not reaped yet): its group id is still ours.
            _killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            self._procs.pop(job_id, None)
            cancelled = job_id in self._cancelled
            self._cancelled.discard(job_id)
            stopping = self._stopping
            done = self._done.pop(job_id)
        try:
            job_dir = self.job_dir(job_id)
            result = last_json_object(job_dir / "stdout.log")
            if cancelled:
                self.store.finish(job_id, "cancelled", reason=CANCEL_REASON, exit_code=rc, result=result)
            elif stopping:
                self.store.finish(job_id, "failed", reason=STOP_REASON, exit_code=rc, result=result)
            elif rc == 0:
                self.store.finish(job_id, "succeeded", exit_code=rc, result=result)
            else:
                reason = self._failure_reason(job_dir, rc)
                self.store.finish(job_id, "failed", reason=reason, exit_code=rc, result=result)
        finally:
            done.set()

    @staticmethod
    def _failure_reason(job_dir: Path, rc: int) -> str:
        if rc < 0:
            try:
                what = f"killed by signal {signal.Signals(-rc).name}"
            except ValueError:
                what = f"killed by signal {-rc}"
        else:
            what = f"exited with code {rc}"
        last = [line for line in tail_lines(job_dir / "stderr.log", 20, max_bytes=64 * 1024) if line.strip()]
        return f"the job {what}" + (f": {last[-1].strip()[:500]}" if last else "")

    def cancel(self, job_id: str) -> bool:
        """Stop a running job's whole process group; ``False`` if it was not running here."""
        with self._lock:
            proc = self._procs.get(job_id)
            done = self._done.get(job_id)
            if proc is None or done is None:
                return False
            self._cancelled.add(job_id)
            _killpg(proc.pid, signal.SIGTERM)
        if not done.wait(self.grace_s):
            with self._lock:
                if job_id in self._procs:
                    _killpg(proc.pid, signal.SIGKILL)
            done.wait(10)
        return True

    def shutdown(self) -> None:
        """Stop every running job (marked failed: the server stopped)."""
        with self._lock:
            self._stopping = True
            running = list(self._procs.items())
            events = [self._done[j] for j, _ in running if j in self._done]
            for _, proc in running:
                _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for ev in events:
            ev.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for _, proc in self._procs.items():
                _killpg(proc.pid, signal.SIGKILL)
        for ev in events:
            ev.wait(5)
