"""Full lifecycles running the real ``distkeras simulate`` / ``distkeras train`` (no test double).

Each is skipped while its command is not part of this checkout's CLI.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from distkeras.punchcard import Client, PunchcardError

from .conftest import Server, registered_commands

COMMANDS = registered_commands()


@pytest.mark.skipif("simulate" not in COMMANDS, reason="distkeras simulate is not registered in the CLI yet")
def test_simulate_lifecycle(tmp_path: Path) -> None:
    srv = Server(tmp_path).start()
    try:
        client = Client(srv.url, srv.token("sim"))
        job = client.submit({"command": "simulate", "strategy": "adag", "workers": 2, "epochs": 1, "seed": 0})
        assert job["state"] in ("running", "succeeded", "failed")
        final = client.wait(job["id"], timeout=120, progress=False, poll_s=0.2)
        assert final["state"] == "succeeded", (final, client.logs(job["id"]))
        assert isinstance(final["result"], dict) and final["result"]
        assert isinstance(client.logs(job["id"]), list)
        with pytest.raises(PunchcardError, match="HTTP 404"):
            client.download(job["id"], tmp_path / "none.keras")
    finally:
        srv.stop()


@pytest.mark.slow
@pytest.mark.skipif("train" not in COMMANDS, reason="distkeras train is not registered in the CLI yet")
def test_train_lifecycle_on_bundled_data(tmp_path: Path) -> None:
    srv = Server(tmp_path).start()
    try:
        client = Client(srv.url, srv.token("train"))
        job = client.submit({"strategy": "adag", "workers": 2, "epochs": 1})
        assert client.status(job["id"])["state"] in ("running", "succeeded")
        final = client.wait(job["id"], timeout=600, progress=False, poll_s=0.5)
        assert final["state"] == "succeeded", (final, client.logs(job["id"], tail=40))
        assert isinstance(final["result"], dict)
        assert "model.keras" in final["files"] and "history.json" in final["files"]
        assert client.logs(job["id"], tail=5)
        model = client.download(job["id"], tmp_path / "trained.keras")
        with zipfile.ZipFile(model) as zf:
            assert "class_name" in json.loads(zf.read("config.json"))
    finally:
        srv.stop()
