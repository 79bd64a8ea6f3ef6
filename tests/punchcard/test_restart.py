"""Jobs survive a server restart; a job running when the server died is marked failed."""

from __future__ import annotations

import signal
from pathlib import Path

from distkeras.punchcard import Client
from distkeras.punchcard.runner import STOP_REASON, process_alive
from distkeras.punchcard.store import RESTART_REASON

from .conftest import Server, cli, fake_python, wait_for
from .test_server import pids

LONG = {"strategy": "adag", "workers": 2, "epochs": 100_000}


def test_restart_keeps_jobs_and_fails_interrupted_ones(tmp_path: Path) -> None:
    srv = Server(tmp_path, python=fake_python(tmp_path)).start()
    try:
        token = srv.token("alice")
        client = Client(srv.url, token)
        done = client.submit({"strategy": "adag", "workers": 2, "epochs": 2})
        assert client.wait(done["id"], timeout=30, progress=False, poll_s=0.1)["state"] == "succeeded"
        crashed = client.submit(LONG)
        leader, child = pids(srv, crashed["id"])

        # One server per work directory.
        second = cli("punchcard", "serve", "--port", "1", "--db", str(srv.db), "--workdir", str(srv.workdir))
        assert second.returncode == 1 and "another punchcard server" in second.stderr

        srv.stop(signal.SIGKILL)  # a crash: the job's processes outlive the server
        assert process_alive(leader) and process_alive(child)
        srv.start()
        client = Client(srv.url, token)
        job = client.status(crashed["id"])
        assert job["state"] == "failed" and job["reason"] == RESTART_REASON
        wait_for(lambda: not process_alive(leader) and not process_alive(child), timeout=5)
        assert client.status(done["id"])["state"] == "succeeded"
        assert client.logs(done["id"], tail=1) == ["epoch 2/2 loss=0.5000"]
        served = client.download(done["id"], tmp_path / "m.keras").read_bytes()
        assert served == (srv.job_dir(done["id"]) / "out" / "model.keras").read_bytes()
        assert {j["id"] for j in client.list()} == {done["id"], crashed["id"]}

        # A clean stop (SIGTERM) ends running jobs too, and says so.
        stopped = client.submit(LONG)
        leader, child = pids(srv, stopped["id"])
        srv.stop()
        assert not process_alive(leader) and not process_alive(child)
        srv.start()
        job = Client(srv.url, token).status(stopped["id"])
        assert job["state"] == "failed" and job["reason"] == STOP_REASON
    finally:
        srv.stop()
